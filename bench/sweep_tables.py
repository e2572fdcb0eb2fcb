"""Benchmark 3, the table side of the sweep: due selection against table size, and in-place
(HOT) updates of keep-alive writes.

* **Selection**: rows are inserted with SQL (``generate_series``, set-up only: no secrets,
  plain columns as the app writes them) until the table holds 100,000 and then 1,000,000
  connections, 1,000 of them due at any size. At each size, the median of 7 runs of the
  sweep's query (:func:`due_connection_ids`) and of the query it replaced (the old ``Q`` per
  sign-in method over ``session_last_used_at``/``session_obtained_at``/``next_attempt_at``,
  kept here as :func:`old_due_ids`), the latter with the two indexes it had
  (``bill_conn_due`` and ``session_last_used_at``) created for it.
* **HOT**: 10,000 connections; 50,000 keep-alive writes (5 rounds over every row, each round
  in a random order, one autocommitted ``UPDATE`` each) on the table as migration 0005
  leaves it, and the same on a copy of the table with the indexes of 0004 and the old
  keep-alive ``UPDATE`` (no ``next_due_at``). Then 50,000 writes of the hot path's use mark
  (``session_last_used_at`` only) on each. Autovacuum is off on both tables meanwhile, so the
  sizes show what the writes leave behind. PostgreSQL's ``n_tup_hot_upd / n_tup_upd`` is the
  share of in-place updates.
"""

from __future__ import annotations

import random
import statistics
import time
from datetime import datetime, timedelta
from typing import Any

from django.db import connection as db
from django.db.models import F, Q

DUE = 1_000
SIZES = (100_000, 1_000_000)
RUNS = 7
HOT_ROWS = 10_000
HOT_WRITES = 50_000
TABLE = "bill_integration_billconnection"
#: The indexes of migration 0004 that 0005 dropped or replaced (for the "before" figures).
OLD_INDEXES = (
    "CREATE INDEX {t}_org ON {t} (organization_id)",
    "CREATE INDEX {t}_org_like ON {t} (organization_id varchar_pattern_ops)",
    "CREATE INDEX {t}_fp ON {t} (dev_key_fingerprint)",
    "CREATE INDEX {t}_fp_like ON {t} (dev_key_fingerprint varchar_pattern_ops)",
    "CREATE INDEX {t}_status ON {t} (status)",
    "CREATE INDEX {t}_status_like ON {t} (status varchar_pattern_ops)",
    "CREATE INDEX {t}_used ON {t} (session_last_used_at)",
    "CREATE INDEX {t}_mfa ON {t} (mfa_trust_expires_at)",
    "CREATE INDEX {t}_due ON {t} (status, session_last_used_at)",
)


def old_due_ids(at: datetime) -> list[int]:
    """The due query before ``next_due_at`` (main at 9d294ac), for the baseline."""
    from bill_integration.auth_methods import METHODS, NONE, OAUTH_RENEW_BEFORE, OAUTH_TOKEN
    from bill_integration.conf import bill_settings
    from bill_integration.models import BillConnection
    from bill_integration.models import ConnectionStatus as Status
    from bill_integration.services.freshness import (
        BUDGET_EXHAUSTED,
        SWEPT_STATUSES,
        idle_timeout,
        keepalive_after,
    )

    due = Q(pk__in=[])
    for method, entry in METHODS.items():
        if entry.renewal == NONE:
            continue
        waits = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=at)
        if entry.renewal == OAUTH_TOKEN:
            renew = Q(session_expires_at__isnull=True) | Q(
                session_expires_at__lte=at + OAUTH_RENEW_BEFORE
            )
            due |= Q(auth_method=method) & waits & renew
            continue
        probe = BillConnection(auth_method=method)
        timeout = idle_timeout(probe) or bill_settings.SESSION_IDLE_TIMEOUT
        idle = Q(session_last_used_at__lte=at - keepalive_after(probe))
        when = Q(session_last_used_at__isnull=True) | idle
        alive = Q(session_last_used_at__gt=at - timeout + bill_settings.SESSION_SAFETY_MARGIN)
        max_age = bill_settings.MAX_SESSION_AGE
        if max_age is not None:
            when |= Q(session_obtained_at__isnull=True) | Q(
                session_obtained_at__lte=at - max_age + bill_settings.SESSION_SAFETY_MARGIN
            )
        pending = Q(status=Status.ACTIVE, last_error_code=BUDGET_EXHAUSTED) & idle & alive
        due |= Q(auth_method=method) & (waits | pending) & when
    query = (
        BillConnection.objects.filter(status__in=SWEPT_STATUSES)
        .filter(due)
        .values_list("pk", flat=True)
        .order_by(F("session_last_used_at").desc(nulls_last=True), "pk")
    )
    return list(query)


def _insert_rows(start: int, count: int, due: int, at: datetime, *, relink: int = 50) -> None:
    """``count`` tenants and connections numbered from ``start``; the first ``due`` of them
    idle 31 minutes (due now), the rest used within the last 30 minutes, one in ``relink``
    needs_relink (0: none)."""
    from bill_integration.conf import keepalive_after_idle

    keep = keepalive_after_idle().total_seconds()
    with db.cursor() as cursor:
        cursor.execute(
            "INSERT INTO tenants_tenant (name, slug, created_at) "
            "SELECT 'bench ' || n, 'bench-' || n, %s FROM generate_series(%s, %s) AS n",
            [at, start, start + count - 1],
        )
        cursor.execute(
            f"""
            INSERT INTO {TABLE} (
                tenant_id, environment, api_version, auth_method, username, organization_id,
                dev_key_fingerprint, user_id, status, session_obtained_at, session_last_used_at,
                last_refresh_at, last_error_code, last_error_message, consecutive_failures,
                version, mfa_device, mfa_trust_notice, session_trusted, mfa_status,
                oauth_client_id, usage_visits, usage_histogram, next_due_at, created_at,
                updated_at)
            SELECT t.id, 'emulator', 'v3', 'user_password', 'u' || t.id || '@example.com',
                '00801' || lpad(t.id::text, 15, '0'), md5((t.id %% 10)::text), '', s.status,
                s.used - interval '1 hour', s.used, s.used, '', '', 0, 1, '', '', false, '',
                '', 0, '', s.used + make_interval(secs => %s), %s, %s
            FROM tenants_tenant t
            CROSS JOIN LATERAL (
                SELECT
                    CASE WHEN %s > 0 AND t.id %% greatest(%s, 1) = 7 AND t.id >= %s
                    THEN 'needs_relink' ELSE 'active' END AS status,
                    CASE WHEN t.id < %s THEN %s::timestamptz - interval '31 minutes'
                    ELSE %s::timestamptz - (random() * interval '29 minutes') END AS used
            ) s
            WHERE t.id BETWEEN %s AND %s
            """,
            [
                keep,
                at,
                at,
                relink,
                relink,
                start + due,
                start + due,
                at,
                at,
                start,
                start + count - 1,
            ],
        )
        cursor.execute(f"ANALYZE {TABLE}")


def _empty() -> None:
    """No connections, no tenants, ids from 1 (the inserts number tenants from 1)."""
    with db.cursor() as cursor:
        cursor.execute(f"TRUNCATE {TABLE}, tenants_tenant RESTART IDENTITY CASCADE")


def _median_seconds(query: Any, *args: Any) -> tuple[float, int]:
    times, found = [], 0
    for _ in range(RUNS):
        started = time.perf_counter()
        found = len(query(*args))
        times.append(time.perf_counter() - started)
    return statistics.median(times), found


def _plan(sql: str, params: Any) -> str:
    with db.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        lines = [row[0] for row in cursor.fetchall()]
    return " / ".join(line.strip() for line in lines if "Scan" in line or "Sort" in line)


def selection(quiet: bool = False) -> dict[str, Any]:
    """Due selection time at each of :data:`SIZES` rows, 1,000 due, new and old query."""
    from bill_integration.conf import now
    from bill_integration.models import BillConnection
    from bill_integration.services.freshness import SWEPT_STATUSES
    from bill_integration.services.sweep import due_connection_ids

    at = now()
    _empty()
    results = []
    inserted = 0
    for size in SIZES:
        if not quiet:
            print(f"  due selection: inserting up to {size:,} rows ...", flush=True)
        _insert_rows(inserted + 1, size - inserted, DUE if inserted == 0 else 0, at)
        inserted = size
        with db.cursor() as cursor:
            cursor.execute(f"VACUUM ANALYZE {TABLE}")
        new_seconds, new_found = _median_seconds(due_connection_ids, at)
        query = BillConnection.objects.filter(status__in=SWEPT_STATUSES, next_due_at__lte=at)
        new_plan = _plan(*query.values_list("pk").query.sql_with_params())
        with db.cursor() as cursor:
            for statement in OLD_INDEXES:  # the two the old query could use
                if "_used ON" in statement or "_due ON" in statement:
                    cursor.execute(statement.format(t=TABLE))
            cursor.execute(f"ANALYZE {TABLE}")
        old_seconds, old_found = _median_seconds(old_due_ids, at)
        with db.cursor() as cursor:
            cursor.execute(f"DROP INDEX {TABLE}_used, {TABLE}_due")
        results.append(
            {
                "rows": size,
                "due": new_found,
                "old_due": old_found,
                "new_seconds": new_seconds,
                "old_seconds": old_seconds,
                "new_plan": new_plan,
            }
        )
    _empty()
    return {"sizes": results}


# --- HOT updates ---------------------------------------------------------------------------

KEEP_ALIVE_SET = (
    "session_last_used_at = %(at)s, mfa_status = 'ENROLLED', mfa_bypass = false, "
    "status = 'active', last_error_code = '', last_error_message = '', "
    "consecutive_failures = 0, next_attempt_at = NULL, last_refresh_at = %(at)s, "
    "version = 1, updated_at = %(at)s"
)


def _stats(table: str) -> dict[str, int]:
    with db.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
    with db.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT n_tup_upd, n_tup_hot_upd, pg_relation_size(relid), "
            "pg_total_relation_size(relid) FROM pg_stat_user_tables WHERE relname = %s",
            [table],
        )
        upd, hot, heap, total = cursor.fetchone()
    return {"upd": upd, "hot": hot, "heap": heap, "total": total}


def _writes(table: str, ids: list[int], sql: str, start: datetime, rounds: int) -> None:
    rng = random.Random(3)
    moment = start
    for _ in range(rounds):
        order = ids[:]
        rng.shuffle(order)
        for pk in order:
            moment += timedelta(milliseconds=20)
            keep = moment + timedelta(minutes=30)
            with db.cursor() as cursor:  # autocommit: one transaction per write, as workers do
                cursor.execute(sql.format(t=table), {"at": moment, "pk": pk, "due": keep})


def hot(quiet: bool = False) -> dict[str, Any]:
    """HOT share and growth of keep-alive and use-mark writes, 0004's table vs 0005's."""
    from bill_integration.conf import now

    at = now()
    _empty()
    _insert_rows(1, HOT_ROWS, 0, at, relink=0)  # all active: every one gets keep-alives
    before = f"{TABLE}_before"
    with db.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE {before} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        )
        cursor.execute(f"INSERT INTO {before} SELECT * FROM {TABLE}")
        cursor.execute(f"ALTER TABLE {before} ADD PRIMARY KEY (id)")
        cursor.execute(f"CREATE UNIQUE INDEX {before}_tenant ON {before} (tenant_id)")
        for statement in OLD_INDEXES:
            cursor.execute(statement.format(t=before))
        for table in (TABLE, before):
            cursor.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
            cursor.execute(f"VACUUM ANALYZE {table}")
        cursor.execute(f"SELECT id FROM {TABLE} WHERE status = 'active' ORDER BY id")
        ids = [row[0] for row in cursor.fetchall()]
    rounds = HOT_WRITES // len(ids)
    cases = {
        # (table, UPDATE): what the keep-alive's fenced write sends, before and after 0005.
        "keep_alive": {
            "before": (before, f"UPDATE {{t}} SET {KEEP_ALIVE_SET} WHERE id = %(pk)s"),
            "after": (
                TABLE,
                f"UPDATE {{t}} SET {KEEP_ALIVE_SET}, next_due_at = %(due)s WHERE id = %(pk)s",
            ),
        },
        # The hot path's throttled use mark (services/session.py _note_used), unchanged.
        "use_mark": {
            "before": (before, "UPDATE {t} SET session_last_used_at = %(at)s WHERE id = %(pk)s"),
            "after": (TABLE, "UPDATE {t} SET session_last_used_at = %(at)s WHERE id = %(pk)s"),
        },
    }
    out: dict[str, Any] = {"rows": len(ids), "writes": rounds * len(ids), "indexes": {}}
    for table, name in ((before, "before"), (TABLE, "after")):
        with db.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_indexes WHERE tablename = %s", [table])
            out["indexes"][name] = cursor.fetchone()[0]
    for case, sides in cases.items():
        for side, (table, sql) in sides.items():
            if not quiet:
                print(f"  HOT: {rounds * len(ids):,} {case} writes, {side} ...", flush=True)
            with db.cursor() as cursor:
                cursor.execute(f"VACUUM {table}")
            first = _stats(table)
            started = time.perf_counter()
            _writes(table, ids, sql, at, rounds)
            seconds = time.perf_counter() - started
            last = _stats(table)
            updates = last["upd"] - first["upd"]
            out[f"{case}_{side}"] = {
                "updates": updates,
                "hot": last["hot"] - first["hot"],
                "heap_growth": last["heap"] / first["heap"],
                "total_growth": last["total"] / first["total"],
                "total_mb": last["total"] / 2**20,
                "seconds": seconds,
            }
    with db.cursor() as cursor:
        cursor.execute(f"DROP TABLE {before}")
        cursor.execute(f"ALTER TABLE {TABLE} RESET (autovacuum_enabled)")
    _empty()
    return out
