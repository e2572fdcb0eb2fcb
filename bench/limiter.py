"""Benchmark 6, the limiter: what BILL's shared limits and the call counting add to one call.

Set-up: the emulator in a process of its own (no fault), one tenant with a live session. The
same cheap call (``GET /v3/login/session``) is made, interleaved in rounds in the same run:

* **bare**: the app's client alone (``client.request``): no limiter, no counting;
* **Redis**: ``gateway.request`` with ``REDIS_URL`` set: a concurrency slot taken, with the
  call counted in the same Lua script, and released (two round trips);
* **database, pooled** (this branch): ``gateway.request`` on the PostgreSQL limiter, whose
  connections come from its own pool;
* **database, a connection per transaction** (the limiter before this branch, reproduced by a
  subclass that opens and closes a PostgreSQL connection around each limiter transaction, as
  ``CONN_MAX_AGE = 0`` made the old code do): slot (with the count) and release are two
  connections;
* Redis and pooled database again with counting switched off (the slot taken without its
  count), so the cost of counting shows.

The calls each backend counted are read back at the end and reported against the calls the
counted variants made: counting that went missing would show there.

``CONN_MAX_AGE`` is 0 (Django's default) throughout. Reported: the median time per call of
each variant and its ratio to the bare call of the same rounds, and the PostgreSQL
connections the limiter opened.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from . import common

ROUNDS = 9
CALLS_PER_ROUND = 60


def run(
    *, rounds: int = ROUNDS, calls: int = CALLS_PER_ROUND, quiet: bool = False
) -> dict[str, Any]:
    from django.conf import settings

    from bill_integration import limits
    from bill_integration.client import get_client
    from bill_integration.emulator import ids
    from bill_integration.limits.postgresql import PostgreSQLLimiter
    from bill_integration.models import BillConnection
    from bill_integration.services import gateway
    from bill_integration.services.session import session_from

    opened = {"pooled": 0, "per_transaction": 0}

    class Pooled(PostgreSQLLimiter):
        def _new_connection(self) -> Any:
            opened["pooled"] += 1
            return super()._new_connection()

    class PerTransaction(PostgreSQLLimiter):
        """The limiter before this branch: a new connection for every limiter transaction."""

        def _checkout(self) -> Any:
            opened["per_transaction"] += 1
            return self._new_connection()

        def _checkin(self, wrapper: Any) -> None:
            wrapper.close()

    redis_url = settings.REDIS_URL
    common.clock_beside_remote_emulator()
    accounts = common.make_credentials(1, [ids.dev_key()], "limiter")
    with tempfile.TemporaryDirectory() as workdir:
        emulator = common.EmulatorProcess(accounts, Path(workdir)).start()
    try:
        common.configure(emulator.url, REDIS_URL=None)
        common.reset_app_state()
        account = accounts[0]
        client = get_client("emulator", "v3")
        login = client.login(
            username=account.username,
            password=account.password,
            organization_id=account.organization_id,
            dev_key=account.dev_key,
        )
        now = common.clock()
        tenant_id = common.create_connections(
            [account],
            session_ids=[login.session_id],
            obtained_at=[now],
            last_used_at=[now],
            prefix="limiter",
        )[0]
        session = session_from(BillConnection.objects.get(tenant_id=tenant_id))
        path = "/v3/login/session"

        def bare() -> None:
            client.request(
                "GET",
                path,
                session_id=session.session_id,
                dev_key=session.dev_key,
                json=None,
                data=None,
                params=None,
                bearer=None,
            )

        def through_gateway() -> None:
            gateway.request(session, "GET", path)

        backends = {
            "pooled": Pooled(),
            "per_transaction": PerTransaction(),
        }

        counted_slot = limits.request_slot

        def uncounted_slot(fingerprint: str, organization_id: str, **_: Any) -> Any:
            return counted_slot(fingerprint, organization_id)  # the slot, without its count

        def use(variant: str) -> None:
            limits._backends.clear()
            uncounted = variant.endswith("_uncounted")
            limits.request_slot = uncounted_slot if uncounted else counted_slot  # type: ignore[assignment]
            if variant.startswith("redis"):
                common.configure(emulator.url, REDIS_URL=redis_url)
            else:
                common.configure(emulator.url, REDIS_URL=None)
                backend = backends["per_transaction" if variant == "db_before" else "pooled"]
                limits._backends[(None, "postgresql")] = backend

        variants: dict[str, Any] = {
            "bare": bare,
            "redis": through_gateway,
            "redis_uncounted": through_gateway,
            "db_pooled": through_gateway,
            "db_pooled_uncounted": through_gateway,
            "db_before": through_gateway,
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for name in variants:  # warm every path once (pools, scripts, HTTP keep-alive)
            use(name)
            variants[name]()
        opened_before_rounds = dict(opened)
        for round_number in range(rounds):
            order = list(variants)
            shift = round_number % len(order)
            order = order[shift:] + order[:shift]  # none always first
            for name in order:
                use(name)
                started = time.perf_counter()
                for _ in range(calls):
                    variants[name]()
                times[name].append((time.perf_counter() - started) / calls)
            if not quiet:
                print(
                    f"round {round_number + 1}/{rounds}: "
                    + ", ".join(f"{n} {times[n][-1] * 1000:.2f} ms" for n in variants),
                    flush=True,
                )
        counted = {}
        for backend in ("redis", "db_pooled"):  # the database variants share the tables
            use(backend)
            counted[backend] = limits.calls_last_hour(session.dev_key_fingerprint).caller
    finally:
        limits.request_slot = counted_slot  # type: ignore[assignment]
        limits._backends.clear()
        common.configure(emulator.url, REDIS_URL=redis_url)
        emulator.stop()
    medians = {name: statistics.median(values) for name, values in times.items()}
    calls_made = rounds * calls
    return {
        "w004": _w004_without_redis(),
        "rounds": rounds,
        "calls": calls,
        "medians": medians,
        "worst": {name: max(values) for name, values in times.items()},
        "opened_pooled": opened["pooled"] - opened_before_rounds["pooled"],
        "opened_before": opened["per_transaction"] - opened_before_rounds["per_transaction"],
        "db_calls": calls_made,
        # Each counted variant: one warm-up call, then ``calls`` per round.
        "counted": counted,
        "made": {"redis": 1 + calls_made, "db_pooled": 2 * (1 + calls_made)},
    }


def _w004_without_redis() -> bool:
    """Whether the system check recommends Redis to a PostgreSQL project without REDIS_URL."""
    from django.conf import settings
    from django.test.utils import override_settings

    from bill_integration.limits.checks import W004_DATABASE_LIMITER, check_database_limiter

    without = {**getattr(settings, "BILL_INTEGRATION", {}), "REDIS_URL": None}
    with override_settings(BILL_INTEGRATION=without):
        return W004_DATABASE_LIMITER in [w.id for w in check_database_limiter()]


LABELS = {
    "bare": "bare client call (baseline)",
    "redis": "gateway, Redis limiter, counted",
    "redis_uncounted": "gateway, Redis limiter, counting off",
    "db_pooled": "gateway, database limiter, pooled (now), counted",
    "db_pooled_uncounted": "gateway, database limiter, pooled, counting off",
    "db_before": "gateway, database limiter, a connection per transaction (before), counted",
}


def report(outcome: dict[str, Any], command: str, facts: dict[str, str], seconds: float) -> str:
    o = outcome
    m = o["medians"]
    unit = m["bare"]
    rows = [
        [
            LABELS[name],
            f"{m[name] * 1000:.2f} ms",
            f"**{m[name] / unit:.2f} ×**" if name != "bare" else "1 ×",
            f"{o['worst'][name] / unit:.2f} ×",
        ]
        for name in LABELS
    ]
    db_ratio = m["db_pooled"] / unit
    redis_ratio = m["redis"] / unit
    recommended = o["w004"] and redis_ratio <= 2.0
    return (
        "## 6. Limiter\n\n"
        + common.facts_block(command, facts, seconds)
        + f"- The same call (`GET /v3/login/session`, the emulator in its own process) made "
        f"{o['calls']} times per variant per round, {o['rounds']} rounds, variants interleaved "
        '(the order rotates each round); `CONN_MAX_AGE = 0`. "Before" is this branch\'s '
        "limiter with its pool replaced by a connection opened and closed around each limiter "
        "transaction, which is what the old limiter did with `CONN_MAX_AGE = 0` (2 connections "
        "a call: the slot, which also counts the call, and its release).\n"
        f"- Calls counted, read back after the rounds: Redis {o['counted']['redis']} of the "
        f"{o['made']['redis']} its counted variant made, database {o['counted']['db_pooled']} "
        f"of {o['made']['db_pooled']}"
        + ("" if o["counted"] == o["made"] else " (**counts missing**)")
        + ".\n"
        f"- PostgreSQL connections the limiter opened during the rounds: pooled "
        f"{o['opened_pooled']}, before {o['opened_before']} (for "
        f"{o['db_calls']} calls each).\n\n"
        + common.table(["variant", "median per call", "ratio to bare", "worst round"], rows)
        + "\n"
        + common.table(
            ["target", "measured", "result"],
            [
                [
                    "database limiter within 2 × a bare call",
                    f"{db_ratio:.2f} ×",
                    common.verdict(db_ratio <= 2.0),
                ],
                [
                    "or (the issue's alternative): Redis the recommended limiter, the system "
                    "check saying so, and within 2 × a bare call",
                    f"check W004 {'raised' if o['w004'] else 'NOT raised'} on PostgreSQL "
                    f"without REDIS_URL; Redis {redis_ratio:.2f} ×",
                    common.verdict(recommended),
                ],
                [
                    "counting's cost on a caller's call (Redis)",
                    f"{(m['redis'] - m['redis_uncounted']) * 1000:.2f} ms",
                    "reported",
                ],
            ],
        )
        + '\nThe bad case: the "before" row, a new PostgreSQL connection (and its '
        "authentication) per limiter transaction; a 16-thread worker doing that ran "
        "PostgreSQL out of connections. Redis stays the recommended limiter for production "
        "(check `bill_integration.W004` says so on `check --deploy`): its slot and count are "
        "single round trips, and it needs no database connection at all.\n"
    )
