"""The session handed to callers: :func:`get_session` and :class:`BillSession`.

The rest of a SaaS calls :func:`get_session` whenever it talks to BILL:

* **Hot path**: a valid session (:func:`freshness.session_is_valid`) costs one query
  (``.only()`` the columns it needs; the password and API token are neither loaded nor
  decrypted) and no call to BILL.
* Otherwise the single flight (:mod:`single_flight`) logs in once, whoever else is asking.
* :meth:`BillSession.request` calls BILL through the gateway, records the use (at most one
  write per ``LAST_USED_WRITE_INTERVAL`` per connection), and when BILL says the session is
  gone (BDC_1109) logs in again once and replays the call once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Q

from ..auth_methods import AuthMethod
from ..conf import bill_settings, now
from ..exceptions import ConnectionNotLinked, SessionInvalid, UntrustedSession
from ..models import BillConnection
from . import gateway, undecryptable, warmth
from .common import developer_key
from .freshness import HOT_FIELDS, check_usable, session_is_valid
from .single_flight import obtain


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
    #: The connection's sign-in method (``auth_methods``) and, for Spend & Expense only, its
    #: API token (the only credential such a connection has).
    auth_method: str = AuthMethod.USER_PASSWORD
    api_token: str | None = field(default=None, repr=False)
    #: The tenant's own last call to BILL (``usage_last_at``): where a new visit starts.
    called_at: datetime | None = field(default=None, compare=False)

    def headers(self) -> dict[str, str]:
        """v3 authentication headers: ``devKey`` + ``sessionId``; ``Authorization: Bearer``
        for OAuth; ``apiToken`` for Spend & Expense only."""
        if self.auth_method == AuthMethod.OAUTH_CLIENT:
            return {"Authorization": f"Bearer {self.session_id}"}
        if self.auth_method == AuthMethod.SPEND_TOKEN:
            return {"apiToken": self.api_token or ""}
        return gateway.session_credentials(self.session_id, self.dev_key)

    def form_fields(self) -> dict[str, str]:
        """v2 authentication form fields (``devKey``, ``sessionId``)."""
        return gateway.session_credentials(self.session_id, self.dev_key)

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
        When BILL wants an MFA-trusted session (BDC_1361: payments, bank accounts, vendor
        invites, autopay), one step-up with the stored trust is tried and the call replayed
        once; without trust :class:`UntrustedSession` (or :class:`MfaTrustExpired`) says how
        to establish it (:func:`bill_integration.services.mfa.regain_trust`).
        """
        session = self

        def send(session: BillSession) -> Any:
            return gateway.request(session, method, path, json=json, data=data, params=params)

        try:
            try:
                result = send(session)
            except SessionInvalid:
                row = obtain(
                    session.connection_id, stale_version=session.version, reason="session_invalid"
                )
                session = session_from(row)
                result = send(session)
        except UntrustedSession as exc:
            # BDC_1361: step up once with the stored trust (or raise "trust needed"), replay once.
            from . import mfa

            session = session_from(
                mfa.regain_trust(session.connection_id, version=session.version, error=exc)
            )
            try:
                result = send(session)
            except UntrustedSession:
                mfa.refused_after_step_up(session.connection_id)
                raise
        session.mark_used()
        return result

    def mark_used(self) -> None:
        """Record that BILL just saw a call with this session (at most one write per interval)."""
        _note_used(self)


def session_from(connection: BillConnection) -> BillSession:
    """The caller's view of a connection row that holds a valid session."""
    spend_only = connection.auth_method == AuthMethod.SPEND_TOKEN
    dev_key, fingerprint = developer_key(connection)
    return BillSession(
        auth_method=connection.auth_method,
        api_token=connection.api_token if spend_only else None,  # decrypted only when needed
        session_id=connection.session_id or "",
        dev_key=dev_key,
        organization_id=connection.organization_id,
        user_id=connection.user_id,
        api_version=connection.api_version,
        base_url=bill_settings.base_url(connection.environment, connection.api_version),
        environment=connection.environment,
        connection_id=connection.pk,
        version=connection.version,
        dev_key_fingerprint=fingerprint,
        last_used_at=connection.session_last_used_at,
        called_at=connection.usage_last_at,
    )


def _hot_row(tenant_id: Any) -> BillConnection | None:
    with undecryptable.failing_closed(tenant_id=tenant_id):
        rows = list(BillConnection.objects.only(*HOT_FIELDS).filter(tenant_id=tenant_id)[:1])
    return rows[0] if rows else None


def get_session(tenant: Any) -> BillSession:
    """A session BILL accepts for ``tenant``: the stored one while valid, else a new login.

    Raises :class:`ConnectionNotLinked`, :class:`ConnectionNeedsRelink`,
    :class:`ConnectionDisabled`, :class:`SessionUnavailable` (another worker's login did not
    finish within ``SINGLE_FLIGHT_WAIT``, or the connection is backing off), or what BILL said
    when the login failed (:class:`RateLimited`, :class:`TransientError`, ...).
    """
    tenant_id = getattr(tenant, "pk", tenant)
    connection = _hot_row(tenant_id)
    if connection is None:
        raise ConnectionNotLinked()
    if undecryptable.undecryptable(connection) and undecryptable.restore_if_decryptable(
        connection.pk
    ):
        connection = _hot_row(tenant_id)  # a key mistake was put right: back in service
        if connection is None:
            raise ConnectionNotLinked()
    check_usable(connection)
    if session_is_valid(connection, now()):
        return session_from(connection)
    return session_from(obtain(connection.pk, stale_version=None, reason="expired"))


# --- recording use, throttled ----------------------------------------------------------------

#: The columns of the tenant's usage history (services/warmth.py).
USAGE_FIELDS = ("usage_last_at", "usage_visits", "usage_histogram")
#: connection id -> (version, last time this process recorded a use).
_last_recorded: dict[int, tuple[int, datetime]] = {}
_last_recorded_lock = threading.Lock()


def _note_used(session: BillSession) -> None:
    moment = now()
    last, called = session.last_used_at, session.called_at
    with _last_recorded_lock:
        cached = _last_recorded.get(session.connection_id)
    if cached is not None and cached[0] == session.version and (last is None or cached[1] > last):
        last = cached[1]
    if cached is not None and (called is None or cached[1] > called):
        called = cached[1]
    if called is None or moment - called >= warmth.VISIT_GAP:
        _note_visit(session.connection_id, moment)  # once per visit, not per call
    elif last is not None and moment - last < bill_settings.LAST_USED_WRITE_INTERVAL:
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
        BillConnection.objects.filter(pk__in=unlocked).update(
            session_last_used_at=moment, usage_last_at=moment
        )
    with _last_recorded_lock:
        _last_recorded[session.connection_id] = (session.version, moment)


def _note_visit(connection_id: int, moment: datetime) -> None:
    """A new visit of the tenant: add it to the usage history (``warmth.note_visit``).

    Not fenced by ``version``: the history is the tenant's, whichever session it used. A row
    another worker holds is skipped (the visit goes unrecorded rather than the call waiting).
    """
    with transaction.atomic():
        row = (
            BillConnection.objects.select_for_update(skip_locked=True)
            .only(*USAGE_FIELDS, "created_at")
            .filter(pk=connection_id)
            .first()
        )
        if row is not None and warmth.note_visit(row, moment):
            BillConnection.objects.filter(pk=connection_id).update(
                **{name: getattr(row, name) for name in USAGE_FIELDS}
            )
