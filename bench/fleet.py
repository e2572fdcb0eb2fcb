"""Benchmark 6, the fleet: how many tenants of a realistic week one developer key serves, per
policy, side by side on one trace, each against the upper bound any policy could reach.

The trace is ``bench/trace.py`` (published and seeded: 20 % busy or daily, 40 % weekly, 40 %
monthly or rarer, in their own time zones; its docstring has the parameters and the
arithmetic). The bound is ``bench/bound.py`` (a relaxation of the problem "serve every visit
with a session BILL accepts within 20,000 calls and 200 logins an hour"; its docstring argues
why it is a true upper bound).

**Policies**, each on the same trace:

* ``today``: keep every linked tenant's session alive around the clock: the real
  ``freshness.due_action`` with setting ``WARMTH = "always"`` (the behaviour benchmark 2
  measures), ``MAX_SESSION_AGE`` renewals included.
* ``nango``: Nango's BILL provider as Nango implements it (NangoHQ/nango:
  ``packages/shared/lib/auth/bill.ts`` sets ``expires_at`` = login + 35 min;
  ``packages/shared/lib/services/connections/credentials/refresh.ts`` refreshes, i.e. logs
  in again, when a connection is fetched within ``REFRESH_MARGIN_MS`` = 15 min of
  ``expires_at`` (``connections/utils.ts``); ``packages/server/lib/crons/refreshConnections.ts``
  runs every 10 minutes and refreshes connections not fetched for a day
  (``getStaleConnections({days: 1})``)). Modelled: every caller call fetches the connection;
  a session older than 20 minutes is replaced by a login the caller waits for; a connection
  not fetched for 24 hours is logged in by the cron at the next 10-minute tick.
* ``naive``: log in every 30 minutes, hand out the last session.
* ``every_request``: log in for every caller call.
* ``new``: the real ``freshness.due_action`` with ``WARMTH = "predicted"``, which keeps a
  session warm or lets it lapse by the real ``warmth.decide(connection, at, pressure=...,
  login_pressure=...)`` against the developer key as it stands (below);
  a lapsed tenant's next ``get_session`` logs in; regular tenants are logged in at
  ``prewarm_at``. Its usage history is what ``warmth.note_visit`` recorded over the trace's
  three earlier weeks.

**The model** (faster than real code; each piece is said in ``bench/fleet_model.py``): each
tenant's week in simulated time, BILL reduced to each session's idle timer. Callers' own
calls at N tenants are counted exactly from the trace's first N tenants; what a policy adds
(keep-alives, logins, replays) is simulated for a sample (the trace's first ``sample``
tenants) and scaled by N / sample. **The developer key is
live** (``bench/fleet_live.py``, :func:`search`): a pass at N runs every sampled tenant
interleaved in time order (:func:`_interleaved`) against the rolling hour of a key of N
tenants, so each sweep look weighs the key's pressures as they stand (``sweep.pressures_of``,
the function ``sweep.budget_pressures`` uses) and each keep-alive or background login is let
through or deferred by the budget's rules (``UPKEEP_SHARE``, ``LOGINS_PER_MINUTE``,
``LOGIN_RESERVE_FOR_CALLERS`` of ``LOGIN_BUDGET_PER_HOUR``) at its own moment, as the limiter
does; the new policy's N is the largest served by its own pass. ``today`` runs without the
live key (pinned warm, pressure changes nothing; the share is a pass criterion for it, not
enforced).

**Served at N** = in every clock hour of the measured week: callers' calls + logins +
keep-alives + replays <= 20,000 (no BDC_1144); logins <= 200; upkeep (keep-alives and
background logins) <= ``UPKEEP_SHARE`` x 20,000; and no dead session handed out in the sample.
Tenants served = the largest such N (bisection: every term grows with N).

**The adversary** (a second run, a smaller sample): BILL's real idle limit is 30 minutes (the
app is configured for 35), each session may be dropped at random (0.2 % an hour), the sweep is
off for 3 hours on day 2 and every sweep action runs up to 2 minutes late. Dead sessions handed
out are split into "the app could have known" (dead by BILL's documented 35-minute rule) and
"BILL ended it unannounced", and each is followed to its replay after one re-login.
"""

from __future__ import annotations

import heapq
from collections import Counter
from typing import Any

from . import bound as bd
from . import fleet_model as fm
from . import trace as tr

POLICIES = ("today", "nango", "naive", "every_request", "new")
LABELS = {
    "today": "today: keep everyone alive (WARMTH=always)",
    "nango": "Nango: log in on use after 20 min; daily cron",
    "naive": "naive: log in every 30 min",
    "every_request": "log in on every request",
    "new": "new: keep warm or let lapse (WARMTH=predicted)",
}
SAMPLE = 2000
ADVERSARY_SAMPLE = 300
ADVERSARY = fm.Adversary(
    idle=30 * 60,
    drop_per_hour=0.002,
    sweep_off=(tr.DAY + 9 * tr.HOUR, tr.DAY + 12 * tr.HOUR),
    sweep_late=120,
)
CALLS, LOGINS = bd.CALLS_PER_HOUR, bd.LOGINS_PER_HOUR
#: The new policy's search (``search``): at most this many passes (one pass of the 2,000
#: sample takes 20-40 s); settled when the largest N served by its own pass and the smallest
#: not served by its own are within this share of each other.
PASSES, SETTLED_N = 12, 0.02
HOURS = bd.HOURS


def _set_warmth(policy: str) -> None:
    from django.conf import settings

    from bill_integration.conf import bill_settings

    settings.BILL_INTEGRATION = {**settings.BILL_INTEGRATION, "WARMTH": policy}
    bill_settings.reload()


def simulate(
    policy: str, tenants: list[tr.Tenant], adversary: fm.Adversary, *, key: Any = None
) -> dict[str, Any]:
    """Run ``policy`` for ``tenants``; sums per hour and per class. Ours with a ``key`` (a
    ``fleet_live.LiveKey``) runs every tenant interleaved in time order (:func:`_interleaved`),
    so each meets the developer key's rolling hour as it stands; else one tenant at a time."""
    from django.conf import settings

    base = dict(settings.BILL_INTEGRATION)
    hourly: dict[str, Counter[int]] = {
        k: Counter() for k in ("keep_alives", "background_logins", "caller_logins", "replays")
    }
    by_kind: dict[str, Counter[tuple[str, int]]] = {"logins": Counter(), "keep_alives": Counter()}
    callers: Counter[int] = Counter()
    totals: Counter[str] = Counter()
    try:
        if policy in ("today", "new"):
            _set_warmth("always" if policy == "today" else "predicted")
        if policy in ("today", "new") and key is not None:
            outcomes = _interleaved(tenants, adversary, key)
        elif policy in ("today", "new"):
            outcomes = [fm.simulate_ours(tenant, adversary) for tenant in tenants]
        else:
            outcomes = [fm.simulate_baseline(policy, tenant, adversary) for tenant in tenants]
        for tenant, out in zip(tenants, outcomes, strict=True):
            for name, counter in hourly.items():
                counter.update(getattr(out, name))
            for hour, count in (out.caller_logins + out.background_logins).items():
                by_kind["logins"][tenant.kind, hour] += count
            for hour, count in out.keep_alives.items():
                by_kind["keep_alives"][tenant.kind, hour] += count
            totals["deferred"] += out.deferred
            callers.update(bd.callers_by_hour(tenant))
            frequent = tenant.kind in tr.FREQUENT
            for name in ("handed_out", "waited", "dead_knowable", "dead_unannounced"):
                totals[name] += getattr(out, name)
                if frequent:
                    totals[f"{name}_frequent"] += getattr(out, name)
            totals["replayed_after_one_login"] += out.replayed_after_one_login
    finally:
        settings.BILL_INTEGRATION = base
        from bill_integration.conf import bill_settings

        bill_settings.reload()
    return {
        "hourly": hourly,
        "by_kind": by_kind,
        "callers": callers,
        "totals": totals,
        "tenants": len(tenants),
    }


def _interleaved(tenants: list[tr.Tenant], adversary: fm.Adversary, key: Any) -> list[fm.Outcome]:
    """Every tenant's week at once: the earliest next event of any tenant goes first."""
    outcomes = [fm.Outcome() for _ in tenants]
    steps = [
        fm.ours_steps(tenant, adversary, out, key=key)
        for tenant, out in zip(tenants, outcomes, strict=True)
    ]
    queue = []
    for number, step in enumerate(steps):
        first = next(step, None)  # sets the tenant up; the time of its first event
        if first is not None:
            queue.append((first, number))
    heapq.heapify(queue)
    while queue:
        _, number = heapq.heappop(queue)
        following = next(steps[number], None)  # does that event; the time of the next
        if following is not None:
            heapq.heappush(queue, (following, number))
    return outcomes


class Capacity:
    """Callers' calls of every prefix of the trace (exact) and a policy's scaled sample."""

    def __init__(self, trace: tr.Trace, largest: int) -> None:
        trace.grow(largest)
        self.tenants = trace.tenants[:largest]
        self.per_tenant = [bd.callers_by_hour(t) for t in trace.tenants[:largest]]
        self.largest = largest

    def callers(self, n: int) -> list[int]:
        hours = [0] * HOURS
        for tenant in self.per_tenant[:n]:
            for hour, calls in tenant.items():
                hours[hour] += calls
        return hours

    def check(self, run: dict[str, Any], n: int, share: float) -> dict[str, Any]:
        """Whether ``n`` tenants are served; the busiest hour's figures and what failed."""
        scale = n / run["tenants"]
        h = run["hourly"]
        callers = self.callers(n)
        busiest = {"calls": 0.0, "logins": 0.0, "upkeep": 0.0}
        worst: dict[str, int] = {}
        for hour in range(HOURS):
            logins = (h["background_logins"][hour] + h["caller_logins"][hour]) * scale
            upkeep = (h["keep_alives"][hour] + h["background_logins"][hour]) * scale
            calls = callers[hour] + logins + (h["keep_alives"][hour] + h["replays"][hour]) * scale
            for name, value in (("calls", calls), ("logins", logins), ("upkeep", upkeep)):
                if value > busiest[name]:
                    busiest[name], worst[name] = value, hour
        why = []
        if busiest["calls"] > CALLS:
            why.append(f"{busiest['calls']:,.0f} calls in an hour (BDC_1144)")
        if busiest["logins"] > LOGINS:
            why.append(f"{busiest['logins']:,.0f} logins in an hour")
        if busiest["upkeep"] > share * CALLS:
            why.append(f"upkeep {busiest['upkeep']:,.0f} calls in an hour, over the share")
        dead = run["totals"]["dead_knowable"] + run["totals"]["dead_unannounced"]
        if dead:
            why.append(f"{dead} dead sessions handed out")
        return {"tenants": n, "ok": not why, "why": "; ".join(why), "hours": worst, **busiest}

    def served(self, run: dict[str, Any], share: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """The largest N served (<= largest) and the first that is not."""
        low, high = 0, self.largest + 1  # low passes (0 trivially), high fails (or is beyond)
        while high - low > 1:
            middle = (low + high) // 2
            if self.check(run, middle, share)["ok"]:
                low = middle
            else:
                high = middle
        passed = self.check(run, low, share) if low else {"tenants": 0, "ok": True, "why": ""}
        failed = (
            self.check(run, high, share)
            if high <= self.largest
            else {"tenants": high, "ok": False, "why": "beyond the bound's pool"}
        )
        return passed, failed


def per_tenant_hour(run: dict[str, Any]) -> dict[str, float]:
    """BILL calls and logins per tenant-hour of the sample (callers' calls included)."""
    h = run["hourly"]
    tenant_hours = run["tenants"] * HOURS
    logins = sum(h["background_logins"].values()) + sum(h["caller_logins"].values())
    calls = (
        sum(run["callers"].values())
        + logins
        + sum(h["keep_alives"].values())
        + sum(h["replays"].values())
    )
    upkeep = sum(h["keep_alives"].values()) + sum(h["background_logins"].values())
    return {
        "calls": calls / tenant_hours,
        "logins": logins / tenant_hours,
        "upkeep": upkeep / tenant_hours,
    }


def run(
    *,
    sample: int = SAMPLE,
    adversary_sample: int = ADVERSARY_SAMPLE,
    quiet: bool = False,
    policies: str = ",".join(POLICIES),
) -> dict[str, Any]:
    """The whole benchmark; ``policies`` (comma-separated, e.g. ``--policies=new``) runs only
    those, for trials with ``--no-write`` (the report of a partial run is a short summary)."""
    from bill_integration.conf import bill_settings

    from . import fleet_live

    chosen = tuple(p for p in POLICIES if p in str(policies).split(","))
    if not chosen:
        raise ValueError(f"--policies: choose from {', '.join(POLICIES)}")

    share = float(getattr(bill_settings, "UPKEEP_SHARE", 0.6))
    trace = tr.Trace(sample)
    with _timer() as bound_time:
        limit = bd.upper_bound(trace, quiet=quiet)
    if not quiet:
        print(f" upper bound: {limit['bound']:,} tenants ({limit['how']})", flush=True)
    capacity = Capacity(trace, limit["bound"] + 1)
    tenants = trace.tenants[:sample]
    results: dict[str, Any] = {}
    served_n, found = 0, {"passes": []}
    for policy in chosen:
        with _timer() as took:
            if policy == "new":
                found = search(tenants, capacity, share, quiet=quiet)
            else:
                outcome = simulate(policy, tenants, fm.Adversary())
        if policy == "new":
            outcome, passed, failed, served_n = _searched(found, capacity, share)
            limited = (found["ceiling"] or found["floor"])["outcome"]
            failed["detail"] = limit_detail(limited, failed)
        else:
            passed, failed = capacity.served(outcome, share)
        results[policy] = {
            "passed": passed,
            "whole_budget": capacity.served(outcome, 1.0)[0]["tenants"],
            "failed": failed,
            "rates": per_tenant_hour(outcome),
            "totals": dict(outcome["totals"]),
            "seconds": took["seconds"],
            "by_kind": outcome["by_kind"],
            "sample": outcome["tenants"],
        }
        if not quiet:
            print(
                f" {policy}: {passed['tenants']:,} served (then {failed['why']}); "
                f"{took['seconds']:.0f} s",
                flush=True,
            )
    adversary: dict[str, Any] = {}
    for policy in (p for p in ("today", "new", "nango") if p in chosen):
        for label, enemy in (
            ("adversary", ADVERSARY),
            ("adversary, sweep disabled", _without_sweep(ADVERSARY)),
        ):
            if policy == "nango" and "disabled" in label:
                continue  # Nango has no sweep to disable
            key = None
            if policy == "new":  # the developer key of the N the new policy serves
                callers = fleet_live.callers_by_minute(capacity.tenants[:served_n])
                key = fleet_live.LiveKey(served_n, adversary_sample, callers)
            outcome = simulate(policy, trace.tenants[:adversary_sample], enemy, key=key)
            adversary[f"{policy} / {label}"] = dict(outcome["totals"])
    return {
        "policies": chosen,
        "sample": sample,
        "adversary_sample": adversary_sample,
        "share": share,
        "bound": limit,
        "bound_seconds": bound_time["seconds"],
        "load": tr.load_summary(trace, limit["bound"]),
        "results": results,
        "passes": found["passes"],
        "adversary": adversary,
    }


def search(
    tenants: list[tr.Tenant], capacity: Capacity, share: float, *, quiet: bool
) -> dict[str, Any]:
    """The new policy's N: the largest N whose own pass (the sample run against a developer key
    of N tenants, ``bench/fleet_live.py``) is served at N.

    A pass at N runs every sampled tenant, interleaved in time, against the live rolling hour
    of N tenants, and is checked at that N (``Capacity.check``). Pass 1 runs without pressure
    or budget rule and gives the first target (the N it would serve). Then: a served target is
    a floor, one not served a ceiling; until both are known the next target is 15 % beyond the
    floor (or short of the ceiling), then the midpoint. Stops when the ceiling is within
    ``SETTLED_N`` of the floor, or after ``PASSES`` passes. Served need not fall strictly
    with N in a sampled run (one pass's draws are not another's), so the floor reported is the
    largest served target below the smallest ceiling.
    """
    from . import fleet_live

    floor: dict[str, Any] | None = None
    ceiling: dict[str, Any] | None = None
    passes: list[dict[str, Any]] = []
    free = simulate("new", tenants, fm.Adversary())
    target = max(1, capacity.served(free, share)[0]["tenants"])
    passes.append({"pass": 1, "target": 0, "served": target, "why": "", "deferred": 0})
    if not quiet:
        print(f"  pass 1 (no pressure, no budget rule): {target:,} served", flush=True)
    for number in range(2, PASSES + 1):
        callers = fleet_live.callers_by_minute(capacity.tenants[:target])
        key = fleet_live.LiveKey(target, len(tenants), callers)
        outcome = simulate("new", tenants, fm.Adversary(), key=key)
        check = capacity.check(outcome, target, share)
        here = {"n": target, "outcome": outcome, "check": check}
        passes.append(
            {
                "pass": number,
                "target": target,
                "served": check["ok"],
                "why": check["why"],
                "deferred": outcome["totals"].get("deferred", 0),
                "calls": check["calls"],
                "logins": check["logins"],
                "upkeep": check["upkeep"],
            }
        )
        if not quiet:
            print(
                f"  pass {number} (a key of {target:,} tenants): "
                f"{'served' if check['ok'] else 'not served: ' + check['why']}; busiest hour "
                f"{check['calls']:,.0f} calls, {check['logins']:,.0f} logins",
                flush=True,
            )
        if check["ok"] and (ceiling is None or target < ceiling["n"]):
            if floor is None or target > floor["n"]:
                floor = here
        elif not check["ok"] and (ceiling is None or target < ceiling["n"]):
            ceiling = here
            if floor is not None and floor["n"] >= target:
                floor = None  # served above a ceiling: noise; look below it again
        if floor is not None and ceiling is not None:
            if ceiling["n"] - floor["n"] <= SETTLED_N * floor["n"]:
                break
            target = (floor["n"] + ceiling["n"]) // 2
        elif floor is not None:
            target = min(capacity.largest, round(floor["n"] * 1.15))
            if target == floor["n"]:
                break  # served up to the bound's pool
        else:
            target = max(1, round(ceiling["n"] * 0.85))  # type: ignore[index]
    return {"floor": floor, "ceiling": ceiling, "passes": passes}


def limit_detail(outcome: dict[str, Any], check: dict[str, Any]) -> dict[str, Any]:
    """Where ``check`` (a failed N) ran out: the hour of its busiest logins, and the logins and
    keep-alives that hour per tenant class, scaled to its N."""
    scale = check["tenants"] / outcome["tenants"]
    hour = check["hours"].get("logins", 0)
    kinds = [kind for kind, _ in tr.KINDS]
    return {
        "hour": hour,
        "logins": {k: outcome["by_kind"]["logins"][k, hour] * scale for k in kinds},
        "keep_alives": {k: outcome["by_kind"]["keep_alives"][k, hour] * scale for k in kinds},
        "caller_logins": outcome["hourly"]["caller_logins"][hour] * scale,
        "background_logins": outcome["hourly"]["background_logins"][hour] * scale,
    }


def _searched(found: dict[str, Any], capacity: Capacity, share: float) -> tuple[Any, ...]:
    """The new policy's figures: the floor's pass, served at its N; the ceiling's check (the
    smallest N found not served by its own pass), else the floor's run checked above its N."""
    floor, ceiling = found["floor"], found["ceiling"]
    if floor is None:
        raise RuntimeError(f"no N was served by its own pass: {found['passes']}")
    failed = (
        ceiling["check"] if ceiling is not None else capacity.served(floor["outcome"], share)[1]
    )
    return floor["outcome"], floor["check"], failed, floor["n"]


def _without_sweep(adversary: fm.Adversary) -> fm.Adversary:
    from dataclasses import replace

    return replace(adversary, sweep_disabled=True)


def _timer() -> Any:
    from . import common

    return common.stopwatch()


def report(outcome: dict[str, Any], command: str, facts: dict[str, str], seconds: float) -> str:
    from .fleet_report import report as write

    if tuple(outcome.get("policies", POLICIES)) != POLICIES:
        return _partial(outcome, seconds)
    return write(outcome, command, facts, seconds)


def _partial(outcome: dict[str, Any], seconds: float) -> str:
    """A run of some policies only (``--policies``): served, ratio to the bound, what failed,
    rates per tenant-hour and waits; not a section for ``docs/benchmarks.md``."""
    bound = outcome["bound"]["bound"]
    lines = [f"partial run ({', '.join(outcome['policies'])}); bound {bound:,}; {seconds:.0f} s"]
    for policy, r in outcome["results"].items():
        t, rates = r["totals"], r["rates"]
        waits = t.get("waited", 0) / max(t.get("handed_out", 0), 1)
        lines.append(
            f"{policy}: {r['passed']['tenants']:,} served ({r['passed']['tenants'] / bound:.2f} "
            f"of the bound), then {r['failed']['why']}; {rates['calls']:.3f} calls and "
            f"{rates['logins']:.4f} logins per tenant-hour; waits {waits:.2%}, busy/daily "
            f"{t.get('waited_frequent', 0)} of {t.get('handed_out_frequent', 0)}"
        )
    for label, t in outcome["adversary"].items():
        dead = t.get("dead_knowable", 0), t.get("dead_unannounced", 0)
        lines.append(f"{label}: dead knowable {dead[0]}, unannounced {dead[1]}")
    return "\n".join(lines)
