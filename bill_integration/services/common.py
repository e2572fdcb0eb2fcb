"""Helpers every service module shares: audit records, fingerprints, clients, log lines."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from typing import Any

from django.conf import settings

from ..auth_methods import AuthMethod, rules
from ..conf import bill_settings
from ..models import AuditEvent, BillConnection, describe

logger = logging.getLogger("bill_integration")


def dev_key_fingerprint(dev_key: str) -> str:
    """A keyed hash of a developer key: shared limits are counted per key without storing it.

    Keyed with SECRET_KEY so the column cannot be used to confirm a guessed key.
    """
    return hmac.new(
        settings.SECRET_KEY.encode("utf-8"), dev_key.encode("utf-8"), hashlib.sha256
    ).hexdigest()


def limits_key(method: str, dev_key: str, api_token: str | None, client_id: str) -> str:
    """What the limits count this connection under (``dev_key_fingerprint``, 64 characters).

    The developer key's fingerprint for methods that log in with one; ``spend:`` and the API
    token's for Spend & Expense only (its own 60 calls a minute); ``oauth:`` and the client
    id's for OAuth (its calls carry no developer key).
    """
    if method == AuthMethod.SPEND_TOKEN:
        return "spend:" + dev_key_fingerprint(api_token or "")[:58]
    if method == AuthMethod.OAUTH_CLIENT:
        return "oauth:" + dev_key_fingerprint(client_id)[:58]
    return dev_key_fingerprint(dev_key)


def developer_key(holder: Any, *, stored: str | None = None) -> tuple[str, str]:
    """The developer key ``holder``'s calls carry, and the fingerprint its limits count under.

    ``holder`` is a connection row or a session (``dev_key``, ``dev_key_fingerprint``,
    ``auth_method``, ``environment``); ``stored`` is its decrypted key when the caller has it.
    A connection linked where the SaaS supplies the key (``DEVELOPER_KEYS``) stores none and
    reads the host's key for its environment *now*, at each login and call: a rotated host key
    is used from the next call on, with no relink, and the limits count the connection under
    the new key's fingerprint (DESIGN-NOTES "The host's developer key").
    """
    key = holder.dev_key if stored is None else stored
    if key or not rules(holder.auth_method).uses_dev_key:
        return key or "", holder.dev_key_fingerprint
    host = bill_settings.host_developer_key(holder.environment)
    if not host:  # the host no longer supplies one: BILL refuses the empty key (needs_relink)
        return "", holder.dev_key_fingerprint
    return host, dev_key_fingerprint(host)


def record(
    connection: BillConnection | None,
    kind: str,
    *,
    tenant: Any = None,
    actor: Any = None,
    **detail: Any,
) -> AuditEvent:
    """Write one audit event. ``detail`` must hold no secret (callers pass codes and ids)."""
    tenant_id = connection.tenant_id if connection is not None else str(getattr(tenant, "pk", ""))
    if actor is not None and not getattr(actor, "is_authenticated", False):
        actor = None
    return AuditEvent.objects.create(
        connection=connection if connection is not None and connection.pk else None,
        tenant_id=str(tenant_id),
        actor=actor,
        kind=kind,
        detail=detail,
    )


def log_outcome(
    action: str,
    connection: BillConnection | None,
    outcome: str,
    *,
    duration: float,
    bill_code: str | None = None,
    tenant: Any = None,
    level: int = logging.INFO,
) -> None:
    """One log line per link or refresh outcome: ids, outcome, BILL code, duration; no secrets."""
    facts = (
        describe(connection)
        if connection is not None
        else {
            "connection_id": None,
            "tenant_id": str(getattr(tenant, "pk", "")),
        }
    )
    logger.log(
        level,
        "bill %s %s connection=%s tenant=%s bill_code=%s duration_ms=%d",
        action,
        outcome,
        facts["connection_id"],
        facts["tenant_id"],
        bill_code or "-",
        duration * 1000,
        extra={"bill_action": action, "bill_outcome": outcome, "bill_code": bill_code, **facts},
    )


def log_failure(
    action: str,
    connection: BillConnection | None,
    exc: Exception,
    *,
    started: float,
    tenant: Any = None,
    level: int = logging.WARNING,
) -> None:
    """The outcome line of a failed action: ``failed:<code>`` with BILL's code, if it gave one."""
    log_outcome(
        action,
        connection,
        f"failed:{getattr(exc, 'code', 'error')}",
        duration=time.monotonic() - started,
        bill_code=getattr(exc, "bill_code", None),
        tenant=tenant,
        level=level,
    )
