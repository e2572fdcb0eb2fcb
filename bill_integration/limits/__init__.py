"""BILL's limits, shared by every process and worker: login budget, concurrency, devKey pauses.

BILL allows 200 logins per developer key per hour, 3 concurrent requests per developer key
and organization, and answers BDC_1144 when a developer key has used its hour (every later
request must wait for the next clock hour): https://developer.bill.com/docs/api-rate-limits.
Many tenants may share one developer key, so these limits are counted per developer key
*fingerprint* (``BillConnection.dev_key_fingerprint``, a keyed hash: the key itself is never
needed here) across all workers:

* :func:`take_login` spends one login from a rolling-hour budget
  (``LOGIN_BUDGET_PER_HOUR``, default 150, below BILL's 200 so links and operators keep room),
  or raises :class:`LoginBudgetExhausted` (a ``RateLimited`` with ``scope="login_budget"``)
  with the time a login frees up;
* :func:`request_slot` holds one of ``MAX_CONCURRENT_PER_ORGANIZATION`` slots for the length
  of one call, waiting up to ``CONCURRENCY_WAIT``; a slot has a lease
  (``CONCURRENCY_LEASE``) so a killed worker cannot keep it;
* :func:`pause_dev_key` records a BDC_1144: until the next clock hour no call of that
  developer key is made (every slot request raises ``RateLimited(scope="hourly")``).

Backends (one module each), chosen once per settings by :func:`get_limiter`:

* ``redis.py`` when ``BILL_INTEGRATION["REDIS_URL"]`` is set: one Lua script per
  check-and-count, every key with a TTL. While Redis is unreachable every function here raises
  :class:`~bill_integration.exceptions.TransientError`.
* ``postgresql.py`` on PostgreSQL without Redis: advisory locks on a connection of the
  limiter's own, so counts are seen by other workers at once and survive the caller's rollback.
* ``sqlite.py`` on any other database (SQLite in the demo): ORM rows, for one process.

**The login budget survives a Redis restart.** Redis may run without persistence; a restart
or a flush would read the budget as unspent, and the next sweep would log in past BILL's 200
an hour into BDC_1144. So the Redis backend also writes every login it grants to the database
(a ``LimiterEvent`` row of kind ``login``, through the database backend above: one small
insert per login, and logins are at most a few hundred an hour per key), and a login window
missing from Redis is rebuilt from those rows before anything is counted. This journal was
chosen over reading ``AuditEvent`` rows because it counts exactly what the budget granted
(also logins that failed at BILL, which BILL counts too) by the same fingerprint, with no join
through connections. A login granted in the instant between its Redis count and its journal
row, by another worker, while Redis restarts, can be missed once; the budget's margin below
BILL's 200 covers that.

Every timestamp comes from :func:`bill_integration.conf.now`, so tests that move the clock
move the windows too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.db import DEFAULT_DB_ALIAS, connections

from ..client.errors import start_of_next_hour
from ..conf import bill_settings, now
from ..exceptions import (
    CallDeadlineExceeded,
    LoginBudgetExhausted,
    RateLimited,
    UpkeepShareExhausted,
)
from .base import LOGIN_WINDOW, REDIS_PREFIX, LimiterBackend, LimitStatus
from .counting import (
    BACKGROUND_LOGIN,
    CALL_KINDS,
    CALLER,
    CALLER_LOGIN,
    KEEP_ALIVE,
    OTHER,
    UPKEEP_KINDS,
    HourOfCalls,
    calls_by_hour,
    calls_last_hour,
    check_kind,
    count_call,
    counted_fingerprints,
    record_deferral,
    take_upkeep,
    upkeep_limit,
    upkeep_room,
)
from .postgresql import PostgreSQLLimiter
from .sqlite import SQLiteLimiter

__all__ = [
    "BACKGROUND_LOGIN",
    "CALLER",
    "CALLER_LOGIN",
    "CALL_KINDS",
    "KEEP_ALIVE",
    "OTHER",
    "UPKEEP_KINDS",
    "HourOfCalls",
    "calls_by_hour",
    "calls_last_hour",
    "count_call",
    "counted_fingerprints",
    "record_deferral",
    "take_upkeep",
    "upkeep_limit",
    "upkeep_room",
    "LOGIN_WINDOW",
    "REDIS_PREFIX",
    "LimitStatus",
    "LimiterBackend",
    "batch",
    "close_connections",
    "get_limiter",
    "pause_dev_key",
    "paused_until",
    "record_shortfall",
    "request_slot",
    "reset",
    "slot_key",
    "spend_call",
    "status",
    "take_login",
]

logger = logging.getLogger("bill_integration.limits")

#: How long the slot poll sleeps between tries (seconds; grows to 0.25).
SLOT_POLL_INTERVAL = 0.02
#: Seconds a slot stays taken after the app cut a call at its deadline (BILL may still be
#: writing the answer to a closed connection for a moment).
SLOT_GRACE_AFTER_DEADLINE = 2.0
#: The window ``LOGINS_PER_MINUTE`` counts background logins in.
PACE_WINDOW = timedelta(minutes=1)


_backends: dict[tuple[str | None, str], LimiterBackend] = {}
_backends_lock = threading.Lock()


def database_limiter(alias: str = DEFAULT_DB_ALIAS) -> PostgreSQLLimiter | SQLiteLimiter:
    """The database backend for ``alias``'s vendor (PostgreSQL, else the ORM one)."""
    if connections[alias].vendor == "postgresql":
        return PostgreSQLLimiter(alias)
    return SQLiteLimiter(alias)


def _build(url: str | None) -> LimiterBackend:
    if not url:
        return database_limiter()
    from .redis import RedisLimiter  # imported late: redis-py is an optional dependency

    return RedisLimiter(url, journal=database_limiter())


def get_limiter() -> LimiterBackend:
    """The backend for the current settings (Redis when ``REDIS_URL`` is set)."""
    choice = (bill_settings.REDIS_URL, connections[DEFAULT_DB_ALIAS].vendor)
    backend = _backends.get(choice)
    if backend is None:
        with _backends_lock:
            backend = _backends.get(choice)
            if backend is None:
                backend = _backends[choice] = _build(choice[0])
    return backend


def close_connections() -> None:
    """Close the database connections the limiters keep (their pools), in this process.

    Call it before dropping a database the limiter used (a test run's teardown: PostgreSQL
    refuses to drop a database with open connections); the next call opens new ones.
    """
    for backend in list(_backends.values()):
        close = getattr(backend, "close", None)
        if close is not None:
            close()


def reset() -> None:
    """Forget every count and pause of the current backend (tests and operators)."""
    get_limiter().reset()


@contextmanager
def batch() -> Iterator[None]:
    """Reuse one database connection for the limiter's work in a loop (the sweep)."""
    holding = getattr(get_limiter(), "holding_connection", None)
    if holding is None:
        yield
        return
    with holding():
        yield


def _paused_error(until: datetime) -> RateLimited:
    return RateLimited(
        "BILL paused this developer key until the next hour (BDC_1144).",
        bill_code="BDC_1144",
        retry_at=until,
        scope="hourly",
    )


def take_login(
    fingerprint: str, *, attempt_by: str | None = None, background: bool = False
) -> None:
    """Spend one login of ``fingerprint``'s hourly budget, or raise.

    A renewal of a linked connection (``attempt_by=None``) may use the whole budget. An
    *attempt* (a link, a forced refresh, a verification: a login that may well fail) names the
    tenant making it: it is refused once that tenant made ``LOGIN_ATTEMPTS_PER_TENANT`` in the
    last hour, or once the key's logins reach the share kept for renewals
    (``LOGIN_RESERVE_FOR_RENEWALS``). So tenants typing wrong passwords spend at most their own
    allowance and never the logins that keep healthy tenants' sessions going.

    A *background* login (the sweep's renewal, ``background=True``) is paced to
    ``LOGINS_PER_MINUTE`` and stops while only ``LOGIN_RESERVE_FOR_CALLERS`` of the budget is
    left, so a caller waiting in ``get_session()`` or a person linking is served first; it is
    refused with :class:`UpkeepShareExhausted` (the sweep defers it, nothing fails).

    Raises ``RateLimited(scope="hourly")`` while BDC_1144 paused the developer key, and
    :class:`LoginBudgetExhausted` (``scope="login_budget"``) when the budget is spent, both
    with ``retry_at``.
    """
    limiter = get_limiter()
    moment = now()
    paused = limiter.paused_until(fingerprint, at=moment)
    if paused is not None:
        raise _paused_error(paused)
    budget = int(bill_settings.LOGIN_BUDGET_PER_HOUR)
    if attempt_by is not None:
        # The tenant's own allowance first: a refused attempt spends nothing of the key's.
        per_tenant = int(bill_settings.LOGIN_ATTEMPTS_PER_TENANT)
        attempts_key = f"attempts:{fingerprint}:{attempt_by}"
        if not limiter.acquire_login(attempts_key, budget=per_tenant, at=moment):
            _, frees_at = limiter.login_window(attempts_key, at=moment)
            raise LoginBudgetExhausted(
                f"This tenant made its {per_tenant} sign-in attempts of the hour.",
                retry_at=frees_at or moment + LOGIN_WINDOW,
            )
        reserve = round(budget * float(bill_settings.LOGIN_RESERVE_FOR_RENEWALS))
        budget = max(0, budget - reserve)
    elif background:
        _pace_background_login(limiter, fingerprint, moment)
        reserve = round(budget * float(bill_settings.LOGIN_RESERVE_FOR_CALLERS))
        if reserve:
            if limiter.acquire_login(fingerprint, budget=max(0, budget - reserve), at=moment):
                return
            _, frees_at = limiter.login_window(fingerprint, at=moment)
            raise UpkeepShareExhausted(
                f"Background logins stop with {reserve} of the {budget} logins an hour left "
                "for callers.",
                retry_at=frees_at or moment + LOGIN_WINDOW,
            )
    if limiter.acquire_login(fingerprint, budget=budget, at=moment):
        return
    _, frees_at = limiter.login_window(fingerprint, at=moment)
    raise LoginBudgetExhausted(
        f"The login budget of this developer key ({budget} per hour) is used up.",
        retry_at=frees_at or moment + LOGIN_WINDOW,
    )


def _pace_background_login(limiter: LimiterBackend, fingerprint: str, moment: datetime) -> None:
    """At most ``LOGINS_PER_MINUTE`` background logins per developer key in any minute.

    A concurrency slot of key ``pace:<fingerprint>`` that is never released: its one-minute
    lease is the sliding window, shared by every worker (as :func:`spend_call` does).
    """
    pace = bill_settings.LOGINS_PER_MINUTE
    if pace is None:
        return
    answer = limiter.acquire_slot(
        f"pace:{fingerprint}", fingerprint, limit=int(pace), at=moment, lease=PACE_WINDOW
    )
    if isinstance(answer, datetime):
        raise _paused_error(answer)
    if answer is None:
        raise UpkeepShareExhausted(
            f"Background logins are paced to {pace} a minute for this developer key.",
            retry_at=moment + PACE_WINDOW,
        )


def pause_dev_key(fingerprint: str, until: datetime | None = None) -> datetime:
    """Stop every call of this developer key until ``until`` (default: the next clock hour)."""
    until = until or start_of_next_hour(now())
    get_limiter().pause(fingerprint, until)
    logger.warning("bill developer key paused until %s (BDC_1144)", until.isoformat())
    return until


def paused_until(fingerprint: str) -> datetime | None:
    """When the BDC_1144 pause of this developer key ends, or None when it is not paused."""
    return get_limiter().paused_until(fingerprint, at=now())


def record_shortfall(fingerprint: str) -> int:
    """Count one due login the budget could not cover; returns the developer key's total."""
    return get_limiter().record_shortfall(fingerprint, at=now())


def slot_key(fingerprint: str, organization_id: str) -> str:
    """BILL limits concurrency per developer key *and* organization: one slot set per pair."""
    return f"{fingerprint}:{organization_id}"


@contextmanager
def request_slot(
    fingerprint: str, organization_id: str, *, count: str | None = None
) -> Iterator[None]:
    """Hold one of the organization's concurrent-request slots for the body of the block.

    Waits up to ``CONCURRENCY_WAIT`` for a slot (then ``RateLimited(scope="concurrency")``),
    and raises ``RateLimited(scope="hourly")`` at once while the developer key is paused.
    With ``count`` (a kind of call, ``limits.CALLER`` ...), the slot taken also counts one
    call of that kind, in the same atomic step as the slot (one Redis round trip, one
    PostgreSQL statement); a refused slot counts nothing.
    A release that fails (Redis gone after BILL answered) is logged and ignored: the slot's
    lease frees it, and the body's result or exception stands.
    """
    if count is not None:
        check_kind(count)
    limiter = get_limiter()
    key = slot_key(fingerprint, organization_id)
    limit = int(bill_settings.MAX_CONCURRENT_PER_ORGANIZATION)
    lease = bill_settings.CONCURRENCY_LEASE
    deadline = time.monotonic() + bill_settings.CONCURRENCY_WAIT.total_seconds()
    delay = SLOT_POLL_INTERVAL
    while True:
        answer = limiter.acquire_slot(
            key, fingerprint, limit=limit, at=now(), lease=lease, count=count
        )
        if isinstance(answer, datetime):
            raise _paused_error(answer)
        if answer is not None:
            break
        if time.monotonic() >= deadline:
            raise RateLimited(
                f"All {limit} concurrent-request slots of this organization stayed busy.",
                scope="concurrency",
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)
    try:
        yield
    except CallDeadlineExceeded:
        # We closed the connection, but BILL may count the request as running until it
        # notices: give the slot back a moment later, so a fourth request cannot reach BILL
        # while it still counts three (BDC_1322). The lease bounds it if this process dies.
        release = threading.Timer(
            SLOT_GRACE_AFTER_DEADLINE,
            _release,
            (limiter, key, answer),
            {"lease_seconds": lease.total_seconds()},
        )
        release.daemon = True
        release.start()
        raise
    except BaseException:
        _release(limiter, key, answer, lease_seconds=lease.total_seconds())
        raise
    else:
        _release(limiter, key, answer, lease_seconds=lease.total_seconds())


def spend_call(key: str) -> None:
    """Count one Spend & Expense call of the token behind ``key`` (``spend:<fingerprint>``).

    BILL allows 60 Spend & Expense calls a minute (``auth_methods.SPEND_CALLS_PER_MINUTE``),
    apart from the developer keys' limits. Each call takes a concurrency slot of key ``key``
    that is never released: its one-minute lease is the sliding window, shared by every
    worker through the same backend. Waits up to ``CONCURRENCY_WAIT`` for the window, then
    raises ``RateLimited(scope="spend")``.
    """
    from ..auth_methods import SPEND_CALLS_PER_MINUTE

    limiter = get_limiter()
    deadline = time.monotonic() + bill_settings.CONCURRENCY_WAIT.total_seconds()
    delay = SLOT_POLL_INTERVAL
    while True:
        answer = limiter.acquire_slot(
            key, key, limit=SPEND_CALLS_PER_MINUTE, at=now(), lease=timedelta(minutes=1)
        )
        if isinstance(answer, datetime):
            raise _paused_error(answer)
        if answer is not None:
            return
        if time.monotonic() >= deadline:
            raise RateLimited(
                f"The {SPEND_CALLS_PER_MINUTE} Spend & Expense calls of the minute are used.",
                scope="spend",
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)


def _release(limiter: LimiterBackend, key: str, token: str, *, lease_seconds: float) -> None:
    try:
        limiter.release_slot(key, token)
    except Exception as exc:  # noqa: BLE001 - BILL already answered; the lease frees the slot
        logger.warning(
            "bill concurrency slot not released (%s: %s); its lease frees it within %.0f s",
            type(exc).__name__,
            exc,
            lease_seconds,
        )


def status(fingerprint: str) -> LimitStatus:
    """Budget used, pause and shortfalls of one developer key (``manage.py bill_status``)."""
    limiter = get_limiter()
    moment = now()
    used, _ = limiter.login_window(fingerprint, at=moment)
    return LimitStatus(
        logins_used=used,
        budget=int(bill_settings.LOGIN_BUDGET_PER_HOUR),
        paused_until=limiter.paused_until(fingerprint, at=moment),
        budget_shortfalls=limiter.shortfalls(fingerprint),
    )
