"""A published, seeded usage trace: when N tenants of one developer key call BILL, for weeks.

The fleet benchmark (``bench/fleet.py``) and its upper bound (``bench/bound.py``) read the
same trace. Tenant ``i`` is drawn from its own RNG (``Random(f"{seed}:{i}")``), so the trace
of N tenants is the first N tenants of any larger trace: more tenants only ever add load.

**Parameters** (the issue fixes the class shares and 10-50 calls per busy/daily visit; the
rest are choices stated here and in ``docs/benchmarks.md``; nothing was tuned to a target):

* Classes: 20 % busy or daily, split ``busy`` 4 % (2-5 visits each working day at random
  times in working hours: "several visits a day" is a minority of the 20 %), ``daily`` 14 %
  (one visit each working day near the tenant's own habitual time, +-60 min) and ``nightly``
  2 % (strictly regular: a sync every day, weekends too, at the tenant's own fixed minute
  between 01:00 and 04:00 local, "a nightly sync at 02:00"; few, since the issue puts the
  busy/daily class in working hours); ``weekly`` 40 % (one visit a week on a working day, a quarter of them at a fixed
  weekday and time); ``rare`` 40 % (monthly or rarer: one visit every 30-120 days, on a
  working day, so about 1 in 11 of them visits in a given week).
* Calls per visit: 10-50 (uniform) for busy, daily and nightly; 5-20 for weekly and rare (the
  issue does not fix theirs: a weekly review is lighter than a working session). The calls of
  a visit are evenly spaced 5-60 s apart (drawn per visit), so a visit lasts up to 49 minutes
  and never idles a session within it.
* Working hours: visits start 08:00-18:00 local, Monday to Friday local.
* Time zones (share of tenants, UTC offset): a SaaS selling mostly in the Americas with
  European and Asia-Pacific customers: -8 h 12 %, -7 h 5 %, -6 h 10 %, -5 h 18 %, -3 h 5 %,
  0 h 8 %, +1 h 15 %, +2 h 5 %, +5:30 7 %, +8 h 8 %, +10 h 7 %.
* Time: seconds from Monday 2026-01-05 00:00 UTC (week 0, the measured week). Weeks -3..-1
  are drawn from the same per-tenant parameters (different draws) as the history a policy may
  learn from; week 1 exists so visits that local time puts past the week's end are real.

**The arithmetic** (``load_summary`` computes it for any N). Per tenant and working day,
callers make about 0.04 x 3.5 x 30 + 0.14 x 30 + 0.02 x 30 + 0.40 x 12.5 / 5 + 0.40 x 12.5 x
(7 / 75) / 5 = 10.3 calls, so 30,000 tenants make about 310,000 calls a working day (measured
on the trace: 1.56 million in the week, 9,300 an hour on average, 20,700 in the busiest hour,
Tuesday 16:00 UTC, when the Americas' and Europe's working hours overlap). That busiest hour
alone is over BILL's 20,000 calls an hour at 30,000 tenants, before any keep-alive or login.
Keeping all 6,000 busy/daily tenants warm around the clock would cost 6,000 x 60/35 = 10,300
keep-alives an hour; logging each of them in once a working day instead costs about 6,000
logins a day against BILL's 4,800 (200 an hour); weekly and rare tenants add about 1,900
logins a day. The bound (``bench/bound.py``) says what mix of the two fits, and so how many
tenants any policy can serve on this trace.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

SEED = 20260105
START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday, 00:00 UTC: second 0 of week 0
HOUR = 3600
DAY = 24 * HOUR
WEEK = 7 * DAY
#: First and last week drawn (week 0 is measured; earlier weeks are history).
FIRST_WEEK, LAST_WEEK = -3, 1

#: (kind, share of tenants)
KINDS = (("busy", 0.04), ("daily", 0.14), ("nightly", 0.02), ("weekly", 0.40), ("rare", 0.40))
#: The issue's "20 % busy or daily".
FREQUENT = frozenset({"busy", "daily", "nightly"})
#: (UTC offset in minutes, share of tenants)
ZONES = (
    (-480, 0.12),
    (-420, 0.05),
    (-360, 0.10),
    (-300, 0.18),
    (-180, 0.05),
    (0, 0.08),
    (60, 0.15),
    (120, 0.05),
    (330, 0.07),
    (480, 0.08),
    (600, 0.07),
)
WORK_START, WORK_END = 8 * HOUR, 18 * HOUR
CALLS = {
    "busy": (10, 50),
    "daily": (10, 50),
    "nightly": (10, 50),
    "weekly": (5, 20),
    "rare": (5, 20),
}
SPACING = (5, 60)  # seconds between a visit's calls (drawn per visit)


@dataclass(frozen=True)
class Visit:
    """``calls`` caller calls at ``start``, ``start + spacing``, ... (seconds from START)."""

    start: int
    calls: int
    spacing: int

    @property
    def end(self) -> int:
        return self.start + (self.calls - 1) * self.spacing

    def times(self) -> range:
        return range(self.start, self.end + 1, self.spacing)


@dataclass
class Tenant:
    index: int
    kind: str
    offset: int  # minutes east of UTC
    habit: int = 0  # seconds after local midnight (daily, nightly, regular weekly)
    weekday: int = -1  # a regular weekly tenant's local weekday (0 = Monday), else -1
    period: float = 0.0  # days between a rare tenant's visits
    phase: float = 0.0  # days: a rare tenant's first visit after day 0 of week -3
    visits: list[Visit] = field(default_factory=list)


def _pick(rng: random.Random, table: tuple[tuple[object, float], ...]) -> object:
    roll, total = rng.random(), 0.0
    for value, share in table:
        total += share
        if roll < total:
            return value
    return table[-1][0]


def _visit(rng: random.Random, tenant: Tenant, local_day: int, local_second: int) -> Visit:
    low, high = CALLS[tenant.kind]
    utc = local_day * DAY + local_second - tenant.offset * 60
    return Visit(utc, rng.randint(low, high), rng.randint(*SPACING))


def _working_second(rng: random.Random) -> int:
    return rng.randrange(WORK_START, WORK_END)


def make_tenant(index: int, seed: int = SEED) -> Tenant:
    """Tenant ``index`` with its visits for weeks FIRST_WEEK..LAST_WEEK (sorted, no overlap)."""
    rng = random.Random(f"{seed}:{index}")
    kind = str(_pick(rng, KINDS))
    tenant = Tenant(index, kind, int(_pick(rng, ZONES)))  # type: ignore[call-overload]
    if kind == "daily":
        tenant.habit = rng.randrange(WORK_START + HOUR, WORK_END - HOUR)
    elif kind == "nightly":
        tenant.habit = rng.randrange(1 * HOUR, 4 * HOUR, 60)
    elif kind == "weekly" and rng.random() < 0.25:
        tenant.weekday, tenant.habit = rng.randrange(5), _working_second(rng)
    elif kind == "rare":
        tenant.period = rng.uniform(30, 120)
        tenant.phase = rng.uniform(0, tenant.period)
    visits: list[Visit] = []
    first_day, last_day = FIRST_WEEK * 7, (LAST_WEEK + 1) * 7
    for day in range(first_day, last_day):
        working = day % 7 < 5
        if kind == "busy" and working:
            starts = sorted(_working_second(rng) for _ in range(rng.randint(2, 5)))
            visits += [_visit(rng, tenant, day, s) for s in starts]
        elif kind == "daily" and working:
            jitter = rng.randint(-HOUR, HOUR)
            visits.append(_visit(rng, tenant, day, tenant.habit + jitter))
        elif kind == "nightly":
            visits.append(_visit(rng, tenant, day, tenant.habit))
        elif kind == "weekly" and day % 7 == 0:
            weekday = tenant.weekday if tenant.weekday >= 0 else rng.randrange(5)
            second = tenant.habit if tenant.weekday >= 0 else _working_second(rng)
            visits.append(_visit(rng, tenant, day + weekday, second))
    if kind == "rare":
        moment = first_day + tenant.phase
        while moment < last_day:
            day = int(moment // 1)
            day += (7 - day % 7) % 7 if day % 7 >= 5 else 0  # a weekend visit moves to Monday
            visits.append(_visit(rng, tenant, day, _working_second(rng)))
            moment += tenant.period
    visits.sort(key=lambda v: v.start)
    # Visits of one tenant never overlap: a visit that would start inside the previous one
    # starts a minute after it instead.
    for n in range(1, len(visits)):
        if visits[n].start <= visits[n - 1].end + 60:
            v = visits[n]
            visits[n] = Visit(visits[n - 1].end + 60, v.calls, v.spacing)
    tenant.visits = visits
    return tenant


class Trace:
    """The first ``count`` tenants of the seeded trace (grown on demand, never redrawn)."""

    def __init__(self, count: int = 0, seed: int = SEED) -> None:
        self.seed = seed
        self.tenants: list[Tenant] = []
        self.grow(count)

    def grow(self, count: int) -> None:
        while len(self.tenants) < count:
            self.tenants.append(make_tenant(len(self.tenants), self.seed))

    def __len__(self) -> int:
        return len(self.tenants)


def visits_between(tenant: Tenant, start: int, end: int) -> list[Visit]:
    """The tenant's visits that start in ``[start, end)``."""
    return [v for v in tenant.visits if start <= v.start < end]


def calls_by_hour(visit: Visit, start: int = 0, end: int = WEEK) -> Counter[int]:
    """The visit's calls per hour index (hours from START) within ``[start, end)``."""
    hours: Counter[int] = Counter()
    for moment in visit.times():
        if start <= moment < end:
            hours[moment // HOUR] += 1
    return hours


def load_summary(trace: Trace, count: int) -> dict[str, object]:
    """The arithmetic of the measured week for the first ``count`` tenants: callers' calls per
    hour (mean, busiest), visits and calls by class, tenants with a visit."""
    per_hour: Counter[int] = Counter()
    by_kind: Counter[str] = Counter()
    visits_by_kind: Counter[str] = Counter()
    tenants_by_kind: Counter[str] = Counter()
    for tenant in trace.tenants[:count]:
        tenants_by_kind[tenant.kind] += 1
        for visit in visits_between(tenant, -HOUR, WEEK):
            hours = calls_by_hour(visit)
            per_hour.update(hours)
            if 0 <= visit.start < WEEK:
                visits_by_kind[tenant.kind] += 1
            by_kind[tenant.kind] += sum(hours.values())
    busiest = max(per_hour.values(), default=0)
    return {
        "tenants": count,
        "tenants_by_kind": dict(tenants_by_kind),
        "visits_by_kind": dict(visits_by_kind),
        "calls_by_kind": dict(by_kind),
        "calls": sum(per_hour.values()),
        "mean_per_hour": sum(per_hour.values()) / (WEEK // HOUR),
        "busiest_hour": busiest,
        "busiest_hour_at": (
            START + timedelta(hours=max(per_hour, key=per_hour.__getitem__)) if per_hour else None
        ),
        "per_hour": [per_hour[h] for h in range(WEEK // HOUR)],
    }


def moment(second: float) -> datetime:
    """Seconds from START as an aware datetime."""
    return START + timedelta(seconds=second)
