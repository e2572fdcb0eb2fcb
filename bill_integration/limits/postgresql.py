"""The limiter on PostgreSQL: advisory locks on a connection of the limiter's own.

Each check-and-count is one short transaction serialised by ``pg_advisory_xact_lock`` on a
*separate* connection, so a count is visible to other workers at once even when the caller is
inside a transaction (the login under a row lock in ``services``) and is not undone if that
transaction rolls back: BILL counted the login anyway. That connection follows
``CONN_MAX_AGE``; with the default 0 it is opened per check, so :meth:`holding_connection`
(``limits.batch()``) keeps it for a loop such as the sweep.

The Redis backend also uses this class as its *login journal* (:meth:`record_login`), so a
Redis that lost its keys can be seeded again from the database.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections

from .base import DatabaseLimiterBase, call_count_model, limiter_models

#: How often one process deletes minute buckets older than ``counting.KEEP_BUCKETS``.
PRUNE_EVERY = timedelta(minutes=10)


def advisory_id(key: str) -> int:
    """A signed 64-bit id for ``pg_advisory_xact_lock``, stable across processes."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


class PostgreSQLLimiter(DatabaseLimiterBase):
    """The ``LimiterEvent`` and ``DevKeyState`` tables, written under advisory locks."""

    def __init__(self, alias: str = DEFAULT_DB_ALIAS) -> None:
        super().__init__(alias)
        self._local = threading.local()
        self._pruned_at: datetime | None = None

    def _own_connection(self) -> Any:
        wrapper = getattr(self._local, "connection", None)
        if wrapper is None:
            main = connections[self.alias]
            wrapper = type(main)(dict(main.settings_dict), self.alias)
            self._local.connection = wrapper
        return wrapper

    @contextmanager
    def _locked(self, lock_key: str | None) -> Iterator[Any]:
        """A cursor inside a short transaction that holds an advisory lock on ``lock_key``
        (``None``: no lock, for statements atomic on their own)."""
        wrapper = self._own_connection()
        keep = wrapper.settings_dict.get("CONN_MAX_AGE", 0) != 0 or getattr(self._local, "held", 0)
        try:
            with wrapper.cursor() as cursor:
                cursor.execute("BEGIN")
                try:
                    if lock_key is not None:
                        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [advisory_id(lock_key)])
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
            wrapper: Any = getattr(self._local, "connection", None)
            idle = not self._local.held and wrapper is not None
            if idle and wrapper.settings_dict.get("CONN_MAX_AGE", 0) == 0:
                wrapper.close()

    @staticmethod
    def _tables() -> tuple[str, str]:
        events, states = limiter_models()
        return events._meta.db_table, states._meta.db_table

    def _take(
        self,
        kind: str,
        key: str,
        *,
        limit: int | None,
        at: datetime,
        expires_at: datetime,
        token: str,
    ) -> bool:
        """Insert one ``kind`` row for ``key`` unless ``limit`` unexpired ones exist."""
        events, _ = self._tables()
        with self._locked(f"{kind}:{key}") as cursor:
            cursor.execute(
                f"DELETE FROM {events} WHERE kind = %s AND key = %s AND expires_at <= %s",
                [kind, key, at],
            )
            if limit is not None:
                cursor.execute(
                    f"SELECT count(*) FROM {events} WHERE kind = %s AND key = %s", [kind, key]
                )
                if cursor.fetchone()[0] >= limit:
                    return False
            cursor.execute(
                f"INSERT INTO {events} (kind, key, token, at, expires_at) VALUES (%s, %s, %s, %s, %s)",
                [kind, key, token, at, expires_at],
            )
            return True

    def acquire_slot(
        self, key: str, fingerprint: str, *, limit: int, at: datetime, lease: timedelta
    ) -> str | datetime | None:
        events, states = self._tables()
        token = uuid.uuid4().hex
        with self._locked("slot:" + key) as cursor:
            cursor.execute(
                f"SELECT paused_until FROM {states} WHERE fingerprint = %s AND paused_until > %s",
                [fingerprint, at],
            )
            paused_row = cursor.fetchone()
            if paused_row is not None:
                paused: datetime = paused_row[0]
                return paused
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

    def release_slot(self, key: str, token: str) -> None:
        events, _ = self._tables()
        with self._locked("slot:" + key) as cursor:
            cursor.execute(
                f"DELETE FROM {events} WHERE kind = 'slot' AND key = %s AND token = %s",
                [key, token],
            )

    def _write_state(self, fingerprint: str, sql: str, params: list[Any]) -> None:
        with self._locked("state:" + fingerprint) as cursor:
            cursor.execute(sql, params)

    def pause(self, fingerprint: str, until: datetime) -> None:
        _, states = self._tables()
        self._write_state(
            fingerprint,
            f"INSERT INTO {states} (fingerprint, paused_until, budget_shortfalls) "
            "VALUES (%s, %s, 0) ON CONFLICT (fingerprint) DO UPDATE SET paused_until = "
            f"CASE WHEN {states}.paused_until IS NULL OR {states}.paused_until < "
            f"EXCLUDED.paused_until THEN EXCLUDED.paused_until ELSE {states}.paused_until END",
            [fingerprint, until],
        )

    def record_shortfall(self, fingerprint: str, *, at: datetime) -> int:
        _, states = self._tables()
        self._write_state(
            fingerprint,
            f"INSERT INTO {states} (fingerprint, budget_shortfalls, last_shortfall_at) "
            "VALUES (%s, 1, %s) ON CONFLICT (fingerprint) DO UPDATE SET "
            f"budget_shortfalls = {states}.budget_shortfalls + 1, "
            "last_shortfall_at = EXCLUDED.last_shortfall_at",
            [fingerprint, at],
        )
        return self.shortfalls(fingerprint)

    # --- calls counted per minute (limits/counting.py) ----------------------------------

    def _upsert_count(
        self, cursor: Any, fingerprint: str, kind: str, n: int, minute: datetime
    ) -> None:
        table = call_count_model()._meta.db_table
        cursor.execute(
            f"INSERT INTO {table} (fingerprint, minute, kind, count) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (fingerprint, minute, kind) DO UPDATE SET "
            f"count = {table}.count + EXCLUDED.count",
            [fingerprint, minute, kind, n],
        )

    def count_calls(self, fingerprint: str, kind: str, *, n: int, minute: datetime) -> None:
        """One upsert, atomic on its own (no lock needed), on the limiter's connection."""
        with self._locked(None) as cursor:
            self._upsert_count(cursor, fingerprint, kind, n, minute)
        self._prune(minute)

    def take_upkeep(
        self, fingerprint: str, kind: str, *, n: int, minute: datetime, limit: int
    ) -> bool:
        from .counting import HOUR_MINUTES, MINUTE, UPKEEP_KINDS

        table = call_count_model()._meta.db_table
        first = minute - (HOUR_MINUTES - 1) * MINUTE
        with self._locked("upkeep:" + fingerprint) as cursor:
            cursor.execute(
                f"SELECT COALESCE(sum(count), 0) FROM {table} WHERE fingerprint = %s "
                "AND minute >= %s AND minute <= %s AND kind = ANY(%s)",
                [fingerprint, first, minute, list(UPKEEP_KINDS)],
            )
            if int(cursor.fetchone()[0]) + n > limit:
                return False
            self._upsert_count(cursor, fingerprint, kind, n, minute)
        return True

    def _prune(self, minute: datetime) -> None:
        """Delete buckets older than a day, at most once per ``PRUNE_EVERY`` per process."""
        from .counting import KEEP_BUCKETS

        last = self._pruned_at
        if last is not None and abs(minute - last) < PRUNE_EVERY:
            return
        self._pruned_at = minute
        table = call_count_model()._meta.db_table
        with self._locked(None) as cursor:
            cursor.execute(f"DELETE FROM {table} WHERE minute < %s", [minute - KEEP_BUCKETS])

    def reset(self) -> None:
        """Forget every count and pause (tests and operators)."""
        events, states = self._tables()
        counts = call_count_model()._meta.db_table
        self._pruned_at = None
        with self._locked("reset") as cursor:
            cursor.execute(f"DELETE FROM {events}")
            cursor.execute(f"DELETE FROM {states}")
            cursor.execute(f"DELETE FROM {counts}")
