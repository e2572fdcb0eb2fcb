"""The limiter on Redis: one Lua script per check-and-count, every key with a TTL.

This module is ``bill_integration.limits.redis``; ``import redis`` below is the redis-py
package (imports are absolute), never this module.

The login window of a developer key is a sorted set (member: a login's token, score: its
time) that always holds the member ``seeded`` (score 0) while Redis has it. A window key that
is missing therefore means "Redis does not know" (it restarted without persistence, was
flushed, or the key aged out after an hour without logins), never "no logins": the key is
rebuilt from the database's login journal before anything is counted. Every login Redis
grants is written to that journal (a ``LimiterEvent`` row of kind ``login``) with the same
token, so a rebuild is idempotent.

While Redis is unreachable every method raises :class:`~bill_integration.exceptions.LimiterUnavailable` (a ``TransientError``), never a redis-py
exception, and the message names the host, never the URL (which may carry a password).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar, cast

import redis
import redis.exceptions

from ..conf import now
from ..exceptions import LimiterUnavailable
from .base import LOGIN_WINDOW, REDIS_PREFIX, from_ts

#: The member that marks a login window Redis knows (seeded); real members are uuid hex.
SEEDED = "seeded"
#: How often a window lost at the moment it was seeded is rebuilt before giving up.
SEED_ATTEMPTS = 3

# Returns 1 (granted), 0 (budget spent) or -1 (window unknown: seed it from the database).
_LOGIN_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '(0', tonumber(ARGV[1]) - tonumber(ARGV[2]))
if redis.call('ZCOUNT', KEYS[1], '(0', '+inf') < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  return 1
end
return 0
"""

# Builds a missing window from (score, token) pairs; a window another worker built wins.
_SEED_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('ZADD', KEYS[1], 0, ARGV[2])
for i = 3, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""

# Returns {1} (slot taken), {0} (all slots busy) or {-1, paused_until} (devKey paused).
# With KEYS[3] (the minute's bucket) and KEYS[4] (the fingerprints' sorted set), a slot taken
# also counts one call of kind ARGV[5] there, as ``count_calls`` would: no round trip more.
_SLOT_SCRIPT = """
local paused = redis.call('GET', KEYS[2])
if paused and tonumber(paused) > tonumber(ARGV[1]) then
  return {-1, paused}
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), ARGV[4])
  redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 60)
  if #KEYS == 4 then
    redis.call('HINCRBY', KEYS[3], ARGV[5], 1)
    redis.call('EXPIRE', KEYS[3], ARGV[6])
    redis.call('ZADD', KEYS[4], ARGV[8], ARGV[7])
  end
  return {1}
end
return {0}
"""

# Counts ARGV[2] upkeep calls of kind ARGV[1] in the last bucket key (the current minute) if
# the rolling hour's minute buckets (KEYS but the last) leave room: their upkeep kinds under
# ARGV[3] and all their calls under ARGV[7]. Returns 1 (counted) or 0 (no room).
# KEYS[#KEYS] is the fingerprints' sorted set.
_UPKEEP_SCRIPT = """
local upkeep, total = 0, 0
local buckets = #KEYS - 1
for i = 1, buckets do
  local v = redis.call(
    'HMGET', KEYS[i], 'keep_alive', 'background_login', 'caller', 'caller_login', 'other')
  local kept = (tonumber(v[1]) or 0) + (tonumber(v[2]) or 0)
  upkeep = upkeep + kept
  total = total + kept + (tonumber(v[3]) or 0) + (tonumber(v[4]) or 0) + (tonumber(v[5]) or 0)
end
local n = tonumber(ARGV[2])
if upkeep + n > tonumber(ARGV[3]) or total + n > tonumber(ARGV[7]) then
  return 0
end
redis.call('HINCRBY', KEYS[buckets], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[buckets], ARGV[4])
redis.call('ZADD', KEYS[#KEYS], ARGV[6], ARGV[5])
return 1
"""

_Method = TypeVar("_Method", bound=Callable[..., Any])


class LoginJournal(Protocol):
    """Where granted logins are also written (a database backend)."""

    def record_login(self, fingerprint: str, *, token: str, at: datetime) -> None: ...
    def recent_logins(self, fingerprint: str, *, at: datetime) -> list[tuple[str, datetime]]: ...
    def reset(self) -> None: ...


def _typed_errors(method: _Method) -> _Method:
    """Turn redis-py's connection errors into :class:`~bill_integration.exceptions.LimiterUnavailable` (a ``TransientError``) (no URL in the text)."""

    @functools.wraps(method)
    def wrapper(self: RedisLimiter, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise LimiterUnavailable(
                f"The limiter's Redis ({self.where}) is unreachable; calls to BILL wait "
                "until it answers."
            ) from exc

    return wrapper  # type: ignore[return-value]


class RedisLimiter:
    """Atomic counters in Redis, a login journal in the database to rebuild them."""

    def __init__(self, url: str, journal: LoginJournal) -> None:
        self.redis = redis.Redis.from_url(url)
        self.journal = journal
        self._login = self.redis.register_script(_LOGIN_SCRIPT)
        self._seed = self.redis.register_script(_SEED_SCRIPT)
        self._slot = self.redis.register_script(_SLOT_SCRIPT)
        self._upkeep = self.redis.register_script(_UPKEEP_SCRIPT)
        options = self.redis.connection_pool.connection_kwargs
        if "path" in options:
            self.where = f"unix socket {options['path']}"
        else:
            self.where = f"{options.get('host')}:{options.get('port')}/{options.get('db', 0)}"

    def __repr__(self) -> str:
        return f"<RedisLimiter {self.where}>"

    @staticmethod
    def _key(*parts: str) -> str:
        return REDIS_PREFIX + ":".join(parts)

    def holding_connection(self) -> AbstractContextManager[None]:
        """The journal's connection, kept for a batch of logins (``limits.batch()``)."""
        holding = getattr(self.journal, "holding_connection", None)
        return holding() if holding is not None else nullcontext()

    def close(self) -> None:
        """Close the journal's pooled database connections (``limits.close_connections()``)."""
        close = getattr(self.journal, "close", None)
        if close is not None:
            close()

    def _seed_window(self, fingerprint: str, *, at: datetime) -> None:
        """Rebuild a missing login window from the journal (the logins of the last hour)."""
        pairs: list[Any] = []
        for token, moment in self.journal.recent_logins(fingerprint, at=at):
            pairs += [moment.timestamp(), token]
        ttl = int(LOGIN_WINDOW.total_seconds()) + 60
        self._seed(keys=[self._key("login", fingerprint)], args=[ttl, SEEDED, *pairs])

    @_typed_errors
    def acquire_login(self, fingerprint: str, *, budget: int, at: datetime) -> bool:
        window = LOGIN_WINDOW.total_seconds()
        token = uuid.uuid4().hex
        for _ in range(SEED_ATTEMPTS):
            taken = int(
                self._login(
                    keys=[self._key("login", fingerprint)],
                    args=[at.timestamp(), window, budget, token, int(window) + 60],
                )
            )
            if taken != -1:
                break
            self._seed_window(fingerprint, at=at)
        else:
            raise LimiterUnavailable("The limiter's Redis keeps losing its keys; try again later.")
        if taken:
            self.journal.record_login(fingerprint, token=token, at=at)
        return bool(taken)

    @_typed_errors
    def login_window(self, fingerprint: str, *, at: datetime) -> tuple[int, datetime | None]:
        key = self._key("login", fingerprint)
        if not self.redis.exists(key):
            self._seed_window(fingerprint, at=at)
        floor = at.timestamp() - LOGIN_WINDOW.total_seconds()
        used = self.redis.zcount(key, f"({floor}", "+inf")
        oldest = self.redis.zrangebyscore(key, f"({floor}", "+inf", start=0, num=1, withscores=True)
        frees_at = from_ts(cast(float, oldest[0][1])) + LOGIN_WINDOW if oldest else None
        return int(used), frees_at

    @_typed_errors
    def acquire_slot(
        self,
        key: str,
        fingerprint: str,
        *,
        limit: int,
        at: datetime,
        lease: timedelta,
        count: str | None = None,
    ) -> str | datetime | None:
        token = uuid.uuid4().hex
        keys = [self._key("slot", key), self._key("pause", fingerprint)]
        args: list[Any] = [at.timestamp(), lease.total_seconds(), limit, token]
        if count is not None:  # the call's count goes in the same script (one round trip)
            from .counting import KEEP_BUCKETS, minute_of

            minute = minute_of(at)
            keys += [self._bucket(fingerprint, minute), self._counted_keys]
            args += [count, int(KEEP_BUCKETS.total_seconds()), fingerprint, minute.timestamp()]
        answer = self._slot(keys=keys, args=args)
        if int(answer[0]) == -1:
            return from_ts(float(answer[1]))
        return token if int(answer[0]) == 1 else None

    @_typed_errors
    def release_slot(self, key: str, token: str) -> None:
        self.redis.zrem(self._key("slot", key), token)

    @_typed_errors
    def pause(self, fingerprint: str, until: datetime) -> None:
        key = self._key("pause", fingerprint)
        # TTL in real seconds is only garbage collection; the stored time decides.
        ttl = max(60, int((until - now()).total_seconds()) + 60)
        current = self.redis.get(key)
        if current is None or float(current) < until.timestamp():
            self.redis.set(key, until.timestamp(), ex=ttl)

    @_typed_errors
    def paused_until(self, fingerprint: str, *, at: datetime) -> datetime | None:
        value = self.redis.get(self._key("pause", fingerprint))
        if value is None or float(value) <= at.timestamp():
            return None
        return from_ts(float(value))

    @_typed_errors
    def record_shortfall(self, fingerprint: str, *, at: datetime) -> int:
        return int(self.redis.incr(self._key("shortfalls", fingerprint)))

    @_typed_errors
    def shortfalls(self, fingerprint: str) -> int:
        return int(self.redis.get(self._key("shortfalls", fingerprint)) or 0)

    # --- calls counted per minute (limits/counting.py): one hash per key and minute ---------

    @property
    def _counted_keys(self) -> str:
        """The sorted set of fingerprints with calls counted (score: their latest minute)."""
        return self._key("calls", "keys")

    def _bucket(self, fingerprint: str, minute: datetime) -> str:
        return self._key("calls", fingerprint, str(int(minute.timestamp()) // 60))

    @_typed_errors
    def count_calls(self, fingerprint: str, kind: str, *, n: int, minute: datetime) -> None:
        """HINCRBY the minute's hash, with its TTL, and note the key: one round trip."""
        from .counting import KEEP_BUCKETS

        key = self._bucket(fingerprint, minute)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(key, kind, n)
        pipe.expire(key, int(KEEP_BUCKETS.total_seconds()))
        pipe.zadd(self._counted_keys, {fingerprint: minute.timestamp()})
        pipe.execute()

    @_typed_errors
    def take_upkeep(
        self, fingerprint: str, kind: str, *, n: int, minute: datetime, limit: int, ceiling: int
    ) -> bool:
        from .counting import HOUR_MINUTES, KEEP_BUCKETS, MINUTE

        keys = [
            self._bucket(fingerprint, minute - back * MINUTE)
            for back in range(HOUR_MINUTES - 1, -1, -1)
        ]
        ttl = int(KEEP_BUCKETS.total_seconds())
        args: list[str | int | float] = [
            kind,
            n,
            limit,
            ttl,
            fingerprint,
            minute.timestamp(),
            ceiling,
        ]
        return bool(int(self._upkeep(keys=[*keys, self._counted_keys], args=args)))

    @_typed_errors
    def call_buckets(
        self, fingerprint: str, *, since: datetime, until: datetime
    ) -> list[tuple[datetime, str, int]]:
        from .counting import MINUTE

        minutes = []
        moment = since
        while moment <= until:
            minutes.append(moment)
            moment += MINUTE
        pipe = self.redis.pipeline(transaction=False)
        for minute in minutes:
            pipe.hgetall(self._bucket(fingerprint, minute))
        found = []
        for minute, values in zip(minutes, pipe.execute(), strict=True):
            for kind, count in values.items():
                found.append((minute, kind.decode(), int(count)))
        return found

    @_typed_errors
    def counted_fingerprints(self, *, since: datetime) -> list[str]:
        from .counting import KEEP_BUCKETS

        key = self._counted_keys
        oldest = since.timestamp() - KEEP_BUCKETS.total_seconds()  # long gone from the charts
        self.redis.zremrangebyscore(key, "-inf", f"({oldest}")
        members = cast(list[bytes], self.redis.zrangebyscore(key, since.timestamp(), "+inf"))
        return [member.decode() for member in members]

    @_typed_errors
    def reset(self) -> None:
        """Forget every count and pause, the journal's too (else a rebuild would restore them)."""
        for key in self.redis.scan_iter(match=REDIS_PREFIX + "*", count=500):
            self.redis.delete(key)
        self.journal.reset()
