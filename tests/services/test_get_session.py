"""get_session(): the hot path, single flight across threads and processes, calls through it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection as db_connection
from django.db import connections

from bill_integration.exceptions import (
    ConnectionDisabled,
    ConnectionNeedsRelink,
    ConnectionNotLinked,
    SessionInvalid,
)
from bill_integration.models import BillConnection, ConnectionStatus
from bill_integration.services import get_session
from tests.session_support import counters, make_tenant, row_locked_elsewhere, stored

ROOT = Path(__file__).resolve().parents[2]
EXPIRE = 36 * 60  # past BILL's 35-minute idle limit


def digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


@pytest.mark.django_db
def test_valid_session_costs_one_query_and_no_bill_call(
    make_connection, bill_emulator, django_assert_num_queries
):
    connection = make_connection()
    before = counters(bill_emulator, connection)
    with django_assert_num_queries(1) as captured:
        session = get_session(connection.tenant)
    sql = captured.captured_queries[0]["sql"]
    # The password and the API token are neither read nor decrypted on the hot path.
    assert '"password"' not in sql and '"api_token"' not in sql and '"username"' not in sql
    assert session.session_id == stored(connection).session_id
    assert session.organization_id == connection.organization_id
    assert session.connection_id == connection.pk
    assert counters(bill_emulator, connection) == before


@pytest.mark.django_db
def test_session_is_renewed_only_after_the_idle_window_minus_margin(
    make_connection, bill_emulator, bill_app
):
    connection = make_connection()
    first = get_session(connection.tenant).session_id
    bill_app.advance(31 * 60)  # 35 - 3 minutes margin (default): still valid until 32 minutes
    assert get_session(connection.tenant).session_id == first
    assert counters(bill_emulator, connection)["logins"] == 1
    bill_app.advance(60)  # 32 minutes idle: the app no longer trusts it
    renewed = get_session(connection.tenant)
    assert renewed.session_id != first
    assert counters(bill_emulator, connection)["logins"] == 2
    row = stored(connection)
    assert row.session_id == renewed.session_id
    assert row.version == connection.version + 1
    assert row.status == ConnectionStatus.ACTIVE
    # The new session works at BILL.
    assert renewed.request("GET", "/v3/vendors") is not None


@pytest.mark.django_db
def test_max_session_age_forces_a_new_login(
    make_connection, bill_emulator, bill_app, bill_settings
):
    bill_settings(MAX_SESSION_AGE=None)
    connection = make_connection()
    first = get_session(connection.tenant)
    for _ in range(3):  # used every 20 minutes for an hour: alive, never renewed
        bill_app.advance(20 * 60)
        get_session(connection.tenant).request("GET", "/v3/vendors")
    assert get_session(connection.tenant).session_id == first.session_id
    bill_settings(MAX_SESSION_AGE=timedelta(hours=1))
    assert get_session(connection.tenant).session_id != first.session_id


@pytest.mark.django_db
def test_state_errors_are_raised_without_calling_bill(make_connection, bill_emulator, bill_app):
    with pytest.raises(ConnectionNotLinked):
        get_session(make_tenant())
    connection = make_connection()
    before = counters(bill_emulator, connection)
    BillConnection.objects.filter(pk=connection.pk).update(status=ConnectionStatus.NEEDS_RELINK)
    with pytest.raises(ConnectionNeedsRelink):
        get_session(connection.tenant)
    bill_app.advance(EXPIRE)
    with pytest.raises(ConnectionNeedsRelink):
        get_session(connection.tenant)
    BillConnection.objects.filter(pk=connection.pk).update(status=ConnectionStatus.DISABLED)
    with pytest.raises(ConnectionDisabled):
        get_session(connection.tenant)
    assert counters(bill_emulator, connection) == before


@pytest.mark.django_db
def test_session_hides_secrets_and_builds_auth(make_connection):
    connection = make_connection()
    session = get_session(connection.tenant)
    text = repr(session) + str(session)
    assert session.session_id not in text and session.dev_key not in text
    assert session.headers() == {"devKey": session.dev_key, "sessionId": session.session_id}
    assert session.form_fields() == {"devKey": session.dev_key, "sessionId": session.session_id}
    assert session.base_url.endswith("/connect")


@pytest.mark.django_db
@pytest.mark.parametrize("api_version, path", [("v3", "/v3/vendors"), ("v2", "/List/Vendor.json")])
def test_request_logs_in_once_and_replays_once_when_bill_ends_the_session(
    make_connection, bill_emulator, api_version, path
):
    connection = make_connection(api_version=api_version)
    session = get_session(connection.tenant)
    bill_emulator.state.invalidate_sessions(organization_id=connection.organization_id)
    result = session.request("POST" if api_version == "v2" else "GET", path)
    assert result is not None
    assert counters(bill_emulator, connection)["logins"] == 2
    renewed = stored(connection)
    assert renewed.session_id != session.session_id
    assert renewed.version == session.version + 1
    # A second caller holding the old session replays with the renewed one: no extra login.
    session.request("POST" if api_version == "v2" else "GET", path)
    assert counters(bill_emulator, connection)["logins"] == 2


@pytest.mark.django_db
def test_request_gives_up_after_one_relogin(make_connection, bill_emulator):
    connection = make_connection()
    session = get_session(connection.tenant)
    bill_emulator.state.set_fault("error", code="BDC_1109", path="/v3/vendors")
    with pytest.raises(SessionInvalid):
        session.request("GET", "/v3/vendors")
    assert counters(bill_emulator, connection)["logins"] == 2  # one re-login, no loop


@pytest.mark.postgresql(
    reason="counts queries: the PostgreSQL limiter's go through its own connection, SQLite's ORM limiter's do not"
)
@pytest.mark.django_db
def test_last_use_is_recorded_at_most_once_per_interval(
    make_connection, bill_emulator, bill_app, django_assert_max_num_queries
):
    connection = make_connection()
    bill_app.advance(10 * 60)
    session = get_session(connection.tenant)
    session.request("GET", "/v3/vendors")  # 10 minutes since the recorded use: written
    recorded = stored(connection).session_last_used_at
    assert (bill_app.now() - recorded).total_seconds() < 5
    with django_assert_max_num_queries(0):
        for _ in range(5):  # within LAST_USED_WRITE_INTERVAL: no database write at all
            session.request("GET", "/v3/vendors")
    bill_app.advance(61)
    session.request("GET", "/v3/vendors")
    assert stored(connection).session_last_used_at > recorded


# --- single flight ----------------------------------------------------------------------------

CHILD = r"""
import hashlib, json, os, sys, threading
import django
django.setup()
from django.db import connection
from bill_integration.services import get_session
from bill_integration.models import BillConnection

tenant_id = int(os.environ["TENANT_ID"])
threads = int(os.environ["THREADS"])
results, errors = [], []
go = threading.Event()

def call():
    go.wait()
    try:
        results.append(hashlib.sha256(get_session(tenant_id).session_id.encode()).hexdigest())
    except Exception as exc:
        errors.append(repr(exc))
    finally:
        connection.close()

workers = [threading.Thread(target=call) for _ in range(threads)]
for worker in workers:
    worker.start()
BillConnection.objects.filter(tenant_id=tenant_id).exists()  # warm up before the start signal
print("READY", flush=True)
sys.stdin.readline()
go.set()
for worker in workers:
    worker.join()
print(json.dumps({"results": results, "errors": errors}), flush=True)
"""


def child_env(bill_emulator, tenant_id: int, threads: int) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.session_worker_settings",
        "BILL_TEST_DB_NAME": db_connection.settings_dict["NAME"],
        "BILL_EMULATOR_URL": bill_emulator.url,
        "BILL_EMULATOR_PORT": str(bill_emulator.url.rsplit(":", 1)[1]),
        "TENANT_ID": str(tenant_id),
        "THREADS": str(threads),
        "PYTHONPATH": str(ROOT),
    }


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_callers_threads_and_processes_cause_one_login(
    make_connection, bill_emulator, bill_app
):
    connection = make_connection()
    bill_app.advance(EXPIRE)  # expired in BILL and in the app
    before = counters(bill_emulator, connection)["logins"]

    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD],
            cwd=ROOT,
            env=child_env(bill_emulator, connection.tenant_id, 20),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for child in children:
        line = child.stdout.readline()
        assert line.strip() == "READY", child.stderr.read()

    results: list[str] = []
    errors: list[str] = []
    go = threading.Event()

    def call() -> None:
        go.wait()
        try:
            results.append(digest(get_session(connection.tenant_id).session_id))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(repr(exc))
        finally:
            connections.close_all()

    local = [threading.Thread(target=call) for _ in range(10)]
    for thread in local:
        thread.start()
    for child in children:
        child.stdin.write("go\n")
        child.stdin.flush()
    go.set()
    for thread in local:
        thread.join(60)
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        answer = json.loads(out.strip().splitlines()[-1])
        results.extend(answer["results"])
        errors.extend(answer["errors"])

    assert errors == []
    assert len(results) == 50
    assert counters(bill_emulator, connection)["logins"] - before == 1
    final = stored(connection)
    assert set(results) == {digest(final.session_id)}
    assert final.version == connection.version + 1


@pytest.mark.postgresql(reason="row locks and concurrent writers: SQLite locks the whole database")
@pytest.mark.django_db(transaction=True)
def test_waiting_for_a_stuck_login_is_bounded(
    make_connection, bill_emulator, bill_app, bill_settings
):
    from bill_integration.exceptions import SessionUnavailable

    bill_settings(SINGLE_FLIGHT_WAIT=timedelta(seconds=0.5))
    connection = make_connection()
    bill_app.advance(EXPIRE)
    with row_locked_elsewhere(connection), pytest.raises(SessionUnavailable):
        get_session(connection.tenant)  # another worker holds the row, as during a slow login
    assert counters(bill_emulator, connection)["logins"] == 1  # nobody logged in meanwhile
    assert get_session(connection.tenant).session_id == stored(connection).session_id
    assert counters(bill_emulator, connection)["logins"] == 2


@pytest.mark.postgresql(reason="row locks and concurrent writers: SQLite locks the whole database")
@pytest.mark.django_db(transaction=True)
def test_recording_a_use_never_waits_for_another_workers_row_lock(make_connection, bill_app):
    import time

    connection = make_connection()
    bill_app.advance(5 * 60)
    session = get_session(connection.tenant)
    with row_locked_elsewhere(connection):  # a keep-alive in progress
        started = time.monotonic()
        session.mark_used()  # skipped, not queued behind the lock
        waited = time.monotonic() - started
    assert waited < 2
    assert stored(connection).session_last_used_at == connection.session_last_used_at
    bill_app.advance(61)
    session.mark_used()  # once the row is free, the use is recorded
    assert stored(connection).session_last_used_at > connection.session_last_used_at


@pytest.mark.postgresql(reason="row locks and concurrent writers: SQLite locks the whole database")
@pytest.mark.django_db(transaction=True)
def test_waiters_reread_without_queueing_on_the_exclusive_row_lock(
    make_connection, bill_emulator, bill_app
):
    """While another worker holds the row, a caller polls plain reads: no FOR UPDATE queue."""
    import time

    from django.test.utils import CaptureQueriesContext

    from bill_integration.conf import now

    connection = make_connection()
    bill_app.advance(33 * 60)  # the app no longer trusts it (32 min), BILL still would (35)

    def keep_alive_written() -> None:  # what a worker refreshing this session writes
        BillConnection.objects.filter(pk=connection.pk).update(session_last_used_at=now())

    results: dict = {}

    def waiter() -> None:
        with CaptureQueriesContext(db_connection) as queries:
            results["session"] = get_session(connection.tenant)
        results["sql"] = [q["sql"] for q in queries]
        results["left"] = time.monotonic()
        connections.close_all()

    with row_locked_elsewhere(connection, then=keep_alive_written):
        waiting = threading.Thread(target=waiter)
        waiting.start()
        time.sleep(0.3)
        assert "session" not in results  # still waiting for the holder's commit
        committed = time.monotonic()
    waiting.join(10)
    assert results["session"].session_id == stored(connection).session_id
    # Released by the commit, not by a lock timeout (SINGLE_FLIGHT_WAIT is 30 s); generous, so
    # a loaded CI machine's scheduling cannot fail it. The structural proof is the next check.
    assert results["left"] - committed < 5
    blocking = [sql for sql in results["sql"] if "FOR UPDATE" in sql and "SKIP LOCKED" not in sql]
    assert blocking == []
    assert counters(bill_emulator, connection)["logins"] == 1  # nobody logged in again
