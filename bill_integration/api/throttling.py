"""Throttles for link attempts and forced refreshes, per tenant and per user.

Link attempts: a stolen web login cannot be used to guess BILL passwords. Rates come from
``BILL_INTEGRATION["LINK_THROTTLE_RATES"]`` (``{"tenant": "10/hour", "user": "20/hour"}`` by
default) and count every ``PUT /connection/`` that passed the permission check.

Refreshes: ``POST /connection/refresh/`` logs in to BILL, and logins come out of the developer
key's hourly budget that every tenant sharing the key draws on; one tenant's owner must not be
able to spend it for all. Rates come from ``BILL_INTEGRATION["REFRESH_THROTTLE_RATES"]``
(``{"tenant": "6/hour", "user": "12/hour"}`` by default).

MFA steps (``/connection/mfa/phones|challenge|validate/``): each texts a code, checks one
against BILL (six digits: guessable if unthrottled) or calls BILL. Rates come from
``BILL_INTEGRATION["MFA_THROTTLE_RATES"]`` (``{"tenant": "20/hour", "user": "20/hour"}``).

Rates are never read from DRF's ``DEFAULT_THROTTLE_RATES``, so they apply in a project that
configured nothing. A refusal answers 429 with ``Retry-After``.

Counts live in Django's default cache. The default local-memory cache counts per process:
production needs a shared cache (Redis, Memcached, the database cache) or each worker process
allows the full rate.
"""

from __future__ import annotations

from typing import Any, cast

from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from ..conf import bill_settings
from .permissions import resolve_access


class _SettingThrottle(SimpleRateThrottle):
    """A throttle whose rate is ``bill_settings.<rates_setting>[scope]``."""

    scope: str
    rates_setting: str
    #: Part of the cache key, so link and refresh counts never mix.
    action: str

    def get_rate(self) -> str | None:
        return (getattr(bill_settings, self.rates_setting) or {}).get(self.scope)

    def allow_request(self, request: Request, view: Any) -> bool:
        # Rates are read per request, so a changed setting applies without a restart.
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)


def tenant_cache_key(action: str, tenant: Any) -> str:
    """The cache key of ``tenant``'s count for ``action`` (shared by the API and the admin)."""
    return f"bill_integration:{action}:tenant:{tenant._meta.label_lower}:{tenant.pk}"


class _TenantThrottle(_SettingThrottle):
    scope = "tenant"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        tenant, _access = resolve_access(request)
        if tenant is None:
            return None
        return tenant_cache_key(self.action, tenant)


class _UserThrottle(_SettingThrottle):
    scope = "user"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        user = request.user
        if not user or not user.is_authenticated:
            return None
        return f"bill_integration:{self.action}:user:{user.pk}"


class LinkTenantThrottle(_TenantThrottle):
    """Link attempts per tenant (``LINK_THROTTLE_RATES["tenant"]``)."""

    rates_setting, action = "LINK_THROTTLE_RATES", "link"


class LinkUserThrottle(_UserThrottle):
    """Link attempts per signed-in user (``LINK_THROTTLE_RATES["user"]``)."""

    rates_setting, action = "LINK_THROTTLE_RATES", "link"


class RefreshTenantThrottle(_TenantThrottle):
    """Forced refreshes per tenant (``REFRESH_THROTTLE_RATES["tenant"]``)."""

    rates_setting, action = "REFRESH_THROTTLE_RATES", "refresh"


class RefreshUserThrottle(_UserThrottle):
    """Forced refreshes per signed-in user (``REFRESH_THROTTLE_RATES["user"]``)."""

    rates_setting, action = "REFRESH_THROTTLE_RATES", "refresh"


class MfaTenantThrottle(_TenantThrottle):
    """MFA steps per tenant (``MFA_THROTTLE_RATES["tenant"]``): phones, texts, codes entered."""

    rates_setting, action = "MFA_THROTTLE_RATES", "mfa"


class MfaUserThrottle(_UserThrottle):
    """MFA steps per signed-in user (``MFA_THROTTLE_RATES["user"]``)."""

    rates_setting, action = "MFA_THROTTLE_RATES", "mfa"


# --- the admin's bulk actions draw on the same allowance -------------------------------------


class _CountingThrottle(SimpleRateThrottle):
    """DRF's ``allow_request`` split in two, ``allows`` (look) then ``count`` (record), so a row
    that one throttle refuses is not counted by the other."""

    key: str | None

    def allows(self, request: Any) -> bool:
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        self.key = None
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, None)  # type: ignore[arg-type]  # our keys never read the view
        if self.key is None:
            return True
        self.history = self.cache.get(self.key, [])
        self.now = self.timer()
        # A rate was parsed: neither is None.
        while self.history and self.history[-1] <= self.now - cast(int, self.duration):
            self.history.pop()
        return len(self.history) < cast(int, self.num_requests)

    def count(self) -> None:
        if self.key is not None:
            self.throttle_success()


class TenantRefreshCounter(_CountingThrottle, RefreshTenantThrottle):
    """``REFRESH_THROTTLE_RATES["tenant"]`` for the tenant of a row the admin queues."""

    def __init__(self, tenant: Any) -> None:
        super().__init__()
        self.tenant = tenant

    def get_cache_key(self, request: Any, view: Any) -> str:
        return tenant_cache_key(self.action, self.tenant)


class UserRefreshCounter(_CountingThrottle, RefreshUserThrottle):
    """``REFRESH_THROTTLE_RATES["user"]`` for the signed-in staff user queueing rows."""
