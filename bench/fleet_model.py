"""One tenant's week under one policy: what it costs at BILL and what its callers get.

The fleet benchmark (``bench/fleet.py``) runs this for every tenant of a sample of the trace
(``bench/trace.py``) and every policy. A tenant is simulated alone: in a run that passes
(no BDC_1144, logins within the limit) tenants do not affect each other, except through
the developer key's counts: for the new policy every sampled tenant runs as a generator
(:func:`ours_steps`) and a driver interleaves them in time order, so each one meets the
developer key's rolling hour as it stands (``bench/fleet_live.py``: the pressures the sweep
weighs and the budget's rules, live, as the limiter applies them).

**Where a model stands in for real code** (decisions are the real functions):

* BILL is a few numbers per tenant: the true last call on the session, its idle limit (35
  minutes, or shorter under the adversary), an early end (the adversary's random drop). A
  dead session's call is refused (BDC_1109) and counted.
* Our policies' rows are in-memory ``BillConnection`` instances. ``get_session`` is modelled
  as ``freshness.session_is_valid`` (real) then a login when invalid; recording use mirrors
  ``session._note_used``: ``warmth.note_visit`` (real) when a call starts a visit, else
  ``session_last_used_at`` written at most every ``LAST_USED_WRITE_INTERVAL``. The sweep is
  modelled as capacity.py does: a connection is looked at on the sweep's 1-minute grid when
  it becomes due, and the real ``freshness.due_action(connection, at, pressure=..., login_pressure=...)`` (which
  asks the real ``warmth.decide``) says keep-alive, login or nothing. A session let lapse is
  looked at again each minute while the app still thinks it alive, then at the
  ``prewarm_at`` that ``warmth.decide`` gives. Each action is recorded 1 s after the sweep.
* Nango, naive re-login and login-per-request are harness code (see ``fleet.py``).

All times are seconds from ``trace.START``; the measured week is ``[0, WEEK)``; ``[-WARMUP, 0)``
are warm-up days, not counted.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from . import trace as tr

#: Days simulated before the measured week, not counted. Every session starts alive (each
#: tenant's state at the start is a guess), so the first hours see every keep-alive due at once
#: and the sweep, under that pressure, lets marginal sessions lapse; with one warm-up day (a
#: Sunday) the daily tenants so cut paid Monday's logins, a crunch of the model's own making.
#: Three days (from Friday) let the fleet settle through a working day and a weekend first.
WARMUP = 3 * tr.DAY
IDLE = 35 * 60
NANGO_EXPIRES, NANGO_MARGIN = 35 * 60, 15 * 60  # expires_at = login + 35 min; refresh 15 before
NANGO_CRON, NANGO_STALE = 10 * 60, tr.DAY  # cron every 10 min; connections not fetched a day
NAIVE_PERIOD = 30 * 60


@dataclass
class Adversary:
    """BILL ending sessions early. ``idle``: BILL's real idle limit (seconds); ``drop_per_hour``:
    chance a session is dropped in any hour; ``sweep_off``: (start, end) seconds with no sweep;
    ``sweep_late``: the most (seconds) a sweep action runs late."""

    idle: int = IDLE
    drop_per_hour: float = 0.0
    sweep_off: tuple[int, int] | None = None
    sweep_late: int = 0
    sweep_disabled: bool = False


@dataclass
class Outcome:
    """One tenant's week (measured hours only)."""

    keep_alives: Counter[int] = field(default_factory=Counter)  # hour -> calls
    background_logins: Counter[int] = field(default_factory=Counter)
    caller_logins: Counter[int] = field(default_factory=Counter)
    replays: Counter[int] = field(default_factory=Counter)  # extra caller calls after BDC_1109
    deferred: int = 0  # upkeep the budget's rules turned away (measured week)
    handed_out: int = 0
    waited: int = 0  # get_session calls that waited for a login
    dead_knowable: int = 0
    dead_unannounced: int = 0
    replayed_after_one_login: int = 0


class Bill:
    """BILL's view of one tenant's session."""

    def __init__(self, adversary: Adversary, rng: random.Random) -> None:
        self.adversary, self.rng = adversary, rng
        self.last = -(10**9)  # true last call on the session
        self.dropped_at = 10**12

    def login(self, at: float) -> None:
        self.last = at
        rate = self.adversary.drop_per_hour
        self.dropped_at = at + self.rng.expovariate(rate) * 3600 if rate else 10**12

    def documented_alive(self, at: float) -> bool:
        """Alive by BILL's documented rule (35 minutes idle): what the app could know."""
        return at - self.last < IDLE

    def alive(self, at: float) -> bool:
        return at - self.last < self.adversary.idle and at < self.dropped_at

    def call(self, at: float) -> bool:
        """A call on the session: True when BILL accepted it (the idle timer restarts)."""
        if not self.alive(at):
            return False
        self.last = at
        return True


class OpenKey:
    """A developer key with no pressure and no budget rule, that counts nothing: what a
    tenant simulated alone runs against (``fleet_live.LiveKey`` is the shared one)."""

    def pressures(self, at: float) -> tuple[float, float]:
        return 0.0, 0.0

    def admit(self, kind: str, at: float) -> bool:
        return True

    def record(self, kind: str, at: float) -> None:
        pass


OPEN_KEY = OpenKey()


def _measured(at: float) -> int | None:
    return int(at // tr.HOUR) if 0 <= at < tr.WEEK else None


def _count(counter: Counter[int], at: float) -> None:
    hour = _measured(at)
    if hour is not None:
        counter[hour] += 1


def caller_calls(tenant: tr.Tenant) -> list[int]:
    """Every caller call of the tenant from the warm-up to the week's end (seconds, sorted)."""
    return [t for v in tenant.visits for t in v.times() if -WARMUP <= t < tr.WEEK]


def _handout(out: Outcome, bill: Bill, at: float, *, login: Any, key: OpenKey = OPEN_KEY) -> None:
    """A session was handed out at ``at``: its call at BILL, a replay after one login if dead."""
    measured = _measured(at) is not None
    if measured:
        out.handed_out += 1
    if bill.call(at):
        return
    key.record("caller", at)  # the replay: one more caller call (its login counts apart)
    if measured:
        if bill.documented_alive(at):
            out.dead_unannounced += 1
        else:
            out.dead_knowable += 1
    login(at, caller=True)
    _count(out.replays, at)
    if bill.call(at) and measured:
        out.replayed_after_one_login += 1


# --- our policies: the real freshness / warmth functions ------------------------------------


def simulate_ours(
    tenant: tr.Tenant, adversary: Adversary, *, key: Any = None, seed: int = 0
) -> Outcome:
    """Today's policy (setting WARMTH "always") or the new one ("predicted"), whichever the
    settings say, for one tenant alone: :func:`ours_steps` run to its end."""
    out = Outcome()
    for _ in ours_steps(tenant, adversary, out, key=key, seed=seed):
        pass
    return out


def ours_steps(
    tenant: tr.Tenant, adversary: Adversary, out: Outcome, *, key: Any = None, seed: int = 0
) -> Iterator[float]:
    """One tenant's week as a generator: it yields the time of its next event (a caller's call
    or a sweep look) before doing it, so a driver can interleave every tenant of a developer
    key in time order (``fleet.simulate``). The sweep's decisions are ``freshness.due_action``'s.

    ``key`` (a ``fleet_live.LiveKey``, or ``None``: :data:`OPEN_KEY`) is the
    developer key's rolling hour as it stands at each moment: it gives the pressures the
    sweep weighs, says whether the budget's rules let a keep-alive or background login
    through (a refused one is deferred, as ``lifecycle.deferred``: the connection stays due
    and the next sweep tries again), and counts what this tenant spends."""
    from bill_integration.conf import bill_settings
    from bill_integration.models import BillConnection, ConnectionStatus
    from bill_integration.services import freshness, warmth

    key = OPEN_KEY if key is None else key
    rng = random.Random(f"{seed}:{tenant.index}")
    bill = Bill(adversary, rng)
    write_every = bill_settings.LAST_USED_WRITE_INTERVAL.total_seconds()
    keep_after = freshness.keepalive_after_idle().total_seconds()
    max_age = bill_settings.MAX_SESSION_AGE
    margin = bill_settings.SESSION_SAFETY_MARGIN.total_seconds()
    start = -WARMUP
    c = BillConnection(
        id=tenant.index + 1,  # as a row has: freshness.renewal_at spreads renewals by it
        status=ConnectionStatus.ACTIVE,
        session_id="s",
        organization_id="o",
        dev_key_fingerprint="f",
        tenant_id=tenant.index,
        created_at=tr.moment(tr.FIRST_WEEK * tr.WEEK),  # when the history starts
    )
    for visit in tenant.visits:  # the history: earlier weeks, as the hot path recorded them
        if visit.start < start:
            warmth.note_visit(c, tr.moment(visit.start))
            c.usage_last_at = tr.moment(visit.end)
    last_used = start - rng.uniform(0, keep_after)
    bill.login(last_used)
    c.session_last_used_at = tr.moment(last_used)
    age = (max_age or timedelta(days=7)).total_seconds() - margin
    c.session_obtained_at = tr.moment(start - rng.uniform(0, age))

    def login(at: float, *, caller: bool) -> None:
        bill.login(at)
        _count(out.caller_logins if caller else out.background_logins, at)
        key.record("caller_login" if caller else "background_login", at)
        c.session_id, c.session_obtained_at = "s", tr.moment(at)
        c.session_last_used_at = tr.moment(at)
        c.last_error_code, c.next_attempt_at = "", None  # a login ends a renewal's wait

    def next_tick(at: float) -> float:
        return (at // 60 + 1) * 60

    def due_at(at: float) -> float | None:
        """When the sweep next looks at c (None: not before a caller comes back)."""
        if adversary.sweep_disabled:
            return None
        last = c.session_last_used_at.timestamp() - tr.START.timestamp()
        moments = [last + keep_after]
        if max_age is not None:
            obtained = c.session_obtained_at.timestamp() - tr.START.timestamp()
            moments.append(obtained + max_age.total_seconds() - margin)
        moment = min(moments)
        if moment <= at:  # already due and let lapse: again while the app thinks it alive
            if freshness.session_is_alive(c, tr.moment(at)):
                return next_tick(at)
            calls, logins = key.pressures(at)
            decision = warmth.decide(c, tr.moment(at), pressure=calls, login_pressure=logins)
            if decision.keep_warm:
                # Lapsed, in its prewarm hour, the login deferred: the row stays due and the
                # next sweep tries again (lifecycle.deferred writes nothing).
                return next_tick(at)
            prewarm = decision.prewarm_at
            if prewarm is None:
                return None
            moment = prewarm.timestamp() - tr.START.timestamp()
        return max(next_tick(at), -(-moment // 60) * 60)

    def admitted(kind: str, at: float) -> bool:
        """Whether the budget's rules let this upkeep through (else it is deferred)."""
        if key.admit(kind, at):
            return True
        if _measured(at) is not None:
            out.deferred += 1
        return False

    calls = caller_calls(tenant)
    i, sweep = 0, due_at(start)
    while True:
        call = calls[i] if i < len(calls) else None
        if sweep is not None and sweep >= tr.WEEK:
            sweep = None
        if call is None and sweep is None:
            break
        if sweep is not None and (call is None or sweep <= call):
            at = sweep
            yield at
            off = adversary.sweep_off
            if off is not None and off[0] <= at < off[1]:
                sweep = max(next_tick(at), off[1])  # skipped: the sweep is not running
                continue
            act_at = at + (rng.uniform(0, adversary.sweep_late) if adversary.sweep_late else 0)
            pressure, login_pressure = key.pressures(at)
            moment = tr.moment(at)
            action = freshness.due_action(
                c, moment, pressure=pressure, login_pressure=login_pressure
            )
            done = act_at + 1
            renewal_waits = False
            if action == freshness.LOGIN and not admitted("background_login", act_at):
                # Deferred (paced, or behind the callers' reserve): a live session's renewal
                # waits and the session stays in use past MAX_SESSION_AGE, kept alive when idle
                # enough (lifecycle.renew); a lapsed session waits for the next sweep.
                renewal_waits = freshness.session_is_alive(c, moment)
                idle = moment - c.session_last_used_at
                keep = renewal_waits and idle >= freshness.keepalive_after(c)
                action = freshness.KEEP_ALIVE if keep else None
            if action == freshness.KEEP_ALIVE and admitted("keep_alive", act_at):
                _count(out.keep_alives, act_at)
                key.record("keep_alive", act_at)
                if bill.call(act_at):
                    c.session_last_used_at = tr.moment(done)
                    bill.last = done
                else:  # BDC_1109 at the keep-alive: the sweep logs in instead
                    login(done, caller=False)
                    renewal_waits = False
            elif action == freshness.LOGIN:
                login(done, caller=False)
            elif action == freshness.KEEP_ALIVE:
                renewal_waits = False  # the keep-alive was refused before the renewal was marked
            if renewal_waits:  # lifecycle.renew's mark: retried from the next minute
                c.last_error_code = freshness.BUDGET_EXHAUSTED
                c.next_attempt_at = tr.moment(next_tick(act_at))
            sweep = due_at(at)
            continue
        at = float(call)  # type: ignore[arg-type]
        yield at
        i += 1
        moment = tr.moment(at)
        if freshness.session_is_valid(c, moment):
            _handout(out, bill, at, login=login, key=key)
        else:
            if _measured(at) is not None:
                out.waited += 1
                out.handed_out += 1
            login(at, caller=True)
            bill.call(at)
        called = c.usage_last_at
        if called is None or moment - called >= warmth.VISIT_GAP:
            warmth.note_visit(c, moment)
            c.session_last_used_at = moment
        elif (moment - c.session_last_used_at).total_seconds() >= write_every:
            c.session_last_used_at = c.usage_last_at = moment
        if sweep is None or sweep > at + keep_after:
            sweep = due_at(at)


# --- baselines: harness code ----------------------------------------------------------------


def simulate_baseline(
    name: str, tenant: tr.Tenant, adversary: Adversary, *, seed: int = 0
) -> Outcome:
    """``nango``, ``naive`` (log in every 30 min) or ``every_request`` for one tenant."""
    rng = random.Random(f"{seed}:{tenant.index}:{name}")
    out, bill = Outcome(), Bill(adversary, rng)
    state = {"obtained": -WARMUP - rng.uniform(0, NANGO_EXPIRES - NANGO_MARGIN)}
    bill.login(state["obtained"])
    fetched = -WARMUP - rng.uniform(0, tr.DAY)

    def login(at: float, *, caller: bool) -> None:
        bill.login(at)
        state["obtained"] = at
        _count(out.caller_logins if caller else out.background_logins, at)

    calls = caller_calls(tenant)
    if name == "naive":
        phase = rng.uniform(0, NAIVE_PERIOD)
        moment = -WARMUP + phase
        i = 0
        while moment < tr.WEEK:
            while i < len(calls) and calls[i] < moment:
                _handout(out, bill, calls[i], login=login)
                i += 1
            login(moment, caller=False)
            moment += NAIVE_PERIOD
        return out
    if name == "every_request":
        for at in calls:
            if _measured(at) is not None:
                out.handed_out += 1
                out.waited += 1
            login(at, caller=True)
            bill.call(at)
        return out
    # Nango: refresh on use when expires_at (login + 35 min) is within 15 minutes; a cron
    # every 10 minutes refreshes connections not fetched for a day.
    i = 0
    cron = (fetched + NANGO_STALE) // NANGO_CRON * NANGO_CRON + NANGO_CRON
    while True:
        call = calls[i] if i < len(calls) else None
        if call is None and cron >= tr.WEEK:
            break
        if call is None or cron < call:
            if cron >= tr.WEEK:
                break
            login(cron, caller=False)
            fetched = cron
            cron += NANGO_STALE
            continue
        i += 1
        if call >= state["obtained"] + NANGO_EXPIRES - NANGO_MARGIN:
            if _measured(call) is not None:
                out.waited += 1
                out.handed_out += 1
            login(call, caller=True)
            bill.call(call)
        else:
            _handout(out, bill, call, login=login)
        fetched = call
        cron = (fetched + NANGO_STALE) // NANGO_CRON * NANGO_CRON + NANGO_CRON
    return out
