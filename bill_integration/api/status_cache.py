"""The status document of ``GET /connection/``, cached a few seconds (``STATUS_CACHE_SECONDS``).

The Connect page polls the status every 20 s per open tab, and a project's own pages may poll
it too. Building the document loads the whole row (without secrets) and computes about twenty
fields with translated texts; most polls find nothing changed. So a GET reads a narrow
*marker* of the row (one indexed query on ``tenant_id``, a handful of plain columns) and takes
the document from Django's cache when an entry for that exact marker exists.

**What is never cached.** Who asks: the tenant is resolved and the access policy asked on
every request (the view's permission class runs first), and the marker is read for *that*
tenant, so no request can be answered with another tenant's entry. ``can_change`` (the
requester's own right), ``server_time`` and ``session_age_seconds`` are filled in per request.

**Staleness.** The cache key is the connection's id, its ``version`` (bumped by every new
session and every relink), ``updated_at`` (set by every other write of the row: keep-alives,
failures and status changes, MFA notices, admin saves), ``session_last_used_at`` (the one
column written without ``updated_at``, by ``services/session.py`` at most once per
``LAST_USED_WRITE_INTERVAL``), ``status``, ``last_refresh_at`` and
``next_attempt_at`` (so the status stays right even if a writer some day stops setting
``updated_at``), plus the active language and time zone (the document's words and dates).
So any write the app makes to a column the document shows gives a new key at once, whichever
process made it, and no document older than the row is served. What can lag, by at
most ``STATUS_CACHE_SECONDS``, is what the clock alone changes: the MFA trust's state moving
to ``expiring`` or ``expired`` at its date, with no write. An entry is always at least as new
as its key (the row is loaded after the marker was read).

**Where.** Each process keeps its documents in a local-memory cache of Django's cache framework
(:data:`documents`, a ``LocMemCache`` of its own, at most :data:`MAX_ENTRIES` entries), never
the project's ``default`` cache. A document is only ever looked up under the row's current
marker, read from the database on every request, so a per-process copy is exactly as fresh as
a shared one; a shared cache would only save a miss per process and TTL, and a Redis round
trip costs about as much as the query it would save (``bench/hotpath.py`` measures both).

``STATUS_CACHE_SECONDS = 0`` turns it off: every GET loads the row and builds the document, as
a write's answer always does.
"""

from __future__ import annotations

import functools
from typing import Any, cast

from django.conf import settings
from django.core.cache.backends.locmem import LocMemCache
from django.core.checks import Error
from django.db import connections, router
from django.db.models import Field
from django.utils import timezone, translation
from rest_framework import serializers

from ..conf import SETTINGS_NAME, bill_settings, now
from ..models import BillConnection
from .serializers import ConnectionStatusSerializer, connection_status, status_queryset

E014_STATUS_CACHE_SECONDS = "bill_integration.E014"

#: The columns of the marker, after the id: any change to one gives a new cache key.
MARKER_FIELDS = (
    "version",
    "updated_at",
    "session_last_used_at",
    "status",
    "last_refresh_at",
    "next_attempt_at",
)
KEY_PREFIX = "bill_integration:status:"
#: The longest STATUS_CACHE_SECONDS check E014 accepts (the Connect page polls every 20 s).
MAX_SECONDS = 60
#: Documents one process keeps at most (a third are dropped when full): about 2 KB each.
MAX_ENTRIES = 5000
#: This process's status documents (module docstring: why not the project's cache).
documents: Any = LocMemCache(
    "bill_integration.status", {"OPTIONS": {"MAX_ENTRIES": MAX_ENTRIES, "CULL_FREQUENCY": 3}}
)
_SERVER_TIME = serializers.DateTimeField()


@functools.cache
def _marker_sql(alias: str) -> str:
    """``SELECT id, <marker> FROM <table> WHERE tenant_id = %s``, quoted for ``alias``.

    Plain SQL built from the model's metadata (as ``services/locking.py`` does): the ORM would
    compile the same query on every poll and, on this path, that costs about three times the
    query itself.
    """
    quote = connections[alias].ops.quote_name
    meta = BillConnection._meta

    def column(name: str) -> str:
        return quote(cast(Field, meta.get_field(name)).column)

    columns = ", ".join(column(name) for name in ("id", *MARKER_FIELDS))
    tenant_column = column("tenant")
    return f"SELECT {columns} FROM {quote(meta.db_table)} WHERE {tenant_column} = %s"


def read_marker(tenant: Any) -> tuple[Any, ...] | None:
    """``(id, *MARKER_FIELDS)`` of ``tenant``'s connection, or ``None`` when none is linked."""
    alias = router.db_for_read(BillConnection)
    connection = connections[alias]
    value = BillConnection._meta.get_field("tenant").get_db_prep_value(tenant.pk, connection)
    with connection.cursor() as cursor:
        cursor.execute(_marker_sql(alias), [value])
        row = cursor.fetchone()
    return tuple(row) if row else None


def cache_key(marker: tuple[Any, ...]) -> str:
    """The cache key of a marker, in the active language and time zone."""
    parts = [str(part) for part in marker]
    parts += [translation.get_language() or "", timezone.get_current_timezone_name()]
    return KEY_PREFIX + ":".join(parts).replace(" ", "_")


def _build(connection: BillConnection | None, *, can_change: bool) -> dict[str, Any]:
    return dict(
        ConnectionStatusSerializer(connection_status(connection, can_change=can_change)).data
    )


def status_document(tenant: Any, *, can_change: bool, fresh: bool = False) -> dict[str, Any]:
    """The serialized status document of ``tenant``'s connection, for a caller whose access
    the view has already checked.

    ``fresh`` (a write's answer) or ``STATUS_CACHE_SECONDS = 0`` builds it from the row; else a
    cached document for the row's current marker is used when there is one (module docstring).
    """
    seconds = bill_settings.STATUS_CACHE_SECONDS
    if fresh or not seconds:
        return _build(status_queryset().filter(tenant=tenant).first(), can_change=can_change)
    marker = read_marker(tenant)
    if marker is None:
        return _build(None, can_change=can_change)
    key = cache_key(marker)
    entry = documents.get(key)
    if entry is None:
        connection = status_queryset().filter(pk=marker[0]).first()
        if connection is None:  # unlinked since the marker was read
            return _build(None, can_change=can_change)
        entry = (_build(connection, can_change=False), connection.session_obtained_at)
        documents.set(key, entry, seconds)
    document, obtained = entry
    moment = now()
    age = max(0, int((moment - obtained).total_seconds())) if obtained else None
    return {
        **document,
        "can_change": can_change,
        "server_time": _SERVER_TIME.to_representation(moment),
        "session_age_seconds": age,
    }


def check_status_cache_seconds(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """E014: ``STATUS_CACHE_SECONDS`` is a whole number of seconds from 0 (off) to 60."""
    user = getattr(settings, SETTINGS_NAME, {}) or {}
    if not isinstance(user, dict) or "STATUS_CACHE_SECONDS" not in user:
        return []
    value = user["STATUS_CACHE_SECONDS"]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SECONDS:
        return []
    return [
        Error(
            f"{SETTINGS_NAME}['STATUS_CACHE_SECONDS'] must be a whole number of seconds from 0 "
            f"(no cache) to {MAX_SECONDS}, not {value!r}.",
            hint=(
                "It bounds how long GET /connection/ may show a status the clock alone has "
                "changed (an MFA trust reaching its date); writes are seen at once. Default 5."
            ),
            id=E014_STATUS_CACHE_SECONDS,
        )
    ]
