"""Fail closed: a stored secret that no configured key decrypts.

It raises a typed error that names the field (never the ciphertext), the connection gets a
clear status through :func:`bill_integration.services.undecryptable.mark_undecryptable`, the status pages
still render (they never decrypt), and nothing ever re-saves the undecryptable value.
A missing or malformed key is refused at startup (see test_checks.py and
test_production_settings.py), and so is a valid key that decrypts none of the stored secrets
(system check E009): Celery workers and beat refuse to start with it (below).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.db import connection as db_connection
from django.test import override_settings

from bill_integration import key_rotation as rotation
from bill_integration import services, startup
from bill_integration.exceptions import DecryptionFailed
from bill_integration.models import AuditEvent, BillConnection, ConnectionStatus
from bill_integration.services import undecryptable

LOST_KEY = Fernet.generate_key().decode()
CANARIES = {
    "password": "canary-pass-5e1d",
    "dev_key": "canary-devkey-8c2b",
    "api_token": "canary-token-1f4a",
    "session_id": "!acanarysession0000000000000000000001",
}


@pytest.fixture
def lost(tenant, bill_environment):
    """A connection whose secrets were encrypted with a key that is no longer configured."""
    with override_settings(FIELD_ENCRYPTION_KEY=LOST_KEY):
        connection = BillConnection.objects.create(
            tenant=tenant,
            environment=bill_environment,
            username="ap@example.com",
            organization_id="00801LOSTKEY000000",
            dev_key_fingerprint="f",
            **CANARIES,
        )
    return connection.pk


def stored(pk: int) -> tuple:
    """The row exactly as stored: ciphertext columns raw, plus version."""
    row = rotation._raw_rows(BillConnection.objects.filter(pk=pk)).get()
    return (row["version"], *sorted(rotation._tokens(row).items()))


@pytest.mark.django_db
def test_reading_a_secret_raises_a_typed_error_naming_the_field_never_the_ciphertext(lost):
    raw = stored(lost)
    with pytest.raises(DecryptionFailed) as caught:
        BillConnection.objects.get(pk=lost)
    message = str(caught.value)
    assert "BillConnection." in message and caught.value.code == "decryption_failed"
    assert "gAAAA" not in message and "gAAAA" not in repr(caught.value)
    with pytest.raises(DecryptionFailed):
        BillConnection.objects.values_list("dev_key", flat=True).get(pk=lost)
    # Status views defer the secrets: they load, and show no secret.
    row = BillConnection.objects.without_secrets().get(pk=lost)
    assert row.status == ConnectionStatus.ACTIVE and "gAAAA" not in repr(row)
    assert stored(lost) == raw


@pytest.mark.django_db
def test_mark_undecryptable_sets_a_clear_status_once_and_logs_the_connection_id(lost, caplog):
    raw = stored(lost)
    with caplog.at_level(logging.ERROR, logger="bill_integration"):
        assert undecryptable.mark_undecryptable(lost, DecryptionFailed()) is True
        assert undecryptable.mark_undecryptable(lost, DecryptionFailed()) is False  # no repeat
    row = BillConnection.objects.without_secrets().get(pk=lost)
    assert row.status == ConnectionStatus.NEEDS_RELINK
    assert row.last_error_code == "decryption_failed"
    assert "FIELD_ENCRYPTION_KEY" in row.last_error_message
    assert "link the BILL account again" in row.last_error_message
    assert stored(lost) == raw  # status only: ciphertext and version untouched
    events = AuditEvent.objects.filter(connection_id=lost, kind=AuditEvent.Kind.STATUS_CHANGED)
    assert [e.detail for e in events] == [
        {"old": "active", "new": "needs_relink", "code": "decryption_failed"}
    ]
    records = [r for r in caplog.records if getattr(r, "connection_id", None) == lost]
    # Logged once: the repeat changes nothing and says nothing.
    assert len(records) == 1 and f"connection={lost}" in records[0].getMessage()


@pytest.fixture
def transitions():
    """The connection signals sent, by name, while the test runs."""
    from bill_integration import signals

    sent: list[str] = []
    names = ("connection_needs_relink", "connection_recovered", "connection_degraded")

    def receiver_for(name: str):  # noqa: ANN202 - a closure per signal name
        return lambda **kwargs: sent.append(name)

    receivers = {name: receiver_for(name) for name in names}
    for name, receiver in receivers.items():
        getattr(signals, name).connect(receiver, weak=False)
    yield sent
    for name, receiver in receivers.items():
        getattr(signals, name).disconnect(receiver)


@pytest.mark.django_db
def test_a_key_mistake_put_right_returns_the_connection_by_get_session(
    lost, tenant, settings, transitions
):
    """A wrong key deployed for a while never needs a relink once the right key is back."""
    with pytest.raises(DecryptionFailed):
        services.get_session(tenant)
    assert transitions == ["connection_needs_relink"]
    settings.FIELD_ENCRYPTION_KEY = [settings.FIELD_ENCRYPTION_KEY, LOST_KEY]  # the key is back
    row = BillConnection.objects.without_secrets().get(pk=lost)
    assert (row.status, row.last_error_code) == (ConnectionStatus.NEEDS_RELINK, "decryption_failed")
    # Back in service, get_session logs in with the decrypted credentials. The canary
    # developer key is not one the emulator knows, so BILL answers BDC_1102: what matters is
    # that BILL was asked at all (not refused as needs_relink / decryption_failed).
    with pytest.raises(Exception) as caught:
        services.get_session(tenant)
    assert getattr(caught.value, "bill_code", None) == "BDC_1102"
    row = BillConnection.objects.without_secrets().get(pk=lost)
    assert row.last_error_code == "BDC_1102"
    assert transitions[:2] == ["connection_needs_relink", "connection_recovered"]
    events = AuditEvent.objects.filter(connection_id=lost, kind=AuditEvent.Kind.STATUS_CHANGED)
    assert [(e.detail["old"], e.detail["new"]) for e in events.order_by("pk")][:2] == [
        ("active", "needs_relink"),
        ("needs_relink", "active"),
    ]


@pytest.mark.django_db
def test_a_key_mistake_put_right_returns_the_connection_by_the_sweep(
    lost, tenant, settings, transitions
):
    undecryptable.mark_undecryptable(lost)
    services.refresh_due(dispatch=lambda connection_id: None)  # still the wrong key: stays
    row = BillConnection.objects.without_secrets().get(pk=lost)
    assert row.status == ConnectionStatus.NEEDS_RELINK
    settings.FIELD_ENCRYPTION_KEY = [settings.FIELD_ENCRYPTION_KEY, LOST_KEY]
    dispatched: list[int] = []
    services.refresh_due(dispatch=dispatched.append)
    row = BillConnection.objects.without_secrets().get(pk=lost)
    assert (row.status, row.last_error_code) == (ConnectionStatus.ACTIVE, "")
    assert dispatched == [lost]  # no session yet worth keeping: due for a login at once
    assert transitions == ["connection_needs_relink", "connection_recovered"]


@pytest.mark.django_db
def test_services_raise_the_typed_error_mark_the_connection_and_never_resave(lost, tenant):
    raw = stored(lost)
    with pytest.raises(DecryptionFailed):
        services.get_session(tenant)
    with pytest.raises(DecryptionFailed):
        services.refresh(tenant, force=True)
    assert stored(lost) == raw
    row = BillConnection.objects.without_secrets().get(pk=lost)
    assert (row.status, row.last_error_code) == (ConnectionStatus.NEEDS_RELINK, "decryption_failed")


@pytest.mark.django_db
def test_api_status_and_refresh_answer_clearly(lost, tenant, make_user, client):
    raw = stored(lost)
    undecryptable.mark_undecryptable(lost)
    client.force_login(make_user(tenant, "owner"))
    status = client.get("/api/bill/connection/")
    assert status.status_code == 200
    body = status.json()
    assert body["status"] == "needs_relink"
    assert "gAAAA" not in status.content.decode()
    refreshed = client.post("/api/bill/connection/refresh/")
    assert refreshed.status_code == 409
    assert refreshed.json()["code"] == "decryption_failed"
    assert "gAAAA" not in refreshed.content.decode()
    assert stored(lost) == raw


@pytest.mark.django_db
def test_admin_pages_render_without_decrypting(lost, admin_client):
    raw = stored(lost)
    undecryptable.mark_undecryptable(lost)
    listing = admin_client.get("/admin/bill_integration/billconnection/")
    assert listing.status_code == 200
    change = admin_client.get(f"/admin/bill_integration/billconnection/{lost}/change/")
    assert change.status_code == 200
    for page in (listing, change):
        html = page.content.decode()
        assert "gAAAA" not in html
        assert not any(value in html for value in CANARIES.values())
    assert stored(lost) == raw


# --- start-up: Celery worker and beat refuse to run without a valid key -----------------------

ROOT = Path(__file__).resolve().parents[2]


def celery(role: str, keys: str, workdir: Path, **extra_env: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings_keys",
        "BILL_TEST_FIELD_KEYS": keys,
        **extra_env,
    }
    extra = ["--pool", "solo"]
    if role == "beat":
        extra = [
            "--scheduler",
            "celery.beat:PersistentScheduler",
            "--schedule",
            str(workdir / "beat-schedule"),
        ]
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "project", role, "--loglevel", "INFO", *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.parametrize("role", ["worker", "beat"])
@pytest.mark.parametrize(
    "keys,check_id",
    [("", "bill_integration.E001"), ("not-a-key", "bill_integration.E002")],
    ids=["missing", "malformed"],
)
def test_celery_refuses_to_start_without_a_valid_key(role, keys, check_id, tmp_path):
    proc = celery(role, keys, tmp_path)
    try:
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert f"bill_integration refuses to start: {check_id}" in output
    assert "not-a-key" not in output.split("refuses to start")[-1]


@pytest.mark.slow
@pytest.mark.parametrize("role,ready", [("worker", "ready."), ("beat", "beat: Starting...")])
def test_celery_starts_with_a_valid_key(role, ready, tmp_path):
    proc = celery(role, Fernet.generate_key().decode(), tmp_path)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if ready in line:
                break
        assert any(ready in line for line in lines), "".join(lines)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- start-up: a valid key that is not the data's key (E009) ----------------------------------


@pytest.mark.django_db
def test_worker_and_beat_guard_refuses_a_key_that_decrypts_no_stored_secret(lost):
    """The configured key is valid, but the stored secrets were encrypted with LOST_KEY."""
    with pytest.raises(SystemExit) as caught:
        startup.refuse_to_start_without_key()
    message = str(caught.value.code)
    assert message.startswith("bill_integration refuses to start: bill_integration.E009: ")
    assert "decrypts none of the 2 sampled stored secrets" in message
    assert "gAAAA" not in message and LOST_KEY not in message


@pytest.mark.django_db
def test_worker_and_beat_guard_passes_with_the_datas_key_after_a_new_one(lost):
    with override_settings(FIELD_ENCRYPTION_KEY=[Fernet.generate_key().decode(), LOST_KEY]):
        assert startup.key_errors() == []
        startup.refuse_to_start_without_key()  # does not raise


@pytest.mark.django_db
def test_worker_and_beat_guard_passes_on_an_empty_table():
    assert BillConnection.objects.count() == 0
    assert startup.key_errors() == []


def test_the_guard_is_connected_to_worker_and_beat_start_up():
    from celery.signals import beat_init, worker_init

    for signal_ in (worker_init, beat_init):  # connected strongly (weak=False): no weakrefs
        receivers = [receiver for _, receiver in signal_.receivers]
        assert startup.refuse_to_start_without_key in receivers, signal_


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("role", ["worker", "beat"])
def test_celery_refuses_to_start_with_a_key_that_is_not_the_datas(role, tenant, tmp_path):
    """A real worker and beat on the test database, whose one row is on another key."""
    data_key = Fernet.generate_key().decode()
    with override_settings(FIELD_ENCRYPTION_KEY=data_key):
        BillConnection.objects.create(
            tenant=tenant,
            environment="sandbox",
            username="ap@example.com",
            organization_id="00801WRONGKEY00000",
            dev_key_fingerprint="f",
            **CANARIES,
        )
    proc = celery(
        role,
        Fernet.generate_key().decode(),
        tmp_path,
        BILL_TEST_DB_NAME=db_connection.settings_dict["NAME"],
    )
    try:
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, output
    assert "bill_integration refuses to start: bill_integration.E009" in output
    assert "decrypts none of the 2 sampled stored secrets" in output  # dev_key, password
    assert data_key not in output and "gAAAA" not in output


@pytest.mark.slow
def test_the_guard_lets_start_and_warns_when_the_database_cannot_be_read():
    """No data to compare the key with (database down): start, and say the key is unverified."""
    code = (
        "import django; django.setup()\n"
        "from bill_integration.startup import refuse_to_start_without_key\n"
        "refuse_to_start_without_key(); print('started')\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings_keys",
        "BILL_TEST_FIELD_KEYS": Fernet.generate_key().decode(),
        "BILL_TEST_DB_PORT": "1",  # nothing listens there
    }
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "started" in result.stdout
    assert "cannot read the stored secrets of database 'default'" in result.stdout + result.stderr
