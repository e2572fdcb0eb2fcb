"""BILL's limits, shared by every process and worker: login budget, concurrency, devKey pauses.

BILL allows 200 logins per developer key per hour, 3 concurrent requests per developer key
and organization, and answers BDC_1144 when a developer key has used its hour (every later
request must wait for the next clock hour). Many tenants may share one developer key, so these
limits are counted per developer key *fingerprint* (``BillConnection.dev_key_fingerprint``, a
keyed hash: the key itself is never needed here) across all workers:

* :func:`take_login` spends one login from a rolling-hour budget
  (``LOGIN_BUDGET_PER_HOUR``, default 150, below BILL's 200 so links and operators keep room),
  or raises :class:`RateLimited` (``scope="login_budget"``) with the time a login frees up;
* :func:`request_slot` holds one of ``MAX_CONCURRENT_PER_ORGANIZATION`` slots for the length
  of one call, waiting up to ``CONCURRENCY_WAIT``; a slot has a lease
  (``CONCURRENCY_LEASE``) so a killed worker cannot keep it;
* :func:`pause_dev_key` records a BDC_1144: until the next clock hour no call of that
  developer key is made (every slot request raises ``RateLimited(scope="hourly")``).

Two backends, chosen by ``BILL_INTEGRATION["REDIS_URL"]``:

* **Redis** (set the URL): each check-and-count is one Lua script, so it is atomic; keys carry
  a TTL so nothing outlives its window.
* **The database** (default): PostgreSQL runs each check-and-count in its own short
  transaction, serialised by ``pg_advisory_xact_lock`` on a *separate* connection, so a count
  is visible to other workers at once even when the caller is inside a transaction (the
  login under a row lock in ``services/sessions.py``) and is not undone if that transaction
  rolls back (BILL counted the login anyway). That connection follows ``CONN_MAX_AGE``: with
  the default 0 it is opened per check (per call to BILL, twice), so give the database a
  ``CONN_MAX_AGE`` or use Redis when calls are many; the sweep reuses one connection for its
  whole loop (:func:`batch`). Any other database (SQLite in the demo) uses the ORM in the
  caller's transaction; that is right for one process, which is all the demo runs.

Every timestamp comes from :func:`bill_integration.conf.now`, so tests that move the clock
move the windows too.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from django.db import DEFAULT_DB_ALIAS, connections, transaction

from .conf import bill_settings, now
from .exceptions import RateLimited

logger = logging.getLogger("bill_integration.limits")

#: BILL counts logins per developer key per hour.
LOGIN_WINDOW = timedelta(hours=1)
#: Redis keys start with this, so the app can share a Redis database with others.
REDIS_PREFIX = "bill_integration:limits:"
#: How long the slot poll sleeps between tries (seconds; jittered by the uuid of the caller).
SLOT_POLL_INTERVAL = 0.02


@dataclass(frozen=True)
class LimitStatus:
    """What ``bill_status`` shows per developer key: budget used, pause, shortfalls."""

    logins_used: int
    budget: int
    paused_until: datetime | None
    budget_shortfalls: int


class LimiterBackend(Protocol):
    def acquire_login(self, fingerprint: str, *, budget: int, at: datetime) -> bool: ...
    def login_window(self, fingerprint: str, *, at: datetime) -> tuple[int, datetime | None]: ...
    def acquire_slot(
        self, key: str, fingerprint: str, *, limit: int, at: datetime, lease: timedelta
    ) -> str | datetime | None: ...
    def release_slot(self, key: str, token: str) -> None: ...
    def pause(self, fingerprint: str, until: datetime) -> None: ...
    def paused_until(self, fingerprint: str, *, at: datetime) -> datetime | None: ...
    def record_shortfall(self, fingerprint: str, *, at: datetime) -> int: ...
    def shortfalls(self, fingerprint: str) -> int: ...
    def reset(self) -> None: ...


def next_clock_hour(moment: datetime) -> datetime:
    """The start of the next clock hour (when BILL lifts a BDC_1144)."""
    return moment.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


def _from_ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, tz=UTC)


# --- Redis ----------------------------------------------------------------------------------

_LOGIN_SCRIPT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  return 1
end
return 0
"""

# Returns {1} (slot taken), {0} (all slots busy) or {-1, paused_until} (devKey paused).
_SLOT_SCRIPT = """
local paused = redis.call('GET', KEYS[2])
if paused and tonumber(paused) > tonumber(ARGV[1]) then
  return {-1, paused}
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), ARGV[4])
  redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 60)
  return {1}
end
return {0}
"""


class RedisLimiter:
    """Atomic counters in Redis (one Lua script per check-and-count), every key with a TTL."""

    def __init__(self, url: str) -> None:
        import redis

        self.redis = redis.Redis.from_url(url)
        self._login = self.redis.register_script(_LOGIN_SCRIPT)
        self._slot = self.redis.register_script(_SLOT_SCRIPT)

    @staticmethod
    def _key(*parts: str) -> str:
        return REDIS_PREFIX + ":".join(parts)

    def acquire_login(self, fingerprint: str, *, budget: int, at: datetime) -> bool:
        window = LOGIN_WINDOW.total_seconds()
        taken = self._login(
            keys=[self._key("login", fingerprint)],
            args=[at.timestamp(), window, budget, uuid.uuid4().hex, int(window) + 60],
        )
        return bool(taken)

    def login_window(self, fingerprint: str, *, at: datetime) -> tuple[int, datetime | None]:
        key = self._key("login", fingerprint)
        floor = at.timestamp() - LOGIN_WINDOW.total_seconds()
        used = self.redis.zcount(key, f"({floor}", "+inf")
        oldest = self.redis.zrangebyscore(key, f"({floor}", "+inf", start=0, num=1, withscores=True)
        frees_at = _from_ts(oldest[0][1]) + LOGIN_WINDOW if oldest else None
        return int(used), frees_at

    def acquire_slot(
        self, key: str, fingerprint: str, *, limit: int, at: datetime, lease: timedelta
    ) -> str | datetime | None:
        token = uuid.uuid4().hex
        answer = self._slot(
            keys=[self._key("slot", key), self._key("pause", fingerprint)],
            args=[at.timestamp(), lease.total_seconds(), limit, token],
        )
        if int(answer[0]) == -1:
            return _from_ts(float(answer[1]))
        return token if int(answer[0]) == 1 else None

    def release_slot(self, key: str, token: str) -> None:
        self.redis.zrem(self._key("slot", key), token)

    def pause(self, fingerprint: str, until: datetime) -> None:
        key = self._key("pause", fingerprint)
        # TTL in real seconds is only garbage collection; the stored time decides.
        ttl = max(60, int((until - now()).total_seconds()) + 60)
        current = self.redis.get(key)
        if current is None or float(current) < until.timestamp():
            self.redis.set(key, until.timestamp(), ex=ttl)

    def paused_until(self, fingerprint: str, *, at: datetime) -> datetime | None:
        value = self.redis.get(self._key("pause", fingerprint))
        if value is None or float(value) <= at.timestamp():
            return None
        return _from_ts(float(value))

    def record_shortfall(self, fingerprint: str, *, at: datetime) -> int:
        return int(self.redis.incr(self._key("shortfalls", fingerprint)))

    def shortfalls(self, fingerprint: str) -> int:
        return int(self.redis.get(self._key("shortfalls", fingerprint)) or 0)

    def reset(self) -> None:
        for key in self.redis.scan_iter(match=REDIS_PREFIX + "*", count=500):
            self.redis.delete(key)


# --- the database ---------------------------------------------------------------------------


def _advisory_id(key: str) -> int:
    """A signed 64-bit id for ``pg_advisory_xact_lock``, stable across processes."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


class DatabaseLimiter:
    """The fallback without Redis: the ``LimiterEvent`` and ``DevKeyState`` tables."""

    def __init__(self, alias: str = DEFAULT_DB_ALIAS) -> None:
        self.alias = alias
        self._local = threading.local()

    # PostgreSQL: a connection of our own, so counts commit independently of the caller.
    @property
    def _is_postgresql(self) -> bool:
        return connections[self.alias].vendor == "postgresql"

    def _own_connection(self) -> Any:
        wrapper = getattr(self._local, "connection", None)
        if wrapper is None:
            main = connections[self.alias]
            wrapper = type(main)(dict(main.settings_dict), self.alias)
            self._local.connection = wrapper
        return wrapper

    @contextmanager
    def _locked(self, lock_key: str) -> Iterator[Any]:
        """A cursor inside a short transaction that holds an advisory lock on ``lock_key``."""
        wrapper = self._own_connection()
        keep = wrapper.settings_dict.get("CONN_MAX_AGE", 0) != 0 or getattr(self._local, "held", 0)
        try:
            with wrapper.cursor() as cursor:
                cursor.execute("BEGIN")
                try:
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_advisory_id(lock_key)])
                    yield cursor
                except BaseException:
                    cursor.execute("ROLLBACK")
                    raise
                cursor.execute("COMMIT")
        except Exception:
            wrapper.close()  # a broken connection is rebuilt on next use
            raise
        finally:
            if not keep:
                wrapper.close()

    @contextmanager
    def holding_connection(self) -> Iterator[None]:
        """Keep this thread's own connection open for a batch (the sweep), then close it."""
        self._local.held = getattr(self._local, "held", 0) + 1
        try:
            yield
        finally:
            self._local.held -= 1
            wrapper = getattr(self._local, "connection", None)
            idle = not self._local.held and wrapper is not None
            if idle and wrapper.settings_dict.get("CONN_MAX_AGE", 0) == 0:
                wrapper.close()

    @staticmethod
    def _tables() -> tuple[str, str]:
        from .models import DevKeyState, LimiterEvent

        return LimiterEvent._meta.db_table, DevKeyState._meta.db_table

    def acquire_login(self, fingerprint: str, *, budget: int, at: datetime) -> bool:
        if not self._is_postgresql:
            return self._orm_acquire("login", fingerprint, budget, at, at + LOGIN_WINDOW, None)
        events, _ = self._tables()
        with self._locked("login:" + fingerprint) as cursor:
            cursor.execute(
                f"DELETE FROM {events} WHERE kind = 'login' AND key = %s AND expires_at <= %s",
                [fingerprint, at],
            )
            cursor.execute(
                f"SELECT count(*) FROM {events} WHERE kind = 'login' AND key = %s", [fingerprint]
            )
            if cursor.fetchone()[0] >= budget:
                return False
            cursor.execute(
                f"INSERT INTO {events} (kind, key, token, at, expires_at) "
                "VALUES ('login', %s, %s, %s, %s)",
                [fingerprint, uuid.uuid4().hex, at, at + LOGIN_WINDOW],
            )
            return True

    def login_window(self, fingerprint: str, *, at: datetime) -> tuple[int, datetime | None]:
        from django.db.models import Count, Min

        from .models import LimiterEvent

        facts = (
            LimiterEvent.objects.using(self.alias)
            .filter(kind="login", key=fingerprint, expires_at__gt=at)
            .aggregate(used=Count("id"), frees_at=Min("expires_at"))
        )
        return int(facts["used"]), facts["frees_at"]

    def acquire_slot(
        self, key: str, fingerprint: str, *, limit: int, at: datetime, lease: timedelta
    ) -> str | datetime | None:
        token = uuid.uuid4().hex
        if not self._is_postgresql:
            paused = self.paused_until(fingerprint, at=at)
            if paused is not None:
                return paused
            taken = self._orm_acquire("slot", key, limit, at, at + lease, token)
            return token if taken else None
        events, states = self._tables()
        with self._locked("slot:" + key) as cursor:
            cursor.execute(
                f"SELECT paused_until FROM {states} WHERE fingerprint = %s AND paused_until > %s",
                [fingerprint, at],
            )
            paused_row = cursor.fetchone()
            if paused_row is not None:
                return paused_row[0]
            cursor.execute(
                f"DELETE FROM {events} WHERE kind = 'slot' AND key = %s AND expires_at <= %s",
                [key, at],
            )
            cursor.execute(f"SELECT count(*) FROM {events} WHERE kind = 'slot' AND key = %s", [key])
            if cursor.fetchone()[0] >= limit:
                return None
            cursor.execute(
                f"INSERT INTO {events} (kind, key, token, at, expires_at) "
                "VALUES ('slot', %s, %s, %s, %s)",
                [key, token, at, at + lease],
            )
        return token

    def _orm_acquire(
        self, kind: str, key: str, limit: int, at: datetime, expires_at: datetime, token: str | None
    ) -> bool:
        # SQLite: the demo's IMMEDIATE transactions serialise writers, one process only.
        from .models import LimiterEvent

        with transaction.atomic(using=self.alias):
            LimiterEvent.objects.using(self.alias).filter(
                kind=kind, key=key, expires_at__lte=at
            ).delete()
            if LimiterEvent.objects.using(self.alias).filter(kind=kind, key=key).count() >= limit:
                return False
            LimiterEvent.objects.using(self.alias).create(
                kind=kind, key=key, token=token or uuid.uuid4().hex, at=at, expires_at=expires_at
            )
        return True

    def release_slot(self, key: str, token: str) -> None:
        if not self._is_postgresql:
            from .models import LimiterEvent

            LimiterEvent.objects.using(self.alias).filter(
                kind="slot", key=key, token=token
            ).delete()
            return
        events, _ = self._tables()
        with self._locked("slot:" + key) as cursor:
            cursor.execute(
                f"DELETE FROM {events} WHERE kind = 'slot' AND key = %s AND token = %s",
                [key, token],
            )

    def pause(self, fingerprint: str, until: datetime) -> None:
        _, states = self._tables()
        sql = (
            f"INSERT INTO {states} (fingerprint, paused_until, budget_shortfalls) "
            "VALUES (%s, %s, 0) ON CONFLICT (fingerprint) DO UPDATE SET paused_until = "
            f"CASE WHEN {states}.paused_until IS NULL OR {states}.paused_until < "
            f"EXCLUDED.paused_until THEN EXCLUDED.paused_until ELSE {states}.paused_until END"
        )

        def portable(state: Any) -> None:
            if state.paused_until is None or state.paused_until < until:
                state.paused_until = until

        self._write(sql, [fingerprint, until], lock_key="state:" + fingerprint, portable=portable)

    def paused_until(self, fingerprint: str, *, at: datetime) -> datetime | None:
        from .models import DevKeyState

        until = (
            DevKeyState.objects.using(self.alias)
            .filter(fingerprint=fingerprint, paused_until__gt=at)
            .values_list("paused_until", flat=True)
            .first()
        )
        return until

    def record_shortfall(self, fingerprint: str, *, at: datetime) -> int:
        _, states = self._tables()
        sql = (
            f"INSERT INTO {states} (fingerprint, budget_shortfalls, last_shortfall_at) "
            "VALUES (%s, 1, %s) ON CONFLICT (fingerprint) DO UPDATE SET "
            f"budget_shortfalls = {states}.budget_shortfalls + 1, "
            "last_shortfall_at = EXCLUDED.last_shortfall_at"
        )

        def portable(state: Any) -> None:
            state.budget_shortfalls += 1
            state.last_shortfall_at = at

        self._write(sql, [fingerprint, at], lock_key="state:" + fingerprint, portable=portable)
        return self.shortfalls(fingerprint)

    def _write(self, sql: str, params: list[Any], *, lock_key: str, portable: Any) -> None:
        """Run ``sql`` on PostgreSQL; elsewhere (SQLite) ``portable(state)`` on the ORM row."""
        if self._is_postgresql:
            with self._locked(lock_key) as cursor:
                cursor.execute(sql, params)
            return
        from .models import DevKeyState

        with transaction.atomic(using=self.alias):
            state, _ = DevKeyState.objects.using(self.alias).get_or_create(fingerprint=params[0])
            portable(state)
            state.save()

    def shortfalls(self, fingerprint: str) -> int:
        from .models import DevKeyState

        value = (
            DevKeyState.objects.using(self.alias)
            .filter(fingerprint=fingerprint)
            .values_list("budget_shortfalls", flat=True)
            .first()
        )
        return int(value or 0)

    def reset(self) -> None:
        """Forget every count and pause (tests and operators)."""
        events, states = self._tables()
        if self._is_postgresql:
            with self._locked("reset") as cursor:
                cursor.execute(f"DELETE FROM {events}")
                cursor.execute(f"DELETE FROM {states}")
            return
        from .models import DevKeyState, LimiterEvent

        LimiterEvent.objects.using(self.alias).all().delete()
        DevKeyState.objects.using(self.alias).all().delete()


# --- the public functions -------------------------------------------------------------------

_backends: dict[str | None, LimiterBackend] = {}
_backends_lock = threading.Lock()


def get_limiter() -> LimiterBackend:
    """The backend for the current settings (Redis when ``REDIS_URL`` is set)."""
    url = bill_settings.REDIS_URL
    backend = _backends.get(url)
    if backend is None:
        with _backends_lock:
            backend = _backends.get(url)
            if backend is None:
                backend = RedisLimiter(url) if url else DatabaseLimiter()
                _backends[url] = backend
    return backend


@contextmanager
def batch() -> Iterator[None]:
    """Reuse one database connection for the limiter's checks in a loop (no-op with Redis)."""
    limiter = get_limiter()
    holding = getattr(limiter, "holding_connection", None)
    if holding is None:
        yield
        return
    with holding():
        yield


def take_login(fingerprint: str) -> None:
    """Spend one login of ``fingerprint``'s hourly budget, or raise :class:`RateLimited`.

    Raises ``RateLimited(scope="hourly")`` while BDC_1144 paused the developer key, and
    ``RateLimited(scope="login_budget")`` when the budget is spent, both with ``retry_at``.
    """
    limiter = get_limiter()
    moment = now()
    paused = limiter.paused_until(fingerprint, at=moment)
    if paused is not None:
        raise RateLimited(
            "BILL paused this developer key until the next hour (BDC_1144).",
            bill_code="BDC_1144",
            retry_at=paused,
            scope="hourly",
        )
    budget = int(bill_settings.LOGIN_BUDGET_PER_HOUR)
    if limiter.acquire_login(fingerprint, budget=budget, at=moment):
        return
    _, frees_at = limiter.login_window(fingerprint, at=moment)
    raise RateLimited(
        f"The login budget of this developer key ({budget} per hour) is used up.",
        retry_at=frees_at or moment + LOGIN_WINDOW,
        scope="login_budget",
    )


def note_login(fingerprint: str) -> None:
    """Count a login made outside the budget (a customer linking, an operator's check).

    It is never refused (the person is waiting, and BILL's 200 leave room above the budget),
    but it uses up budget, so the sweep's own logins plus these stay within BILL's limit.
    """
    get_limiter().acquire_login(fingerprint, budget=2**31, at=now())


def pause_dev_key(fingerprint: str, until: datetime | None = None) -> datetime:
    """Stop every call of this developer key until ``until`` (default: the next clock hour)."""
    until = until or next_clock_hour(now())
    get_limiter().pause(fingerprint, until)
    logger.warning("bill developer key paused until %s (BDC_1144)", until.isoformat())
    return until


def paused_until(fingerprint: str) -> datetime | None:
    return get_limiter().paused_until(fingerprint, at=now())


def record_shortfall(fingerprint: str) -> int:
    """Count one due login the budget could not cover; returns the developer key's total."""
    return get_limiter().record_shortfall(fingerprint, at=now())


def slot_key(fingerprint: str, organization_id: str) -> str:
    return f"{fingerprint}:{organization_id}"


@contextmanager
def request_slot(fingerprint: str, organization_id: str) -> Iterator[None]:
    """Hold one of the organization's concurrent-request slots for the body of the block.

    Waits up to ``CONCURRENCY_WAIT`` for a slot (then ``RateLimited(scope="concurrency")``),
    and raises ``RateLimited(scope="hourly")`` at once while the developer key is paused.
    """
    limiter = get_limiter()
    key = slot_key(fingerprint, organization_id)
    limit = int(bill_settings.MAX_CONCURRENT_PER_ORGANIZATION)
    lease = bill_settings.CONCURRENCY_LEASE
    deadline = time.monotonic() + bill_settings.CONCURRENCY_WAIT.total_seconds()
    delay = SLOT_POLL_INTERVAL
    while True:
        answer = limiter.acquire_slot(key, fingerprint, limit=limit, at=now(), lease=lease)
        if isinstance(answer, datetime):
            raise RateLimited(
                "BILL paused this developer key until the next hour (BDC_1144).",
                bill_code="BDC_1144",
                retry_at=answer,
                scope="hourly",
            )
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
    finally:
        limiter.release_slot(key, answer)


def status(fingerprint: str) -> LimitStatus:
    limiter = get_limiter()
    moment = now()
    used, _ = limiter.login_window(fingerprint, at=moment)
    return LimitStatus(
        logins_used=used,
        budget=int(bill_settings.LOGIN_BUDGET_PER_HOUR),
        paused_until=limiter.paused_until(fingerprint, at=moment),
        budget_shortfalls=limiter.shortfalls(fingerprint),
    )
