"""Trusting this app for payments: BILL's MFA flow, as services shaped like ``link()``.

A person (the REST API, the Connect page) does it once per 30 days:

1. :func:`phones`: the BILL user's 2-step verification phones (last four digits; v2 has no
   list, so ``None``);
2. :func:`challenge`: BILL texts a 6-digit code to the primary (or backup) phone; our own
   throttle (:data:`TEXTS_PER_MINUTE` per developer key, below BILL's 5 a minute) refuses
   before BILL would;
3. :func:`validate`: the code, confirmed with "remember me", a device name (``MFA_DEVICE_NAME``)
   and a machine name; the remember-me id (v3 ``rememberMeId``, v2 ``mfaId``) is stored
   encrypted and the current session is trusted. Later logins send it (``lifecycle.login``);
4. :func:`forget`: drop the stored trust (BILL has no call to revoke it; it lapses in 30 days).

:func:`regain_trust` is what :meth:`BillSession.request` does when BILL answers BDC_1361 to a
caller's request: with a stored remember-me id, one step-up (v3 ``/v3/mfa/step-up``; v2 checks
``MFAStatus.json`` and logs in again with the id), then the caller replays once; without one,
the connection is marked "trust needed" (reads keep working: it is not ``needs_relink``) and
:class:`UntrustedSession` is raised. Never a login loop.

Nothing stored changes when BILL refuses (a wrong code, no phone, too many attempts). Audit
details and log lines carry codes and ids, never the code typed, the challenge or the id.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from django.core.cache import cache
from django.db import OperationalError, transaction
from django.views.decorators.debug import sensitive_variables

from .. import signals
from ..client.types import MfaPhone
from ..conf import now
from ..constants import MAX_TEXTS_PER_MINUTE
from ..exceptions import (
    BillIntegrationError,
    ConnectionNotLinked,
    MfaCodeRejected,
    MfaTextLimited,
    MfaTrustExpired,
    SessionInvalid,
    UntrustedSession,
)
from ..log_redaction import register_secret
from ..models import TRUST_FIELDS, AuditEvent, BillConnection
from . import gateway, lifecycle, trust, undecryptable
from .common import log_failure, log_outcome, record
from .locking import Effects, bound_lock_wait, busy, is_lock_timeout, lock, lock_without_secrets

logger = logging.getLogger("bill_integration.mfa")

#: Text messages our own throttle allows per developer key and minute: one below BILL's 5, so
#: BILL's own limit is never what a person runs into.
TEXTS_PER_MINUTE = MAX_TEXTS_PER_MINUTE - 1
#: What a code looks like once spaces and dashes are taken out.
CODE = re.compile(r"\d{6}")

T = TypeVar("T")


def normalise_code(code: Any) -> str | None:
    """The six digits of ``code`` ("123 456" and "123-456" are fine), or ``None``."""
    if not isinstance(code, str):
        return None
    digits = re.sub(r"[\s-]", "", code)
    return digits if CODE.fullmatch(digits) else None


def _with_session(tenant: Any, call: Callable[[Any], T]) -> tuple[T, Any]:
    """``call(session)`` with the tenant's session; once more with a new one after BDC_1109."""
    from .session import get_session, session_from
    from .single_flight import obtain

    session = get_session(tenant)
    try:
        return call(session), session
    except SessionInvalid:
        row = obtain(session.connection_id, stale_version=session.version, reason="session_invalid")
        session = session_from(row)
        return call(session), session


def phones(tenant: Any) -> list[MfaPhone] | None:
    """The BILL user's phones for 2-step verification (``None`` on v2: BILL lists none)."""
    result, _session = _with_session(tenant, gateway.mfa_phones)
    return result


def _take_text(fingerprint: str, at: datetime) -> None:
    """Count one text message for the developer key, or refuse (:class:`MfaTextLimited`).

    Counted in Django's cache, like the REST throttles (a shared cache in production).
    """
    key = f"bill_integration:mfa_texts:{fingerprint}"
    moment = at.timestamp()
    history = [t for t in cache.get(key, []) if t > moment - 60]
    if len(history) >= TEXTS_PER_MINUTE:
        raise MfaTextLimited(retry_at=datetime.fromtimestamp(history[0] + 60, UTC))
    cache.set(key, [*history, moment], 60)


def challenge(tenant: Any, *, use_backup: bool = False, actor: Any = None) -> str:
    """Have BILL text a code to the user's primary (or backup) phone; returns the challenge id.

    Raises :class:`MfaTextLimited` (ours or BILL's), :class:`MfaPhoneMissing` (BDC_1354: add a
    phone in BILL), :class:`MfaTooManyAttempts` (BDC_1358), or what BILL said.
    """
    started = time.monotonic()

    def call(session: Any) -> str:
        _take_text(session.dev_key_fingerprint, now())
        return gateway.mfa_challenge(session, use_backup=use_backup)

    try:
        challenge_id, session = _with_session(tenant, call)
    except BillIntegrationError as exc:
        _refused(tenant, "mfa_challenge", exc, actor=actor, started=started)
        raise
    register_secret(challenge_id)
    connection = BillConnection.objects.without_secrets().filter(tenant=tenant).first()
    log_outcome("mfa_challenge", connection, "sent", duration=time.monotonic() - started)
    return challenge_id


def _refused(
    tenant: Any, action: str, exc: BillIntegrationError, *, actor: Any, started: float
) -> None:
    """Audit and log a refusal of the MFA flow (codes only); nothing stored changes."""
    connection = BillConnection.objects.without_secrets().filter(tenant=tenant).first()
    if connection is not None:
        record(
            connection,
            AuditEvent.Kind.MFA_FAILED,
            actor=actor,
            step=action,
            code=exc.code,
            bill_code=getattr(exc, "bill_code", None),
        )
    log_failure(action, connection, exc, started=started, tenant=tenant)


@sensitive_variables("code", "digits", "remember_me", "challenge_id")
def validate(tenant: Any, *, challenge_id: str, code: str, actor: Any = None) -> BillConnection:
    """Confirm BILL's code: this app is trusted for payments for 30 days.

    Stores the remember-me id (encrypted) with the device name, marks the current session
    trusted, audits and sends ``connection_mfa_trusted``. Raises :class:`MfaCodeRejected`
    (wrong or expired code), :class:`MfaTooManyAttempts` or what BILL said, with nothing
    stored changed.
    """
    started = time.monotonic()
    digits = normalise_code(code)
    stored = BillConnection.objects.without_secrets().filter(tenant=tenant).first()
    if stored is None:
        raise ConnectionNotLinked()
    # A trust being renewed keeps the device name BILL knows it by.
    device = stored.mfa_device or trust.device_name()
    try:
        if digits is None:
            raise MfaCodeRejected(f"{MfaCodeRejected.default_message} It is not 6 digits.")
        remember_me, session = _with_session(
            tenant,
            lambda s: gateway.mfa_validate(
                s,
                challenge_id=challenge_id,
                code=digits,
                device=device,
                machine_name=trust.machine_name(device),
            ),
        )
    except BillIntegrationError as exc:
        _refused(tenant, "mfa_validate", exc, actor=actor, started=started)
        raise
    register_secret(remember_me)
    effects = Effects()
    with transaction.atomic():
        connection = lock_without_secrets(pk=session.connection_id)
        if connection is None:
            raise ConnectionNotLinked()
        at = now()
        # The session BILL just trusted is the stored one unless a login replaced it meanwhile.
        trust.establish(
            connection,
            remember_me,
            device,
            session_trusted=connection.version == session.version,
            at=at,
        )
        trust.save_trust(connection, list(TRUST_FIELDS))
        expires_at = connection.mfa_trust_expires_at
        record(
            connection,
            AuditEvent.Kind.MFA_TRUSTED,
            actor=actor,
            device=device,
            expires_at=expires_at.isoformat() if expires_at else None,
        )
        effects.add(signals.connection_mfa_trusted, connection, actor=actor, expires_at=expires_at)
    effects.send()
    log_outcome("mfa_validate", connection, "trusted", duration=time.monotonic() - started)
    return connection


def forget(tenant: Any, *, actor: Any = None) -> BillConnection:
    """Drop the stored trust (BILL keeps it until it lapses; this app stops using it)."""
    started = time.monotonic()
    effects = Effects()
    with transaction.atomic():
        connection = lock_without_secrets(tenant=tenant)
        if connection is None:
            raise ConnectionNotLinked()
        had_trust = connection.mfa_trust_expires_at is not None
        trust.clear(connection)
        trust.save_trust(connection, list(TRUST_FIELDS))
        if had_trust:
            record(connection, AuditEvent.Kind.MFA_FORGOTTEN, actor=actor)
            effects.add(signals.connection_mfa_forgotten, connection, actor=actor)
    effects.send()
    log_outcome(
        "mfa_forget",
        connection,
        "forgotten" if had_trust else "none",
        duration=time.monotonic() - started,
    )
    return connection


# --- BDC_1361 on a caller's request ----------------------------------------------------------------


def regain_trust(connection_id: int, *, version: int, error: UntrustedSession) -> BillConnection:
    """After BDC_1361: a row whose session may now do the operation, or raise.

    * A stored remember-me id within its 30 days: one step-up. v3: BILL trusts the live
      session (``connection_mfa_stepped_up``); v2: ``MFAStatus.json`` confirms the ``mfaId``
      and one login with it gives a trusted session. ``trusted: false`` means trust expired:
      :class:`MfaTrustExpired` (``connection_mfa_expired`` once).
    * Trust past its 30 days: :class:`MfaTrustExpired`.
    * No trust: "trust needed" is recorded (``connection_mfa_needed`` once) and
      :class:`UntrustedSession` is raised. The status stays as it is: reads keep working.

    The caller replays its request once with the returned row's session.
    """
    effects = Effects()
    failure: BillIntegrationError | None = None
    try:
        with undecryptable.failing_closed(connection_id=connection_id), transaction.atomic():
            bound_lock_wait()
            connection = lock(connection_id)
            if connection is None:
                raise ConnectionNotLinked()
            failure = _regain_locked(connection, version, error, effects)
    except OperationalError as exc:
        if not is_lock_timeout(exc):
            raise
        raise busy() from None
    effects.send()
    if failure is not None:
        raise failure
    return connection


def _regain_locked(
    connection: BillConnection, version: int, error: UntrustedSession, effects: Effects
) -> BillIntegrationError | None:
    at = now()
    if connection.version != version and connection.session_trusted:
        return None  # another worker's login already got a trusted session: use it
    remember_me, device = trust.usable_remember_me(connection, at)
    if remember_me is None or device is None:
        if connection.mfa_trust_expires_at is not None:  # stored, but its 30 days are over
            fields, news = trust.lose(connection, at)
            trust.save_trust(connection, fields)
            if news:
                trust.report_expired(connection, effects, reason="30_days")
            return _expired_error(error)
        trust.save_trust(connection, trust.mark_needed(connection, effects, at))
        logger.warning(
            "bill mfa trust needed connection=%s tenant=%s bill_code=%s",
            connection.pk,
            connection.tenant_id,
            error.bill_code or "-",
        )
        return error
    started = time.monotonic()
    result = gateway.mfa_step_up(connection, remember_me_id=remember_me, device=device)
    if not result.trusted:
        fields, news = trust.lose(connection, at)
        trust.save_trust(connection, fields)
        if news:
            trust.report_expired(connection, effects, reason="step_up")
        return _expired_error(error)
    if result.session_trusted:
        connection.session_trusted = True
        trust.save_trust(connection, ["session_trusted"])
    else:  # v2: no step-up; a login with the mfaId gives a trusted session
        try:
            lifecycle.login(connection, effects, reason="mfa_step_up")
        except BillIntegrationError as exc:
            lifecycle.record_failure(connection, exc, effects, action="login", started=started)
            return exc
    record(connection, AuditEvent.Kind.MFA_STEPPED_UP, api_version=connection.api_version)
    effects.add(signals.connection_mfa_stepped_up, connection)
    log_outcome("mfa_step_up", connection, "trusted", duration=time.monotonic() - started)
    return None


def _expired_error(error: UntrustedSession) -> MfaTrustExpired:
    return MfaTrustExpired(bill_code=error.bill_code, http_status=error.http_status)


def refused_after_step_up(connection_id: int) -> None:
    """BILL refused the replay too: the session is not trusted after all (logged, no loop)."""
    with transaction.atomic():
        connection = lock_without_secrets(pk=connection_id)
        if connection is not None and connection.session_trusted:
            connection.session_trusted = False
            trust.save_trust(connection, ["session_trusted"])
    logger.warning("bill mfa replay refused again connection=%s", connection_id)
