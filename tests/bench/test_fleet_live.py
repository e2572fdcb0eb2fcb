"""The fleet benchmark's live developer key holds the budget's rules, and interleaving tenants
in time changes nothing about a tenant's own week when the key never refuses.

Not timed. The key is the model of what every tenant of a developer key shares
(``bench/fleet_live.py``); a rule it failed to hold would let the benchmark count upkeep the
limiter refuses.
"""

from __future__ import annotations

import pytest

from bench import fleet, fleet_live
from bench import fleet_model as fm
from bench import trace as tr

from .test_fleet_adversary import tenant_with_gaps

QUIET = [0] * fleet_live.MINUTES  # no callers' calls at all
MONDAY_NOON = 12 * tr.HOUR  # inside the measured week


@pytest.fixture
def budget(settings):
    settings.BILL_INTEGRATION = {
        **settings.BILL_INTEGRATION,
        "LOGIN_BUDGET_PER_HOUR": 10,
        "LOGIN_RESERVE_FOR_CALLERS": 0.2,
        "LOGINS_PER_MINUTE": 3,
        "UPKEEP_SHARE": 0.001,  # 20 upkeep calls an hour
    }


def test_background_logins_are_paced_per_minute(budget):
    key = fleet_live.LiveKey(1, 1, QUIET)
    for _ in range(3):
        assert key.admit("background_login", MONDAY_NOON)
        key.record("background_login", MONDAY_NOON)
    assert not key.admit("background_login", MONDAY_NOON + 30)
    assert key.admit("background_login", MONDAY_NOON + 60)  # the next minute


def test_background_logins_leave_the_callers_reserve(budget):
    key = fleet_live.LiveKey(1, 1, QUIET)
    for minute in range(4):  # 8 of 10 logins may be background ones; 2 callers' logins first
        at = MONDAY_NOON + minute * 60
        if minute < 2:
            key.record("caller_login", at)
        while key.admit("background_login", at):
            key.record("background_login", at)
    assert key.rolling["background_login"] == 6  # 10 - 2 reserved - 2 callers' logins
    assert not key.admit("background_login", MONDAY_NOON + 59 * 60)
    assert key.admit("background_login", MONDAY_NOON + 61 * 60)  # the first minutes left the hour


def test_upkeep_stops_at_the_share_and_gives_way_to_callers(budget):
    key = fleet_live.LiveKey(1, 1, QUIET)
    for _ in range(20):
        assert key.admit("keep_alive", MONDAY_NOON)
        key.record("keep_alive", MONDAY_NOON)
    assert not key.admit("keep_alive", MONDAY_NOON)
    busy = list(QUIET)
    busy[int(MONDAY_NOON // 60) - fleet_live.FIRST] = 20_000  # callers fill the hour first
    crowded = fleet_live.LiveKey(1, 1, busy)
    assert not crowded.admit("keep_alive", MONDAY_NOON + 1)
    assert crowded.pressures(MONDAY_NOON + 1)[0] == 1.0


def test_a_room_smaller_than_one_sampled_action_is_a_chance(budget):
    admitted = 0
    for seed in range(200):  # 100 tenants, 1 sampled: one sampled login stands for 100
        key = fleet_live.LiveKey(100, 1, QUIET, seed=seed)
        admitted += key.admit("background_login", MONDAY_NOON)  # room: 3 of 100
    assert 0 < admitted < 20  # about 3 % of 200


def test_interleaving_changes_no_tenant_s_own_week(settings):
    settings.BILL_INTEGRATION = {**settings.BILL_INTEGRATION, "WARMTH": "predicted"}
    tenants = [tenant_with_gaps(31), tenant_with_gaps(90, visits=5)]
    tenants[1].index = 1
    alone = [fm.simulate_ours(tenant, fm.Adversary()) for tenant in tenants]
    together = fleet._interleaved(tenants, fm.Adversary(), fm.OPEN_KEY)
    assert together == alone
    assert sum(out.handed_out for out in together) > 0


class _FullFrom(fm.OpenKey):
    """A developer key with no room for upkeep between ``start`` and ``end`` (seconds); it
    keeps what it let through."""

    def __init__(self, start: float, end: float) -> None:
        self.start, self.end = start, end
        self.done: list[tuple[str, float]] = []

    def pressures(self, at: float) -> tuple[float, float]:
        return (1.0, 0.0) if self.start <= at < self.end else (0.0, 0.0)

    def admit(self, kind: str, at: float) -> bool:
        return not self.start <= at < self.end

    def record(self, kind: str, at: float) -> None:
        self.done.append((kind, at))


def test_a_session_lost_to_a_full_key_in_its_usual_hours_is_prewarmed_before_the_next_visit(
    settings,
):
    """The trace's tenant 108 (daily, visits between 23:00 and 01:00 UTC, none at weekends)
    starts the warm-up (Friday 00:00) with a live session the sweep keeps alive. The key has no
    room for upkeep from 00:30 to 02:00, so the keep-alive due at 00:50 is refused until the
    session lapses inside the tenant's likely hours. The row stays due (``lifecycle.deferred``
    writes nothing) and, once those hours pass, is due at its next prewarm moment
    (``freshness.next_due_at``): Monday's visit at 00:42 finds a session logged in ahead of
    it. (Before, the model forgot the row until a caller came, and that caller waited: the
    fleet benchmark's one busy/daily wait.)"""
    settings.BILL_INTEGRATION = {**settings.BILL_INTEGRATION, "WARMTH": "predicted"}
    tenant = tr.Trace(109).tenants[108]
    friday, monday = -3 * tr.DAY, 0  # the warm-up's first day; the measured week's
    visits = [round(v.start / 60) for v in tenant.visits if friday <= v.start < tr.HOUR]
    assert tenant.kind == "daily"
    assert visits == [monday + 42]  # Monday 00:42; none from Friday on
    full = _FullFrom(friday + 30 * 60, friday + 2 * tr.HOUR)
    out = fm.simulate_ours(tenant, fm.Adversary(), key=full)
    assert out.waited == 0
    done = [(kind, at) for kind, at in full.done if friday + 30 * 60 <= at < monday + 42 * 60]
    assert done[0][0] == "background_login"  # the session lapsed; this is the prewarm
    assert monday - 6 * tr.HOUR < done[0][1]  # on Sunday night, not on Friday
