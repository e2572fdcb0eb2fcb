"""What a release carries: one version, a changelog entry, the Spanish catalogue compiled and
shipped, and metadata (classifiers, pre-commit's ruff) that matches what is tested and pinned.
"""

from __future__ import annotations

import gettext
import importlib.metadata
import importlib.util
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from django.utils import translation

import bill_integration
from bill_integration.exceptions import ConnectionNotLinked, InvalidCredentials

ROOT = Path(__file__).resolve().parents[2]
LOCALE = ROOT / "bill_integration" / "locale"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _noxfile():
    spec = importlib.util.spec_from_file_location("noxfile_for_tests", ROOT / "noxfile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- one version -------------------------------------------------------------------------------


def test_the_version_lives_in_the_package_only():
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    dynamic = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "bill_integration.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]\d+|rc\d+|\.dev\d+)?", bill_integration.__version__)


def test_the_installed_metadata_has_the_packages_version():
    assert importlib.metadata.version("django-bill-integration") == bill_integration.__version__


def test_the_changelog_has_an_unreleased_section_and_this_version():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    assert re.search(
        rf"^## \[{re.escape(bill_integration.__version__)}\] - \d{{4}}-\d{{2}}-\d{{2}}$",
        changelog,
        re.M,
    )
    unreleased = changelog.split("## [Unreleased]")[1].split("\n## [")[0]
    assert "### Security" in unreleased


def test_project_urls_are_complete():
    urls = PYPROJECT["project"]["urls"]
    assert set(urls) >= {"Homepage", "Documentation", "Changelog", "Issues"}
    assert all(url.startswith("https://") for url in urls.values())


# --- metadata matches the matrix -----------------------------------------------------------------


def test_classifiers_name_the_django_and_python_versions_the_matrix_tests():
    noxfile = _noxfile()
    classifiers = set(PYPROJECT["project"]["classifiers"])
    djangos = {
        c.rsplit(" :: ", 1)[1] for c in classifiers if c.startswith("Framework :: Django :: ")
    }
    pythons = {
        c.rsplit(" :: ", 1)[1]
        for c in classifiers
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    }
    assert djangos == set(noxfile.DJANGO)
    assert pythons == {p for _, series in noxfile.DJANGO.values() for p in series}
    lowest = min(pythons, key=lambda v: tuple(map(int, v.split("."))))
    assert PYPROJECT["project"]["requires-python"] == f">={lowest}"


def test_the_django_requirement_admits_every_tested_series_and_no_later_one():
    (django,) = [d for d in PYPROJECT["project"]["dependencies"] if d.lower().startswith("django>")]
    newest = max(_noxfile().DJANGO, key=lambda v: tuple(map(int, v.split("."))))
    major, minor = map(int, newest.split("."))
    assert django == f"Django>=5.2,<{major}.{minor + 1}"


def test_pre_commit_runs_the_pinned_ruff():
    config = (ROOT / ".pre-commit-config.yaml").read_text()
    requirements = (ROOT / "requirements" / "test.txt").read_text()
    pinned = re.search(r"^ruff==(\S+)$", requirements, re.M).group(1)
    rev = re.search(r"ruff-pre-commit\n\s+rev: v(\S+)", config).group(1)
    assert rev == pinned


# --- translations -------------------------------------------------------------------------------


def test_customer_messages_are_translated_to_spanish():
    with translation.override("es"):
        assert InvalidCredentials.for_customer().startswith(
            "BILL no aceptó este usuario y esta contraseña"
        )
        assert (
            ConnectionNotLinked.for_customer() == "Todavía no hay ninguna cuenta de BILL vinculada."
        )
    with translation.override("en"):
        assert InvalidCredentials.for_customer().startswith("BILL did not accept")


def test_the_connect_page_speaks_spanish(client, make_user, tenant):
    client.force_login(make_user(tenant, "owner"))
    try:
        page = client.get("/connect/bill/", headers={"accept-language": "es"})
    finally:
        translation.deactivate()  # LocaleMiddleware leaves the request's language active
    assert page.status_code == 200
    text = page.content.decode()
    assert "Conecte su cuenta de BILL" in text and "Conectar con BILL" in text


def _po_entries(path: Path) -> dict[str, str]:
    """msgid -> msgstr of the translated single-line entries (the catalogue has no wrapping)."""
    text = path.read_text()
    pairs = re.findall(r'^msgid "(.+)"\nmsgstr "(.+)"$', text, re.M)

    def unquote(s: str) -> str:
        return s.replace('\\"', '"').replace("\\\\", "\\")

    return {unquote(k): unquote(v) for k, v in pairs}


def test_the_compiled_catalogue_matches_the_po_file():
    """Run ``django-admin compilemessages`` in bill_integration/ after editing django.po."""
    folder = LOCALE / "es" / "LC_MESSAGES"
    entries = _po_entries(folder / "django.po")
    assert len(entries) >= 50
    with (folder / "django.mo").open("rb") as compiled:
        catalogue = gettext.GNUTranslations(compiled)
    assert {msgid: catalogue.gettext(msgid) for msgid in entries} == entries


@pytest.mark.slow
def test_the_wheel_ships_the_compiled_catalogue(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("django_bill_integration-*.whl")
    assert wheel.name.startswith(f"django_bill_integration-{bill_integration.__version__}-")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "bill_integration/locale/es/LC_MESSAGES/django.mo" in names
    assert "bill_integration/locale/es/LC_MESSAGES/django.po" in names
    metadata = (
        zipfile.ZipFile(wheel)
        .read(next(n for n in names if n.endswith(".dist-info/METADATA")))
        .decode()
    )
    assert "Classifier: Framework :: Django :: 6.0" in metadata
    assert "Project-URL: Changelog, " in metadata
