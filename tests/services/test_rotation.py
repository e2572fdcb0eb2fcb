"""Key rotation (``bill_rotate_keys``): resumable, fenced, fails closed, leaves sessions alone.

The acceptance test kills the command with SIGKILL at 30% and 70% of 1,000 rows, runs it
again to the end, and proves every secret decrypts with the new key alone. A session handed out
before a rotation keeps working, including its "log in again once and replay" recovery.
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

from bill_integration import key_rotation as rotation
from bill_integration.exceptions import DecryptionFailed
from bill_integration.models import SECRET_FIELDS, BillConnection

ROOT = Path(__file__).resolve().parents[2]
OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()
LOST_KEY = Fernet.generate_key().decode()


def secrets_for(n: int) -> dict[str, str]:
    return {
        "password": f"pw-{n}-é密",
        "dev_key": f"devkey-{n:05d}",
        "api_token": f"token-{n:05d}",
        "session_id": f"!asession{n:05d}",
        "mfa_remember_id": f"remember-me-{n:05d}",
        "console_token": f"console-{n:05d}",
        "oauth_client_secret": f"client-secret-{n:05d}",
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
def test_rotation_moves_every_secret_to_the_first_key_and_keeps_version():
    pks = make_connections(3, key=OLD_KEY)
    with override_settings(FIELD_ENCRYPTION_KEY=[NEW_KEY, OLD_KEY]):
        assert rotation.key_status().rows_on_old_key == 3
        report = rotation.rotate_all(batch_size=2)
        assert (report.rows_rotated, report.fields_rotated) == (3, 21)
        assert rotation.key_status().done
        again = rotation.rotate_all()
        assert (again.rows_rotated, again.rows_current) == (0, 3)
    for pk in pks:
        for token in raw_tokens(pk).values():
            assert decrypts_with(token, NEW_KEY) and not decrypts_with(token, OLD_KEY)
        # The session did not change: version (the session fence) is left alone.
        assert BillConnection.objects.filter(pk=pk).values_list("version", flat=True).get() == 1
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
            tenant=tenant,
            environment="sandbox",
            username="x@example.com",
            organization_id="0080000000099",
            dev_key_fingerprint="f",
            **secrets_for(99),
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

    def write_after_a_refresh(row, rewrapped, using):
        calls["n"] += 1
        if calls["n"] == 1:  # a session refresh lands between our read and our write
            with override_settings(FIELD_ENCRYPTION_KEY=[OLD_KEY]):
                conn = BillConnection.objects.get(pk=row["pk"])
                conn.session_id = "!anewer-session"
                conn.version += 1
                conn.save(update_fields=["session_id", "version"])
        return real_write(row, rewrapped, using)

    monkeypatch.setattr(rotation, "_write_row", write_after_a_refresh)
    with override_settings(FIELD_ENCRYPTION_KEY=[NEW_KEY, OLD_KEY]):
        report = rotation.rotate_all()
        assert report.rows_rotated == 1 and calls["n"] == 2
        row = BillConnection.objects.get(pk=pk)
        assert row.session_id == "!anewer-session"  # the refresh's value survived
        assert row.version == 2  # the refresh's bump only; rotation does not bump
        assert rotation.key_status().done


@pytest.mark.django_db
def test_a_secret_written_without_a_version_bump_is_never_overwritten(monkeypatch):
    """The UPDATE is also conditional on each secret's ciphertext as read (NULL-safe)."""
    (pk,) = make_connections(1, key=OLD_KEY)
    BillConnection.objects.filter(pk=pk).update(api_token=None)  # a NULL secret column too
    real_write = rotation._write_row
    calls = {"n": 0}

    def write_after_a_password_change(row, rewrapped, using):
        calls["n"] += 1
        if calls["n"] == 1:  # another writer changes secrets but leaves version as it is
            with override_settings(FIELD_ENCRYPTION_KEY=[OLD_KEY]):
                BillConnection.objects.filter(pk=row["pk"]).update(
                    password="a-newer-password", api_token="a-newer-token"
                )
        return real_write(row, rewrapped, using)

    monkeypatch.setattr(rotation, "_write_row", write_after_a_password_change)
    with override_settings(FIELD_ENCRYPTION_KEY=[NEW_KEY, OLD_KEY]):
        report = rotation.rotate_all()
        assert report.rows_rotated == 1 and calls["n"] == 2 and not report.conflict_ids
        row = BillConnection.objects.get(pk=pk)
        assert (row.password, row.api_token) == ("a-newer-password", "a-newer-token")
        assert row.session_id == secrets_for(0)["session_id"]
        assert row.version == 1
        assert rotation.key_status().done
    for token in raw_tokens(pk).values():
        assert decrypts_with(token, NEW_KEY)


@pytest.mark.django_db
def test_a_session_from_before_the_rotation_still_logs_in_again_once_and_replays(
    make_connection, bill_emulator, bill_app, settings
):
    """Rotation does not change the session, so it must not look like a newer one: when BILL
    ends the session, the holder of a pre-rotation BillSession logs in once and replays."""
    from bill_integration.services import get_session
    from tests.session_support import counters, stored

    old_key = settings.FIELD_ENCRYPTION_KEY
    connection = make_connection()
    session = get_session(connection.tenant)
    with override_settings(FIELD_ENCRYPTION_KEY=[NEW_KEY, old_key]):
        assert rotation.rotate_all().rows_rotated == 1
        bill_emulator.state.invalidate_sessions(organization_id=connection.organization_id)
        assert session.request("GET", "/v3/vendors") is not None
        assert counters(bill_emulator, connection)["logins"] == 2
        renewed = stored(connection)
        assert renewed.session_id != session.session_id
        assert renewed.version == session.version + 1
    for token in raw_tokens(connection.pk).values():
        assert decrypts_with(token, NEW_KEY)


@pytest.mark.django_db
def test_uses_through_a_session_from_before_the_rotation_are_recorded(
    make_connection, bill_emulator, bill_app, settings
):
    from bill_integration.conf import bill_settings, now
    from bill_integration.services import get_session
    from tests.session_support import stored

    old_key = settings.FIELD_ENCRYPTION_KEY
    connection = make_connection()
    session = get_session(connection.tenant)
    with override_settings(FIELD_ENCRYPTION_KEY=[NEW_KEY, old_key]):
        assert rotation.rotate_all().rows_rotated == 1
        bill_app.advance(bill_settings.LAST_USED_WRITE_INTERVAL.total_seconds() + 60)
        before_the_call = now()
        session.request("GET", "/v3/vendors")
        assert stored(connection).session_last_used_at >= before_the_call


@pytest.mark.django_db
def test_check_reports_counts_and_exit_codes():
    make_connections(4, key=OLD_KEY)
    with override_settings(FIELD_ENCRYPTION_KEY=[NEW_KEY, OLD_KEY]):
        out = StringIO()
        with pytest.raises(SystemExit) as exited:
            call_command("bill_rotate_keys", "--check", stdout=out, stderr=StringIO())
        assert exited.value.code == 1
        assert "4 of 4 rows (28 secrets) still need an old key." in out.getvalue()
        call_command("bill_rotate_keys", "--no-progress", stdout=StringIO())
        out = StringIO()
        call_command("bill_rotate_keys", "--check", stdout=out)  # no SystemExit: exit 0
        assert "0 of 4 rows (0 secrets) still need an old key." in out.getvalue()


def test_batch_size_must_be_positive():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--batch-size must be at least 1"):
        call_command("bill_rotate_keys", "--batch-size", "0")


def _rotated_count() -> int:
    """Rows whose every secret is already on the new key (rotation writes a row at once)."""
    with db_connection.cursor() as cursor:
        columns = ", ".join(BillConnection._meta.get_field(name).column for name in SECRET_FIELDS)
        cursor.execute(f"SELECT {columns} FROM {BillConnection._meta.db_table}")
        rows = cursor.fetchall()
    return sum(1 for tokens in rows if all(t is None or decrypts_with(t, NEW_KEY) for t in tokens))


def _run_and_kill_after(rows: int, env: dict[str, str], marker: Path) -> int:
    """Run the command until it has handled ``rows`` rows, SIGKILL it there; return the count.

    The child pauses itself after ``rows`` rows (``tests/rotate_keys_pausing.py``), so the
    kill lands at that exact row however slow or loaded the machine is.
    """
    marker.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.rotate_keys_pausing", "--batch-size", "25", "--no-progress"],
        cwd=ROOT,
        env={**env, "BILL_TEST_PAUSE_AFTER_ROWS": str(rows), "BILL_TEST_PAUSE_MARKER": str(marker)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if not marker.exists():
            proc.kill()
            pytest.fail(f"the command did not reach row {rows}: {proc.communicate()[1]!r}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    return _rotated_count()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_killed_at_30_and_70_percent_then_finished_every_row_decrypts_with_the_new_key(
    tmp_path,
):
    total = 1000
    make_connections(total, key=OLD_KEY)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings_keys",
        "BILL_TEST_DB_NAME": db_connection.settings_dict["NAME"],
        "BILL_TEST_FIELD_KEYS": f"{NEW_KEY},{OLD_KEY}",
    }
    marker = tmp_path / "paused"
    # Rows are handled in primary-key order; a second run skips the rows already rotated.
    first = _run_and_kill_after(300, env, marker)
    assert first == 300  # killed at 30%: exactly the rows it had written
    second = _run_and_kill_after(700, env, marker)
    assert second == 700  # 300 already current, 400 more rotated, killed at 70%

    # No row is unreadable in between: all decrypt with the two-key list.
    with override_settings(FIELD_ENCRYPTION_KEY=[NEW_KEY, OLD_KEY]):
        assert len([c.password for c in BillConnection.objects.all()]) == total

    done = subprocess.run(
        [sys.executable, "manage.py", "bill_rotate_keys", "--no-progress"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"in {total - second} rows" in done.stdout

    check = subprocess.run(
        [sys.executable, "manage.py", "bill_rotate_keys", "--check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
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
