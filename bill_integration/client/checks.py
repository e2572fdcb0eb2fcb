"""System check for the client's timing settings (registered by ``bill_integration.checks``).

A BILL call holds one of the organization's concurrency slots (BILL allows 3 requests in
flight per developer key and organization, https://developer.bill.com/docs/api-rate-limits).
A slot frees itself after ``CONCURRENCY_LEASE`` so that a killed worker cannot keep it; if a
call could outlive its lease, another worker would take the "free" slot while the call is
still open at BILL, and a fourth request would reach the organization. So the total deadline
of a call, ``CALL_DEADLINE`` (default ``CONNECT_TIMEOUT + READ_TIMEOUT``), must be shorter
than ``CONCURRENCY_LEASE``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error

from ..conf import SETTINGS_NAME
from ..exceptions import ConfigurationError
from .deadline import as_seconds, configured_call_deadline, configured_timeouts

E010_CALL_DEADLINE = "bill_integration.E010"

CALL_DEADLINE_HINT = (
    "Lower CALL_DEADLINE (a timedelta; unset, it is CONNECT_TIMEOUT + READ_TIMEOUT) or raise "
    "CONCURRENCY_LEASE, so that a concurrency slot always outlives the call holding it."
)


def check_call_deadline(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """E010: ``CALL_DEADLINE`` (given or derived) must be shorter than ``CONCURRENCY_LEASE``."""
    from ..conf import bill_settings

    user = getattr(settings, SETTINGS_NAME, {}) or {}
    if not isinstance(user, dict):
        return []  # E007 already says so
    try:
        connect, read = configured_timeouts()
        deadline = configured_call_deadline(connect, read)
        lease = as_seconds(bill_settings.CONCURRENCY_LEASE, "CONCURRENCY_LEASE")
    except ConfigurationError as exc:
        return [Error(str(exc), hint=CALL_DEADLINE_HINT, id=E010_CALL_DEADLINE)]
    if deadline < lease:
        return []
    source = "given" if user.get("CALL_DEADLINE") is not None else "CONNECT_TIMEOUT + READ_TIMEOUT"
    return [
        Error(
            f"{SETTINGS_NAME}: CALL_DEADLINE ({source}: {deadline:g} s) must be shorter than "
            f"CONCURRENCY_LEASE ({lease:g} s): otherwise a slow call outlives its concurrency "
            "slot and BILL sees more requests in flight for an organization than it allows.",
            hint=CALL_DEADLINE_HINT,
            id=E010_CALL_DEADLINE,
        )
    ]
