"""The single flight: when a session must be obtained, exactly one caller logs in.

The connection's row is locked with ``SKIP LOCKED``. Whoever gets the lock re-checks validity
(another worker may have just logged in) and only then logs in, while holding the lock. Every
other caller, thread, process or worker finds the row taken and, instead of queueing for the
exclusive lock just to read the result, waits with ``FOR SHARE`` (:func:`locking.read_after_holder`),
which all waiters hold together and which is granted the moment the holder commits, then reads
the row and leaves with the new session. Only if the session is still not valid (the holder
failed, or was only recording a use) does it try the exclusive lock again. Waiting is bounded
by ``SINGLE_FLIGHT_WAIT`` (then :class:`~bill_integration.exceptions.SessionUnavailable`).

:func:`obtain` returns the connection row (its :data:`freshness.HOT_FIELDS`); the caller
(:mod:`session`) turns it into a :class:`~bill_integration.services.BillSession`.
"""

from __future__ import annotations

import random
import time
from datetime import datetime
from typing import cast

from django.db import OperationalError, transaction

from ..conf import bill_settings, now
from ..exceptions import (
    BillIntegrationError,
    ConflictError,
    ConnectionNotLinked,
    SessionUnavailable,
)
from ..models import BillConnection
from . import lifecycle, undecryptable
from .freshness import HOT_FIELDS, backing_off, check_usable, session_is_alive, session_is_valid
from .locking import Effects, busy, is_lock_timeout, lock, read_after_holder

#: How long a waiter pauses before trying the lock again when the session is still not valid
#: after the holder let go (seconds; grows to the cap).
WAIT_POLL_FIRST, WAIT_POLL_MAX = 0.01, 0.05


def waiting_error(connection: BillConnection) -> SessionUnavailable:
    """The error of a caller that finds the connection backing off after a failure."""
    return SessionUnavailable(
        f"{SessionUnavailable.default_message} The connection is waiting until "
        f"{cast(datetime, connection.next_attempt_at).isoformat()} after: "
        f"{connection.last_error_code or 'an error'}."
    )


def obtain(connection_id: int, *, stale_version: int | None, reason: str) -> BillConnection:
    """A row with a valid session newer than ``stale_version``: found, or logged in for.

    ``stale_version`` is the version of a session BILL just rejected (BDC_1109): a row still
    at that version must log in again even if it looks valid.
    """
    deadline = time.monotonic() + bill_settings.SINGLE_FLIGHT_WAIT.total_seconds()
    pause = WAIT_POLL_FIRST
    while True:
        with undecryptable.failing_closed(connection_id=connection_id):
            try:
                connection = _obtain_locked(
                    connection_id, stale_version=stale_version, reason=reason
                )
            except ConflictError:
                # The row moved on under our login (a relink): re-read it, its session may do.
                connection = None
            if connection is not None:
                return connection
            # Someone holds the row: wait for their commit, without queueing for their lock.
            connection = _wait_for_holder(connection_id)
        if connection is None:
            raise ConnectionNotLinked()
        check_usable(connection)
        moment = now()
        rejected = stale_version is not None and connection.version == stale_version
        if not rejected and session_is_valid(connection, moment):
            return connection
        if backing_off(connection, moment):
            raise waiting_error(connection)
        if time.monotonic() >= deadline:
            raise busy()
        # Still not valid after the holder let go: try the lock again, after a short jittered
        # pause so waiters that read together do not all retry in step.
        time.sleep(pause * random.uniform(0.5, 1.0))
        pause = min(pause * 1.5, WAIT_POLL_MAX)


def _wait_for_holder(connection_id: int) -> BillConnection | None:
    try:
        return read_after_holder(connection_id, HOT_FIELDS)
    except OperationalError as exc:
        if not is_lock_timeout(exc):
            raise
    # The holder kept the lock for SINGLE_FLIGHT_WAIT; its login may still have finished.
    rows = list(BillConnection.objects.only(*HOT_FIELDS).filter(pk=connection_id)[:1])
    if rows and session_is_valid(rows[0], now()):
        return rows[0]
    raise busy()


def _obtain_locked(
    connection_id: int, *, stale_version: int | None, reason: str
) -> BillConnection | None:
    """One try of the single flight: ``None`` when another caller holds the row."""
    effects = Effects()
    error: BillIntegrationError | None = None
    try:
        with transaction.atomic():
            connection = lock(connection_id, skip_locked=True)  # never waits: see obtain
            if connection is None:
                if not BillConnection.objects.filter(pk=connection_id).exists():
                    raise ConnectionNotLinked()
                return None
            check_usable(connection)
            moment = now()
            rejected = stale_version is not None and connection.version == stale_version
            if not rejected and session_is_valid(connection, moment):
                return connection  # another caller logged in meanwhile
            if backing_off(connection, moment):
                raise waiting_error(connection)
            started = time.monotonic()
            try:
                if not rejected and session_is_alive(connection, moment):
                    # Only MAX_SESSION_AGE passed: a refused renewal keeps the live session.
                    lifecycle.renew(connection, effects, reason="max_age", keep_alive_too=False)
                else:
                    lifecycle.login(connection, effects, reason=reason)
            except ConflictError as exc:
                lifecycle.conflicted(connection, exc, action="login", started=started)
                raise
            except BillIntegrationError as exc:
                lifecycle.record_failure(connection, exc, effects, action="login", started=started)
                error = exc
    except OperationalError as exc:
        if not is_lock_timeout(exc):
            raise
        return None  # a lock wait bounded by SINGLE_FLIGHT_WAIT; re-read and retry
    effects.send()
    if error is not None:
        raise error
    return connection
