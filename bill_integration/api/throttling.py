"""Throttles for link attempts, so a stolen web login cannot be used to guess BILL passwords.

Rates come from ``BILL_INTEGRATION["LINK_THROTTLE_RATES"]`` (``{"tenant": "10/hour", "user":
"20/hour"}`` by default), never from DRF's ``DEFAULT_THROTTLE_RATES``, so they apply in a
project that configured nothing. Both count every ``PUT /connection/`` that passed the
permission check, per tenant and per user; a refusal answers 429 with ``Retry-After``.

Counts live in Django's default cache. The default local-memory cache counts per process:
production needs a shared cache (Redis, Memcached, the database cache) or each worker process
allows the full rate.
"""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from ..conf import bill_settings
from .permissions import resolve_access


class _LinkThrottle(SimpleRateThrottle):
    scope: str

    def get_rate(self) -> str | None:
        return (bill_settings.LINK_THROTTLE_RATES or {}).get(self.scope)

    def allow_request(self, request: Request, view: Any) -> bool:
        # Rates are read per request, so a changed setting applies without a restart.
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)


class LinkTenantThrottle(_LinkThrottle):
    """Link attempts per tenant (``LINK_THROTTLE_RATES["tenant"]``)."""

    scope = "tenant"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        tenant, _access = resolve_access(request)
        if tenant is None:
            return None
        return f"bill_integration:link:tenant:{tenant._meta.label_lower}:{tenant.pk}"


class LinkUserThrottle(_LinkThrottle):
    """Link attempts per signed-in user (``LINK_THROTTLE_RATES["user"]``)."""

    scope = "user"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        user = request.user
        if not user or not user.is_authenticated:
            return None
        return f"bill_integration:link:user:{user.pk}"
