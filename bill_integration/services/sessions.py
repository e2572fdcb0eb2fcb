"""Keeping BILL sessions fresh: ``get_session``, ``refresh``, ``keep_alive`` and the sweep.

The rest of a SaaS calls :func:`get_session` whenever it talks to BILL. The rules:

* **Valid** means BILL would still accept the session: a session id is stored, and
  ``now < session_last_used_at + SESSION_IDLE_TIMEOUT - SESSION_SAFETY_MARGIN`` (BILL's sliding
  35-minute idle window), and the session is younger than ``MAX_SESSION_AGE`` (when set), and
  the status is not ``needs_relink``/``disabled``. ``session_last_used_at`` is written at most
  once per ``LAST_USED_WRITE_INTERVAL`` per connection, so it may lag the true last call by that
  much: it only ever *under*-estimates freshness, which is the safe side.
* **Hot path**: a valid session costs one query (``.only()`` the columns it needs; the password
  and API token are neither loaded nor decrypted) and no call to BILL.
* **Single flight**: when a login is needed, the connection's row is locked
  (``select_for_update(skip_locked=True)``). Whoever gets the lock re-checks validity
  (another worker may have just logged in) and only then logs in, while holding the lock.
  Every other caller, thread, process or worker finds the row taken and, instead of queueing
  for the exclusive lock just to read the result, re-reads the row without a lock a few times
  a second until the new session is there (or the holder failed and the connection backs
  off, or the lock is free again, or ``SINGLE_FLIGHT_WAIT`` passed: :class:`SessionUnavailable`).
  On SQLite (the demo) ``select_for_update`` does nothing, and the ``IMMEDIATE`` transaction
  mode serialises the writers instead.
* **Fencing**: ``version`` increases whenever the stored session changes (login here, relink in
  ``linking.py``). Every write of session fields is conditional on the version read under the
  lock (``UPDATE ... WHERE version = v``), so a stale worker can never overwrite a newer session,
  and a caller whose session BILL rejected logs in again only if nobody else already did.
* **Failures** write status fields only (never credentials or the session), and follow
  DESIGN.md's table: transient → ``degraded`` with exponential backoff and full jitter;
  BDC_1101/BDC_1102 → ``needs_relink`` and no more automatic logins; BDC_1361 (MFA demanded)
  → ``needs_relink`` with ``last_error_code`` ``mfa_required`` (no re-login loop);
  BDC_1144/BDC_1322 or the login budget → ``rate_limited`` (BDC_1144 pauses the developer key
  until the next hour).
  A signal is sent per status *transition*, not per retry.
* **MAX_SESSION_AGE is soft while a renewal waits**: it is our policy, not BILL's. When the
  login budget refuses a renewal of a session that is still alive, the shortfall is counted
  and logged, the status stays ``active`` (``last_error_code`` ``login_budget_exhausted``
  marks the pending renewal, ``next_attempt_at`` when a login frees up), the sweep keeps the
  session alive and ``get_session`` keeps handing it out until the renewal succeeds.
* **Audit trail**: logins, failures and status transitions write an ``AuditEvent``;
  keep-alives do not (one every half hour per tenant would be most of the table). They show
  in ``last_refresh_at`` and in the ``bill_integration`` outcome log line. The table still
  grows with logins and transitions: prune old rows from a periodic job of your own (for
  example ``AuditEvent.objects.filter(created_at__lt=cutoff).delete()``) if you keep it long.
* **Undecryptable secrets** (a key removed from ``FIELD_ENCRYPTION_KEY`` too early) raise
  :class:`DecryptionFailed` from ``get_session``/``refresh``/``keep_alive`` and mark the
  connection with :func:`bill_integration.rotation.mark_undecryptable` (``needs_relink``); the
  sweep reports ``failed:decryption_failed`` for that row and goes on with the others.
* **The sweep** (:func:`refresh_due`, run by beat through ``tasks.py``) finds due connections
  with one query on plain columns, most recently used first (so a login-budget shortfall hits
  idle tenants), and handles each with :func:`refresh_connection`, which re-checks under the
  row lock (``skip_locked``: a duplicate task for a row being handled does nothing) that the
  work is still due. It keeps live sessions alive with ``session_info`` (BILL's cheapest
  authenticated call, which resets the idle timer) and logs in only when BILL says the session
  is gone, when it surely expired, or when ``MAX_SESSION_AGE`` passed.

Every BILL call made here holds one of the organization's concurrency slots, and every login
spends one login of the developer key's hourly budget (``limits.py``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import OperationalError, transaction
from django.db.models import F, Q
from django.utils import timezone

from .. import limits, signals
from ..client import get_client
from ..client.base import session_credentials
from ..conf import bill_settings, keepalive_after_idle, now
from ..exceptions import (
    BillIntegrationError,
    ConflictError,
    ConnectionDisabled,
    ConnectionNeedsRelink,
    ConnectionNotLinked,
    DecryptionFailed,
    InvalidCredentials,
    RateLimited,
    SessionInvalid,
    SessionUnavailable,
    TransientError,
    UntrustedSession,
)
from ..models import (
    SESSION_FIELDS,
    STATUS_FIELDS,
    AuditEvent,
    BillConnection,
    ConnectionStatus,
)
from .common import log_failure, log_outcome, record
from .linking import _logout_quietly

logger = logging.getLogger("bill_integration.sessions")

#: The columns get_session() reads: enough to judge validity and build a BillSession.
HOT_FIELDS = (
    "session_id",
    "dev_key",
    "dev_key_fingerprint",
    "organization_id",
    "user_id",
    "api_version",
    "environment",
    "status",
    "session_obtained_at",
    "session_last_used_at",
    "next_attempt_at",
    "last_error_code",
    "version",
)
#: Statuses the sweep looks after (needs_relink and disabled wait for a person).
SWEPT_STATUSES = (ConnectionStatus.ACTIVE, ConnectionStatus.DEGRADED, ConnectionStatus.RATE_LIMITED)
UNHEALTHY_STATUSES = (ConnectionStatus.DEGRADED, ConnectionStatus.RATE_LIMITED)
#: last_error_code when our own login budget (not BILL) refused a login.
BUDGET_EXHAUSTED = "login_budget_exhausted"
#: Outcomes of refresh_connection() (also the task's result: no secret in it).
KEPT_ALIVE, LOGGED_IN, NOT_DUE, BUSY, MISSING, RENEWAL_DEFERRED = (
    "kept_alive",
    "logged_in",
    "not_due",
    "busy",
    "missing",
    "renewal_deferred",
)
#: How long a single-flight waiter pauses before trying the lock again when the session is
#: still not valid after the holder let go (seconds; grows to the cap).
WAIT_POLL_FIRST, WAIT_POLL_MAX = 0.01, 0.05
#: PostgreSQL's SQLSTATE for "lock_timeout expired".
LOCK_NOT_AVAILABLE = "55P03"


# --- the session handed to callers ----------------------------------------------------------


@dataclass(frozen=True)
class BillSession:
    """A live BILL session of one tenant, and the way to call BILL with it.

    ``session_id`` and ``dev_key`` never show in ``repr()``. Ask :func:`get_session` for a new
    one whenever you start a piece of work: it costs one query and is always valid.
    """

    session_id: str = field(repr=False)
    dev_key: str = field(repr=False)
    organization_id: str
    user_id: str
    api_version: str
    base_url: str
    environment: str
    connection_id: int
    version: int = 0
    dev_key_fingerprint: str = field(default="", repr=False)
    last_used_at: datetime | None = field(default=None, compare=False)

    def headers(self) -> dict[str, str]:
        """v3 authentication headers (``devKey``, ``sessionId``)."""
        return session_credentials(self.session_id, self.dev_key)

    def form_fields(self) -> dict[str, str]:
        """v2 authentication form fields (``devKey``, ``sessionId``)."""
        return session_credentials(self.session_id, self.dev_key)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """Call BILL with this session: parsed JSON (v3) or ``response_data`` (v2).

        Holds one of the organization's concurrency slots for the call, records the use
        (throttled), and when BILL says the session is gone (BDC_1109) logs in again once
        (single flight: if another worker already did, its session is used) and replays once.
        A BDC_1144 pauses the developer key for every tenant sharing it until the next hour.
        """
        session = self
        for attempt in (1, 2):
            try:
                with limits.request_slot(session.dev_key_fingerprint, session.organization_id):
                    result = get_client(session.environment, session.api_version).request(
                        method,
                        path,
                        session_id=session.session_id,
                        dev_key=session.dev_key,
                        json=json,
                        data=data,
                        params=params,
                    )
            except SessionInvalid:
                if attempt == 2:
                    raise
                session = _obtain(
                    session.connection_id, stale_version=session.version, reason="session_invalid"
                )
                continue
            except RateLimited as exc:
                if _from_bill(exc) and exc.scope == "hourly":
                    limits.pause_dev_key(session.dev_key_fingerprint, exc.retry_at)
                raise
            session.mark_used()
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def mark_used(self) -> None:
        """Record that BILL just saw a call with this session (at most one write per interval)."""
        _note_used(self)


def _from_bill(exc: RateLimited) -> bool:
    """Whether BILL itself answered this (the limiter's own refusals carry no HTTP status)."""
    return exc.http_status is not None


def get_session(tenant: Any) -> BillSession:
    """A session BILL accepts for ``tenant``: the stored one while valid, else a new login.

    Raises :class:`ConnectionNotLinked`, :class:`ConnectionNeedsRelink`,
    :class:`ConnectionDisabled`, :class:`SessionUnavailable` (another worker's login did not
    finish within ``SINGLE_FLIGHT_WAIT``, or the connection is backing off), or what BILL said
    when the login failed (:class:`RateLimited`, :class:`TransientError`, ...).
    """
    tenant_id = getattr(tenant, "pk", tenant)
    with _failing_closed(tenant_id=tenant_id):
        rows = list(BillConnection.objects.only(*HOT_FIELDS).filter(tenant_id=tenant_id)[:1])
    if not rows:
        raise ConnectionNotLinked()
    connection = rows[0]
    _check_usable(connection)
    if session_is_valid(connection, now()):
        return _session_from(connection)
    return _obtain(connection.pk, stale_version=None, reason="expired")


def session_is_valid(connection: BillConnection, at: datetime) -> bool:
    """Whether BILL would still accept the stored session at ``at`` (with the safety margin).

    ``MAX_SESSION_AGE`` is our policy, not BILL's: while a renewal the login budget refused is
    pending (:func:`renewal_pending`), an older session that is still alive stays valid.
    """
    if not session_is_alive(connection, at):
        return False
    max_age = bill_settings.MAX_SESSION_AGE
    if max_age is not None and not renewal_pending(connection):
        obtained = connection.session_obtained_at
        if obtained is None or at >= obtained + max_age:
            return False
    return True


def session_is_alive(connection: BillConnection, at: datetime) -> bool:
    """Whether BILL's idle timer still runs for the stored session at ``at`` (any age)."""
    if connection.status in (ConnectionStatus.NEEDS_RELINK, ConnectionStatus.DISABLED):
        return False
    last_used = connection.session_last_used_at
    if last_used is None or not connection.session_id:
        return False
    idle_limit = bill_settings.SESSION_IDLE_TIMEOUT - bill_settings.SESSION_SAFETY_MARGIN
    return at < last_used + idle_limit


def renewal_pending(connection: BillConnection) -> bool:
    """Whether a ``MAX_SESSION_AGE`` renewal waits for the login budget (session still used)."""
    return (
        connection.status == ConnectionStatus.ACTIVE
        and connection.last_error_code == BUDGET_EXHAUSTED
    )


def _check_usable(connection: BillConnection) -> None:
    if connection.status == ConnectionStatus.NEEDS_RELINK:
        raise ConnectionNeedsRelink()
    if connection.status == ConnectionStatus.DISABLED:
        raise ConnectionDisabled()


def _session_from(connection: BillConnection) -> BillSession:
    return BillSession(
        session_id=connection.session_id,
        dev_key=connection.dev_key,
        organization_id=connection.organization_id,
        user_id=connection.user_id,
        api_version=connection.api_version,
        base_url=bill_settings.base_url(connection.environment, connection.api_version),
        environment=connection.environment,
        connection_id=connection.pk,
        version=connection.version,
        dev_key_fingerprint=connection.dev_key_fingerprint,
        last_used_at=connection.session_last_used_at,
    )


# --- recording use, throttled ----------------------------------------------------------------

#: connection id -> (version, last time this process recorded a use).
_last_recorded: dict[int, tuple[int, datetime]] = {}
_last_recorded_lock = threading.Lock()


def _note_used(session: BillSession) -> None:
    moment = now()
    last = session.last_used_at
    with _last_recorded_lock:
        cached = _last_recorded.get(session.connection_id)
    if cached is not None and cached[0] == session.version and (last is None or cached[1] > last):
        last = cached[1]
    if last is not None and moment - last < bill_settings.LAST_USED_WRITE_INTERVAL:
        return
    # Fenced by version (a newer session is not ours to touch), never moves time backwards,
    # and skips a row another worker holds (its keep-alive or login records a use anyway), so
    # a call never waits for someone else's call to BILL.
    unlocked = (
        BillConnection.objects.filter(pk=session.connection_id, version=session.version)
        .filter(Q(session_last_used_at__isnull=True) | Q(session_last_used_at__lt=moment))
        .select_for_update(skip_locked=True)
        .values("pk")
    )
    with transaction.atomic():
        BillConnection.objects.filter(pk__in=unlocked).update(session_last_used_at=moment)
    with _last_recorded_lock:
        _last_recorded[session.connection_id] = (session.version, moment)


# --- effects sent after the transaction -----------------------------------------------------


@dataclass
class _Effects:
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


# --- locking ---------------------------------------------------------------------------------


def _bound_lock_wait() -> None:
    """On PostgreSQL, make a row-lock wait fail after SINGLE_FLIGHT_WAIT (this transaction).

    ``SET LOCAL`` lasts until the outermost transaction ends: called inside a caller's own
    ``atomic()`` block, the bound applies to the rest of that transaction too.
    """
    from django.db import connection as db

    if db.vendor == "postgresql":
        milliseconds = int(bill_settings.SINGLE_FLIGHT_WAIT.total_seconds() * 1000)
        with db.cursor() as cursor:
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", [f"{milliseconds}ms"])


def _is_lock_timeout(exc: OperationalError) -> bool:
    cause = exc.__cause__
    if getattr(cause, "sqlstate", None) == LOCK_NOT_AVAILABLE:
        return True
    return "database is locked" in str(exc)  # SQLite's busy timeout


def _lock(connection_id: int, *, skip_locked: bool = False) -> BillConnection | None:
    return (
        BillConnection.objects.select_for_update(skip_locked=skip_locked)
        .filter(pk=connection_id)
        .first()
    )


def _fenced_write(
    connection: BillConnection, read_version: int, fields: Iterable[str], *, bump: bool
) -> None:
    """Write ``fields`` only if the row still has ``read_version``; else :class:`ConflictError`.

    Under the row lock this always holds; it is the guarantee on databases without row locks,
    and against any writer that did not take the lock. ``bump`` marks a new session.
    """
    new_version = read_version + 1 if bump else read_version
    updated_at = timezone.now()  # what auto_now would set; update() does not run pre_save()
    values = {name: getattr(connection, name) for name in fields}
    # One conditional UPDATE. Plain values go through each field's get_db_prep_save(), so the
    # session id is encrypted exactly as save() would (only expressions are refused there).
    claimed = BillConnection.objects.filter(pk=connection.pk, version=read_version).update(
        **values, version=new_version, updated_at=updated_at
    )
    if claimed != 1:
        raise ConflictError()
    connection.version = new_version
    connection.updated_at = updated_at


# --- the single-flight login -----------------------------------------------------------------


def _obtain(connection_id: int, *, stale_version: int | None, reason: str) -> BillSession:
    """Log in under the row lock unless a valid session (newer than ``stale_version``) exists.

    The row lock is taken with ``SKIP LOCKED``. A caller that finds the row held (another
    caller is logging in, or the sweep is keeping the session alive) does not queue for the
    exclusive lock; on PostgreSQL it waits with ``FOR SHARE``, which all waiters hold together
    and which is granted the moment the holder commits, then reads the row and leaves with the
    new session. Only if the session is still not valid (the holder failed, or was only
    recording a use) does it try the exclusive lock again. The holder alone logs in: exactly
    one login. Waiting is bounded by ``SINGLE_FLIGHT_WAIT`` (then :class:`SessionUnavailable`).
    """
    deadline = time.monotonic() + bill_settings.SINGLE_FLIGHT_WAIT.total_seconds()
    pause = WAIT_POLL_FIRST
    while True:
        with _failing_closed(connection_id=connection_id):
            try:
                taken, session = _obtain_locked(
                    connection_id, stale_version=stale_version, reason=reason
                )
            except ConflictError:
                # The row moved on under our login (a relink): re-read it, its session may do.
                taken, session = False, None
            if taken:
                assert session is not None
                return session
            # Someone holds the row: wait for their commit, without queueing for their lock.
            connection = _read_after_holder(connection_id)
        if connection is None:
            raise ConnectionNotLinked()
        _check_usable(connection)
        moment = now()
        rejected = stale_version is not None and connection.version == stale_version
        if not rejected and session_is_valid(connection, moment):
            return _session_from(connection)
        if connection.next_attempt_at is not None and connection.next_attempt_at > moment:
            raise _backing_off(connection)
        if time.monotonic() >= deadline:
            raise SessionUnavailable(
                f"{SessionUnavailable.default_message} Another worker is refreshing this session."
            )
        # Still not valid after the holder let go: try the lock again, after a short jittered
        # pause so waiters that read together do not all retry in step.
        time.sleep(pause * random.uniform(0.5, 1.0))
        pause = min(pause * 1.5, WAIT_POLL_MAX)


def _read_after_holder(connection_id: int) -> BillConnection | None:
    """The row once its current lock holder is done (PostgreSQL: ``FOR SHARE``, bounded)."""
    from django.db import connection as db

    try:
        with transaction.atomic():
            if db.vendor == "postgresql":
                _bound_lock_wait()
                table = db.ops.quote_name(BillConnection._meta.db_table)
                column = db.ops.quote_name(BillConnection._meta.pk.column)
                with db.cursor() as cursor:
                    # Granted when the holder commits; held with the other waiters, not in turn.
                    cursor.execute(
                        f"SELECT 1 FROM {table} WHERE {column} = %s FOR SHARE", [connection_id]
                    )
            rows = list(BillConnection.objects.only(*HOT_FIELDS).filter(pk=connection_id)[:1])
    except OperationalError as exc:
        if not _is_lock_timeout(exc):
            raise
        # The holder kept the lock for SINGLE_FLIGHT_WAIT; its login may still have finished.
        rows = list(BillConnection.objects.only(*HOT_FIELDS).filter(pk=connection_id)[:1])
        if rows and session_is_valid(rows[0], now()):
            return rows[0]
        raise SessionUnavailable(
            f"{SessionUnavailable.default_message} Another worker is refreshing this session."
        ) from None
    return rows[0] if rows else None


def _backing_off(connection: BillConnection) -> SessionUnavailable:
    return SessionUnavailable(
        f"{SessionUnavailable.default_message} The connection is waiting until "
        f"{connection.next_attempt_at.isoformat()} after: "
        f"{connection.last_error_code or 'an error'}."
    )


def _obtain_locked(
    connection_id: int, *, stale_version: int | None, reason: str
) -> tuple[bool, BillSession | None]:
    """One try of the single flight: ``(False, None)`` when another caller holds the row."""
    effects = _Effects()
    error: BillIntegrationError | None = None
    session: BillSession | None = None
    try:
        with transaction.atomic():
            connection = _lock(connection_id, skip_locked=True)  # never waits: see _obtain
            if connection is None:
                if not BillConnection.objects.filter(pk=connection_id).exists():
                    raise ConnectionNotLinked()
                return False, None
            _check_usable(connection)
            moment = now()
            rejected = stale_version is not None and connection.version == stale_version
            if not rejected and session_is_valid(connection, moment):
                return True, _session_from(connection)  # another caller logged in meanwhile
            if connection.next_attempt_at is not None and connection.next_attempt_at > moment:
                raise _backing_off(connection)
            started = time.monotonic()
            try:
                if not rejected and session_is_alive(connection, moment):
                    # Only MAX_SESSION_AGE passed: a refused renewal keeps the live session.
                    _renew(connection, effects, reason="max_age", keep_alive=False)
                else:
                    _login(connection, effects, reason=reason)
            except ConflictError as exc:
                _conflicted(connection, exc, action="login", started=started)
                raise
            except BillIntegrationError as exc:
                _record_failure(connection, exc, effects, action="login", started=started)
                error = exc
            else:
                session = _session_from(connection)
    except OperationalError as exc:
        if not _is_lock_timeout(exc):
            raise
        return False, None  # a lock wait bounded by SINGLE_FLIGHT_WAIT; re-read and retry
    effects.send()
    if error is not None:
        raise error
    return True, session


@contextmanager
def _failing_closed(*, connection_id: int | None = None, tenant_id: Any = None) -> Iterator[None]:
    """Turn an undecryptable stored secret into a clear connection status, then re-raise.

    The row is marked by :func:`bill_integration.rotation.mark_undecryptable` (``needs_relink``,
    ``decryption_failed``; a status-only UPDATE that never re-saves the ciphertext), outside
    the failed transaction so the mark is not rolled back with it.
    """
    try:
        yield
    except DecryptionFailed as exc:
        from .. import key_rotation

        if connection_id is None:
            connection_id = (
                BillConnection.objects.filter(tenant_id=tenant_id)
                .values_list("pk", flat=True)
                .first()
            )
        if connection_id is not None:
            key_rotation.mark_undecryptable(connection_id, exc)
        raise


def _login(connection: BillConnection, effects: _Effects, *, reason: str) -> None:
    """Log in with the stored credentials and store the new session (caller holds the lock)."""
    started = time.monotonic()
    fingerprint = connection.dev_key_fingerprint
    limits.take_login(fingerprint)
    client = get_client(connection.environment, connection.api_version)
    with limits.request_slot(fingerprint, connection.organization_id):
        result = client.login(
            username=connection.username,
            password=connection.password,
            organization_id=connection.organization_id,
            dev_key=connection.dev_key,
        )
    moment = now()
    old_status = connection.status
    read_version = connection.version
    connection.session_id = result.session_id
    connection.user_id = result.user_id or connection.user_id
    connection.session_obtained_at = moment
    connection.session_last_used_at = moment
    _mark_healthy(connection, moment)
    try:
        _fenced_write(connection, read_version, [*SESSION_FIELDS, *STATUS_FIELDS], bump=True)
    except ConflictError:
        # The row changed under us (relinked, or a writer that did not take the lock): the
        # stored session is not ours to replace. Write nothing, and do not leave the fresh
        # session open at BILL. The caller must not record a failure either (see _conflicted).
        _logout_quietly(
            connection.environment,
            connection.api_version,
            session_id=result.session_id,
            dev_key=connection.dev_key,
        )
        raise
    record(connection, AuditEvent.Kind.SESSION_REFRESHED, reason=reason, version=connection.version)
    log_outcome("login", connection, "logged_in", duration=time.monotonic() - started)
    effects.add(signals.session_refreshed, connection, reason=reason)
    _note_recovery(connection, old_status, effects)


def _keep_alive_locked(connection: BillConnection, effects: _Effects) -> str:
    """Reset BILL's idle timer with ``session_info``; log in if BILL says the session is gone."""
    started = time.monotonic()
    client = get_client(connection.environment, connection.api_version)
    try:
        with limits.request_slot(connection.dev_key_fingerprint, connection.organization_id):
            client.session_info(session_id=connection.session_id, dev_key=connection.dev_key)
    except SessionInvalid:
        _login(connection, effects, reason="session_gone")
        return LOGGED_IN
    moment = now()
    old_status = connection.status
    pending = renewal_pending(connection)
    retry_at = connection.next_attempt_at
    connection.session_last_used_at = moment
    _mark_healthy(connection, moment)
    if pending:  # still waiting for the login budget to renew the session: keep the mark
        connection.last_error_code = BUDGET_EXHAUSTED
        connection.next_attempt_at = retry_at
    # No AuditEvent: a keep-alive every half hour per tenant would be most of the table (and
    # grow without bound). last_refresh_at and the outcome log line record it; the audit
    # trail keeps logins, failures and status transitions.
    _fenced_write(
        connection, connection.version, ["session_last_used_at", *STATUS_FIELDS], bump=False
    )
    log_outcome("keep_alive", connection, KEPT_ALIVE, duration=time.monotonic() - started)
    _note_recovery(connection, old_status, effects)
    return KEPT_ALIVE


def _renew(
    connection: BillConnection, effects: _Effects, *, reason: str, keep_alive: bool
) -> str:
    """Renew a live session that passed ``MAX_SESSION_AGE``; if the budget refuses, keep it.

    ``MAX_SESSION_AGE`` is our policy, BILL still accepts the session: when the developer
    key's login budget refuses the renewal, the shortfall is counted and logged, the session
    stays in use (status ``active``, ``last_error_code`` ``login_budget_exhausted`` marks the
    pending renewal, ``next_attempt_at`` says when a login frees up) and, with ``keep_alive``,
    BILL's idle timer is reset so the session lives on until the budget allows the renewal.
    """
    try:
        _login(connection, effects, reason=reason)
        return LOGGED_IN
    except RateLimited as exc:
        if exc.scope != "login_budget":
            raise
        refused = exc
    moment = now()
    total = limits.record_shortfall(connection.dev_key_fingerprint)
    retry_at = refused.retry_at or moment + backoff_delay(1)
    logger.warning(
        "bill login budget exhausted: connection=%s keeps its live session past "
        "MAX_SESSION_AGE; renewal retried from %s (shortfalls for this developer key: %s)",
        connection.pk,
        retry_at.isoformat(),
        total,
    )
    outcome = RENEWAL_DEFERRED
    if keep_alive:
        outcome = _keep_alive_locked(connection, effects)
    if outcome != LOGGED_IN:
        connection.last_error_code = BUDGET_EXHAUSTED
        connection.last_error_message = str(refused)[:500]
        connection.next_attempt_at = retry_at
        _fenced_write(
            connection,
            connection.version,
            ["last_error_code", "last_error_message", "next_attempt_at"],
            bump=False,
        )
    return outcome


def _mark_healthy(connection: BillConnection, moment: datetime) -> None:
    connection.last_refresh_at = moment
    connection.status = ConnectionStatus.ACTIVE
    connection.last_error_code = ""
    connection.last_error_message = ""
    connection.consecutive_failures = 0
    connection.next_attempt_at = None


def _note_recovery(connection: BillConnection, old_status: str, effects: _Effects) -> None:
    if old_status in UNHEALTHY_STATUSES:
        record(connection, AuditEvent.Kind.STATUS_CHANGED, old=old_status, new=connection.status)
        effects.add(signals.connection_recovered, connection)


# --- failures --------------------------------------------------------------------------------


def backoff_delay(failures: int) -> timedelta:
    """Exponential backoff with full jitter, never shorter than ``BACKOFF_BASE``.

    The n-th consecutive failure waits a random time between ``BACKOFF_BASE`` and
    ``min(BACKOFF_MAX, BACKOFF_BASE * 2**(n-1))``: a floor so one tenant cannot hammer BILL
    (Nango's 30-second cooldown, #5505), jitter so tenants that failed together spread out.
    """
    base = bill_settings.BACKOFF_BASE.total_seconds()
    cap = min(bill_settings.BACKOFF_MAX.total_seconds(), base * 2 ** max(0, failures - 1))
    return timedelta(seconds=random.uniform(base, max(base, cap)))


def _record_failure(
    connection: BillConnection,
    exc: BillIntegrationError,
    effects: _Effects,
    *,
    action: str,
    started: float,
) -> None:
    """Write what went wrong to the status fields only; signal a transition once.

    ``started`` is ``time.monotonic()`` when the attempt began: the log line carries how long
    BILL took to fail (a timeout and a refusal look very different).
    """
    moment = now()
    old_status = connection.status
    failures = connection.consecutive_failures + 1
    code = getattr(exc, "bill_code", None) or exc.code
    level = logging.WARNING
    if isinstance(exc, InvalidCredentials):
        new_status, next_attempt = ConnectionStatus.NEEDS_RELINK, None
    elif isinstance(exc, UntrustedSession):
        # BDC_1361: BILL wants MFA for this account. Logging in again cannot fix that, so
        # never retry (DESIGN.md: no re-login loop): needs_relink stops the sweep and
        # get_session() until a person sorts out MFA at BILL and links again.
        new_status, next_attempt = ConnectionStatus.NEEDS_RELINK, None
        code = exc.code  # "mfa_required": the customer message says what to do
    elif isinstance(exc, RateLimited):
        new_status = ConnectionStatus.RATE_LIMITED
        if exc.scope == "login_budget":
            failures -= 1  # not the tenant's failure: the developer key's budget is spent
            code = BUDGET_EXHAUSTED
            next_attempt = exc.retry_at or moment + backoff_delay(1)
            total = limits.record_shortfall(connection.dev_key_fingerprint)
            logger.warning(
                "bill login budget exhausted: connection=%s waits until %s "
                "(shortfalls for this developer key: %s)",
                connection.pk,
                next_attempt.isoformat(),
                total,
            )
        elif exc.scope == "hourly":
            next_attempt = exc.retry_at or limits.next_clock_hour(moment)
            if _from_bill(exc):  # not our own pause check repeating what we already know
                limits.pause_dev_key(connection.dev_key_fingerprint, next_attempt)
        else:  # BDC_1322 or our own slots stayed busy
            next_attempt = moment + backoff_delay(failures)
    elif isinstance(exc, TransientError):
        new_status, next_attempt = ConnectionStatus.DEGRADED, moment + backoff_delay(failures)
    else:
        # Unexpected answer, undecryptable secret: fail loudly, keep the status.
        level = logging.ERROR
        new_status = (
            old_status if old_status != ConnectionStatus.ACTIVE else ConnectionStatus.DEGRADED
        )
        next_attempt = moment + backoff_delay(failures)
    connection.status = new_status
    connection.last_error_code = str(code)[:64]
    connection.last_error_message = str(exc)[:500]
    connection.consecutive_failures = failures
    connection.next_attempt_at = next_attempt
    connection.last_refresh_at = moment
    _fenced_write(connection, connection.version, STATUS_FIELDS, bump=False)
    log_failure(action, connection, exc, started=started, level=level)
    if new_status != old_status:
        record(
            connection,
            AuditEvent.Kind.STATUS_CHANGED,
            old=old_status,
            new=new_status,
            code=connection.last_error_code,
        )
        if new_status == ConnectionStatus.NEEDS_RELINK:
            effects.add(signals.connection_needs_relink, connection, error=exc)
        elif old_status == ConnectionStatus.ACTIVE:
            effects.add(signals.connection_degraded, connection, error=exc)


def _conflicted(
    connection: BillConnection, exc: ConflictError, *, action: str, started: float
) -> None:
    """Log a lost fenced write. Nothing is written: the row belongs to whoever moved it on.

    Recording it as a failure would be another fenced write with the same stale version
    (another ConflictError), and the newer state is healthy as far as we know.
    """
    log_outcome(action, connection, f"failed:{exc.code}", duration=time.monotonic() - started)


# --- the sweep and explicit refreshes --------------------------------------------------------


def due_action(connection: BillConnection, at: datetime) -> str | None:
    """What the sweep should do for ``connection`` at ``at``: "login", "keep_alive" or None."""
    if connection.status not in SWEPT_STATUSES:
        return None
    if connection.next_attempt_at is not None and connection.next_attempt_at > at:
        # Backing off; but a session whose renewal waits for the budget is still kept alive.
        alive = renewal_pending(connection) and session_is_alive(connection, at)
        idle_enough = alive and at - connection.session_last_used_at >= keepalive_after_idle()
        return "keep_alive" if idle_enough else None
    last_used = connection.session_last_used_at
    if last_used is None or not connection.session_id:
        return "login"
    max_age = bill_settings.MAX_SESSION_AGE
    if max_age is not None:
        obtained = connection.session_obtained_at
        if obtained is None or at >= obtained + max_age - bill_settings.SESSION_SAFETY_MARGIN:
            return "login"
    idle = at - last_used
    # Past the idle limit even allowing for the throttled last-use lag: surely gone at BILL.
    if idle >= bill_settings.SESSION_IDLE_TIMEOUT + bill_settings.LAST_USED_WRITE_INTERVAL:
        return "login"
    if idle >= keepalive_after_idle():
        return "keep_alive"
    return None


def due_connection_ids(at: datetime | None = None, *, limit: int | None = None) -> list[int]:
    """Ids of the connections due at ``at``, most recently used first (one query)."""
    at = at or now()
    idle = Q(session_last_used_at__lte=at - keepalive_after_idle())
    due = Q(session_last_used_at__isnull=True) | idle
    # Still trusted (session_is_alive): only such a session is kept alive while it waits.
    alive = Q(
        session_last_used_at__gt=at
        - bill_settings.SESSION_IDLE_TIMEOUT
        + bill_settings.SESSION_SAFETY_MARGIN
    )
    max_age = bill_settings.MAX_SESSION_AGE
    if max_age is not None:
        due |= Q(session_obtained_at__isnull=True) | Q(
            session_obtained_at__lte=at - max_age + bill_settings.SESSION_SAFETY_MARGIN
        )
    query = (
        BillConnection.objects.filter(status__in=SWEPT_STATUSES)
        .filter(
            Q(next_attempt_at__isnull=True)
            | Q(next_attempt_at__lte=at)
            # a renewal waiting for the login budget: keep the live session alive meanwhile
            | (Q(status=ConnectionStatus.ACTIVE, last_error_code=BUDGET_EXHAUSTED) & idle & alive)
        )
        .filter(due)
        .order_by(F("session_last_used_at").desc(nulls_last=True), "pk")
        .values_list("pk", flat=True)
    )
    return list(query[:limit] if limit else query)


def refresh_due(
    *,
    dispatch: Callable[[int], Any] | None = None,
    tenant: Any = None,
    include_all: bool = False,
    progress: Callable[[int, str], Any] | None = None,
) -> list[int]:
    """Handle every due connection (or, with ``include_all``, every swept one); return the ids.

    ``dispatch(connection_id)`` hands each id to someone else (the Celery task does
    ``refresh_session.apply_async``); without it each is refreshed here, in order, and
    ``progress(connection_id, outcome)`` is called after each (the management command's bar).
    """
    if include_all or tenant is not None:
        query = BillConnection.objects.filter(status__in=SWEPT_STATUSES)
        if tenant is not None:
            query = query.filter(tenant_id=getattr(tenant, "pk", tenant))
        ids = list(
            query.order_by(F("session_last_used_at").desc(nulls_last=True), "pk").values_list(
                "pk", flat=True
            )
        )
    else:
        ids = due_connection_ids()
    if dispatch is not None:
        for connection_id in ids:
            dispatch(connection_id)
        return ids
    with limits.batch():
        for connection_id in ids:
            outcome = refresh_connection(connection_id, force_due=include_all or tenant is not None)
            if progress is not None:
                progress(connection_id, outcome)
    return ids


def refresh_connection(connection_id: int, *, force_due: bool = False) -> str:
    """Refresh one connection if it is still due (the Celery task's body; safe to repeat).

    Returns an outcome without secrets: ``kept_alive``, ``logged_in``, ``not_due``, ``busy``
    (another worker holds the row), ``missing``, or ``failed:<code>``. ``force_due`` treats a
    connection whose session is fine as due for a keep-alive (``--all``/``--tenant``).
    """
    try:
        with _failing_closed(connection_id=connection_id):
            return _refresh_connection(connection_id, force_due=force_due)
    except DecryptionFailed as exc:
        # Marked needs_relink: the sweep leaves it alone from now on and goes on with the rest.
        return f"failed:{exc.code}"


def _refresh_connection(connection_id: int, *, force_due: bool) -> str:
    effects = _Effects()
    with transaction.atomic():
        connection = _lock(connection_id, skip_locked=True)
        if connection is None:
            exists = BillConnection.objects.filter(pk=connection_id).exists()
            return BUSY if exists else MISSING
        moment = now()
        action = due_action(connection, moment)
        if action is None and force_due and connection.status in SWEPT_STATUSES:
            paused = connection.next_attempt_at is not None and connection.next_attempt_at > moment
            action = None if paused else "keep_alive"
        if action is None:
            return NOT_DUE
        started = time.monotonic()
        try:
            if action == "login" and session_is_alive(connection, moment):
                # Only MAX_SESSION_AGE passed: a refused renewal falls back to a keep-alive.
                idle = moment - connection.session_last_used_at
                keep = idle >= keepalive_after_idle()
                outcome = _renew(connection, effects, reason="max_age", keep_alive=keep)
            elif action == "login":
                _login(connection, effects, reason="sweep")
                outcome = LOGGED_IN
            else:
                outcome = _keep_alive_locked(connection, effects)
        except ConflictError as exc:
            _conflicted(connection, exc, action=action, started=started)
            return f"failed:{exc.code}"
        except BillIntegrationError as exc:
            _record_failure(connection, exc, effects, action=action, started=started)
            outcome = f"failed:{connection.last_error_code}"
    effects.send()
    return outcome


def _locked_operation(
    tenant: Any, operation: Callable[[BillConnection, _Effects], Any], *, action: str
) -> BillConnection:
    """Lock ``tenant``'s row (bounded wait), run ``operation``, record a failure, re-raise it."""
    tenant_id = getattr(tenant, "pk", tenant)
    with _failing_closed(tenant_id=tenant_id):
        return _locked_operation_once(tenant_id, operation, action=action)


def _locked_operation_once(
    tenant_id: Any, operation: Callable[[BillConnection, _Effects], Any], *, action: str
) -> BillConnection:
    effects = _Effects()
    error: BillIntegrationError | None = None
    try:
        with transaction.atomic():
            _bound_lock_wait()
            connection = (
                BillConnection.objects.select_for_update().filter(tenant_id=tenant_id).first()
            )
            if connection is None:
                raise ConnectionNotLinked()
            _check_usable(connection)
            started = time.monotonic()
            try:
                operation(connection, effects)
            except ConflictError as exc:
                _conflicted(connection, exc, action=action, started=started)
                raise
            except BillIntegrationError as exc:
                _record_failure(connection, exc, effects, action=action, started=started)
                error = exc
    except OperationalError as exc:
        if not _is_lock_timeout(exc):
            raise
        raise SessionUnavailable(
            f"{SessionUnavailable.default_message} Another worker is refreshing this session."
        ) from None
    effects.send()
    if error is not None:
        raise error
    return connection


def refresh(tenant: Any, *, force: bool = False) -> BillConnection:
    """Make sure ``tenant`` has a live session now; return the connection.

    Without ``force``: a valid session is kept alive (one cheap call that also proves BILL still
    accepts it), otherwise a new one is obtained. With ``force``: always log in again. The
    connection's backoff is ignored (a person asked), the developer key's budget and pause are
    not. Raises :class:`ConnectionNotLinked`, :class:`ConnectionNeedsRelink`,
    :class:`ConnectionDisabled`, :class:`SessionUnavailable` (the row stayed locked for
    ``SINGLE_FLIGHT_WAIT``), or what BILL said, after recording it in the status fields.
    """

    def operation(connection: BillConnection, effects: _Effects) -> None:
        moment = now()
        if not force and not session_is_valid(connection, moment):
            if session_is_alive(connection, moment):  # only MAX_SESSION_AGE passed
                _renew(connection, effects, reason="manual", keep_alive=True)
            else:
                _login(connection, effects, reason="manual")
        elif force:
            _login(connection, effects, reason="forced")
        else:
            _keep_alive_locked(connection, effects)

    return _locked_operation(tenant, operation, action="refresh")


def keep_alive(tenant: Any) -> BillConnection:
    """Reset BILL's idle timer for ``tenant``'s session now (log in if BILL says it is gone).

    Raises like :func:`refresh`.
    """

    def operation(connection: BillConnection, effects: _Effects) -> None:
        if connection.session_id:
            _keep_alive_locked(connection, effects)
        else:
            _login(connection, effects, reason="keep_alive")

    return _locked_operation(tenant, operation, action="keep_alive")
