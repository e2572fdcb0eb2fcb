"""Helpers every service module shares: audit records, fingerprints, clients, log lines."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from typing import Any

from django.conf import settings

from ..models import AuditEvent, BillConnection, describe

logger = logging.getLogger("bill_integration")


def dev_key_fingerprint(dev_key: str) -> str:
    """A keyed hash of a developer key: shared limits are counted per key without storing it.

    Keyed with SECRET_KEY so the column cannot be used to confirm a guessed key.
    """
    return hmac.new(
        settings.SECRET_KEY.encode("utf-8"), dev_key.encode("utf-8"), hashlib.sha256
    ).hexdigest()


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
