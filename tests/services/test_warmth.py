"""Keep warm or let lapse: the prediction (pure) and what the sweep and callers do with it."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from bill_integration.models import BillConnection
from bill_integration.services import get_session, warmth
from bill_integration.services.freshness import KEEP_ALIVE, due_action
from bill_integration.services.lifecycle import LOGGED_IN
from bill_integration.services.sweep import NOT_DUE, refresh_connection
from bill_integration.services.warmth import (
    HALF_LIFE,
    UNIT,
    VISIT_GAP,
    decide,
    note_visit,
    read_histogram,
    slot_of,
)
from tests.session_support import counters, stored

MONDAY = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday, 00:00 UTC


def history(**fields):
    """A row-like object with an empty usage history, created two months before MONDAY."""
    values = {
        "usage_last_at": None,
        "usage_visits": 0,
        "usage_histogram": "",
        "created_at": MONDAY - timedelta(days=60),
        "tenant_id": 1,
        "auth_method": "user_password",
        # A live session, used just now (warmth keeps only live sessions for their value).
        "status": "active",
        "session_id": "session",
        "session_last_used_at": MONDAY + timedelta(weeks=10),
    }
    return SimpleNamespace(**{**values, **fields})


def visits(row, moments):
    for moment in moments:
        note_visit(row, moment)
    return row


def nightly(weeks=3, hour=2):
    """A tenant whose sync runs every night at ``hour``:00 UTC for ``weeks`` weeks."""
    start = MONDAY - timedelta(weeks=weeks)
    row = history(created_at=start)  # linked when the syncs began
    return visits(row, [start + timedelta(days=day, hours=hour) for day in range(7 * weeks)])


# --- the stored history ---------------------------------------------------------------------


def test_a_visit_is_counted_once_however_many_calls_it_makes():
    row = history()
    assert note_visit(row, MONDAY + timedelta(hours=9)) is True
    for minute in range(1, 40, 5):  # calls every 5 minutes: one visit
        assert note_visit(row, MONDAY + timedelta(hours=9, minutes=minute)) is False
    assert row.usage_visits == 1
    counts = read_histogram(row.usage_histogram)
    assert counts[slot_of(MONDAY + timedelta(hours=9))] == UNIT
    assert sum(counts) == UNIT
    # A pause of VISIT_GAP starts the next visit.
    assert note_visit(row, row.usage_last_at + VISIT_GAP) is True
    assert row.usage_visits == 2


def test_history_decays_with_its_half_life_and_never_goes_back_in_time():
    row = visits(history(), [MONDAY + timedelta(hours=9)])
    later = MONDAY + timedelta(hours=9) + HALF_LIFE
    note_visit(row, later)
    counts = read_histogram(row.usage_histogram)
    assert slot_of(later) == slot_of(MONDAY + timedelta(hours=9))  # whole weeks later
    assert counts[slot_of(later)] == UNIT // 2 + UNIT  # half the old visit, plus the new one
    assert sum(counts) == UNIT // 2 + UNIT
    assert note_visit(row, MONDAY) is False  # an older call reported late changes nothing
    assert row.usage_last_at == later


def test_a_damaged_history_reads_as_empty_not_as_an_error():
    assert read_histogram("%%" * 224) == [0] * 168
    assert read_histogram("AAAA") == [0] * 168
    assert decide(history(usage_histogram="not hex"), MONDAY).keep_warm is False


def test_slots_count_hours_of_the_week_from_monday_utc():
    assert slot_of(MONDAY) == 0
    assert slot_of(MONDAY + timedelta(hours=26, minutes=59)) == 26
    assert slot_of(MONDAY + timedelta(weeks=5, hours=167)) == 167


# --- the prediction -------------------------------------------------------------------------


def test_a_new_connection_is_kept_warm_while_its_history_is_empty():
    fresh = history(created_at=MONDAY - timedelta(hours=3))
    assert decide(fresh, MONDAY).keep_warm is True
    assert decide(history(), MONDAY).keep_warm is False  # two months old, never used


def test_a_monthly_tenant_lapses_and_is_not_prewarmed():
    row = visits(history(), [MONDAY - timedelta(days=30, hours=-10), MONDAY - timedelta(days=1)])
    decision = decide(row, MONDAY + timedelta(hours=10))
    assert decision.keep_warm is False
    assert decision.value < 1
    assert decision.prewarm_at is None  # one visit at an hour is no habit


def test_a_busy_tenant_is_kept_warm_between_visits_and_lapses_for_the_weekend():
    days = [MONDAY - timedelta(weeks=6) + timedelta(days=day) for day in range(42)]
    workdays = [day for day in days if day.weekday() < 5]
    moments = [day + timedelta(hours=hour) for day in workdays for hour in (9, 11, 14, 16)]
    linked = MONDAY - timedelta(weeks=6)  # when the habit began
    row = visits(history(created_at=linked), moments + [MONDAY + timedelta(hours=9)])
    assert decide(row, MONDAY + timedelta(hours=10)).keep_warm is True
    saturday_noon = MONDAY - timedelta(days=2, hours=-12)
    weekend = decide(visits(history(created_at=linked), moments), saturday_noon, pressure=0.75)
    assert weekend.keep_warm is False
    # Prewarmed before Monday's first visit, not hours early.
    assert weekend.prewarm_at == MONDAY + timedelta(hours=9) - warmth.PREWARM_LEAD


def test_a_tenant_with_visits_spread_over_the_working_day_is_prewarmed_at_its_start():
    """Three visits a working day at different hours (no hour is likely on its own, each about
    30 %): after a weekend's lapse, a login is made as the working day starts, not paid by the
    first caller, and not hours early."""
    days = [MONDAY - timedelta(weeks=6) + timedelta(days=day) for day in range(42)]
    workdays = [day for day in days if day.weekday() < 5]
    # Week w's visits at 8 + (w + 3k) mod 10 o'clock, k = 0, 1, 2: a weekday's hour of the
    # week (08-17) sees a visit in about a third of the weeks.
    moments = [
        day + timedelta(hours=8 + ((day - days[0]).days // 7 + 3 * k) % 10, minutes=20)
        for day in workdays
        for k in range(3)
    ]
    row = visits(history(created_at=MONDAY - timedelta(weeks=6)), moments)
    row.session_last_used_at = row.usage_last_at  # lapsed over the weekend
    rates = warmth.weekly_rates(row, MONDAY)
    monday_hours = [rates[slot_of(MONDAY + timedelta(hours=h))] for h in range(8, 18)]
    assert max(1 - math.exp(-rate) for rate in monday_hours) < warmth.PREWARM_AT
    sunday = decide(row, MONDAY - timedelta(hours=12))
    assert sunday.keep_warm is False
    assert MONDAY + timedelta(hours=7) <= sunday.prewarm_at <= MONDAY + timedelta(hours=8)
    assert decide(row, sunday.prewarm_at).keep_warm is True
    assert sunday.prewarm_at in warmth.prewarm_moments(row, MONDAY - timedelta(hours=12))


def test_a_nightly_tenant_is_logged_in_just_before_its_usual_time():
    row = nightly(weeks=6)
    row.session_last_used_at = row.usage_last_at  # last night's session lapsed since
    two = MONDAY + timedelta(hours=2)
    lapsed = decide(row, MONDAY + timedelta(hours=1))
    assert lapsed.keep_warm is False  # a login now would only add keep-alives
    assert lapsed.prewarm_at == two - warmth.PREWARM_LEAD
    assert decide(row, lapsed.prewarm_at).keep_warm is True
    # Once tonight's sync has run, its session is not kept for the rest of the day.
    note_visit(row, two + timedelta(minutes=1))
    row.session_last_used_at = two + timedelta(minutes=1)
    after = decide(row, two + timedelta(minutes=30))
    before = decide(row, two - timedelta(hours=1))
    assert after.value < before.value / 10  # the day's visit is behind it, the next a day away


def test_pressure_cuts_the_least_valuable_tenants_first():
    busy = [MONDAY - timedelta(weeks=4) + timedelta(hours=hour) for hour in range(0, 24 * 28, 2)]
    often = visits(history(), busy)
    daily = nightly(weeks=4)
    moment = MONDAY + timedelta(hours=12)
    assert decide(often, moment).value > decide(daily, moment).value
    pressures = (0.0, 0.25, 0.5, 0.75, 1.0)
    cut = [p for p in pressures if not decide(daily, moment, pressure=p).keep_warm]
    assert cut, "some pressure must cut the daily tenant"
    assert decide(often, moment, pressure=cut[0]).keep_warm is True
    assert warmth.needed_value(0.0) < warmth.needed_value(0.5) < warmth.needed_value(1.0)


def test_a_daily_tenant_whose_hour_drifts_is_still_read_as_daily():
    start = MONDAY - timedelta(weeks=4)
    drift = [0, 50, -40, 95, 10, -70, 30]  # minutes around 09:00, a different hour some days
    moments = [start + timedelta(days=day, hours=9, minutes=drift[day % 7]) for day in range(28)]
    row = visits(history(created_at=start), moments)
    after_visit = MONDAY + timedelta(hours=11)
    row.session_last_used_at = after_visit
    wait = warmth.expected_wait(warmth.weekly_rates(row, after_visit), after_visit)
    assert timedelta(hours=20) <= wait <= timedelta(hours=25)  # tomorrow's visit, near surely
    assert decide(row, after_visit).keep_warm is True


def test_a_short_login_budget_makes_keeping_warm_worth_more():
    row = nightly(weeks=4)
    moment = MONDAY + timedelta(hours=3)  # tonight's sync is 23 hours away
    row.session_last_used_at = moment
    calm = decide(row, moment, pressure=0.9)
    short = decide(row, moment, pressure=0.9, login_pressure=1.0)
    assert short.value == pytest.approx(calm.value * warmth.LOGIN_PRESSURE_WORTH)
    assert (calm.keep_warm, short.keep_warm) == (False, True)


def test_settings_pin_tenants_or_keep_every_tenant_warm(bill_settings):
    row = history(tenant_id=42)
    assert decide(row, MONDAY).keep_warm is False
    bill_settings(ALWAYS_WARM=["42"])
    assert decide(row, MONDAY).keep_warm is True
    bill_settings(ALWAYS_WARM=[], WARMTH="always")
    assert decide(row, MONDAY).keep_warm is True


# --- the sweep and callers ------------------------------------------------------------------


def travel(bill_app, moment):
    bill_app.advance((moment - bill_app.now()).total_seconds())


def age(connection, days=60):
    """Make ``connection`` look linked ``days`` ago (out of the new-connection grace)."""
    BillConnection.objects.filter(pk=connection.pk).update(
        created_at=connection.created_at - timedelta(days=days)
    )


@pytest.mark.django_db
def test_the_sweep_lets_an_unlikely_tenant_lapse_and_its_next_call_logs_in_once(
    make_connection, bill_emulator, bill_app
):
    connection = make_connection()
    age(connection)
    bill_app.advance(31 * 60)  # idle past the keep-alive point
    assert due_action(stored(connection), bill_app.now()) is None
    assert refresh_connection(connection.pk) == NOT_DUE
    bill_app.advance(60 * 60)  # long past BILL's 35 idle minutes: lapsed, not logged in again
    assert refresh_connection(connection.pk) == NOT_DUE
    assert counters(bill_emulator, connection)["logins"] == 1  # the link's only
    first = get_session(connection.tenant)
    assert counters(bill_emulator, connection)["logins"] == 2  # the caller's one login
    first.request("GET", "/v3/vendors")
    second = get_session(connection.tenant)
    assert second.session_id == first.session_id  # reused: no second login
    assert counters(bill_emulator, connection)["logins"] == 2


@pytest.mark.django_db
def test_the_sweep_keeps_a_pinned_tenant_warm(
    make_connection, bill_emulator, bill_app, bill_settings
):
    connection = make_connection()
    age(connection)
    bill_settings(ALWAYS_WARM=[str(connection.tenant_id)])
    bill_app.advance(31 * 60)
    assert due_action(stored(connection), bill_app.now()) == KEEP_ALIVE


@pytest.mark.django_db
def test_a_regular_nightly_tenant_finds_a_warm_session_at_its_usual_time(
    make_connection, bill_emulator, bill_app
):
    connection = make_connection()
    age(connection, days=23)  # linked when its nightly syncs began
    start = bill_app.now()
    # Its history: a visit at 02:00 UTC every night for three weeks, the last one 24 hours ago.
    two_am = start.replace(hour=2, minute=0, second=0, microsecond=0) + timedelta(days=1)
    row = stored(connection)
    row.usage_visits, row.usage_histogram, row.usage_last_at = 0, "", None
    visits(row, [two_am - timedelta(days=day) for day in range(22, 0, -1)])
    BillConnection.objects.filter(pk=connection.pk).update(
        usage_visits=row.usage_visits,
        usage_histogram=row.usage_histogram,
        usage_last_at=row.usage_last_at,
    )
    logins = counters(bill_emulator, connection)["logins"]
    travel(bill_app, two_am - timedelta(minutes=50))
    assert refresh_connection(connection.pk) == NOT_DUE  # the session lapsed; too early
    travel(bill_app, two_am - timedelta(minutes=4))
    assert refresh_connection(connection.pk) == LOGGED_IN  # just before its usual time
    travel(bill_app, two_am + timedelta(minutes=1))
    get_session(connection.tenant).request("GET", "/v3/vendors")
    assert counters(bill_emulator, connection)["logins"] == logins + 1  # the sweep's only


@pytest.mark.django_db
def test_a_callers_calls_record_one_visit_each(make_connection, bill_emulator, bill_app):
    connection = make_connection()
    session = get_session(connection.tenant)
    for _ in range(5):
        session.request("GET", "/v3/vendors")
        bill_app.advance(90)
    row = stored(connection)
    assert row.usage_visits == 1
    assert row.usage_last_at is not None and row.usage_last_at >= bill_app.now() - timedelta(
        minutes=3
    )
    bill_app.advance(VISIT_GAP.total_seconds())
    session = get_session(connection.tenant)
    session.request("GET", "/v3/vendors")
    assert stored(connection).usage_visits == 2


@pytest.mark.django_db
def test_when_the_upkeep_share_runs_short_the_least_valuable_lapse_first(
    make_connection, bill_emulator, bill_app
):
    from bill_integration import limits

    busy, nightly_one = make_connection(), make_connection()
    for connection in (busy, nightly_one):
        age(connection, days=28)
    start = bill_app.now()
    row = stored(busy)  # a call every two hours for four weeks
    visits(row, [start - timedelta(hours=hour) for hour in range(24 * 28, 0, -2)])
    other = stored(nightly_one)  # one visit a day, twelve hours from now
    visits(other, [start - timedelta(days=day, hours=12) for day in range(28, 0, -1)])
    for saved in (row, other):
        BillConnection.objects.filter(pk=saved.pk).update(
            usage_visits=saved.usage_visits,
            usage_histogram=saved.usage_histogram,
            usage_last_at=saved.usage_last_at,
        )
    bill_app.advance(31 * 60)  # both idle long enough for a keep-alive
    moment = bill_app.now()
    assert due_action(stored(busy), moment) == due_action(stored(nightly_one), moment) == KEEP_ALIVE
    # 99 % of the upkeep share is spent this hour: the bar rises.
    for connection in (busy, nightly_one):  # (each has its own developer key here)
        fingerprint = stored(connection).dev_key_fingerprint
        limits.count_call(fingerprint, limits.KEEP_ALIVE, n=int(limits.upkeep_limit() * 0.99))
    assert refresh_connection(nightly_one.pk) == NOT_DUE  # lapses: worth least
    assert refresh_connection(busy.pk) == "kept_alive"  # kept: its next visit is near
