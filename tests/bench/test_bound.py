"""The fleet benchmark's upper bound charges each gap no more than any real schedule costs.

Not timed. ``bench/bound.py`` certifies that N tenants cannot be served when, at some prices,
the cheapest way to bridge every gap costs more than BILL's capacity. That is only sound if
the charge of each gap is a lower bound of every schedule that really keeps the session
alive (calls less than 35 minutes apart, or a login and then such calls). Random prices and
random schedules check it; a gap whose session crosses a priced hour shows the second bound
(whole hours) charging what the first one lets straddle.
"""

from __future__ import annotations

import random

from bench import bound as bd
from bench import trace as tr


class _Trace:
    def __init__(self, tenants: list[tr.Tenant]) -> None:
        self.tenants = tenants

    def grow(self, count: int) -> None:
        pass


def _problem(end_minute: int, start_minute: int) -> bd.Problem:
    """One tenant, one gap in the measured week: a visit before the week whose last call is at
    ``end_minute``, and one call at ``start_minute``."""
    tenant = tr.Tenant(index=0, kind="busy", offset=0)
    tenant.visits = [
        tr.Visit(-60, calls=2, spacing=end_minute * 60 + 60),  # ends at end_minute
        tr.Visit(start_minute * 60, calls=1, spacing=1),
    ]
    problem = bd.Problem(_Trace([tenant]), 1)  # type: ignore[arg-type]
    assert [(g.end, g.start) for g in problem.gaps] == [(end_minute, start_minute)]
    return problem


def _gap_charge(problem: bd.Problem, lam: list[float], mu: list[float]) -> float:
    callers = sum(lam[h] * c for h, c in problem.callers[0].items())
    return problem.evaluate(lam, mu, 1)["cost"][0] - callers


def _schedule_cost(
    lam: list[float], mu: list[float], e: int, s: int, login: int | None, every: int
) -> float:
    """A real schedule: a login at ``login`` (or none), then a call every ``every`` minutes."""
    price = lambda h: lam[h] if 0 <= h < bd.HOURS else 0.0  # noqa: E731
    cost, last = 0.0, e
    if login is not None:
        hour = login // 60
        cost += price(hour) + (mu[hour] if 0 <= hour < bd.HOURS else 0.0)
        last = login
    while s - last >= bd.IDLE_MINUTES:
        last += every
        cost += price(last // 60)
    return cost


def test_no_real_schedule_costs_less_than_the_gap_is_charged():
    rng = random.Random(7)
    for _ in range(150):
        e = rng.randrange(0, 5 * 24 * 60)
        s = e + rng.choice([rng.randrange(36, 200), rng.randrange(200, 2 * 24 * 60)])
        problem = _problem(e, s)
        lam = [rng.random() ** 3 for _ in range(bd.HOURS)]
        mu = [rng.random() ** 3 for _ in range(bd.HOURS)]
        charged = _gap_charge(problem, lam, mu)
        assert charged > 0
        for _ in range(20):
            every = rng.randrange(1, bd.IDLE_MINUTES)
            login = rng.choice([None, rng.randrange(e + 1, s)])
            assert _schedule_cost(lam, mu, e, s, login, every) >= charged - 1e-9


def test_a_session_carried_across_a_priced_hour_pays_for_it():
    """Only hour 10 costs calls; logins cost a lot everywhere. The session is kept from 08:00
    to 12:15: whichever way, some call falls in hour 10. The 35-minute windows counted back
    from 12:15 start at 11:40, 11:05, 10:30, 09:55: the two that touch hour 10 also touch a
    free hour, so the first bound alone charges nothing there; the whole-hours bound does."""
    problem = _problem(8 * 60, 12 * 60 + 15)
    lam = [0.0] * bd.HOURS
    lam[10] = 1.0
    mu = [100.0] * bd.HOURS
    assert _gap_charge(problem, lam, mu) == 1.0
    # And a real schedule pays exactly that: one call in hour 10, none 35 minutes apart.
    calls = [8 * 60 + 30, 9 * 60, 9 * 60 + 30, 9 * 60 + 59, 10 * 60 + 33, 11 * 60 + 7]
    calls += [11 * 60 + 41]
    events = [8 * 60, *calls, 12 * 60 + 15]
    assert all(b - a < bd.IDLE_MINUTES for a, b in zip(events, events[1:], strict=False))
    assert sum(lam[m // 60] for m in calls) == 1.0
