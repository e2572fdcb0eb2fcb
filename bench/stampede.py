"""Benchmark 5, stampede: 200 concurrent callers of ``get_session`` for one tenant whose
session just expired.

Set-up: the emulator in a process of its own with a 200 ms latency fault on the login call;
one tenant whose session has been idle 36 minutes (expired for BILL and for the app). First,
one login through the app's client is timed: that is the unit of the result.

Then 200 threads wait at a barrier and all call ``services.get_session(tenant)`` at once.
PostgreSQL here allows 100 connections, shared with other suites on the machine, so the
callers borrow a database connection from a pool of :data:`DB_CONNECTIONS` (a semaphore; a
caller opens its connection, calls, and closes it), as they would behind a real pool: the
time spent waiting for a connection is part of the measured wait. Threads only (the row lock
that makes one caller log in is PostgreSQL's, so processes behave the same).

Reported: logins BILL saw (target exactly 1), every caller got the same session, and the
wait of each caller from the barrier to its session (median, p99, max) as a multiple of one
login's latency.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from . import common

CALLERS = 200
DB_CONNECTIONS = 40
LOGIN_LATENCY = 0.2


def run(*, callers: int = CALLERS, quiet: bool = False) -> dict[str, Any]:
    from django.db import connections

    from bill_integration.client import get_client
    from bill_integration.emulator import EmulatorControl, ids
    from bill_integration.services import get_session

    own_clock = common.clock_beside_remote_emulator()
    accounts = common.make_credentials(2, [ids.dev_key()], "stampede")
    with tempfile.TemporaryDirectory() as workdir:
        emulator = common.EmulatorProcess(accounts, Path(workdir)).start()
    try:
        control = EmulatorControl(emulator.url)
        common.configure(emulator.url)
        common.reset_app_state()
        target, spare = accounts
        # One login's latency, through the same client, against the same fault.
        control.set_fault("latency", seconds=LOGIN_LATENCY, path="/v3/login")
        client = get_client("emulator", "v3")
        client.login(
            username=spare.username,
            password=spare.password,  # warm the pool
            organization_id=spare.organization_id,
            dev_key=spare.dev_key,
        )
        singles = []
        for _ in range(5):
            started = time.perf_counter()
            client.login(
                username=spare.username,
                password=spare.password,
                organization_id=spare.organization_id,
                dev_key=spare.dev_key,
            )
            singles.append(time.perf_counter() - started)
        login_seconds = statistics.median(singles)

        old = client.login(
            username=target.username,
            password=target.password,
            organization_id=target.organization_id,
            dev_key=target.dev_key,
        )
        control.advance(36 * 60)
        own_clock.advance(36 * 60)
        now = common.clock()
        tenant_id = common.create_connections(
            [target],
            session_ids=[old.session_id],
            obtained_at=[now - timedelta(minutes=40)],
            last_used_at=[now - timedelta(minutes=36)],
            prefix="stampede",
        )[0]
        connections.close_all()
        before = control.counters(organization_id=target.organization_id)["logins"]

        barrier = threading.Barrier(callers + 1)
        pool = threading.BoundedSemaphore(DB_CONNECTIONS)
        waits: list[float] = [0.0] * callers
        inside: list[float] = [0.0] * callers  # from holding a DB connection to the session
        sessions: list[str] = [""] * callers
        errors: list[str] = []
        start_time = [0.0]

        def caller(index: int) -> None:
            barrier.wait()
            try:
                with pool:
                    connections["default"].ensure_connection()
                    entered = time.perf_counter()
                    session = get_session(tenant_id)
                    inside[index] = time.perf_counter() - entered
                    sessions[index] = session.session_id
                    connections.close_all()
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                errors.append(type(exc).__name__)
            waits[index] = time.perf_counter() - start_time[0]

        threads = [threading.Thread(target=caller, args=(n,)) for n in range(callers)]
        for thread in threads:
            thread.start()
        start_time[0] = time.perf_counter()
        barrier.wait()
        for thread in threads:
            thread.join()
        logins = control.counters(organization_id=target.organization_id)["logins"] - before
    finally:
        emulator.stop()
        common.clock_beside_remote_emulator()
    distinct = Counter(s for s in sessions if s)
    return {
        "callers": callers,
        "db_connections": DB_CONNECTIONS,
        "logins": logins,
        "distinct_sessions": len(distinct),
        "new_session": bool(distinct) and old.session_id not in distinct,
        "errors": dict(Counter(errors)),
        "login_seconds": login_seconds,
        "median": statistics.median(waits),
        "p99": common.percentile(waits, 99),
        "max": max(waits),
        "inside_median": statistics.median(inside),
        "inside_p99": common.percentile(inside, 99),
    }


def report(outcome: dict[str, Any], command: str, facts: dict[str, str], seconds: float) -> str:
    o = outcome
    unit = o["login_seconds"]
    met = o["logins"] == 1 and o["distinct_sessions"] == 1 and not o["errors"]
    return (
        "## 5. Stampede\n\n"
        + common.facts_block(command, facts, seconds)
        + f"- {o['callers']} threads released together by a barrier call `get_session` for "
        "one tenant whose session has been idle 36 minutes; the emulator runs in its own "
        f"process with a {LOGIN_LATENCY * 1000:.0f} ms latency fault on login. PostgreSQL "
        "allows 100 connections here, shared with other suites, so callers borrow one of "
        f"{o['db_connections']} database connections (open, call, close; waiting for one is "
        "part of the measured wait), as behind a connection pool. Threads only: the single "
        "flight is PostgreSQL's row lock, which holds across processes alike.\n"
        f"- One login through the app's client (median of 5, same fault): "
        f"{unit * 1000:.0f} ms.\n\n"
        + common.table(
            ["measure", "value"],
            [
                ["logins BILL saw", f"**{o['logins']}**"],
                [
                    "distinct sessions handed out",
                    (
                        f"{o['distinct_sessions']} (new session: "
                        f"{'yes' if o['new_session'] else 'no'})"
                    ),
                ],
                ["callers that failed", sum(o["errors"].values()) if o["errors"] else 0],
                ["median wait", f"{o['median'] * 1000:.0f} ms = {o['median'] / unit:.2f} × login"],
                ["**p99 wait**", f"{o['p99'] * 1000:.0f} ms = **{o['p99'] / unit:.2f} × login**"],
                ["max wait", f"{o['max'] * 1000:.0f} ms = {o['max'] / unit:.2f} × login"],
                [
                    "time inside `get_session` once holding an open connection: median / p99",
                    (
                        f"{o['inside_median'] * 1000:.0f} ms / {o['inside_p99'] * 1000:.0f} ms = "
                        f"{o['inside_p99'] / unit:.2f} × login"
                    ),
                ],
            ],
        )
        + "\n"
        + common.table(
            ["target", "measured", "result"],
            [
                ["exactly 1 login", o["logins"], common.verdict(met)],
                ["p99 wait (reported)", f"{o['p99'] / unit:.2f} × one login", "reported"],
            ],
        )
        + "\nWhere the wait goes. Inside `get_session` (the row above): the first wave of "
        "callers finds the session expired; one takes the row lock (`FOR UPDATE SKIP LOCKED` "
        "in `single_flight.obtain`) and logs in, the others find the row taken and wait with `FOR SHARE`, "
        "which they hold together and which is granted the moment the login commits, then "
        "read the new session and leave together (no queue on the exclusive lock; the p99 "
        "inside is one login plus the time 200 threads on 2 cores take to be scheduled); "
        "callers of later waves read the new session in one query (the median). Outside it: "
        "queueing for the 40 database connections and opening them (each caller opens and "
        "closes its own) on a busy 2-core machine, which is most of the total; a connection "
        "pool that keeps connections open would remove most of it.\n"
        + (f"\nErrors: {o['errors']}\n" if o["errors"] else "")
    )
