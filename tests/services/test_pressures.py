"""How short a developer key's hour runs (the pressures warmth weighs), from its counts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bill_integration import limits
from bill_integration.conf import now
from bill_integration.services.sweep import budget_pressures, pressures_of

HOUR = datetime(2026, 11, 2, 9, tzinfo=UTC)


def counts(**kinds: int) -> limits.HourOfCalls:
    return limits.HourOfCalls(start=HOUR, **kinds)


def test_an_hour_with_room_weighs_nothing():
    assert pressures_of(counts(caller=9_000, keep_alive=5_000, caller_login=60)) == (0.0, 0.0)


def test_upkeep_past_most_of_its_share_raises_the_call_pressure(bill_settings):
    bill_settings(UPKEEP_SHARE=0.6)  # 12,000 upkeep calls; the bar rises from 70 % of them
    calls, logins = pressures_of(counts(keep_alive=10_000, background_login=200))
    assert calls == pytest.approx(0.5)  # 10,200 = 85 %: half way from 70 % to all of it
    assert logins == 1.0  # 200 background logins spend the whole default budget of 150


def test_callers_filling_bills_hour_raise_the_call_pressure_without_upkeep():
    calls, _ = pressures_of(counts(caller=18_000))  # 90 % of 20,000, from 80 %: half way
    assert calls == pytest.approx(0.5)


def test_logins_of_both_kinds_count_against_the_apps_login_budget(bill_settings):
    bill_settings(LOGIN_BUDGET_PER_HOUR=100)  # pressure from 50 logins, full at 100
    assert pressures_of(counts(caller_login=40, background_login=35))[1] == pytest.approx(0.5)
    bill_settings(LOGIN_BUDGET_PER_HOUR=300)
    assert pressures_of(counts(caller_login=40, background_login=35))[1] == 0.0


@pytest.mark.django_db
def test_the_sweep_weighs_its_rolling_hours_counts(limiter_backend, bill_settings):
    bill_settings(LOGIN_BUDGET_PER_HOUR=100)
    fingerprint = "f" * 16
    limits.count_call(fingerprint, limits.CALLER_LOGIN, n=60)
    limits.count_call(fingerprint, limits.BACKGROUND_LOGIN, n=15)
    row = type("Row", (), {"dev_key_fingerprint": fingerprint})()
    assert budget_pressures(row, now()) == pressures_of(limits.calls_last_hour(fingerprint))
    assert budget_pressures(row, now())[1] == pytest.approx(0.5)
