"""Refreshes someone asked for: :func:`refresh` and :func:`keep_alive` of one tenant.

A person (the REST endpoint, the admin) or the SaaS's own code asks for a live session now.
The tenant's row is locked with a bounded wait (``SINGLE_FLIGHT_WAIT``), the work is done
under the lock, a failure is recorded by the lifecycle's failure policy and re-raised.
The connection's backoff is ignored (someone asked); the developer key's budget and pause
are not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.db import OperationalError, transaction

from ..conf import now
from ..exceptions import BillIntegrationError, ConflictError, ConnectionNotLinked
from ..models import BillConnection
from . import lifecycle, undecryptable
from .freshness import check_usable, session_is_alive, session_is_valid
from .locking import Effects, busy, is_lock_timeout, lock_tenant

Operation = Callable[[BillConnection, Effects], Any]


def refresh(tenant: Any, *, force: bool = False) -> BillConnection:
    """Make sure ``tenant`` has a live session now; return the connection.

    Without ``force``: a valid session is kept alive (one cheap call that also proves BILL still
    accepts it), otherwise a new one is obtained. With ``force``: always log in again. Raises
    :class:`ConnectionNotLinked`, :class:`ConnectionNeedsRelink`, :class:`ConnectionDisabled`,
    :class:`SessionUnavailable` (the row stayed locked for ``SINGLE_FLIGHT_WAIT``), or what
    BILL said, after recording it in the status fields.
    """

    def operation(connection: BillConnection, effects: Effects) -> None:
        moment = now()
        if force:
            lifecycle.login(connection, effects, reason="forced")
        elif session_is_valid(connection, moment):
            lifecycle.keep_alive(connection, effects)
        elif session_is_alive(connection, moment):  # only MAX_SESSION_AGE passed
            lifecycle.renew(connection, effects, reason="manual", keep_alive_too=True)
        else:
            lifecycle.login(connection, effects, reason="manual")

    return _locked_operation(tenant, operation, action="refresh")


def keep_alive(tenant: Any) -> BillConnection:
    """Reset BILL's idle timer for ``tenant``'s session now (log in if BILL says it is gone).

    Raises like :func:`refresh`.
    """

    def operation(connection: BillConnection, effects: Effects) -> None:
        if connection.session_id:
            lifecycle.keep_alive(connection, effects)
        else:
            lifecycle.login(connection, effects, reason="keep_alive")

    return _locked_operation(tenant, operation, action="keep_alive")


def _locked_operation(tenant: Any, operation: Operation, *, action: str) -> BillConnection:
    """Lock ``tenant``'s row (bounded wait), run ``operation``, record a failure, re-raise it."""
    tenant_id = getattr(tenant, "pk", tenant)
    with undecryptable.failing_closed(tenant_id=tenant_id):
        stored = BillConnection.objects.without_secrets().filter(tenant_id=tenant_id).first()
        if stored is not None and undecryptable.undecryptable(stored):
            undecryptable.restore_if_decryptable(stored.pk)  # a key mistake put right
        return _run_locked(tenant_id, operation, action=action)


def _run_locked(tenant_id: Any, operation: Operation, *, action: str) -> BillConnection:
    effects = Effects()
    error: BillIntegrationError | None = None
    try:
        with transaction.atomic():
            connection = lock_tenant(tenant_id)
            if connection is None:
                raise ConnectionNotLinked()
            check_usable(connection)
            started = time.monotonic()
            try:
                operation(connection, effects)
            except ConflictError as exc:
                lifecycle.conflicted(connection, exc, action=action, started=started)
                raise
            except BillIntegrationError as exc:
                lifecycle.record_failure(connection, exc, effects, action=action, started=started)
                error = exc
    except OperationalError as exc:
        if not is_lock_timeout(exc):
            raise
        raise busy() from None
    effects.send()
    if error is not None:
        raise error
    return connection
