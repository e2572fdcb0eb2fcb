"""Benchmark 2, capacity per developer key: how many tenants one devKey keeps fresh for a day.

BILL allows 20,000 calls and 200 logins per developer key per hour and ends a session after
35 idle minutes, so one devKey can keep at most 20,000 / (60/35) ≈ 11,600 idle tenants alive
(one call each per 35 minutes). This finds the largest N that our policy keeps fresh for 24
simulated hours within those limits, for the default settings and for the recommended
large-fleet settings.

**What is simulated (a faster model; say so wherever the figures are quoted):**

* BILL is the emulator's own state (``EmulatorState``: its hourly call and login limits, its
  35-minute sliding idle expiry), called in-process, without HTTP.
* The connections are in memory (unsaved ``BillConnection`` instances). Which are due is the
  condition of ``sessions.due_connection_ids`` (idle at least ``KEEPALIVE_AFTER_IDLE``, or
  ``MAX_SESSION_AGE`` reached, and not backing off), evaluated every ``SWEEP_INTERVAL``;
  what to do with each is decided by the real ``freshness.due_action``; freshness is judged
  by the real ``freshness.session_is_valid`` (what ``get_session`` uses); logins spend the
  real login budget (``limits.take_login``, Redis). The actions mirror ``refresh_connection``:
  a keep-alive is one authenticated call; a ``MAX_SESSION_AGE`` renewal that the budget
  refuses keeps the live session (a keep-alive when idle enough, renewal when the budget frees
  up, as ``lifecycle.renew`` does); any other login the budget refuses leaves the connection
  ``rate_limited`` until the budget frees up, as ``_record_failure`` does.
* The tenants are idle all day (their own calls would also count against 20,000/hour; the
  cap above is for idle tenants). At the start, last uses are spread over one keep-alive
  cycle and session ages over ``MAX_SESSION_AGE`` (steady state, not a cold start).

A run at N passes when, over 24 simulated hours: no tenant's session was ever invalid for
``get_session`` (no one would have waited for a login), BILL refused nothing (no BDC_1144,
no BDC_1109), the busiest clock hour stayed within 20,000 calls and 200 logins, and the login
budget (``LOGIN_BUDGET_PER_HOUR``) never ran short.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from . import common

BILL_CALLS_PER_HOUR = 20_000
BILL_LOGINS_PER_HOUR = 200
CAP = 20_000 / (60 / 35)
HOURS = 24
SEED = 7
#: How long after the sweep starts a connection's keep-alive has answered and been recorded
#: (``session_last_used_at`` is written after BILL answers, so it is a little later than the
#: sweep that found it due; without this the model would align keep-alives with sweeps).
PROCESSING_DELAY = timedelta(seconds=1)

PROFILES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "large fleet": {
        "SWEEP_INTERVAL": timedelta(minutes=1),
        "KEEPALIVE_AFTER_IDLE": timedelta(minutes=30),
        "SESSION_SAFETY_MARGIN": timedelta(minutes=3),
        "MAX_SESSION_AGE": timedelta(days=7),
    },
}


def simulate(tenants: int, *, hours: int = HOURS, seed: int = SEED) -> dict[str, Any]:
    """Keep ``tenants`` idle tenants of one devKey fresh for ``hours``; return the figures."""
    from bill_integration import limits
    from bill_integration.client.errors import start_of_next_hour
    from bill_integration.conf import bill_settings, keepalive_after_idle
    from bill_integration.emulator import ids
    from bill_integration.emulator.state import EmulatedError, EmulatorState
    from bill_integration.exceptions import RateLimited
    from bill_integration.models import BillConnection, ConnectionStatus
    from bill_integration.services.common import dev_key_fingerprint
    from bill_integration.services.freshness import (
        BUDGET_EXHAUSTED,
        SWEPT_STATUSES,
        due_action,
        renewal_pending,
        session_is_alive,
        session_is_valid,
    )

    rng = random.Random(seed)
    state = EmulatorState()
    common.set_clock(state.now)
    limits.get_limiter().reset()
    dev_key = ids.dev_key()
    fingerprint = dev_key_fingerprint(dev_key)
    sweep = bill_settings.SWEEP_INTERVAL
    keepalive_after = keepalive_after_idle()
    max_age = bill_settings.MAX_SESSION_AGE
    margin = bill_settings.SESSION_SAFETY_MARGIN
    start = state.now()

    accounts = common.make_credentials(tenants, [dev_key], "cap")
    common.add_accounts(state, accounts)
    connections: list[BillConnection] = []
    for a in accounts:
        session = state.login(
            api="v3",
            username=a.username,
            password=a.password,
            organization_id=a.organization_id,
            dev_key=dev_key,
        )
        # Just after a sweep in steady state: idle below KEEPALIVE_AFTER_IDLE, age below
        # the renewal age.
        spread = keepalive_after.total_seconds()
        age = ((max_age or timedelta(days=1)) - margin).total_seconds()
        connections.append(
            BillConnection(
                organization_id=a.organization_id,
                dev_key_fingerprint=fingerprint,
                session_id=session.session_id,
                status=ConnectionStatus.ACTIVE,
                session_last_used_at=start - timedelta(seconds=rng.uniform(0, spread)),
                session_obtained_at=start - timedelta(seconds=rng.uniform(0, age)),
            )
        )

    def due_at(c: BillConnection) -> datetime:
        """When c first matches due_connection_ids' condition."""
        moments = [c.session_last_used_at + keepalive_after]
        if max_age is not None:
            moments.append(c.session_obtained_at + max_age - margin)
        moment = min(moments)
        if c.next_attempt_at is not None:
            if renewal_pending(c):
                # Kept alive while the renewal waits for the budget (freshness.due_action);
                # once that keep-alive time has passed without one, only the renewal is left.
                retry = max([*moments[1:], c.next_attempt_at])
                keep = moments[0]
                return min(retry, keep) if keep > state.now() else retry
            moment = max(moment, c.next_attempt_at)
        return moment

    heap = [(due_at(c), n) for n, c in enumerate(connections)]
    heapq.heapify(heap)
    calls: Counter[datetime] = Counter()
    logins: Counter[datetime] = Counter()
    figures: Counter[str] = Counter()
    stale: set[int] = set()

    def hour_of(moment: datetime) -> datetime:
        return moment.replace(minute=0, second=0, microsecond=0)

    def bill_call(c: BillConnection, *, login: bool) -> str | None:
        """One call to BILL for c: None if it worked, else BILL's error code."""
        moment = state.now()
        calls[hour_of(moment)] += 1
        try:
            slot = state.acquire(dev_key, c.organization_id, login=login)
        except EmulatedError as error:
            return error.code
        try:
            if login:
                a = accounts[index_of[id(c)]]
                c.session_id = state.login(
                    api="v3",
                    username=a.username,
                    password=a.password,
                    organization_id=a.organization_id,
                    dev_key=dev_key,
                ).session_id
                logins[hour_of(moment)] += 1
            else:
                state.authenticate(c.session_id, dev_key)
        except EmulatedError as error:
            return error.code
        finally:
            state.release(slot)
        return None

    index_of = {id(c): n for n, c in enumerate(connections)}

    def do_login(n: int, c: BillConnection, at: datetime) -> None:
        try:
            limits.take_login(fingerprint)
        except RateLimited as exc:
            figures["budget_shortfalls"] += 1
            if session_is_alive(c, at):
                # A MAX_SESSION_AGE renewal the budget refused: keep the live session
                # (lifecycle.renew): a keep-alive if it is idle enough, renewal later.
                c.last_error_code, c.next_attempt_at = BUDGET_EXHAUSTED, exc.retry_at
                if at - c.session_last_used_at >= keepalive_after:
                    figures["keep_alives"] += 1
                    if bill_call(c, login=False) is None:
                        c.session_last_used_at = at + PROCESSING_DELAY
                return
            c.status = ConnectionStatus.RATE_LIMITED
            c.next_attempt_at = exc.retry_at
            return
        code = bill_call(c, login=True)
        if code is not None:
            figures[f"refused_{code}"] += 1
            c.status = ConnectionStatus.RATE_LIMITED
            c.next_attempt_at = start_of_next_hour(at)
            return
        c.session_obtained_at = c.session_last_used_at = at + PROCESSING_DELAY
        c.status, c.next_attempt_at, c.last_error_code = ConnectionStatus.ACTIVE, None, ""
        figures["logins"] += 1

    steps = int(timedelta(hours=hours) / sweep)
    with common.stopwatch() as elapsed:
        for step_number in range(steps):
            at = common.set_sim_time(state, start + sweep * (step_number + 1))
            while heap and heap[0][0] <= at:
                _, n = heapq.heappop(heap)
                c = connections[n]
                if c.status not in SWEPT_STATUSES:
                    continue
                if not session_is_valid(c, at):
                    stale.add(n)  # get_session would have had to log in for this tenant
                action = due_action(c, at)
                if action == "keep_alive":
                    figures["keep_alives"] += 1
                    code = bill_call(c, login=False)
                    if code == "BDC_1109":
                        figures["dead_at_keep_alive"] += 1
                        do_login(n, c, at)
                    elif code is not None:
                        figures[f"refused_{code}"] += 1
                        c.status = ConnectionStatus.RATE_LIMITED
                        c.next_attempt_at = start_of_next_hour(at)
                    else:
                        c.session_last_used_at = at + PROCESSING_DELAY
                        if not renewal_pending(c):
                            c.status, c.next_attempt_at = ConnectionStatus.ACTIVE, None
                elif action == "login":
                    do_login(n, c, at)
                heapq.heappush(heap, (due_at(c), n))
        end = state.now()
        stale.update(n for n, c in enumerate(connections) if not session_is_valid(c, end))
    common.set_clock(lambda: datetime.now(start.tzinfo))
    # Whole clock hours only (the first and last are partial).
    full_hours = sorted(calls)[1:-1] or sorted(calls)
    busiest_calls = max((calls[h] for h in full_hours), default=0)
    busiest_logins = max(logins.values(), default=0)
    refused = sum(v for k, v in figures.items() if k.startswith("refused_"))
    ok = (
        not stale
        and refused == 0
        and figures["dead_at_keep_alive"] == 0
        and figures["budget_shortfalls"] == 0
        and busiest_calls <= BILL_CALLS_PER_HOUR
        and busiest_logins <= BILL_LOGINS_PER_HOUR
    )
    return {
        "tenants": tenants,
        "ok": ok,
        "stale": len(stale),
        "refused": refused,
        "dead": figures["dead_at_keep_alive"],
        "shortfalls": figures["budget_shortfalls"],
        "logins": figures["logins"],
        "keep_alives": figures["keep_alives"],
        "busiest_calls": busiest_calls,
        "busiest_logins": busiest_logins,
        "calls_per_tenant_hour": sum(calls[h] for h in full_hours)
        / max(1, len(full_hours))
        / tenants,
        "seconds": elapsed["seconds"],
    }


def largest_fresh(step: int = 100, *, quiet: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """The largest N (a multiple of ``step``) that passes, and N + ``step``, which fails.

    Calls per tenant-hour do not depend on N, so a probe at 1,000 tenants predicts where the
    20,000 calls/hour (and, with ``MAX_SESSION_AGE``, the login budget) run out; the search
    starts there and walks by ``step``.
    """
    from bill_integration.conf import bill_settings

    results: dict[int, dict[str, Any]] = {}

    def check(n: int) -> bool:
        if n not in results:
            results[n] = r = simulate(n)
            if not quiet:
                print(
                    f"  N={n}: {'fresh' if r['ok'] else 'NOT fresh'} "
                    f"({r['calls_per_tenant_hour']:.3f} calls/tenant-hour; busiest hour "
                    f"{r['busiest_calls']} calls, {r['busiest_logins']} logins; stale "
                    f"{r['stale']}, budget shortfalls {r['shortfalls']}, refused "
                    f"{r['refused']}; {r['seconds']:.0f} s)",
                    flush=True,
                )
        return results[n]["ok"]

    check(1000)
    predicted = BILL_CALLS_PER_HOUR / results[1000]["calls_per_tenant_hour"]
    max_age = bill_settings.MAX_SESSION_AGE
    if max_age is not None:
        renewals_per_hour = 1 / (max_age / timedelta(hours=1))
        predicted = min(predicted, bill_settings.LOGIN_BUDGET_PER_HOUR / renewals_per_hour)
    n = max(step, int(predicted) // step * step)
    if check(n):
        while check(n + step):
            n += step
        return results[n], results[n + step]
    while n > step and not check(n - step):
        n -= step
    return results[max(step, n - step)], results[n]


def run(*, quiet: bool = False, step: int = 100) -> dict[str, Any]:
    from django.conf import settings

    base = dict(settings.BILL_INTEGRATION)
    outcome: dict[str, Any] = {}
    try:
        for name, overrides in PROFILES.items():
            common.configure("http://127.0.0.1:9", **overrides)
            if not quiet:
                print(f" profile {name}: {overrides or 'the defaults'}", flush=True)
            passed, failed = largest_fresh(step, quiet=quiet)
            from bill_integration.conf import bill_settings, keepalive_after_idle

            outcome[name] = {
                "passed": passed,
                "failed": failed,
                "settings": {
                    **{
                        key: getattr(bill_settings, key)
                        for key in (
                            "SWEEP_INTERVAL",
                            "SESSION_SAFETY_MARGIN",
                            "MAX_SESSION_AGE",
                            "LOGIN_BUDGET_PER_HOUR",
                        )
                    },
                    "KEEPALIVE_AFTER_IDLE": keepalive_after_idle(),
                },
            }
    finally:
        settings.BILL_INTEGRATION = base
        from bill_integration.conf import bill_settings

        bill_settings.reload()
    return outcome


def _why(r: dict[str, Any]) -> str:
    reasons = []
    if r["busiest_calls"] > BILL_CALLS_PER_HOUR:
        reasons.append(f"{r['busiest_calls']} calls in the busiest hour")
    if r["refused"]:
        reasons.append(f"{r['refused']} calls refused by BILL")
    if r["shortfalls"]:
        reasons.append(f"{r['shortfalls']} logins the budget could not cover")
    if r["stale"]:
        reasons.append(f"{r['stale']} tenants whose session went stale")
    if r["busiest_logins"] > BILL_LOGINS_PER_HOUR:
        reasons.append(f"{r['busiest_logins']} logins in an hour")
    return "; ".join(reasons) or "-"


def report(outcome: dict[str, Any], command: str, facts: dict[str, str], seconds: float) -> str:
    rows = []
    for name, result in outcome.items():
        p, f, s = result["passed"], result["failed"], result["settings"]
        setting_text = (
            f"sweep {common.duration(s['SWEEP_INTERVAL'])}, keep-alive after "
            f"{common.duration(s['KEEPALIVE_AFTER_IDLE'])} idle, margin "
            f"{common.duration(s['SESSION_SAFETY_MARGIN'])}, max age "
            f"{common.duration(s['MAX_SESSION_AGE'])}, "
            f"budget {s['LOGIN_BUDGET_PER_HOUR']}/h"
        )
        rows.append(
            [
                name,
                setting_text,
                f"**{p['tenants']:,}**",
                f"{p['tenants'] / CAP:.2f}",
                f"{p['calls_per_tenant_hour']:.3f}",
                f"{p['busiest_calls']:,} / {p['busiest_logins']}",
                f"{f['tenants']:,}: {_why(f)}",
            ]
        )
    large = outcome["large fleet"]["passed"]["tenants"]
    default = outcome["defaults"]["passed"]["tenants"]
    return (
        "## 2. Capacity per developer key\n\n"
        + common.facts_block(command, facts, seconds)
        + "- Model (faster than benchmark 1, and said here): BILL is the emulator's state "
        "in-process (its hourly limits and 35-minute idle expiry, no HTTP); connections are "
        "in-memory `BillConnection`s; due selection is `due_connection_ids`' condition every "
        "`SWEEP_INTERVAL`, each due connection's action is decided by the real "
        "`freshness.due_action`, freshness by the real `freshness.session_is_valid`, logins spend "
        "the real Redis login budget (`limits.take_login`); a refused login leaves the "
        "connection `rate_limited` until `retry_at`, as `refresh_connection` does. Tenants are "
        "idle (their own calls would share the 20,000); steady-state start.\n"
        "- Pass = over 24 simulated hours no session ever invalid for `get_session`, nothing "
        "refused by BILL, busiest clock hour ≤ 20,000 calls and ≤ 200 logins, no login-budget "
        "shortfall. Cap = 20,000 / (60/35) ≈ 11,667 tenants.\n\n"
        + common.table(
            [
                "settings",
                "values",
                "largest N kept fresh",
                "ratio to cap",
                "calls / tenant-hour",
                "busiest hour: calls / logins",
                "first N that fails: why",
            ],
            rows,
        )
        + "\n"
        + common.table(
            ["target", "measured", "result"],
            [
                [
                    "at least 10,000 tenants per devKey (defaults)",
                    f"{default:,}",
                    common.verdict(default >= 10_000),
                ],
                [
                    "at least 10,000 tenants per devKey (large-fleet settings)",
                    f"{large:,}",
                    common.verdict(large >= 10_000),
                ],
            ],
        )
        + "\n"
        f"**What sets the limit.** With the defaults the first N that fails, "
        f"{outcome['defaults']['failed']['tenants']:,}, fails for: "
        f"{_why(outcome['defaults']['failed'])}. The defaults renew a session weekly "
        "(`MAX_SESSION_AGE` 7 days: about N/168 logins an hour, 60 at 10,000 tenants, against a "
        "budget of 150), sweep every minute, and keep a session alive after "
        f"{common.duration(outcome['defaults']['settings']['KEEPALIVE_AFTER_IDLE'])} idle "
        "(derived: `SESSION_IDLE_TIMEOUT - SESSION_SAFETY_MARGIN - SWEEP_INTERVAL - 30 s`), "
        "inside the 32 minutes `get_session` trusts with the 3-minute margin and BILL's 35: "
        f"{outcome['defaults']['passed']['calls_per_tenant_hour']:.2f} calls per tenant-hour, "
        "so 20,000 calls an hour last for about "
        f"{20_000 / outcome['defaults']['passed']['calls_per_tenant_hour']:,.0f} idle tenants; "
        "the hourly call limit, not logins, is what stops the next step. A renewal the budget "
        "refuses no longer costs a live session: it falls back to keep-alives (status stays "
        "`active`, the shortfall is counted) until a login frees up. The large-fleet profile "
        "(keep-alive after exactly 30 minutes) is kept for comparison with earlier runs. The "
        "sweep handles about N/31 connections a minute (about 330 at 10,000 tenants; benchmark "
        "3 measures how fast a worker does that).\n"
    )
