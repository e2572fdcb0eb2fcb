"""Key rotation (``bill_rotate_keys``): resumable, fenced by ``version``, fails closed.

The acceptance test kills the command with SIGKILL at about 30% and 70% of 1,000 rows, runs
it again to the end, and proves every secret decrypts with the new key alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.core.management import call_command
from django.db import connection as db_connection
from django.test import override_settings

from bill_integration import rotation
from bill_integration.exceptions import DecryptionFailed
from bill_integration.models import SECRET_FIELDS, BillConnection

ROOT = Path(__file__).resolve().parent.parent
OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()
LOST_KEY = Fernet.generate_key().decode()


def secrets_for(n: int) -> dict[str, str]:
    return {
        "password": f"pw-{n}-é密",
        "dev_key": f"devkey-{n:05d}",
        "api_token": f"token-{n:05d}",
        "session_id": f"!asession{n:05d}",
    }


def make_connections(count: int, *, key: str | list[str]) -> list[int]:
    """``count`` tenants with a connection each, every secret encrypted under ``key``."""
    from project.tenants.models import Tenant

    tenants = Tenant.objects.bulk_create(
        [Tenant(name=f"T{n}", slug=f"t-{n}") for n in range(count)]
    )
    with override_settings(FIELD_ENCRYPTION_KEY=key):
        rows = BillConnection.objects.bulk_create(
            [
                BillConnection(
                    tenant=tenant,
                    environment="sandbox",
                    username=f"u{n}@example.com",
                    organization_id=f"008{n:010d}",
                    dev_key_fingerprint="f",
                    **secrets_for(n),
                )
                for n, tenant in enumerate(tenants)
            ]
        )
    return [row.pk for row in rows]


def raw_tokens(pk: int) -> dict[str, str]:
    return rotation._tokens(rotation._raw_rows(BillConnection.objects.filter(pk=pk)).get())


def decrypts_with(token: str, key: str) -> bool:
    try:
        Fernet(key).decrypt(token.encode())
        return True
    except InvalidToken:
        return False


@pytest.mark.django_db
def test_rotation_moves_every_secret_to_the_first_key_and_bumps_version():
    pks = make_connections(3, key=OLD_KEY)
    with override_settings(FIELD_ENCRYPTION_KEY=[NEW_KEY, OLD_KEY]):
        assert rotation.key_status().rows_on_old_key == 3
        report = rotation.rotate_all(batch_size=2)
        assert (report.rows_rotated, report.fields_rotated) == (3, 12)
        assert rotation.key_status().done
        again = rotation.rotate_all()
        assert (again.rows_rotated, again.rows_current) == (0, 3)
    for pk in pks:
        for token in raw_tokens(pk).values():
            assert decrypts_with(token, NEW_KEY) and not decrypts_with(token, OLD_KEY)
        assert BillConnection.objects.filter(pk=pk).values_list("version", flat=True).get() == 2
    with override_settings(FIELD_ENCRYPTION_KEY=NEW_KEY):  # old key retired
        for n, pk in enumerate(pks):
            row = BillConnection.objects.get(pk=pk)
            assert {name: getattr(row, name) for name in SECRET_FIELDS} == secrets_for(n)


@pytest.mark.django_db
def test_a_row_no_key_decrypts_is_reported_and_left_byte_identical():
    good, lost = make_connections(1, key=OLD_KEY)[0], None
    from project.tenants.models import Tenant

    tenant = Tenant.objects.create(name="Lost", slug="lost")
    with override_settings(FIELD_ENCRYPTION_KEY=LOST_KEY):
        lost = BillConnection.objects.create(
            tenant=tenant, environment="sandbox", username="x@example.com",
            organization_id="0080000000099", dev_key_fingerprint="f", **secrets_for(99),
        ).pk
    before = raw_tokens(lost)
    with override_settings(FIELD_ENCRYPTION_KEY=[NEW_KEY, OLD_KEY]):
        report = rotation.rotate_all()
        assert report.undecryptable_ids == [lost] and report.rows_rotated == 1
        status = rotation.key_status()
        assert status.undecryptable_ids == [lost] and status.rows_on_old_key == 0
        assert not status.done
        with pytest.raises(DecryptionFailed, match="BillConnection.password"):
            BillConnection.objects.get(pk=lost)
        # Fail closed: the row is never rewritten, version untouched.
        assert raw_tokens(lost) == before
        assert BillConnection.objects.filter(pk=lost).values_list("version", flat=True).get() == 1
        out, err = StringIO(), StringIO()
        with pytest.raises(SystemExit) as exited:
            call_command("bill_rotate_keys", "--check", stdout=out, stderr=err)
        assert exited.value.code == 1
        assert f"no configured key decrypts (left unchanged): {lost}." in err.getvalue()
    assert good


@pytest.mark.django_db
def test_a_concurrent_write_wins_and_the_row_is_rotated_on_a_fresh_read(monkeypatch):
    """The UPDATE is conditional on the version read: a newer session is never overwritten."""
    (pk,) = make_connections(1, key=OLD_KEY)
    real_write = rotation._write_row
    calls = {"n": 0}

    def write_after_a_refresh(row_pk, version, tokens, using):
        calls["n"] += 1
        if calls["n"] == 1:  # a session refresh lands between our read and our write
            with override_settings(FIELD_ENCRYPTION_KEY=[OLD_KEY]):
                conn = BillConnection.objects.get(pk=row_pk)
                conn.session_id = "!anewer-session"
                conn.version += 1
                conn.save(update_fields=["session_id", "version"])
        return real_write(row_pk, version, tokens, using)

    monkeypatch.setattr(rotation, "_write_row", write_after_a_refresh)
    with override_settings(FIELD_ENCRYPTION_KEY=[NEW_KEY, OLD_KEY]):
        report = rotation.rotate_all()
        assert report.rows_rotated == 1 and calls["n"] == 2
        row = BillConnection.objects.get(pk=pk)
        assert row.session_id == "!anewer-session"  # the refresh's value survived
        assert row.version == 3
        assert rotation.key_status().done


@pytest.mark.django_db
def test_check_reports_counts_and_exit_codes():
    make_connections(4, key=OLD_KEY)
    with override_settings(FIELD_ENCRYPTION_KEY=[NEW_KEY, OLD_KEY]):
        out = StringIO()
        with pytest.raises(SystemExit) as exited:
            call_command("bill_rotate_keys", "--check", stdout=out, stderr=StringIO())
        assert exited.value.code == 1
        assert "4 of 4 rows (16 secrets) still need an old key." in out.getvalue()
        call_command("bill_rotate_keys", "--no-progress", stdout=StringIO())
        out = StringIO()
        call_command("bill_rotate_keys", "--check", stdout=out)  # no SystemExit: exit 0
        assert "0 of 4 rows (0 secrets) still need an old key." in out.getvalue()


def test_batch_size_must_be_positive():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--batch-size must be at least 1"):
        call_command("bill_rotate_keys", "--batch-size", "0")


def _rotated_count(cursor) -> int:
    # Every row starts at version 1; the rotation's conditional UPDATE bumps it.
    cursor.execute(f"SELECT count(*) FROM {BillConnection._meta.db_table} WHERE version > 1")
    return cursor.fetchone()[0]


def _run_and_kill_at(fraction: float, total: int, env: dict[str, str]) -> int:
    """Start the command, SIGKILL it once ``fraction`` of rows are rotated; return the count."""
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "bill_rotate_keys", "--batch-size", "25"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        with db_connection.cursor() as cursor:
            while time.monotonic() < deadline and proc.poll() is None:
                if _rotated_count(cursor) >= fraction * total:
                    break
                time.sleep(0.002)
        if proc.poll() is not None:
            pytest.fail(f"the command ended before it could be killed: {proc.stderr.read()!r}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with db_connection.cursor() as cursor:
        return _rotated_count(cursor)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_killed_at_30_and_70_percent_then_finished_every_row_decrypts_with_the_new_key():
    total = 1000
    make_connections(total, key=OLD_KEY)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings_keys",
        "BILL_TEST_DB_NAME": db_connection.settings_dict["NAME"],
        "BILL_TEST_FIELD_KEYS": f"{NEW_KEY},{OLD_KEY}",
    }
    first = _run_and_kill_at(0.30, total, env)
    assert 300 <= first < total  # killed midway (the poll lands within a few rows of 30%)
    second = _run_and_kill_at(0.70, total, env)
    assert 700 <= second < total

    # No row is unreadable in between: all decrypt with the two-key list.
    with override_settings(FIELD_ENCRYPTION_KEY=[NEW_KEY, OLD_KEY]):
        assert len([c.password for c in BillConnection.objects.all()]) == total

    done = subprocess.run(
        [sys.executable, "manage.py", "bill_rotate_keys", "--no-progress"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"in {total - second} rows" in done.stdout

    check = subprocess.run(
        [sys.executable, "manage.py", "bill_rotate_keys", "--check"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert check.returncode == 0, check.stderr
    assert f"0 of {total} rows (0 secrets) still need an old key." in check.stdout

    with override_settings(FIELD_ENCRYPTION_KEY=[NEW_KEY]):  # the old key is gone
        rows = {row.organization_id: row for row in BillConnection.objects.all()}
        assert len(rows) == total
        for n in range(total):
            row = rows[f"008{n:010d}"]
            assert {name: getattr(row, name) for name in SECRET_FIELDS} == secrets_for(n)
    multi_old_only = MultiFernet([Fernet(OLD_KEY)])
    with db_connection.cursor() as cursor:
        cursor.execute(f"SELECT password FROM {BillConnection._meta.db_table}")
        for (token,) in cursor.fetchall():
            with pytest.raises(InvalidToken):
                multi_old_only.decrypt(token.encode())


def test_the_command_refuses_to_run_with_a_malformed_key(settings):
    from django.core.management.base import SystemCheckError

    settings.FIELD_ENCRYPTION_KEY = [NEW_KEY, "not-a-fernet-key"]
    with pytest.raises(SystemCheckError, match="bill_integration.E002"):
        call_command("bill_rotate_keys", "--check", skip_checks=False)
