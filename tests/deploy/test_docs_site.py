"""The documentation site: `mkdocs build --strict` passes, offline, and its reference covers
the code (a new setting, signal, task, command, endpoint or error code without docs fails).

The reference pages are generated from the code by the hook ``docs/gen_reference.py``; these
tests compare what was built with what the code has, by their own reading of the code.
"""

from __future__ import annotations

import html
import importlib.util
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once for this module with ``mkdocs build --strict``."""
    out = tmp_path_factory.mktemp("site")
    env = {
        **os.environ,
        "NO_MKDOCS_2_WARNING": "1",  # Material's banner about MkDocs 2.0: not ours to act on
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "project.settings.test"),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert [line for line in output.splitlines() if "WARNING" in line] == [], output
    return out


def page(site: Path, name: str) -> str:
    return html.unescape((site / name / "index.html").read_text())


def codes_in(text: str) -> set[str]:
    return set(re.findall(r"<code>([^<]+)</code>", text))


def test_the_site_builds_strict_with_every_section(site: Path) -> None:
    for name in (
        "tutorial/install",
        "how-to/celery",
        "reference/settings",
        "explanation/sessions",
        "benchmarks",
    ):
        assert (site / name / "index.html").is_file(), name
    assert "<!-- reference:" not in (site / "reference" / "settings" / "index.html").read_text()


def test_the_site_loads_nothing_from_elsewhere(site: Path) -> None:
    """Offline: no web fonts, no CDN, no external script, style sheet or image."""
    external = re.compile(
        r"<(?:script|img|iframe)[^>]*\ssrc=\"(?:https?:)?//|<link[^>]*\shref=\"(?:https?:)?//[^\"]*\""
        r"[^>]*rel=\"(?:stylesheet|preload|preconnect)\"|<link[^>]*rel=\"(?:stylesheet|preload|"
        r"preconnect)\"[^>]*\shref=\"(?:https?:)?//"
    )
    for path in site.rglob("*.html"):
        text = path.read_text()
        assert not external.search(text), path
        assert "fonts.googleapis" not in text and "fonts.gstatic" not in text, path
    for path in site.rglob("*.css"):
        assert "fonts.googleapis" not in path.read_text(), path


def test_every_setting_is_in_the_settings_reference(site: Path) -> None:
    from bill_integration.conf import DEFAULTS, DEPRECATED_SETTINGS

    documented = codes_in(page(site, "reference/settings"))
    assert [key for key in [*DEFAULTS, *DEPRECATED_SETTINGS] if key not in documented] == []


def test_every_signal_is_in_the_signals_reference(site: Path) -> None:
    from django.dispatch import Signal

    from bill_integration import signals

    names = [name for name, obj in vars(signals).items() if isinstance(obj, Signal)]
    assert "connection_linked" in names
    documented = codes_in(page(site, "reference/signals"))
    assert [name for name in names if name not in documented] == []


def test_every_task_is_in_the_tasks_reference(site: Path) -> None:
    from celery import current_app

    import bill_integration.tasks  # noqa: F401  (registers the shared tasks)

    names = [name for name in current_app.tasks if name.startswith("bill_integration.")]
    assert "bill_integration.refresh_due_sessions" in names
    documented = codes_in(page(site, "reference/tasks"))
    assert [name for name in names if name not in documented] == []


def test_every_command_is_in_the_commands_reference(site: Path) -> None:
    from django.core.management import get_commands

    names = [name for name, app in get_commands().items() if app == "bill_integration"]
    assert "bill_refresh_sessions" in names and all(name.startswith("bill_") for name in names)
    documented = codes_in(page(site, "reference/commands"))
    assert [name for name in names if name not in documented] == []


def test_every_error_code_is_in_the_errors_reference_with_its_status(site: Path) -> None:
    from bill_integration.api.errors import API_ERROR_CODES, ERROR_CODES
    from bill_integration.exceptions import error_classes

    text = page(site, "reference/errors")
    statuses = {**API_ERROR_CODES, **{cls.code: cls.api_status for cls in error_classes()}}
    assert set(ERROR_CODES) == set(statuses)
    wrong = [
        code
        for code, status in statuses.items()
        if not re.search(rf"<td><code>{re.escape(code)}</code></td>\s*<td>{status}</td>", text)
    ]
    assert wrong == []


def test_every_service_is_in_the_services_reference(site: Path) -> None:
    from bill_integration import services

    documented = page(site, "reference/services")
    assert [name for name in services.__all__ if f"<code>{name}</code>" not in documented] == []


def test_every_operation_of_the_schema_is_in_the_rest_api_reference(site: Path) -> None:
    import yaml
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    operations = [
        f"{method.upper()} {path}"
        for path, methods in schema["paths"].items()
        for method in methods
    ]
    assert "GET /api/bill/connection/" in operations
    text = page(site, "reference/rest-api")
    assert [op for op in operations if op not in text] == []
    published = yaml.safe_load((site / "reference" / "openapi.yaml").read_text())
    assert set(published["paths"]) == set(schema["paths"])


# --- the generator picks up new names by itself, and refuses them undocumented ---------------


@pytest.fixture
def gen_reference():
    spec = importlib.util.spec_from_file_location(
        "gen_reference", ROOT / "docs" / "gen_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_new_setting_appears_and_fails_the_build_until_commented(
    gen_reference, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from bill_integration import conf

    monkeypatch.setitem(conf.DEFAULTS, "MFA_SOMETHING_NEW", 3)
    with caplog.at_level(logging.WARNING, logger="mkdocs.plugins.bill_reference"):
        text = gen_reference.gen_settings()
    assert "`MFA_SOMETHING_NEW`" in text
    assert any("MFA_SOMETHING_NEW" in record.getMessage() for record in caplog.records)


def test_a_new_signal_appears_and_fails_the_build_until_commented(
    gen_reference, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from django.dispatch import Signal

    from bill_integration import signals

    monkeypatch.setattr(signals, "connection_mfa_something", Signal(), raising=False)
    with caplog.at_level(logging.WARNING, logger="mkdocs.plugins.bill_reference"):
        text = gen_reference.gen_signals()
    assert "`connection_mfa_something`" in text
    assert any("connection_mfa_something" in record.getMessage() for record in caplog.records)
