"""``next_due_at``: stored with every session write, exact against ``due_action``, and what
the sweep selects (a range of a partial index)."""

from __future__ import annotations

import random
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.db import connection as db

from bill_integration.auth_methods import METHODS
from bill_integration.conf import now
from bill_integration.models import BillConnection, ConnectionStatus
from bill_integration.services import freshness, link, refresh_due, warmth
from bill_integration.services.freshness import BUDGET_EXHAUSTED, due_action, next_due_at
from bill_integration.services.lifecycle import KEPT_ALIVE
from bill_integration.services.sweep import NOT_DUE, due_connection_ids, refresh_connection
from tests.session_support import stored

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("classic_cadence")]

#: classic_cadence's keep-alive after 20 idle minutes.
KEEP_AFTER = timedelta(minutes=20)
STATUSES = [choice for choice, _ in ConnectionStatus.choices]


def _randomise(row: object, rng: random.Random, t0) -> dict:
    """Random values for every column ``due_action`` reads (plain columns only)."""

    def maybe(delta_min: float, delta_max: float):
        if rng.random() < 0.2:
            return None
        return t0 + timedelta(minutes=rng.uniform(delta_min, delta_max))

    # The warmth decision's inputs: linked today (kept warm), or long ago with no calls since
    # (let lapse), or long ago by a tenant whose nightly sync runs at a random hour (prewarmed).
    kind = rng.choice(["new", "idle", "nightly"])
    created = t0 - timedelta(hours=rng.uniform(0, 20) if kind == "new" else 24 * 60)
    usage = SimpleNamespace(usage_last_at=None, usage_visits=0, usage_histogram="")
    if kind == "nightly":
        hour = rng.randrange(24)
        for day in range(30, 0, -1):
            warmth.note_visit(usage, t0 - timedelta(days=day, hours=hour))
    return {
        "created_at": created,
        **vars(usage),
        "status": rng.choice(STATUSES),
        "auth_method": rng.choice(list(METHODS)),
        "session_last_used_at": maybe(-180, 0),
        "session_obtained_at": maybe(-8 * 24 * 60, 0),
        "session_expires_at": maybe(-60, 180),
        "next_attempt_at": maybe(-60, 120) if rng.random() < 0.5 else None,
        "last_error_code": BUDGET_EXHAUSTED if rng.random() < 0.3 else "",
    }


def test_next_due_at_is_the_first_moment_due_action_answers():
    """Exact, not only a lower bound: due_action says nothing before it, something at it."""
    rng = random.Random(13)
    t0 = now()
    checked = 0
    for _ in range(3000):
        row = SimpleNamespace(tenant_id=1, **_randomise(None, rng, t0))
        row.session_id = None if rng.random() < 0.15 else "a session"
        at = t0 + timedelta(minutes=rng.uniform(-30, 60))
        due = next_due_at(row, at)
        probes = [at + timedelta(minutes=rng.uniform(0, 8 * 24 * 60)) for _ in range(20)]
        if due is None:
            assert all(due_action(row, p) is None for p in probes), vars(row)
            continue
        checked += 1
        assert due >= at
        assert due_action(row, due) is not None, vars(row)
        before = [p for p in probes if p < due] + [due - timedelta(microseconds=1)]
        assert all(due_action(row, p) is None for p in before if p >= at), vars(row)
    assert checked > 800  # the random rows reach every branch, not only "never due"


def test_the_due_query_and_due_action_agree_on_random_rows(make_connection):
    """The sweep's query (next_due_at <= at on swept statuses) selects every row due_action
    calls due, at moments long after the rows were written; a row it selects that is not due
    (any more) was due at its next_due_at (a prewarm hour that passed unswept)."""
    rng = random.Random(7)
    t0 = now()
    rows = [make_connection(login=False) for _ in range(120)]
    for row in rows:
        values = _randomise(row, rng, t0)
        if rng.random() < 0.15:
            values["session_id"] = None
        BillConnection.objects.filter(pk=row.pk).update(**values)
        fresh = BillConnection.objects.get(pk=row.pk)
        # What every writer stores with these values, written at t0.
        BillConnection.objects.filter(pk=row.pk).update(next_due_at=next_due_at(fresh, t0))
    loaded = list(BillConnection.objects.filter(pk__in=[r.pk for r in rows]))
    for minutes in [0, 1, 7, 19, 21, 31, 45, 90, 200, 60 * 24 * 7]:
        at = t0 + timedelta(minutes=minutes)
        expected = {row.pk for row in loaded if due_action(row, at) is not None}
        selected = set(due_connection_ids(at))
        assert expected <= selected, minutes
        for row in loaded:
            if row.pk in selected - expected:
                assert due_action(row, row.next_due_at) is not None, minutes
    assert any(due_action(row, t0 + timedelta(minutes=21)) for row in loaded)


def test_every_session_write_stores_when_the_row_is_next_due(
    make_connection, bill_emulator, bill_app, bill_settings
):
    connection = make_connection(idle=25 * 60)
    assert stored(connection).next_due_at <= now()  # written by the builder: due now
    assert refresh_connection(connection.pk) == KEPT_ALIVE
    row = stored(connection)
    assert row.next_due_at == row.session_last_used_at + KEEP_AFTER > now()

    # A failure: degraded, backing off; due again when the backoff ends (and not before).
    bill_app.advance(25 * 60)
    bill_emulator.state.set_fault("status", organization_id=connection.organization_id, status=502)
    refresh_connection(connection.pk)
    row = stored(connection)
    assert row.status == ConnectionStatus.DEGRADED
    assert row.next_due_at == row.next_attempt_at > now()
    assert connection.pk not in due_connection_ids()

    # A login (the session BILL ended): the new session's keep-alive moment.
    bill_emulator.state.clear_faults()
    bill_app.advance((row.next_attempt_at - now()).total_seconds())
    bill_emulator.state.invalidate_sessions(organization_id=connection.organization_id)
    refresh_connection(connection.pk)
    row = stored(connection)
    assert row.status == ConnectionStatus.ACTIVE and row.version == connection.version + 1
    assert row.next_due_at == row.session_last_used_at + KEEP_AFTER > now()

    # Waiting for a person: never due.
    BillConnection.objects.filter(pk=connection.pk).update(status=ConnectionStatus.NEEDS_RELINK)
    row = stored(connection)
    row.save()
    assert stored(connection).next_due_at is None


def test_link_stores_next_due_at(bill_connection, bill_app, bill_settings):
    connection = bill_connection(link=True)
    row = stored(connection)
    assert row.next_due_at == row.session_last_used_at + KEEP_AFTER
    assert link  # the service the fixture used


def test_a_session_a_caller_used_is_rescheduled_not_refreshed(
    make_connection, bill_emulator, bill_app, bill_settings
):
    """The hot path's use mark leaves next_due_at alone (the row only becomes due later); the
    sweep picks the row, finds it not due under the lock, stores the right moment."""
    from bill_integration.services import get_session

    connection = make_connection(idle=10 * 60)
    due_before = stored(connection).next_due_at
    bill_app.advance(5 * 60)
    session = get_session(connection.tenant)
    session.mark_used()
    row = stored(connection)
    assert row.session_last_used_at > connection.session_last_used_at
    assert row.next_due_at == due_before  # untouched by the hot path
    bill_app.advance((due_before - now()).total_seconds())
    assert due_connection_ids() == [connection.pk]
    calls = bill_emulator.state.counters()["calls"]
    assert refresh_due() == [connection.pk]
    assert refresh_connection(connection.pk) == NOT_DUE
    assert bill_emulator.state.counters()["calls"] == calls  # no BILL call for it
    assert stored(connection).next_due_at == row.session_last_used_at + (KEEP_AFTER)
    assert due_connection_ids() == []


def test_undecryptable_rows_are_never_due_and_due_again_once_restored(make_connection, bill_app):
    from bill_integration.services import undecryptable

    connection = make_connection(idle=25 * 60)
    assert undecryptable.mark_undecryptable(connection.pk)
    assert stored(connection).next_due_at is None
    assert due_connection_ids() == []
    assert undecryptable.restore_if_decryptable(connection.pk)
    assert stored(connection).next_due_at <= now()
    assert due_connection_ids() == [connection.pk]


@pytest.mark.postgresql(reason="the partial index and EXPLAIN are PostgreSQL's")
def test_the_due_query_is_served_by_the_partial_index(make_connection):
    make_connection(idle=25 * 60)
    query = BillConnection.objects.filter(
        status__in=freshness.SWEPT_STATUSES, next_due_at__lte=now()
    ).values_list("pk", flat=True)
    sql, params = query.query.sql_with_params()
    with db.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # a tiny table would be scanned
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "bill_conn_next_due" in plan


def test_the_migration_fills_next_due_at_without_decrypting(make_connection, bill_app):
    import importlib

    from django.apps import apps

    migration = importlib.import_module("bill_integration.migrations.0007_next_due_at")
    due, fresh = make_connection(idle=25 * 60), make_connection(idle=0)
    relink = make_connection(idle=25 * 60)
    BillConnection.objects.filter(pk=relink.pk).update(status=ConnectionStatus.NEEDS_RELINK)
    BillConnection.objects.update(next_due_at=None)
    migration.fill_next_due_at(apps, SimpleNamespace(connection=db))
    assert stored(due).next_due_at <= now()
    assert stored(fresh).next_due_at == stored(fresh).session_last_used_at + KEEP_AFTER
    assert stored(relink).next_due_at is None


def test_renewals_of_connections_linked_together_spread_over_the_jitter_window(bill_settings):
    """1,000 connections linked in the same second renew for MAX_SESSION_AGE over ~17 hours
    (10% of 7 days), evenly, each always at the same moment; not in one sweep. (Tenants kept
    warm: renewing a session its tenant will let lapse is not worth a login.)"""
    bill_settings(MAX_SESSION_AGE=timedelta(days=7), WARMTH="always")
    t0 = now()
    rows = [
        BillConnection(pk=pk, session_obtained_at=t0, session_last_used_at=t0, session_id="s")
        for pk in range(1, 1001)
    ]
    latest = t0 + timedelta(days=7) - timedelta(minutes=5)  # classic_cadence's margin
    window = timedelta(days=7) * freshness.RENEWAL_SPREAD
    moments = [freshness.renewal_at(row) for row in rows]
    assert all(latest - window <= m <= latest for m in moments)
    assert moments == [freshness.renewal_at(row) for row in rows]  # deterministic
    by_hour: dict[int, int] = {}
    for moment in moments:
        hour = int((latest - moment) / timedelta(hours=1))
        by_hour[hour] = by_hour.get(hour, 0) + 1
    assert len(by_hour) == 17  # 16.8 hours: every hour of the window has renewals
    assert max(by_hour.values()) <= 1000 / 16.8 * 1.2  # none more than 20% over the mean
    # What the sweep does: due by age over the window, not all in one sweep.
    for row in rows:  # kept alive a minute ago (due only by age)
        row.session_last_used_at = latest - window + timedelta(hours=8) - timedelta(minutes=1)
    halfway = latest - window + timedelta(hours=8)
    due = sum(due_action(row, halfway) == freshness.LOGIN for row in rows)
    assert 400 < due < 560  # about 8/16.8 of them
    for row in rows:
        row.session_last_used_at = t0
    # Kept alive meanwhile: the next due moment is the keep-alive, the renewal comes later.
    assert all(next_due_at(row, t0) == t0 + KEEP_AFTER for row in rows)
