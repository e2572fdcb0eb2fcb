"""The package is typed (``py.typed``): mypy with django-stubs and DRF's stubs finds nothing.

Runs ``python -m mypy`` from the checkout's root, so the configuration is ``[tool.mypy]`` in
pyproject.toml (strict on the public API: services, exceptions, signals, conf, client, limits).
A fresh cache each run: a stale one can report errors already fixed, or miss new ones.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())

pytestmark = pytest.mark.slow


def test_mypy_finds_nothing(tmp_path):
    assert importlib.util.find_spec("mypy"), "mypy is in requirements/test.txt; install it with pip"
    # The configuration names the settings module; the test run's own must not override it.
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy_cache")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
