"""``pip install .`` ships a complete, importable app (templates, static, migrations, py.typed)."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("django_bill_integration-*.whl")
    return built


def test_wheel_ships_package_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "bill_integration/py.typed" in names
    assert "bill_integration/migrations/0001_initial.py" in names
    assert any(n.startswith("bill_integration/templates/") for n in names)
    assert any(n.startswith("bill_integration/static/") for n in names)
    assert not any(n.startswith(("project/", "tests/")) for n in names)


def test_fresh_venv_installs_and_imports(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # With its declared dependencies, as a user's `pip install` would.
    subprocess.run(
        [python, "-m", "pip", "install", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    result = subprocess.run(
        [
            python,
            "-c",
            "import bill_integration, django, rest_framework, celery, requests;"
            "print(bill_integration.__version__)",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0.1.0"
