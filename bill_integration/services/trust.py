"""BILL's MFA trust of a connection: its states, and the writes that record what BILL said.

In production BILL refuses payments, bulk payments, bank-account creation, vendor autopay and
vendor invites unless the session is MFA-trusted (BDC_1361 "Untrusted session.", HTTP 403;
https://developer.bill.com/docs/mfa-element-implementation). A person confirms a code BILL
texts to their phone once (:mod:`.mfa`); BILL then hands out a remember-me id (v3
``rememberMeId``, v2 ``mfaId``) valid 30 days, and every login that sends it with the same
device name gets a trusted session (https://developer.bill.com/reference/login). This module
keeps that trust: what a login sends, what its answer means, when trust is about to end (the
sweep's notices), and what "trust needed" means on a connection.

States (:func:`trust_state`), as the status document, the page and the admin show them:

==============  ===============================================================================
not_set_up      no trust stored, and BILL has not refused anything yet
needed          BILL refused an operation (BDC_1361) and no trust is stored
trusted         a remember-me id is stored and its 30 days have not run out
expiring        trusted, but it ends within ``MFA_EXPIRY_WARNING``
expired         the 30 days ran out, or BILL said the id no longer holds
not_required    BILL says MFA is off for the organization (``mfaStatus`` DISABLED) or the
                developer key (``mfaBypass``), and no trust is stored
==============  ===============================================================================

Choices where BILL is UNCONFIRMED (one table; change them here):

=========================================  ====================================================
question                                   choice
=========================================  ====================================================
does a trusted login extend the 30 days?   no: trust ends 30 days after the code was confirmed
login with an expired remember-me id       never sent: past its expiry by our clock the id is
                                           dropped; a login answering ``trusted: false`` to a
                                           sent id marks trust expired (as step-up does)
v2 login's answer has no ``trusted`` flag  a v2 login that sent a valid ``mfaId`` counts trusted
v2 has no step-up                          ``MFAStatus.json``; if the id holds, log in again
                                           with it (one login from the budget)
device name                                ``MFA_DEVICE_NAME``, else the site's domain; a stored
                                           trust keeps the name it was given with
a relink                                   keeps trust when user, organization, environment
                                           and API version stay the same; clears it otherwise
=========================================  ====================================================
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, cast

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import formats, timezone
from django.utils.translation import gettext_lazy as _

from .. import signals
from ..conf import bill_settings, now
from ..constants import MFA_TRUST_LIFETIME
from ..exceptions import MfaTrustExpired, UntrustedSession
from ..models import TRUST_FIELDS, AuditEvent, BillConnection
from .common import record
from .locking import Effects, lock_without_secrets

logger = logging.getLogger("bill_integration.mfa")

NOT_SET_UP, NEEDED, TRUSTED, EXPIRING, EXPIRED, NOT_REQUIRED = (
    "not_set_up",
    "needed",
    "trusted",
    "expiring",
    "expired",
    "not_required",
)
STATES = (NOT_SET_UP, NEEDED, TRUSTED, EXPIRING, EXPIRED, NOT_REQUIRED)
#: ``mfa_trust_notice`` values: which notice was sent for the current trust.
NOTICE_EXPIRING, NOTICE_EXPIRED = "expiring", "expired"
#: How many connections one sweep pass sends expiry notices for.
NOTICE_BATCH = 500

#: What a person reads per state (``%(date)s``: when trust ends).
STATE_TEXTS = {
    NOT_SET_UP: _(
        "Not trusted for payments yet. BILL asks for a code sent to your phone before this app "
        "can pay bills."
    ),
    NEEDED: UntrustedSession.customer_text,
    TRUSTED: _("Trusted for payments until %(date)s."),
    EXPIRING: _(
        "Trusted for payments until %(date)s. Confirm a new code from BILL before then so "
        "payments keep working."
    ),
    EXPIRED: MfaTrustExpired.customer_text,
    NOT_REQUIRED: _("BILL does not ask this organization for a code; payments need no trust."),
}


def trust_state(connection: BillConnection, at: datetime) -> str:
    """The connection's trust state at ``at`` (see the module's table). Reads plain columns."""
    expires = connection.mfa_trust_expires_at
    if expires is not None:
        if at >= expires or connection.mfa_trust_notice == NOTICE_EXPIRED:
            return EXPIRED
        return EXPIRING if at >= expires - bill_settings.MFA_EXPIRY_WARNING else TRUSTED
    if connection.mfa_trust_needed_at is not None:
        return NEEDED
    if connection.mfa_bypass or connection.mfa_status == "DISABLED":
        return NOT_REQUIRED
    return NOT_SET_UP


def describe_trust(connection: BillConnection, at: datetime | None = None) -> dict[str, Any]:
    """The status document's ``mfa`` object: state, dates, what to do. Never the id."""
    at = at or now()
    state = trust_state(connection, at)
    expires = connection.mfa_trust_expires_at
    date = formats.date_format(timezone.localtime(expires), "DATE_FORMAT") if expires else ""
    return {
        "state": state,
        "trusted_since": connection.mfa_trusted_at if expires else None,
        "trusted_until": expires,
        "session_trusted": bool(connection.session_trusted),
        "device": connection.mfa_device or None,
        "message": str(STATE_TEXTS[state]) % {"date": date},
        "mfa_status": connection.mfa_status or None,
        "mfa_bypass": connection.mfa_bypass,
    }


def device_name() -> str:
    """The device name a new trust is given to: ``MFA_DEVICE_NAME``, else the site's domain."""
    configured = bill_settings.MFA_DEVICE_NAME
    if configured:
        return str(configured)[:100]
    site = ""
    from django.apps import apps

    if apps.is_installed("django.contrib.sites"):
        from django.contrib.sites.models import Site

        try:
            site = Site.objects.get_current().domain
        except Exception:  # noqa: BLE001 - no SITE_ID or no table: fall back to the hosts
            site = ""
    if not site:
        hosts = [h.lstrip(".") for h in settings.ALLOWED_HOSTS if h not in ("*", "")]
        site = hosts[0] if hosts else "django"
    return f"{site} (bill_integration)"[:100]


def machine_name(device: str) -> str:
    """What BILL lists as the trusted machine (``machineName``): the device, as BILL's docs do."""
    return device[:100]


def usable_remember_me(connection: BillConnection, at: datetime) -> tuple[str | None, str | None]:
    """``(remember-me id, device)`` a login should send, or ``(None, None)``.

    Only while the trust has not run out by our clock: an id past its 30 days is never sent
    (what BILL does with one at login is UNCONFIRMED). Decrypts the stored id.
    """
    expires = connection.mfa_trust_expires_at
    if expires is None or at >= expires or connection.mfa_trust_notice == NOTICE_EXPIRED:
        return None, None
    remember_me = connection.mfa_remember_id
    if not remember_me or not connection.mfa_device:
        return None, None
    return remember_me, connection.mfa_device


def lose(connection: BillConnection, at: datetime) -> tuple[list[str], bool]:
    """BILL no longer honours the stored trust: drop the id and mark it expired (in memory).

    Returns the fields the caller writes (under its lock) and whether this is news (then the
    caller reports it with :func:`report_expired` once the write succeeded).
    """
    news = connection.mfa_trust_notice != NOTICE_EXPIRED
    connection.mfa_remember_id = None
    connection.session_trusted = False
    if connection.mfa_trust_expires_at is None or connection.mfa_trust_expires_at > at:
        connection.mfa_trust_expires_at = at
    connection.mfa_trust_notice = NOTICE_EXPIRED
    fields = ["mfa_remember_id", "session_trusted", "mfa_trust_expires_at", "mfa_trust_notice"]
    return fields, news


def report_expired(connection: BillConnection, effects: Effects, *, reason: str) -> None:
    """Audit, log and signal (once the lock is let go) that trust ended."""
    record(connection, AuditEvent.Kind.MFA_EXPIRED, reason=reason)
    logger.warning(
        "bill mfa trust expired connection=%s tenant=%s reason=%s",
        connection.pk,
        connection.tenant_id,
        reason,
    )
    effects.add(signals.connection_mfa_expired, connection)


def establish(
    connection: BillConnection,
    remember_me: str,
    device: str,
    *,
    session_trusted: bool,
    at: datetime,
) -> None:
    """A confirmed code: store the remember-me id and its device for 30 days (in memory)."""
    connection.mfa_remember_id = remember_me
    connection.mfa_device = device
    connection.mfa_trusted_at = at
    connection.mfa_trust_expires_at = at + MFA_TRUST_LIFETIME
    connection.mfa_trust_notice = ""
    connection.mfa_trust_needed_at = None
    connection.session_trusted = session_trusted


def clear(connection: BillConnection) -> None:
    """No trust at all (forgotten, or a relink to another BILL user): in memory."""
    connection.mfa_remember_id = None
    connection.mfa_device = ""
    connection.mfa_trusted_at = None
    connection.mfa_trust_expires_at = None
    connection.mfa_trust_notice = ""
    connection.mfa_trust_needed_at = None
    connection.session_trusted = False


def mark_needed(connection: BillConnection, effects: Effects, at: datetime) -> list[str]:
    """BILL refused an operation and no trust is stored: "trust needed" (reads keep working).

    Signals and audits only the first time; returns the fields to write.
    """
    fields = ["session_trusted"]
    connection.session_trusted = False
    if connection.mfa_trust_needed_at is None:
        connection.mfa_trust_needed_at = at
        fields.append("mfa_trust_needed_at")
        record(connection, AuditEvent.Kind.MFA_NEEDED)
        effects.add(signals.connection_mfa_needed, connection)
    return fields


def save_trust(connection: BillConnection, fields: list[str]) -> None:
    """Write trust fields of a locked row (one row, ``save(update_fields=...)``)."""
    wanted = [
        name
        for name in dict.fromkeys(fields)
        if name in (*TRUST_FIELDS, "mfa_status", "mfa_bypass")
    ]
    if wanted:
        connection.save(update_fields=[*wanted, "updated_at"])


# --- the sweep's notices: expiring soon, expired ---------------------------------------------------


def notify_expiry(at: datetime | None = None, *, limit: int = NOTICE_BATCH) -> tuple[int, int]:
    """Send ``connection_mfa_expiring`` / ``connection_mfa_expired`` once per trust.

    One query on plain columns finds the trusts ending within ``MFA_EXPIRY_WARNING`` that were
    not warned about, and those that ended and were not reported; each row is then handled
    under its lock (re-checked there), no call to BILL. An ended trust's remember-me id is
    dropped (it is of no use, and one secret fewer is stored). Returns ``(warned, expired)``.
    """
    at = at or now()
    soon = at + bill_settings.MFA_EXPIRY_WARNING
    due = (
        BillConnection.objects.filter(mfa_trust_expires_at__isnull=False)
        .exclude(mfa_trust_notice=NOTICE_EXPIRED)
        .filter(
            Q(mfa_trust_expires_at__lte=at) | Q(mfa_trust_expires_at__lte=soon, mfa_trust_notice="")
        )
        .order_by("mfa_trust_expires_at")
        .values_list("pk", flat=True)[:limit]
    )
    warned = expired = 0
    for connection_id in list(due):
        outcome = _notify_one(connection_id, at)
        warned += outcome == NOTICE_EXPIRING
        expired += outcome == NOTICE_EXPIRED
    return warned, expired


def _notify_one(connection_id: int, at: datetime) -> str | None:
    effects = Effects()
    outcome = None
    with transaction.atomic():
        connection = lock_without_secrets(pk=connection_id)
        if connection is None or connection.mfa_trust_expires_at is None:
            return None
        expires = connection.mfa_trust_expires_at
        if at >= expires and connection.mfa_trust_notice != NOTICE_EXPIRED:
            # Plain update: the row was read without its secrets (never decrypted here).
            BillConnection.objects.filter(pk=connection_id).update(
                mfa_remember_id=None,
                session_trusted=False,
                mfa_trust_notice=NOTICE_EXPIRED,
                updated_at=timezone.now(),
            )
            connection.mfa_trust_notice, connection.session_trusted = NOTICE_EXPIRED, False
            report_expired(connection, effects, reason="30_days")
            outcome = NOTICE_EXPIRED
        elif at >= expires - bill_settings.MFA_EXPIRY_WARNING and not connection.mfa_trust_notice:
            BillConnection.objects.filter(pk=connection_id).update(
                mfa_trust_notice=NOTICE_EXPIRING, updated_at=timezone.now()
            )
            connection.mfa_trust_notice = NOTICE_EXPIRING
            record(connection, AuditEvent.Kind.MFA_EXPIRING, expires_at=expires.isoformat())
            logger.info(
                "bill mfa trust expiring connection=%s tenant=%s expires_at=%s",
                connection.pk,
                connection.tenant_id,
                expires.isoformat(),
            )
            effects.add(signals.connection_mfa_expiring, connection, expires_at=expires)
            outcome = NOTICE_EXPIRING
    effects.send()
    return outcome


def expiring_or_expired(at: datetime | None = None, *, limit: int = 50) -> list[dict[str, Any]]:
    """Connections whose trust is expiring or expired at ``at`` (``bill_status``), soonest first.

    Plain columns only: nothing is decrypted.
    """
    at = at or now()
    soon = at + bill_settings.MFA_EXPIRY_WARNING
    rows = (
        BillConnection.objects.without_secrets()
        .filter(Q(mfa_trust_expires_at__lte=soon) | Q(mfa_trust_notice=NOTICE_EXPIRED))
        .order_by("mfa_trust_expires_at", "pk")[:limit]
    )
    return [
        {
            "connection_id": row.pk,
            "tenant_id": str(row.tenant_id),
            "organization_id": row.organization_id,
            "trust": trust_state(row, at),
            # Set on every expiring or expired row (lose() sets it with the expired notice).
            "expires_at": cast(datetime, row.mfa_trust_expires_at).isoformat(),
        }
        for row in rows
    ]
