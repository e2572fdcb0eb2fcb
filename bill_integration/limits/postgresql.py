"""The limiter on PostgreSQL: advisory locks on a connection of the limiter's own.

Each check-and-count is one short transaction serialised by ``pg_advisory_xact_lock`` on a
*separate* connection, so a count is visible to other workers at once even when the caller is
inside a transaction (the login under a row lock in ``services``) and is not undone if that
transaction rolls back: BILL counted the login anyway.

Those connections are the limiter's own small pool (:data:`POOL_SIZE` idle per process),
whatever the project's ``CONN_MAX_AGE``: opening a PostgreSQL connection per check made the
limiter cost 12.5x a bare BILL call with the default ``CONN_MAX_AGE = 0`` (see
``docs/benchmarks.md``, the limiter benchmark). A process forked with a pool starts its own.

The Redis backend also uses this class as its *login journal* (:meth:`record_login`), so a
Redis that lost its keys can be seeded again from the database.
"""

from __future__ import annotations

import hashlib
import os
import queue
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections

from .base import DatabaseLimiterBase, call_count_model, limiter_models

#: Idle connections the limiter keeps per process and database. More are opened while more
#: threads are in a limiter call at once, and closed again afterwards.
POOL_SIZE = 4
#: How often one process deletes minute buckets older than ``counting.KEEP_BUCKETS``.
PRUNE_EVERY = timedelta(minutes=10)


def advisory_id(key: str) -> int:
    """A signed 64-bit id for ``pg_advisory_xact_lock``, stable across processes."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


def count_upsert(rows: str) -> str:
    """``INSERT`` of ``rows`` (fingerprint, minute, kind, count) into the minute buckets,
    adding each count to its bucket's: atomic on its own, no lock needed."""
    table = call_count_model()._meta.db_table
    return (
        f"INSERT INTO {table} (fingerprint, minute, kind, count) {rows} "
        "ON CONFLICT (fingerprint, minute, kind) DO UPDATE SET "
        f"count = {table}.count + EXCLUDED.count"
    )


class PostgreSQLLimiter(DatabaseLimiterBase):
    """The ``LimiterEvent`` and ``DevKeyState`` tables, written under advisory locks."""

    def __init__(self, alias: str = DEFAULT_DB_ALIAS) -> None:
        super().__init__(alias)
        self._pool: queue.LifoQueue[Any] = queue.LifoQueue(maxsize=POOL_SIZE)
        self._pid = os.getpid()
        self._pruned_at: datetime | None = None

    def _new_connection(self) -> Any:
        main = connections[self.alias]
        wrapper = type(main)(dict(main.settings_dict), self.alias)
        wrapper.inc_thread_sharing()  # pooled: used by one thread at a time, any thread
        return wrapper

    def _checkout(self) -> Any:
        if os.getpid() != self._pid:
            # A forked child (a prefork worker) must not share its parent's sockets: start a
            # pool of its own; the inherited wrappers are dropped, never closed from here.
            self._pool, self._pid = queue.LifoQueue(maxsize=POOL_SIZE), os.getpid()
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            return self._new_connection()

    def _checkin(self, wrapper: Any) -> None:
        try:
            self._pool.put_nowait(wrapper)
        except queue.Full:
            wrapper.close()  # more threads than POOL_SIZE were busy at once: keep POOL_SIZE

    @contextmanager
    def _locked(self, lock_key: str | None) -> Iterator[Any]:
        """A cursor inside a short transaction that holds an advisory lock on ``lock_key``
        (``None``: no lock, for statements atomic on their own).

        The connection comes from the limiter's pool and goes back to it. A pooled connection
        the server closed meanwhile fails at ``BEGIN``, before any work: it is replaced once.
        """
        begin = "BEGIN"
        params: list[Any] = []
        if lock_key is not None:  # one round trip: both statements in one execute
            begin, params = "BEGIN; SELECT pg_advisory_xact_lock(%s)", [advisory_id(lock_key)]
        wrapper = self._checkout()
        try:
            with wrapper.cursor() as cursor:
                try:
                    cursor.execute(begin, params)
                except DatabaseError:
                    wrapper.close()  # stale: the server or a proxy closed it while pooled
                    wrapper = self._new_connection()
                    cursor = wrapper.cursor()
                    cursor.execute(begin, params)
                try:
                    yield cursor
                except BaseException:
                    cursor.execute("ROLLBACK")
                    raise
                cursor.execute("COMMIT")
        except Exception:
            wrapper.close()  # a broken connection is rebuilt on next use
            raise
        finally:
            self._checkin(wrapper)

    def _one_trip(self, statement: str, params: list[Any], *, lock_key: str | None = None) -> Any:
        """Run ``statement`` in a transaction of its own in one round trip; its first row.

        ``BEGIN``, the advisory lock, the statement and ``COMMIT`` go in one execute (psycopg's
        client-side binding, Django's default, allows several statements). The commit is
        asynchronous (``synchronous_commit = off``, for this transaction only): slots and call
        counts live minutes, and a PostgreSQL crash losing the last fraction of a second of
        them is harmless; logins and pauses (:meth:`_locked`) still commit durably. Any
        error closes the connection (which also ends the aborted transaction); a connection
        the server closed while pooled is replaced once.
        """
        head, first = ["BEGIN", "SET LOCAL synchronous_commit TO off"], []
        if lock_key is not None:
            head.append("SELECT pg_advisory_xact_lock(%s)")
            first = [advisory_id(lock_key)]
        sql = "; ".join([*head, statement, "COMMIT"])
        wrapper = self._checkout()
        try:
            for attempt in (1, 2):
                try:
                    with wrapper.cursor() as cursor:
                        cursor.execute(sql, [*first, *params])
                        for _ in head:
                            cursor.nextset()
                        return cursor.fetchone() if cursor.description else None
                except DatabaseError:
                    wrapper.close()
                    if attempt == 2:
                        raise
                    wrapper = self._new_connection()
        finally:
            self._checkin(wrapper)

    def close(self) -> None:
        """Close the pooled connections (``limits.close_connections()``: before a test
        database is dropped, or at a worker's shutdown). The next call opens new ones."""
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                return

    @contextmanager
    def holding_connection(self) -> Iterator[None]:
        """Kept for ``limits.batch()``: the pool already reuses connections across calls."""
        yield

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
        self,
        key: str,
        fingerprint: str,
        *,
        limit: int,
        at: datetime,
        lease: timedelta,
        count: str | None = None,
    ) -> str | datetime | None:
        """Pause check, expired slots deleted, slots counted, insert, and (``count``) the
        call counted in its minute if the slot was taken: one statement, one round trip."""
        from .counting import minute_of

        events, states = self._tables()
        token = uuid.uuid4().hex
        params: list[Any] = [fingerprint, at, key, at, key, at, key, token, at, at + lease, limit]
        counted = ""
        if count is not None:
            # A data-modifying WITH runs whether or not the final SELECT reads it.
            only_if_taken = "SELECT %s, %s, %s, 1 WHERE EXISTS (SELECT 1 FROM taken)"
            counted = f", counted AS ({count_upsert(only_if_taken)})"
            minute = minute_of(at)
            params += [fingerprint, minute, count]
        row = self._one_trip(
            f"WITH paused AS (SELECT paused_until FROM {states} "
            "WHERE fingerprint = %s AND paused_until > %s), "
            f"gone AS (DELETE FROM {events} WHERE kind = 'slot' AND key = %s "
            "AND expires_at <= %s), "
            f"live AS (SELECT count(*) AS n FROM {events} WHERE kind = 'slot' AND key = %s "
            "AND expires_at > %s), "
            f"taken AS (INSERT INTO {events} (kind, key, token, at, expires_at) "
            "SELECT 'slot', %s, %s, %s, %s WHERE NOT EXISTS (SELECT 1 FROM paused) "
            f"AND (SELECT n FROM live) < %s RETURNING token){counted} "
            "SELECT (SELECT max(paused_until) FROM paused), (SELECT token FROM taken)",
            params,
            lock_key="slot:" + key,
        )
        if count is not None and row[1] is not None:
            self._prune(minute)
        paused: datetime | None = row[0]
        if paused is not None:
            return paused
        return token if row[1] is not None else None

    def release_slot(self, key: str, token: str) -> None:
        """One DELETE by token: atomic alone (an acquire counting meanwhile only errs safe)."""
        events, _ = self._tables()
        self._one_trip(
            f"DELETE FROM {events} WHERE kind = 'slot' AND key = %s AND token = %s", [key, token]
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
        cursor.execute(count_upsert("VALUES (%s, %s, %s, %s)"), [fingerprint, minute, kind, n])

    def count_calls(self, fingerprint: str, kind: str, *, n: int, minute: datetime) -> None:
        """One upsert, atomic on its own (no lock needed), on the limiter's connection."""
        self._one_trip(count_upsert("VALUES (%s, %s, %s, %s)"), [fingerprint, minute, kind, n])
        self._prune(minute)

    def take_upkeep(
        self, fingerprint: str, kind: str, *, n: int, minute: datetime, limit: int, ceiling: int
    ) -> bool:
        from .counting import CALL_KINDS, HOUR_MINUTES, MINUTE, UPKEEP_KINDS

        table = call_count_model()._meta.db_table
        first = minute - (HOUR_MINUTES - 1) * MINUTE
        with self._locked("upkeep:" + fingerprint) as cursor:
            cursor.execute(
                "SELECT COALESCE(sum(count) FILTER (WHERE kind = ANY(%s)), 0), "
                f"COALESCE(sum(count) FILTER (WHERE kind = ANY(%s)), 0) FROM {table} "
                "WHERE fingerprint = %s AND minute >= %s AND minute <= %s",
                [list(UPKEEP_KINDS), list(CALL_KINDS), fingerprint, first, minute],
            )
            upkeep, total = (int(value) for value in cursor.fetchone())
            if upkeep + n > limit or total + n > ceiling:
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
