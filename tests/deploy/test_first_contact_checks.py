"""Issue #14, "First contact": what a new project gets wrong is reported by ``check``, cleanly.

* A misspelled tenant model, or the tenant app missing from ``INSTALLED_APPS``: every command
  reports ``bill_integration.E003`` (no traceback from the admin).
* ``REDIS_URL`` without the ``redis`` package: ``bill_integration.E011``.
* A project's ``ENVIRONMENTS`` is merged over BILL's own; ``W003`` when neither of BILL's is left.
* drf-spectacular's deploy check passes without DRF's global ``DEFAULT_SCHEMA_CLASS``.
* ``/api/docs/`` serves Swagger UI from drf-spectacular-sidecar, not from a CDN.
* ``dev.py demo`` creates the state folder it is given, not ``.demo``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.core.checks import Error, Warning

from bill_integration import checks
from bill_integration.conf import BILL_ENVIRONMENTS, bill_settings

# The checkout (whichever folder of tests/ this file is in).
ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
EMULATOR = {"v3": "http://127.0.0.1:8111/connect", "v2": "http://127.0.0.1:8111/api/v2"}


def ids(messages) -> list[str]:
    return [message.id for message in messages]


# --- E003 instead of a traceback ---------------------------------------------------------------

BROKEN_TENANT_SETTINGS = {
    "misspelled": 'BILL_INTEGRATION_TENANT_MODEL = "tenants.Tenantt"\n',
    "app_not_installed": (
        'INSTALLED_APPS = [a for a in INSTALLED_APPS if a != "project.tenants"]\n'
        # The example project's resolver lives in that app: E006 names it too.
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BROKEN_TENANT_SETTINGS))
@pytest.mark.parametrize("command", [["check"], ["migrate", "--plan"]])
def test_a_tenant_model_that_does_not_resolve_is_a_system_check_not_a_traceback(
    case, command, tmp_path
):
    (tmp_path / "broken_tenant_settings.py").write_text(
        "from project.settings.test import *  # noqa\n" + BROKEN_TENANT_SETTINGS[case]
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "broken_tenant_settings",
        "PYTHONPATH": os.pathsep.join(
            [str(tmp_path), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    assert "Cannot create form field" not in output
    assert f"({checks.E003_TENANT_MODEL})" in output
    assert "INSTALLED_APPS" in output  # the hint says where to look


def test_the_admin_registers_the_connection_page_only_for_a_tenant_model_that_resolves(settings):
    from bill_integration import admin_forms

    assert admin_forms.tenant_model_installed()
    settings.BILL_INTEGRATION_TENANT_MODEL = "tenants.Tenantt"
    assert not admin_forms.tenant_model_installed()


# --- E011: REDIS_URL needs the redis package ---------------------------------------------------


def test_e010_redis_url_without_the_redis_package(project, monkeypatch):
    project(REDIS_URL="redis://127.0.0.1/0")
    monkeypatch.setitem(sys.modules, "redis", None)  # `import redis` now raises ImportError
    messages = checks.check_redis_installed()
    assert ids(messages) == [checks.E011_REDIS_NOT_INSTALLED]
    assert isinstance(messages[0], Error)
    assert 'pip install "django-bill-integration[redis]"' in messages[0].hint


def test_no_e010_when_redis_is_installed_or_not_used(project, monkeypatch):
    project(REDIS_URL="redis://127.0.0.1/0")
    assert importlib.util.find_spec("redis") is not None
    assert checks.check_redis_installed() == []
    project(REDIS_URL=None)
    monkeypatch.setitem(sys.modules, "redis", None)
    assert checks.check_redis_installed() == []


# --- ENVIRONMENTS: merged over BILL's own -------------------------------------------------------


def test_a_projects_environment_is_added_to_bills_own(settings):
    settings.BILL_INTEGRATION = {"ENVIRONMENTS": {"emulator": EMULATOR}}
    assert bill_settings.ENVIRONMENTS == {**BILL_ENVIRONMENTS, "emulator": EMULATOR}
    assert bill_settings.base_url("production", "v3") == "https://gateway.prod.bill.com/connect"
    assert checks.check_settings() == []


def test_a_project_may_replace_or_remove_one_of_bills_environments(settings):
    staging = {"v3": "https://bill-proxy.example/connect", "v2": "https://bill-proxy.example/v2"}
    settings.BILL_INTEGRATION = {
        "ENVIRONMENTS": {"sandbox": staging, "production": None, "emulator": EMULATOR},
        "DEFAULT_ENVIRONMENT": "sandbox",
    }
    assert bill_settings.ENVIRONMENTS == {"sandbox": staging, "emulator": EMULATOR}
    assert bill_settings.environment_names() == ["sandbox", "emulator"]
    assert checks.check_settings() == []


def test_w003_neither_sandbox_nor_production(settings):
    settings.BILL_INTEGRATION = {
        "ENVIRONMENTS": {"sandbox": None, "production": None, "emulator": EMULATOR},
        "DEFAULT_ENVIRONMENT": "emulator",
    }
    messages = checks.check_settings()
    assert ids(messages) == [checks.W003_NO_BILL_ENVIRONMENT]
    assert isinstance(messages[0], Warning) and "emulator" in messages[0].msg


def test_removing_every_environment_is_still_e004(settings):
    settings.BILL_INTEGRATION = {"ENVIRONMENTS": {"sandbox": None, "production": None}}
    assert ids(checks.check_settings()) == [checks.E004_ENVIRONMENTS]


# --- drf-spectacular without DRF's global schema class ----------------------------------------


def test_drf_spectacular_deploy_check_passes_without_default_schema_class(settings):
    from drf_spectacular.checks import schema_check

    settings.REST_FRAMEWORK = {
        key: value
        for key, value in settings.REST_FRAMEWORK.items()
        if key != "DEFAULT_SCHEMA_CLASS"
    }
    messages = [m for m in schema_check(None) if m.id.startswith("drf_spectacular")]
    assert messages == []


# --- /api/docs/ from the sidecar ---------------------------------------------------------------


def test_swagger_ui_is_served_from_the_sidecar_package(client):
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "cdn.jsdelivr.net" not in html and "@latest" not in html
    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")


# --- dev.py demo: the state folder it is given ------------------------------------------------


def test_dev_py_demo_uses_the_state_folder_it_is_given(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("dev_script", ROOT / "dev.py")
    dev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dev)
    monkeypatch.setattr(dev, "ROOT", tmp_path / "checkout")
    assert (
        dev.demo_state_dir({"BILL_DEMO_STATE_DIR": str(tmp_path / "state")}) == tmp_path / "state"
    )
    assert dev.demo_state_dir({}) == tmp_path / "checkout" / ".demo"
    # The command creates that folder and no other (then stop it before it runs anything).

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(dev, "ensure_venv", lambda requirements: None)
    monkeypatch.setattr(dev, "run", stop)
    monkeypatch.setenv("BILL_DEMO_STATE_DIR", str(tmp_path / "state"))
    with pytest.raises(Stop):
        dev.cmd_demo([])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]


# --- the README as a package's long description -----------------------------------------------


def test_the_readme_has_no_relative_links_and_cites_no_file_outside_the_repo():
    readme = (ROOT / "README.md").read_text()
    relative = [
        link
        for link in re.findall(r"\]\(([^)]+)\)", readme)
        if not link.startswith(("http://", "https://", "#"))
    ]
    assert relative == []  # they break on a package index, where README.md is the description
    for name in ("README.md", "dev.py"):
        assert not re.search(r"(?<![\w-])DESIGN\.md", (ROOT / name).read_text()), name


def test_the_readme_documents_every_demo_variable():
    used = set()
    for name in ("Procfile", "dev.py", "project/settings/dev.py", "project/settings/base.py"):
        used |= set(re.findall(r"\b(BILL_(?:DEMO|EMULATOR)_[A-Z_]+)", (ROOT / name).read_text()))
    used.discard("BILL_EMULATOR_URL")  # production's emulator switch, documented with Docker
    assert used >= {"BILL_DEMO_STATE_DIR", "BILL_DEMO_PORT", "BILL_EMULATOR_PORT"}
    quick_start = (ROOT / "README.md").read_text().split("## Quick start", 1)[1].split("\n## ")[0]
    assert {name for name in used if f"`{name}`" not in quick_start} == set()
