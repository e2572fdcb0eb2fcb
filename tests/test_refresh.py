"""The sweep: keep-alive while sessions live, logins only when needed, duplicates cost nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bill_integration.conf import now
from bill_integration.models import AuditEvent, BillConnection, ConnectionStatus
from bill_integration.services import get_session, keep_alive, refresh, refresh_due
from bill_integration.services.sessions import (
    BUSY,
    KEPT_ALIVE,
    LOGGED_IN,
    MISSING,
    NOT_DUE,
    due_connection_ids,
    refresh_connection,
)
from tests.session_support import counters, stored

pytestmark = pytest.mark.django_db


def alive_at_bill(emulator, connection: BillConnection) -> bool:
    """Whether the emulator would accept the stored session now (without touching it)."""
    session = emulator.state.peek_session(stored(connection).session_id)
    if session is None:
        return False
    return emulator.state.now() - session.last_used < timedelta(minutes=35)


@pytest.mark.slow
def test_sweep_keeps_200_sessions_alive_with_keepalives_and_no_logins(
    make_connection, bill_emulator, bill_app
):
    connections = [make_connection() for _ in range(200)]
    assert bill_emulator.state.counters()["logins"] == 200
    for _ in range(9):  # 90 minutes of emulated time, a sweep every 10 minutes
        bill_app.advance(10 * 60)
        refresh_due()
        assert all(alive_at_bill(bill_emulator, c) for c in connections)
    totals = bill_emulator.state.counters()
    assert totals["logins"] == 200  # not one login: every session stayed alive
    assert totals["session_info"] >= 2 * 200  # each kept alive at least twice in 90 minutes
    statuses = set(BillConnection.objects.values_list("status", flat=True))
    assert statuses == {ConnectionStatus.ACTIVE}
    # And the app hands out those same sessions without a login.
    for connection in connections[:10]:
        assert get_session(connection.tenant).session_id == stored(connection).session_id
    assert bill_emulator.state.counters()["logins"] == 200


def test_a_fresh_session_is_not_due(make_connection, bill_emulator, bill_app):
    connection = make_connection()
    bill_app.advance(19 * 60)
    assert due_connection_ids() == []
    assert refresh_connection(connection.pk) == NOT_DUE
    assert counters(bill_emulator, connection)["calls"] == 1  # the fixture's login only


def test_second_sweep_and_duplicate_tasks_make_no_bill_call(
    make_connection, bill_emulator, bill_app
):
    connections = [make_connection() for _ in range(5)]
    bill_app.advance(25 * 60)
    first, second = [], []
    refresh_due(dispatch=first.append)
    refresh_due(dispatch=second.append)  # a second beat before any task ran
    assert sorted(first) == sorted(second) == sorted(c.pk for c in connections)
    calls_before = bill_emulator.state.counters()["calls"]
    outcomes = [refresh_connection(pk) for pk in first + second + first]
    assert outcomes[:5] == [KEPT_ALIVE] * 5
    assert outcomes[5:] == [NOT_DUE] * 10
    totals = bill_emulator.state.counters()
    assert totals["calls"] - calls_before == 5
    assert totals["session_info"] == 5 and totals["logins"] == 5
    assert due_connection_ids() == []


def test_sessions_surely_expired_are_renewed_by_login_without_a_probe(
    make_connection, bill_emulator, bill_app
):
    connection = make_connection()
    bill_app.advance(40 * 60)
    assert refresh_connection(connection.pk) == LOGGED_IN
    assert counters(bill_emulator, connection)["session_info"] == 0
    assert counters(bill_emulator, connection)["logins"] == 2
    assert alive_at_bill(bill_emulator, connection)
    audit = AuditEvent.objects.filter(connection=connection, kind="session_refreshed")
    assert audit.count() == 1 and audit.get().detail["reason"] == "sweep"


def test_session_bill_ended_is_detected_by_the_keepalive_and_renewed(
    make_connection, bill_emulator, bill_app
):
    connection = make_connection()
    bill_app.advance(22 * 60)
    bill_emulator.state.invalidate_sessions(organization_id=connection.organization_id)
    assert refresh_connection(connection.pk) == LOGGED_IN
    assert counters(bill_emulator, connection)["logins"] == 2
    assert alive_at_bill(bill_emulator, connection)
    assert stored(connection).version == connection.version + 1


def test_max_session_age_is_renewed_by_the_sweep(
    make_connection, bill_emulator, bill_app, settings
):
    settings.BILL_INTEGRATION = {**settings.BILL_INTEGRATION, "MAX_SESSION_AGE": timedelta(hours=1)}
    connection = make_connection()
    for _ in range(2):
        bill_app.advance(20 * 60)
        refresh_due()
    assert counters(bill_emulator, connection)["logins"] == 1
    bill_app.advance(20 * 60)  # 60 minutes old (inside the 5-minute margin since 55)
    refresh_due()
    assert counters(bill_emulator, connection)["logins"] == 2


def test_due_connections_come_most_recently_used_first(make_connection, bill_app):
    idle_minutes = [25, 40, 21, 33]
    made = {minutes: make_connection(login=False, idle=minutes * 60) for minutes in idle_minutes}
    assert due_connection_ids() == [made[m].pk for m in sorted(idle_minutes)]


def test_needs_relink_and_disabled_are_never_swept(make_connection, bill_emulator, bill_app):
    relink, disabled = make_connection(), make_connection()
    BillConnection.objects.filter(pk=relink.pk).update(status=ConnectionStatus.NEEDS_RELINK)
    BillConnection.objects.filter(pk=disabled.pk).update(status=ConnectionStatus.DISABLED)
    bill_app.advance(3 * 3600)
    assert due_connection_ids() == []
    assert refresh_connection(relink.pk) == NOT_DUE
    assert refresh_connection(disabled.pk) == NOT_DUE
    assert bill_emulator.state.counters()["logins"] == 2


def test_missing_connection_is_reported(db, bill_app):
    assert refresh_connection(987654321) == MISSING


@pytest.mark.django_db(transaction=True)
def test_a_row_another_worker_holds_is_skipped(make_connection, bill_emulator, bill_app):
    import threading

    from django.db import connections, transaction

    connection = make_connection()
    bill_app.advance(25 * 60)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with transaction.atomic():
            BillConnection.objects.select_for_update().get(pk=connection.pk)
            held.set()
            release.wait(10)
        connections.close_all()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    try:
        assert refresh_connection(connection.pk) == BUSY
    finally:
        release.set()
        holder.join()
    assert counters(bill_emulator, connection)["session_info"] == 0
    assert refresh_connection(connection.pk) == KEPT_ALIVE


def test_refresh_and_keep_alive_on_demand(make_connection, bill_emulator, bill_app):
    connection = make_connection()
    refreshed = refresh(connection.tenant)  # valid: a keep-alive, no login
    assert counters(bill_emulator, connection)["session_info"] == 1
    assert counters(bill_emulator, connection)["logins"] == 1
    assert refreshed.status == ConnectionStatus.ACTIVE
    forced = refresh(connection.tenant, force=True)
    assert counters(bill_emulator, connection)["logins"] == 2
    assert forced.version == connection.version + 1
    bill_app.advance(10 * 60)
    kept = keep_alive(connection.tenant)
    assert counters(bill_emulator, connection)["session_info"] == 2
    assert (now() - kept.session_last_used_at).total_seconds() < 5
    assert AuditEvent.objects.filter(connection=connection, kind="kept_alive").count() == 2


def test_v2_sessions_are_kept_alive_with_get_session_info(make_connection, bill_emulator, bill_app):
    connection = make_connection(api_version="v2")
    bill_app.advance(25 * 60)
    assert refresh_connection(connection.pk) == KEPT_ALIVE
    assert counters(bill_emulator, connection)["session_info"] == 1
    assert counters(bill_emulator, connection)["logins"] == 1
    assert alive_at_bill(bill_emulator, connection)
    session = get_session(connection.tenant)
    assert session.request("POST", "/List/Vendor.json") is not None
