"""The sweep: keep-alive while sessions live, logins only when needed, duplicates cost nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bill_integration.conf import now
from bill_integration.models import AuditEvent, BillConnection, ConnectionStatus
from bill_integration.services import get_session, keep_alive, refresh, refresh_due
from bill_integration.services.lifecycle import KEPT_ALIVE, LOGGED_IN
from bill_integration.services.sweep import (
    BUSY,
    MISSING,
    NOT_DUE,
    due_connection_ids,
    refresh_connection,
)
from tests.session_support import CLASSIC_CADENCE, counters, row_locked_elsewhere, stored

#: Most tests here are about one cadence, given explicitly (not the defaults, which
#: test_sweep_with_the_default_cadence... covers): keep alive after 20 idle minutes,
#: a 5-minute safety margin, a sweep every 5 minutes.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("classic_cadence")]


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
    make_connection, bill_emulator, bill_app, bill_settings
):
    bill_settings(MAX_SESSION_AGE=timedelta(hours=1))
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


@pytest.mark.postgresql(reason="row locks and concurrent writers: SQLite locks the whole database")
@pytest.mark.django_db(transaction=True)
def test_a_row_another_worker_holds_is_skipped(make_connection, bill_emulator, bill_app):
    connection = make_connection()
    bill_app.advance(25 * 60)
    with row_locked_elsewhere(connection):
        assert refresh_connection(connection.pk) == BUSY
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
    # Keep-alives are recorded on the row (last_refresh_at), not as one audit row each.
    assert (now() - kept.last_refresh_at).total_seconds() < 5
    assert AuditEvent.objects.filter(connection=connection, kind="kept_alive").count() == 0


def test_v2_sessions_are_kept_alive_with_get_session_info(make_connection, bill_emulator, bill_app):
    connection = make_connection(api_version="v2")
    bill_app.advance(25 * 60)
    assert refresh_connection(connection.pk) == KEPT_ALIVE
    assert counters(bill_emulator, connection)["session_info"] == 1
    assert counters(bill_emulator, connection)["logins"] == 1
    assert alive_at_bill(bill_emulator, connection)
    session = get_session(connection.tenant)
    assert session.request("POST", "/List/Vendor.json") is not None


def test_sweep_with_the_default_cadence_keeps_sessions_alive_with_one_call_per_half_hour(
    make_connection, bill_emulator, bill_app, bill_settings
):
    bill_settings.remove(*CLASSIC_CADENCE)  # KEEPALIVE_AFTER_IDLE derived: 30.5 min
    connections = [make_connection() for _ in range(3)]
    for _ in range(120):  # two hours, a sweep every minute (SWEEP_INTERVAL's default)
        bill_app.advance(60)
        refresh_due()
        for connection in connections:
            assert alive_at_bill(bill_emulator, connection)
            assert get_session(connection.tenant).session_id == stored(connection).session_id
    totals = bill_emulator.state.counters()
    assert totals["logins"] == 3
    # One keep-alive per tenant every ~31 minutes: 3 each in two hours (not 4-5 as at 20 min).
    assert totals["session_info"] == 3 * 3


def test_keep_alives_write_no_audit_rows_but_logins_and_failures_do(
    make_connection, bill_emulator, bill_app
):
    connection = make_connection()
    for _ in range(4):
        bill_app.advance(25 * 60)
        assert refresh_connection(connection.pk) == KEPT_ALIVE
    assert AuditEvent.objects.filter(connection=connection).count() == 0
    assert stored(connection).last_refresh_at is not None
    bill_app.advance(25 * 60)
    bill_emulator.state.set_fault("status", organization_id=connection.organization_id, status=503)
    assert refresh_connection(connection.pk).startswith("failed:")
    bill_emulator.state.clear_faults()
    bill_app.advance(3600)
    assert refresh_connection(connection.pk) in (KEPT_ALIVE, LOGGED_IN)
    kinds = list(
        AuditEvent.objects.filter(connection=connection)
        .order_by("pk")
        .values_list("kind", "detail")
    )
    assert [kind for kind, _ in kinds if kind == "status_changed"] == ["status_changed"] * 2
    assert all(kind != "kept_alive" for kind, _ in kinds)


def test_a_fenced_write_is_one_conditional_update(make_connection, bill_emulator, bill_app):
    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    connection = make_connection()
    bill_app.advance(25 * 60)
    with CaptureQueriesContext(db) as queries:
        assert refresh_connection(connection.pk) == KEPT_ALIVE
    # The connection row's writes (on SQLite the limiter's counts share this connection).
    table = f'UPDATE "{BillConnection._meta.db_table}"'
    updates = [q["sql"] for q in queries if q["sql"].startswith(table)]
    assert len(updates) == 1
    assert '"version" = ' in updates[0].split("WHERE")[1]  # fenced by the version read
    # A stale version still loses: nothing is written and ConflictError is raised.
    from bill_integration.exceptions import ConflictError
    from bill_integration.services.locking import fenced_write as _fenced_write

    row = BillConnection.objects.get(pk=connection.pk)
    row.status = ConnectionStatus.DEGRADED
    with pytest.raises(ConflictError):
        _fenced_write(row, row.version - 1, ["status"], bump=False)
    assert stored(connection).status == ConnectionStatus.ACTIVE
    _fenced_write(row, row.version, ["status", "session_id"], bump=True)
    assert stored(connection).status == ConnectionStatus.DEGRADED
    assert stored(connection).version == row.version == connection.version + 1
    assert stored(connection).session_id == row.session_id  # encrypted and decrypted back


def test_a_broken_row_does_not_stop_the_sweep_for_other_tenants(
    make_connection, bill_emulator, bill_app
):
    from cryptography.fernet import Fernet
    from django.test import override_settings

    good = make_connection()
    broken = make_connection()
    with override_settings(FIELD_ENCRYPTION_KEY=Fernet.generate_key().decode()):
        row = BillConnection.objects.without_secrets().get(pk=broken.pk)
        row.session_id = "!session-under-a-lost-key"
        row.save(update_fields=["session_id"])
    bill_app.advance(25 * 60)
    assert set(refresh_due()) == {good.pk, broken.pk}
    assert counters(bill_emulator, good)["session_info"] == 1
    bill_app.advance(25 * 60)
    assert due_connection_ids() == [good.pk]  # marked needs_relink: no longer swept
    marked = BillConnection.objects.without_secrets().get(pk=broken.pk)
    assert (marked.status, marked.last_error_code) == (
        ConnectionStatus.NEEDS_RELINK,
        "decryption_failed",
    )


def test_a_renewal_the_budget_refuses_keeps_the_live_session_in_use(
    make_connection, bill_emulator, bill_app, bill_settings, caplog
):
    from bill_integration import limits
    from bill_integration.services.lifecycle import RENEWAL_DEFERRED

    bill_settings(MAX_SESSION_AGE=timedelta(hours=1), LOGIN_BUDGET_PER_HOUR=1)
    connection = make_connection()
    first = stored(connection).session_id
    for _ in range(2):
        bill_app.advance(20 * 60)
        assert refresh_connection(connection.pk) == KEPT_ALIVE
    limits.take_login(connection.dev_key_fingerprint)  # someone else spent the hour's budget
    bill_app.advance(16 * 60)  # 56 minutes old: renewal due; idle 16 min: no keep-alive needed
    assert refresh_connection(connection.pk) == RENEWAL_DEFERRED
    row = stored(connection)
    assert (row.status, row.last_error_code) == (ConnectionStatus.ACTIVE, "login_budget_exhausted")
    assert limits.status(connection.dev_key_fingerprint).budget_shortfalls == 1
    assert "login budget exhausted" in caplog.text
    # Past MAX_SESSION_AGE the live session is still handed out, and kept alive by the sweep.
    bill_app.advance(6 * 60)  # 62 minutes old, idle 22 minutes
    assert get_session(connection.tenant).session_id == first
    assert refresh_due() == [connection.pk]
    assert counters(bill_emulator, connection)["logins"] == 1
    assert alive_at_bill(bill_emulator, connection)
    assert stored(connection).status == ConnectionStatus.ACTIVE
    bill_app.advance(5 * 60)
    assert get_session(connection.tenant).session_id == first
    # Once the budget frees up, the sweep renews the session.
    bill_app.advance(40 * 60)
    refresh_due()
    assert counters(bill_emulator, connection)["logins"] == 2
    renewed = stored(connection)
    assert renewed.session_id != first and renewed.last_error_code == ""
    assert get_session(connection.tenant).session_id == renewed.session_id


def test_a_renewal_the_pace_defers_keeps_the_live_session_for_callers(
    make_connection, bill_emulator, bill_app, bill_settings, caplog
):
    from bill_integration import limits
    from bill_integration.services.lifecycle import RENEWAL_DEFERRED

    bill_settings(MAX_SESSION_AGE=timedelta(hours=1), LOGINS_PER_MINUTE=1)
    connection = make_connection()
    first = stored(connection).session_id
    for _ in range(2):
        bill_app.advance(20 * 60)
        assert refresh_connection(connection.pk) == KEPT_ALIVE
    bill_app.advance(16 * 60)  # 56 minutes old: renewal due; idle 16 min: no keep-alive needed
    limits.take_login(connection.dev_key_fingerprint, background=True)  # this minute's one
    assert refresh_connection(connection.pk) == RENEWAL_DEFERRED
    row = stored(connection)
    assert (row.status, row.last_error_code) == (ConnectionStatus.ACTIVE, "login_budget_exhausted")
    assert row.next_attempt_at is not None and row.next_attempt_at <= now() + timedelta(minutes=1)
    assert limits.status(connection.dev_key_fingerprint).budget_shortfalls == 0  # not spent
    assert "login budget exhausted" not in caplog.text
    # Past MAX_SESSION_AGE a caller still gets the live session: no login to wait for.
    bill_app.advance(5 * 60)  # 61 minutes old, idle 21 minutes: alive at BILL
    assert get_session(connection.tenant).session_id == first
    assert counters(bill_emulator, connection)["logins"] == 1
    # The next sweep with room renews it.
    bill_app.advance(60)
    refresh_due()
    assert counters(bill_emulator, connection)["logins"] == 2
    renewed = stored(connection)
    assert renewed.session_id != first and renewed.last_error_code == ""


def test_get_session_keeps_a_live_session_when_the_budget_refuses_its_renewal(
    make_connection, bill_emulator, bill_app, bill_settings
):
    from bill_integration import limits

    bill_settings(MAX_SESSION_AGE=timedelta(hours=1), LOGIN_BUDGET_PER_HOUR=1)
    connection = make_connection()
    first = stored(connection).session_id
    for _ in range(2):
        bill_app.advance(20 * 60)
        get_session(connection.tenant).request("GET", "/v3/login/session")  # a busy tenant
    limits.take_login(connection.dev_key_fingerprint)  # someone else spent the hour's budget
    bill_app.advance(21 * 60)  # 61 minutes old, idle 21 minutes: alive at BILL
    assert get_session(connection.tenant).session_id == first
    row = stored(connection)
    assert (row.status, row.last_error_code) == (ConnectionStatus.ACTIVE, "login_budget_exhausted")
    assert counters(bill_emulator, connection)["logins"] == 1


# --- a fenced write lost during a login -------------------------------------------------------


@pytest.fixture
def version_moves_during_login(monkeypatch):
    """Move a connection's version on while its next login is in flight (once).

    On PostgreSQL a relink waits for the row lock the login holds, so the version can only move
    under a held lock through a writer that did not take it (or on SQLite, which has no row
    locks): a plain UPDATE of the version, in the login's own transaction, just before the
    real login at the emulator.
    """
    from django.db.models import F

    from bill_integration import limits

    original = limits.take_login
    moved: list[int] = []

    def take_login_while_someone_relinks(fingerprint, **kwargs):
        if not moved:
            moved.append(1)
            BillConnection.objects.update(version=F("version") + 1)
        return original(fingerprint)

    monkeypatch.setattr(limits, "take_login", take_login_while_someone_relinks)
    return moved


def test_a_sweep_login_that_loses_the_fenced_write_logs_out_and_writes_nothing(
    make_connection, bill_emulator, bill_app, version_moves_during_login
):
    connection = make_connection()
    bill_app.advance(40 * 60)  # surely expired: the sweep logs in
    before = stored(connection)
    audited = AuditEvent.objects.filter(connection=connection).count()
    assert refresh_connection(connection.pk) == "failed:conflict"
    after = stored(connection)
    # The row is the other writer's: same session, version as it left it, no failure recorded.
    assert after.session_id == before.session_id
    assert after.version == before.version + 1
    assert (after.status, after.last_error_code, after.consecutive_failures) == (
        ConnectionStatus.ACTIVE,
        "",
        0,
    )
    assert after.next_attempt_at is None
    totals = counters(bill_emulator, connection)
    assert totals["logins"] == 2 and totals["logouts"] == 1  # the fresh session was ended
    assert AuditEvent.objects.filter(connection=connection).count() == audited


def test_a_forced_refresh_that_loses_the_fenced_write_raises_conflict(
    make_connection, bill_emulator, bill_app, version_moves_during_login
):
    from bill_integration.exceptions import ConflictError

    connection = make_connection()
    before = stored(connection)
    with pytest.raises(ConflictError):
        refresh(connection.tenant, force=True)
    after = stored(connection)
    assert after.session_id == before.session_id and after.consecutive_failures == 0
    assert counters(bill_emulator, connection)["logouts"] == 1


def test_get_session_rereads_after_losing_the_fenced_write(
    make_connection, bill_emulator, bill_app, version_moves_during_login
):
    connection = make_connection()
    bill_app.advance(40 * 60)
    session = get_session(connection.tenant)  # the first login lost; the retry won
    assert session.session_id == stored(connection).session_id
    assert bill_emulator.state.peek_session(session.session_id) is not None
    totals = counters(bill_emulator, connection)
    assert totals["logins"] == 3 and totals["logouts"] == 1
