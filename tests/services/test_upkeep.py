"""The sweep within its share: upkeep bounded, renewals paced, callers' logins served first."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from bill_integration import limits
from bill_integration.exceptions import LoginBudgetExhausted
from bill_integration.models import BillConnection, ConnectionStatus
from bill_integration.services import get_session, refresh_due
from bill_integration.services.lifecycle import UPKEEP_DEFERRED
from bill_integration.services.sweep import due_connection_ids, refresh_connection

pytestmark = [pytest.mark.django_db]


def untouched(pk: int) -> bool:
    """Nothing failed: status, error, backoff and failure count as a healthy row has them."""
    row = BillConnection.objects.get(pk=pk)
    return (
        row.status == ConnectionStatus.ACTIVE
        and row.last_error_code == ""
        and row.next_attempt_at is None
        and row.consecutive_failures == 0
    )


def test_upkeep_never_exceeds_its_share_in_an_hour_with_more_tenants_than_it_keeps_warm(
    limiter_backend, make_connection, bill_app, bill_settings, bill_emulator, caplog
):
    """20 upkeep calls an hour; 16 tenants would need about 2 keep-alives an hour each."""
    bill_settings(UPKEEP_SHARE=0.001, LOGIN_BUDGET_PER_HOUR=150)
    share = limits.upkeep_limit()
    assert share == 20
    first = make_connection()
    dev_key = first.account.dev_key
    # Most recently used first: tenant i was last used i minutes ago.
    tenants = [first, *(make_connection(dev_key=dev_key, idle=60 * i) for i in range(1, 16))]
    fp = first.dev_key_fingerprint
    start = bill_emulator.state.counters(dev_key=dev_key)["calls"]
    outcomes: list[str] = []
    with caplog.at_level(logging.INFO, logger="bill_integration"):
        for _minute in range(0, 60, 2):  # a sweep every 2 minutes for an hour
            for pk in due_connection_ids():
                outcomes.append(refresh_connection(pk))
            assert limits.calls_last_hour(fp).upkeep <= share  # at every sweep
            bill_app.advance(120)
    made = bill_emulator.state.counters(dev_key=dev_key)["calls"] - start
    assert made <= share  # what BILL saw in the hour: never more than the share
    hour = limits.calls_last_hour(fp)
    assert hour.upkeep == made and hour.caller == 0
    assert UPKEEP_DEFERRED in outcomes and hour.deferred == outcomes.count(UPKEEP_DEFERRED)
    assert all(untouched(t.pk) for t in tenants)  # deferred, never failed or degraded
    assert any("upkeep_deferred" in r.getMessage() for r in caplog.records)


def test_when_a_sweep_finds_too_little_room_the_most_recently_used_are_kept(
    limiter_backend, make_connection, bill_app, bill_settings
):
    bill_settings(UPKEEP_SHARE=0.00015)  # 3 upkeep calls an hour
    first = make_connection(idle=31 * 60)
    tenants = [first] + [
        make_connection(dev_key=first.account.dev_key, idle=31 * 60 + i) for i in range(1, 5)
    ]
    tenants.reverse()  # least recently used first: the sweep must not take them in this order
    refresh_due()
    outcomes = {t.pk: BillConnection.objects.get(pk=t.pk).session_last_used_at for t in tenants}
    kept = [outcomes[t.pk] > bill_app.now() - timedelta(minutes=1) for t in tenants]
    assert kept == [False, False, True, True, True]


@pytest.fixture
def dead_sessions(make_connection, bill_app):
    """Six tenants on one developer key whose sessions BILL already ended (due for a login)."""
    first = make_connection(login=False, idle=40 * 60)
    dev_key = first.account.dev_key
    rest = [make_connection(dev_key=dev_key, login=False, idle=40 * 60 + i) for i in range(5)]
    return [first, *rest]


def test_interactive_logins_are_served_before_background_renewals_when_the_budget_is_short(
    limiter_backend, dead_sessions, bill_app, bill_settings, bill_emulator
):
    """Budget 5, 2 kept for callers: the sweep renews 3 and defers 3; callers still log in."""
    bill_settings(LOGIN_BUDGET_PER_HOUR=5, LOGIN_RESERVE_FOR_CALLERS=0.4, LOGINS_PER_MINUTE=None)
    fp = dead_sessions[0].dev_key_fingerprint
    outcomes = {pk: refresh_connection(pk) for pk in due_connection_ids()}
    assert sorted(outcomes.values()) == ["logged_in"] * 3 + [UPKEEP_DEFERRED] * 3
    waiting = [c for c in dead_sessions if outcomes[c.pk] == UPKEEP_DEFERRED]
    assert len(waiting) == 3 and all(untouched(c.pk) for c in waiting)

    # The sweep keeps trying each minute and keeps being deferred ...
    bill_app.advance(60)
    assert [refresh_connection(c.pk) for c in waiting] == [UPKEEP_DEFERRED] * 3
    # ... while callers who need a session now get theirs, from the reserve.
    for connection in waiting[:2]:
        get_session(connection.tenant).request("GET", "/v3/login/session")
    with pytest.raises(LoginBudgetExhausted):  # the whole budget is spent: 5 logins
        get_session(waiting[2].tenant)
    hour = limits.calls_last_hour(fp)
    assert (hour.background_login, hour.caller_login, hour.caller) == (3, 2, 2)
    assert bill_emulator.state.counters(dev_key=dead_sessions[0].account.dev_key)["logins"] == 5


def test_background_logins_are_paced_per_minute_and_callers_are_not(
    limiter_backend, dead_sessions, bill_app, bill_settings
):
    bill_settings(LOGINS_PER_MINUTE=2, LOGIN_BUDGET_PER_HOUR=150)
    fp = dead_sessions[0].dev_key_fingerprint
    per_sweep = []
    for _ in range(3):
        per_sweep.append([refresh_connection(pk) for pk in due_connection_ids()].count("logged_in"))
        bill_app.advance(61)
    assert per_sweep == [2, 2, 2]
    assert limits.calls_last_hour(fp).deferred == 4 + 2  # 4 waited the first minute, 2 the next

    for connection in dead_sessions[:3]:  # callers in one minute: not paced
        BillConnection.objects.filter(pk=connection.pk).update(session_last_used_at=None)
        get_session(connection.tenant)
    assert limits.calls_last_hour(fp).caller_login == 3


def test_a_renewal_the_pacing_refuses_keeps_the_live_session_alive(
    limiter_backend, make_connection, bill_app, bill_settings
):
    bill_settings(LOGINS_PER_MINUTE=1, MAX_SESSION_AGE=timedelta(days=7))
    old = make_connection(idle=31 * 60)
    other = make_connection(dev_key=old.account.dev_key, idle=31 * 60)
    for row in (old, other):
        BillConnection.objects.filter(pk=row.pk).update(
            session_obtained_at=bill_app.now() - timedelta(days=8)
        )
    outcomes = {pk: refresh_connection(pk) for pk in (old.pk, other.pk)}
    assert sorted(outcomes.values()) == ["kept_alive", "logged_in"]  # one waits, kept alive
    renewed, waiting = sorted(outcomes, key=lambda pk: outcomes[pk] != "logged_in")
    assert untouched(renewed)
    # Nothing failed, and the session eight days old stays in use while its renewal waits:
    # a caller gets it without a login of their own.
    row = BillConnection.objects.get(pk=waiting)
    assert (row.status, row.consecutive_failures) == (ConnectionStatus.ACTIVE, 0)
    assert row.last_error_code == "login_budget_exhausted"
    assert row.next_attempt_at <= bill_app.now() + timedelta(minutes=1)
    assert get_session(row.tenant).session_id == row.session_id
