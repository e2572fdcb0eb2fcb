"""An upper bound: the most tenants of a usage trace that *any* policy can serve on one key.

"Served" is the fleet benchmark's pass rule (``bench/fleet.py``) for the measured week
(hours 0..167 of ``bench/trace.py``): every visit's first call finds a session BILL still
accepts (no dead session handed out, nobody waits for BILL to refuse), and in every clock hour
BILL's limits hold: at most 20,000 calls (callers' own calls, logins and keep-alives
together) and at most 200 logins. BILL ends a session after 35 idle minutes; a keep-alive is
one call; a login is one call and one login. (``UPKEEP_SHARE`` is our policy, not BILL's
limit: the bound does not impose it, so it also bounds the stricter pass rule.)

**The problem.** For each visit ``v`` starting in the week, with ``e`` the end of the
tenant's previous visit (any week) and ``s`` the first call of ``v``, the session must
survive the gap ``(e, s)``: either *bridge* it (keep-alives at most 35 minutes apart) or
*log in* at some moment ``t`` in the gap and bridge ``(t, s)``. Callers' calls are fixed.
Choose, per gap, an option and its timing so every hour's calls and logins fit.

**The relaxation** (each step can only make the problem easier, so its answer is an upper
bound on the real one):

1. *Windows.* Cut the gap, from ``s`` backwards, into disjoint 35-minute windows
   ``[s-35(j+1), s-35j)``. Any schedule that keeps the session alive has a call in every window
   lying inside ``(e, s)`` (else two calls would be 35 minutes or more apart). We charge one
   call per such window, at the cheapest hour the window touches; the login option in window
   ``k`` is charged at the window's cheapest hour, plus the windows ``j < k``. Real schedules
   need at least this much in total and at these hours or dearer. Gap ends are rounded inwards
   to whole minutes (shorter gaps are cheaper). Calls or logins outside the measured week cost
   nothing (the benchmark does not measure its warm-up day either).
   1b. *Whole hours.* A second, disjoint set of windows gives a second lower bound of the same
   gap: ``[s-35, s)`` (at the cheaper hour it touches) and, before it, ``[h:00, h:35)`` for
   each hour ``h`` whose window lies inside the bridged part; with a login at ``t``, the login
   plus those windows after ``t``. Step 1's windows may each straddle two hours and be
   charged at the cheaper, so a session carried across a full peak hour could pay nothing
   there; these cannot. Every real schedule costs at least both, so each gap is charged the
   larger (of each bound's cheapest option).
2. *Lagrangian (LP) duality.* Relax "every option is 0 or 1" and price each resource: a
   price ``lam[h] >= 0`` per call and ``mu[h] >= 0`` per login in hour ``h``. If the N tenants
   could be served, then for *every* price vector the priced cost of the cheapest option per
   gap, plus the priced callers' calls, is at most the priced capacity
   ``sum(20000 lam[h] + 200 mu[h])`` (each real schedule's priced cost is at least the
   cheapest option's and at most the capacity, hour by hour). So one price vector for which
   the cheapest options cost more than the capacity is a *certificate*: N tenants cannot be
   served. The cheapest option per gap is found exactly in O(1) with prefix sums and a
   range-minimum table along each 35-minute residue class of the minute grid.
3. *Prefix monotonicity.* The trace of N tenants is the first N tenants of a larger one,
   and every priced cost is >= 0, so a certificate at N holds for every larger N. The bound is
   the largest N below the smallest certified N.

The prices are searched by multiplicative weights (a resource's price grows with its priced
overload), starting from prices on the hours callers already fill; any price vector gives a valid certificate, so a
weak search only makes the bound looser (higher), never wrong. The search never claims an N
is servable: the bound may be above what is truly possible, never below. A second, trivial
certificate is also checked: one hour in which callers alone exceed 20,000 calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import trace as tr

CALLS_PER_HOUR = 20_000
LOGINS_PER_HOUR = 200
IDLE_MINUTES = 35
HOURS = tr.WEEK // tr.HOUR
WEEK_MINUTES = tr.WEEK // 60
#: Steps of the price search. Each step can only lower the bound (the best certificate is kept);
#: 80 steps take about 35 s on the benchmark machine, and 30 left it about 2 % higher.
ITERATIONS = 80


@dataclass(frozen=True)
class Gap:
    tenant: int
    end: int  # minute the previous visit ended (rounded up)
    start: int  # minute the next visit starts (rounded down)


def gaps_of(tenant: tr.Tenant) -> list[Gap]:
    """The gap before each visit whose first call is in the measured week."""
    gaps = []
    previous: tr.Visit | None = None
    for visit in tenant.visits:
        if 0 <= visit.start < tr.WEEK:
            if previous is None:
                previous = tr.Visit(visit.start - tr.WEEK * 5, 1, 1)  # no history: a long gap
            gaps.append(Gap(tenant.index, -(-previous.end // 60), visit.start // 60))
        previous = visit
    return gaps


def callers_by_hour(tenant: tr.Tenant) -> dict[int, int]:
    hours: dict[int, int] = {}
    for visit in tenant.visits:
        if visit.end >= 0 and visit.start < tr.WEEK:
            for hour, count in tr.calls_by_hour(visit).items():
                hours[hour] = hours.get(hour, 0) + count
    return hours


class Problem:
    """The relaxed problem for the first ``count`` tenants of a trace."""

    def __init__(self, trace: tr.Trace, count: int) -> None:
        trace.grow(count)
        self.count = count
        self.gaps = [g for t in trace.tenants[:count] for g in gaps_of(t)]
        self.callers = [callers_by_hour(t) for t in trace.tenants[:count]]
        self.lowest = min(
            (g.start - IDLE_MINUTES * (self._windows(g) + 2) for g in self.gaps), default=0
        )
        self.lowest -= self.lowest % IDLE_MINUTES  # residue class r starts at lowest + r
        self.length = (WEEK_MINUTES + IDLE_MINUTES - self.lowest) // IDLE_MINUTES + 1

    @staticmethod
    def _windows(gap: Gap) -> int:
        """Windows lying wholly inside the gap: keep-alives a bridge needs at least."""
        width = gap.start - gap.end
        return max(0, -(-width // IDLE_MINUTES) - 1)

    def callers_only(self) -> int:
        """The largest prefix N whose callers alone fit in 20,000 calls every hour."""
        totals = [0] * HOURS
        for n, hours in enumerate(self.callers):
            for hour, calls in hours.items():
                totals[hour] += calls
                if totals[hour] > CALLS_PER_HOUR:
                    return n
        return self.count

    def evaluate(self, lam: list[float], mu: list[float], prefix: int) -> dict[str, Any]:
        """Cheapest option per gap at these prices: per-tenant priced costs (all tenants) and
        the hours each chosen option uses (for the first ``prefix`` tenants)."""
        length, lowest, idle = self.length, self.lowest, IDLE_MINUTES

        def hours_of(m: int) -> tuple[int, int]:
            # Window [m - 35, m): the hours (of the week) it touches; -1 outside the week.
            a, b = (m - idle) // 60, (m - 1) // 60
            return (a if 0 <= a < HOURS else -1, b if 0 <= b < HOURS else -1)

        def cheapest(m: int, price: list[float]) -> tuple[float, int]:
            a, b = hours_of(m)
            pa = price[a] if a >= 0 else 0.0
            pb = price[b] if b >= 0 else 0.0
            return (pa, a) if pa <= pb else (pb, b)

        both = [lam[h] + mu[h] for h in range(HOURS)]
        classes = []
        for r in range(idle):
            w, wh, p, v, mh = [], [], [], [], []
            total = 0.0
            for x in range(length):
                m = lowest + r + idle * x
                price, hour = cheapest(m, lam)
                w.append(price)
                wh.append(hour)
                total += price
                p.append(total)
                login, hour = cheapest(m, both)
                v.append(login - total)
                mh.append(hour)
            # Range minima of (value, index) of v.
            classes.append((p, _RangeMin(list(zip(v, range(length), strict=True))), wh, mh))

        hourly = self._hourly_option(lam, both)

        cost = [0.0] * self.count
        calls = [0.0] * HOURS
        logins = [0.0] * HOURS
        diffs = [[0] * (length + 1) for _ in range(idle)]
        for n, hours in enumerate(self.callers):
            cost[n] = sum(lam[h] * c for h, c in hours.items())
            if n < prefix:
                for h, c in hours.items():
                    calls[h] += c
        for gap in self.gaps:
            k = self._windows(gap)
            r = (gap.start - lowest) % idle
            a = (gap.start - lowest) // idle
            p, login_after, wh, mh = classes[r]
            bridge = p[a] - p[a - k]
            best = login_after(a - k, a)
            login = p[a] + best[0]
            # Both are lower bounds of any real schedule's priced cost: so is the larger. The
            # hours each option uses (for the price search) are the windows' option's.
            cost[gap.tenant] += max(min(bridge, login), hourly(gap) if k else 0.0)
            if gap.tenant < prefix:
                if bridge <= login:
                    first = a - k + 1
                else:
                    x = best[1]
                    first = x + 1
                    if mh[x] >= 0:
                        logins[mh[x]] += 1
                        calls[mh[x]] += 1
                diffs[r][first] += 1
                diffs[r][a + 1] -= 1
        for r in range(idle):
            wh = classes[r][2]
            running = 0
            for x in range(length):
                running += diffs[r][x]
                if running and wh[x] >= 0:
                    calls[wh[x]] += running
        return {"cost": cost, "calls": calls, "logins": logins}

    def _hourly_option(self, lam: list[float], both: list[float]) -> Callable[[Gap], float]:
        """The second lower bound of a gap's priced cost (module docstring, step 1b), as a
        function of the gap: O(1) each, with prefix sums and range minima over hours."""
        first = min((g.end // 60 for g in self.gaps), default=0) - 1  # hour index 0

        def price(values: list[float], h: int) -> float:
            return values[h] if 0 <= h < HOURS else 0.0  # outside the week: free

        size = HOURS + 1 - first
        calls = [price(lam, first + i) for i in range(size)]
        logins = [price(both, first + i) for i in range(size)]
        prefix = [0.0]
        for value in calls:
            prefix.append(prefix[-1] + value)
        # A login in hour i, less the hourly windows up to and including hour i.
        after_login = _RangeMin([logins[i] - prefix[i + 1] for i in range(size)])
        login_in = _RangeMin(logins)

        def cost(gap: Gap) -> float:
            e, s = gap.end, gap.start
            h0, h1 = (s - IDLE_MINUTES) // 60 - first, (s - 1) // 60 - first
            last = min(calls[h0], calls[h1])  # a call in [s - 35, s)
            # Hours h with [h:00, h:35) inside (e, s - 35): a call each.
            bridged_first = e // 60 + 1 - first
            bridged_last = (s - 2 * IDLE_MINUTES) // 60 - first
            hours = prefix[bridged_last + 1] - prefix[bridged_first]
            best = last + (hours if bridged_last >= bridged_first else 0.0)
            best = min(best, logins[h0], logins[h1])  # the login in [s - 35, s)
            # A login at t in (e, s - 35), in hour g: then [s - 35, s) and the hourly windows
            # of the hours after g.
            low, high = (e + 1) // 60 - first, (s - IDLE_MINUTES - 1) // 60 - first
            top = min(high, bridged_last)
            if low <= top:
                best = min(best, last + prefix[bridged_last + 1] + after_login(low, top))
            rest = max(low, bridged_last + 1)
            if rest <= high:
                best = min(best, last + login_in(rest, high))
            return best

        return cost


class _RangeMin:
    """The minimum of ``values[i..j]`` (both included) in O(1), from a sparse table."""

    def __init__(self, values: list[Any]) -> None:
        self.table = [list(values)]
        step = 1
        while step * 2 <= len(values):
            prev = self.table[-1]
            self.table.append([min(prev[i], prev[i + step]) for i in range(len(prev) - step)])
            step *= 2

    def __call__(self, i: int, j: int) -> Any:
        level = (j - i + 1).bit_length() - 1
        row = self.table[level]
        return min(row[i], row[j + 1 - (1 << level)])


def certified(cost: list[float], capacity: float) -> int | None:
    """The smallest N whose first N tenants' priced cost exceeds the capacity, if any."""
    total = 0.0
    for n, c in enumerate(cost):
        total += c
        if total > capacity * (1 + 1e-9):
            return n + 1
    return None


def upper_bound(
    trace: tr.Trace, *, start: int = 60_000, iterations: int = ITERATIONS, quiet: bool = True
) -> dict[str, Any]:
    """The bound for ``trace`` (grown as needed) and how it was certified."""
    trace.grow(start)
    probe = Problem(trace, start)
    callers_only = probe.callers_only()
    pool = min(start, callers_only + 1)
    problem = Problem(trace, pool) if pool < start else probe
    best = pool if callers_only < start else pool + 1  # certified infeasible from here on
    how = "callers alone exceed 20,000 calls in an hour"
    # Start with the call prices on the hours callers already fill (a sharp power of their
    # load), a little on logins; the search moves them from there.
    load = [0] * HOURS
    for hours in problem.callers:
        for hour, calls in hours.items():
            load[hour] += calls
    peak = max(load) or 1
    lam = [(x / peak) ** 30 for x in load]
    mu = [0.01 * sum(lam) / HOURS] * HOURS
    scale = sum(CALLS_PER_HOUR * x for x in lam) + sum(LOGINS_PER_HOUR * y for y in mu)
    lam, mu = [x / scale for x in lam], [y / scale for y in mu]
    history = []
    for step in range(iterations):
        prefix = max(1, best - 1)
        result = problem.evaluate(lam, mu, prefix)
        capacity = sum(CALLS_PER_HOUR * x for x in lam) + sum(LOGINS_PER_HOUR * y for y in mu)
        n = certified(result["cost"], capacity)
        if n is not None and n < best:
            best, how = n, f"prices of step {step + 1}"
        history.append(n)
        if not quiet:
            print(f"  bound step {step + 1}: certificate at N={n}, best {best}", flush=True)
        rate = 0.5 / math.sqrt(step + 1)
        lam = [
            x * math.exp(rate * (c / CALLS_PER_HOUR - 1))
            for x, c in zip(lam, result["calls"], strict=True)
        ]
        mu = [
            y * math.exp(rate * (c / LOGINS_PER_HOUR - 1))
            for y, c in zip(mu, result["logins"], strict=True)
        ]
        scale = sum(CALLS_PER_HOUR * x for x in lam) + sum(LOGINS_PER_HOUR * y for y in mu)
        lam = [x / scale for x in lam]
        mu = [y / scale for y in mu]
    return {
        "bound": best - 1,
        "callers_only": callers_only,
        "how": how,
        "history": history,
        "gaps": len(problem.gaps),
    }
