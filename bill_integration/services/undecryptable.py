"""Connections whose stored secrets no configured key decrypts: set aside, then restored.

A stored secret that no key in ``FIELD_ENCRYPTION_KEY`` decrypts raises
:class:`~bill_integration.exceptions.DecryptionFailed` (fail closed, never ciphertext). The
connection is then set aside (``needs_relink`` with code ``decryption_failed``: the sweep and
``get_session()`` leave it alone, and nothing can re-save the unreadable value). That is not
final: a key mistake (the wrong key deployed for a while) must never need a relink by every
tenant, so once a configured key reads the row again it returns to service on its own, on the
next ``get_session()`` or sweep. Status-only writes on plain columns: the ciphertext and
``version`` are never touched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import transaction

from ..conf import now
from ..exceptions import DecryptionFailed
from ..models import SECRET_FIELDS, BillConnection
from ..models import ConnectionStatus as Status
from . import lifecycle
from .freshness import next_due_at
from .locking import Effects, lock_without_secrets

logger = logging.getLogger("bill_integration.sessions")


@contextmanager
def failing_closed(*, connection_id: int | None = None, tenant_id: Any = None) -> Iterator[None]:
    """Turn an undecryptable stored secret into a clear connection status, then re-raise.

    The row is marked by :func:`mark_undecryptable` outside the failed transaction, so the
    mark is not rolled back with it.
    """
    try:
        yield
    except DecryptionFailed as exc:
        if connection_id is None:
            connection_id = (
                BillConnection.objects.filter(tenant_id=tenant_id)
                .values_list("pk", flat=True)
                .first()
            )
        if connection_id is not None:
            mark_undecryptable(connection_id, exc)
        raise


def _set_status(
    connection_id: int, expected: dict[str, str], new_status: str, code: str, message: str
) -> BillConnection | None:
    """A status-only UPDATE on plain columns (the ciphertext and ``version`` stay as they are),
    applied only if the row still has the ``expected`` status and code; returns the row."""
    with transaction.atomic():
        connection = lock_without_secrets(pk=connection_id)
        if connection is None:
            return None
        if expected and (connection.status, connection.last_error_code) != (
            expected["status"],
            expected["code"],
        ):
            return None
        old_status = connection.status
        connection.status, connection.last_error_code = new_status, code
        connection.next_attempt_at = None
        # Set aside: never due (no secret read); restored: a key reads the session again.
        connection.next_due_at = next_due_at(connection, now())
        BillConnection.objects.filter(pk=connection_id).update(
            status=new_status,
            last_error_code=code,
            last_error_message=message,
            next_attempt_at=None,
            consecutive_failures=0,
            next_due_at=connection.next_due_at,
            updated_at=now(),
        )
        effects = Effects()
        lifecycle.transition(
            connection, old_status, new_status, effects, error=DecryptionFailed() if code else None
        )
    effects.send()
    return connection


def mark_undecryptable(connection_id: int, exc: BaseException | None = None) -> bool:
    """Give a connection whose secrets no key decrypts a clear status; never touch the secrets.

    ``needs_relink`` with ``last_error_code`` ``decryption_failed``: get_session() and the
    sweep leave it alone, and nothing can re-save the undecryptable value. Not final: once a
    configured key decrypts it again, :func:`restore_if_decryptable` returns it to service.
    Logs once with the connection id; audits and signals the transition. Returns whether the
    row changed.
    """
    row = (
        BillConnection.objects.filter(pk=connection_id).values("status", "last_error_code").first()
    )
    if row is None or (row["status"], row["last_error_code"]) == (
        Status.NEEDS_RELINK,
        DecryptionFailed.code,
    ):
        return False
    # DecryptionFailed's message names the field, never the value or the ciphertext.
    reason = (getattr(exc, "message", None) or type(exc).__name__) if exc is not None else "-"
    logger.error(
        "bill connection=%s secrets cannot be decrypted (%s); status set to needs_relink",
        connection_id,
        reason,
        extra={"connection_id": connection_id, "bill_code": DecryptionFailed.code},
    )
    changed = _set_status(
        connection_id,
        {"status": row["status"], "code": row["last_error_code"]},
        Status.NEEDS_RELINK,
        DecryptionFailed.code,
        str(DecryptionFailed.operator_text),
    )
    return changed is not None


def undecryptable(connection: BillConnection) -> bool:
    """Whether the connection was set aside because its secrets could not be decrypted."""
    return (connection.status, connection.last_error_code) == (
        Status.NEEDS_RELINK,
        DecryptionFailed.code,
    )


def restore_if_decryptable(connection_id: int) -> bool:
    """Return a ``decryption_failed`` connection to service once a configured key reads it.

    A key mistake (the wrong ``FIELD_ENCRYPTION_KEY`` deployed for a while) must never need a
    relink by every tenant: when every stored secret decrypts again, the connection goes back
    to ``active`` (the stored session is then judged as usual: still alive, or a new login).
    Costs one query and no call to BILL. Returns whether the connection was restored.
    """
    try:
        BillConnection.objects.filter(pk=connection_id).values_list(*SECRET_FIELDS).first()
    except DecryptionFailed:
        return False
    restored = _set_status(
        connection_id,
        {"status": Status.NEEDS_RELINK, "code": DecryptionFailed.code},
        Status.ACTIVE,
        "",
        "",
    )
    if restored is not None:
        logger.warning("bill connection=%s secrets decrypt again; back in service", connection_id)
    return restored is not None


def restore_all_decryptable(limit: int = 500) -> int:
    """The sweep's pass over ``decryption_failed`` connections; returns how many recovered."""
    ids = list(
        BillConnection.objects.filter(
            status=Status.NEEDS_RELINK, last_error_code=DecryptionFailed.code
        ).values_list("pk", flat=True)[:limit]
    )
    return sum(restore_if_decryptable(pk) for pk in ids)
