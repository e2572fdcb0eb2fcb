"""Migrations are complete and pluggable: checked three ways (anchors-django.md §9.19)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

ROOT = Path(__file__).resolve().parents[2]


def manage(*args: str, settings: str, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, "manage.py", *args, f"--settings={settings}"],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.django_db
def test_no_missing_migrations_under_test_settings():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


@pytest.mark.slow
def test_no_missing_migrations_with_another_tenant_model_and_auto_field(tmp_path):
    result = manage(
        "makemigrations",
        "--check",
        "--dry-run",
        settings="tests.settings_swapped",
        env={"BILL_SWAPPED_DB": str(tmp_path / "db.sqlite3")},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No changes detected" in result.stdout


@pytest.mark.slow
def test_migrate_from_scratch_with_another_tenant_model(tmp_path):
    env = {"BILL_SWAPPED_DB": str(tmp_path / "db.sqlite3")}
    result = manage("migrate", "--no-input", settings="tests.settings_swapped", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    # The connection's tenant column really points at the swapped model (a UUID key).
    probe = manage(
        "shell",
        "-c",
        "from bill_integration.models import BillConnection as C;"
        "f = C._meta.get_field('tenant');"
        "print(f.related_model._meta.label, f.target_field.get_internal_type())",
        settings="tests.settings_swapped",
        env=env,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip().splitlines()[-1].split() == [
        "swapped_tenants.Organization",
        "UUIDField",
    ]
    check = manage("check", settings="tests.settings_swapped", env=env)
    assert check.returncode == 0, check.stdout + check.stderr


def test_migration_does_not_hard_code_the_example_tenant_model():
    text = (ROOT / "bill_integration" / "migrations" / "0001_initial.py").read_text()
    source = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "tenants.Tenant" not in source
    assert "'tenants'" not in source and '"tenants"' not in source
