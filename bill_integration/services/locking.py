"""Row locks, fenced writes and signals deferred until the lock is let go.

* **Row locks**: one login at a time per connection (``select_for_update``). Waiting for a
  lock is bounded by ``SINGLE_FLIGHT_WAIT`` on PostgreSQL (``lock_timeout``); on SQLite (the
  demo) ``select_for_update`` does nothing and the ``IMMEDIATE`` transaction mode serialises
  writers instead.
* **Fencing**: ``version`` increases whenever the stored session or the credentials change.
  Every write of session or status fields is one ``UPDATE ... WHERE version = v``
  (:func:`fenced_write`), so a stale worker can never overwrite a newer session.
* **Effects**: signals are collected while the row is locked and sent after the
  transaction (:class:`Effects`), so a receiver never runs while we hold the lock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import OperationalError
from django.db import connection as db
from django.utils import timezone

from ..conf import bill_settings, now
from ..exceptions import ConflictError, SessionUnavailable
from ..models import DUE_FIELDS, BillConnection
from .freshness import next_due_at

#: PostgreSQL's SQLSTATE for "lock_timeout expired".
LOCK_NOT_AVAILABLE = "55P03"


@dataclass
class Effects:
    """Signals to send once the row lock is released (after commit, when not nested)."""

    pending: list[tuple[Any, BillConnection, dict[str, Any]]] = field(default_factory=list)

    def add(self, signal: Any, connection: BillConnection, **kwargs: Any) -> None:
        self.pending.append((signal, connection, kwargs))

    def send(self) -> None:
        for signal, connection, kwargs in self.pending:
            if signal.has_listeners(BillConnection):
                signal.send(
                    sender=BillConnection, tenant=connection.tenant, connection=connection, **kwargs
                )
        self.pending.clear()


def bound_lock_wait() -> None:
    """On PostgreSQL, make a row-lock wait fail after SINGLE_FLIGHT_WAIT (this transaction).

    ``SET LOCAL`` lasts until the outermost transaction ends: called inside a caller's own
    ``atomic()`` block, the bound applies to the rest of that transaction too.
    """
    if db.vendor == "postgresql":
        milliseconds = int(bill_settings.SINGLE_FLIGHT_WAIT.total_seconds() * 1000)
        with db.cursor() as cursor:
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", [f"{milliseconds}ms"])


def is_lock_timeout(exc: OperationalError) -> bool:
    """Whether ``exc`` is a bounded lock wait running out (PostgreSQL or SQLite)."""
    cause = exc.__cause__
    if getattr(cause, "sqlstate", None) == LOCK_NOT_AVAILABLE:
        return True
    return "database is locked" in str(exc)  # SQLite's busy timeout


def busy() -> SessionUnavailable:
    """The error of a caller that waited ``SINGLE_FLIGHT_WAIT`` for another worker's work."""
    return SessionUnavailable(
        f"{SessionUnavailable.default_message} Another worker is refreshing this session."
    )


def lock(connection_id: int, *, skip_locked: bool = False) -> BillConnection | None:
    """The connection's row, locked for this transaction (``None``: gone, or held and skipped)."""
    return (
        BillConnection.objects.select_for_update(skip_locked=skip_locked)
        .filter(pk=connection_id)
        .first()
    )


def lock_without_secrets(**lookup: Any) -> BillConnection | None:
    """The row matching ``lookup``, locked, its encrypted columns not loaded (never decrypted)."""
    return BillConnection.objects.without_secrets().select_for_update().filter(**lookup).first()


def lock_tenant(tenant_id: Any) -> BillConnection | None:
    """The tenant's connection row, locked, waiting at most ``SINGLE_FLIGHT_WAIT``."""
    bound_lock_wait()
    return BillConnection.objects.select_for_update().filter(tenant_id=tenant_id).first()


def read_after_holder(connection_id: int, hot_fields: Iterable[str]) -> BillConnection | None:
    """The row once its current lock holder is done (PostgreSQL: ``FOR SHARE``, bounded).

    Every waiter holds the share lock together, granted the moment the holder commits, so
    none queues for the exclusive lock just to read the result. Raises ``OperationalError``
    when the wait runs out (:func:`is_lock_timeout`); the caller decides what that means.
    """
    from django.db import transaction

    with transaction.atomic():
        if db.vendor == "postgresql":
            bound_lock_wait()
            table = db.ops.quote_name(BillConnection._meta.db_table)
            column = db.ops.quote_name(BillConnection._meta.pk.column)
            with db.cursor() as cursor:
                cursor.execute(
                    f"SELECT 1 FROM {table} WHERE {column} = %s FOR SHARE", [connection_id]
                )
        rows = list(BillConnection.objects.only(*hot_fields).filter(pk=connection_id)[:1])
    return rows[0] if rows else None


def fenced_write(
    connection: BillConnection, read_version: int, fields: Iterable[str], *, bump: bool
) -> None:
    """Write ``fields`` only if the row still has ``read_version``; else :class:`ConflictError`.

    Under the row lock this always holds; it is the guarantee on databases without row locks,
    and against any writer that did not take the lock. ``bump`` marks a new session.
    """
    new_version = read_version + 1 if bump else read_version
    updated_at = timezone.now()  # what auto_now would set; update() does not run pre_save()
    values = {name: getattr(connection, name) for name in fields}
    if DUE_FIELDS.intersection(values):
        # The sweep finds the row by this (partial index): stored in the same UPDATE.
        connection.next_due_at = values["next_due_at"] = next_due_at(connection, now())
    # One conditional UPDATE. Plain values go through each field's get_db_prep_save(), so the
    # session id is encrypted exactly as save() would (only expressions are refused there).
    claimed = BillConnection.objects.filter(pk=connection.pk, version=read_version).update(
        **values, version=new_version, updated_at=updated_at
    )
    if claimed != 1:
        raise ConflictError()
    connection.version = new_version
    connection.updated_at = updated_at
