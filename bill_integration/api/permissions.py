"""Who may see or change a tenant's BILL connection through the API.

The tenant comes from ``BILL_INTEGRATION["TENANT_RESOLVER"](request)``, never from the request
body or query string. ``BILL_INTEGRATION["ACCESS_POLICY"](user, tenant)`` then answers
``"write"`` (may link, refresh, unlink), ``"read"`` (may see the status) or ``None``.

No tenant, or no access, answers 404 whether or not the tenant exists (nothing to learn by
probing). A reader who tries to write gets 403: they already know the connection exists.
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from ..conf import bill_settings


def resolve_access(request: Request) -> tuple[Any, str | None]:
    """``(tenant, access)`` for this request, computed once and kept on the request."""
    cached = getattr(request, "_bill_access", None)
    if cached is not None:
        return cached
    user = getattr(request, "user", None)
    tenant = None
    access = None
    if user is not None and user.is_authenticated:
        tenant = bill_settings.TENANT_RESOLVER(request)
        if tenant is not None:
            access = bill_settings.ACCESS_POLICY(user, tenant)
    if access not in ("write", "read"):
        tenant, access = None, None
    request._bill_access = (tenant, access)  # type: ignore[attr-defined]
    return tenant, access


class TenantConnectionAccess(BasePermission):
    """Readers may GET; writers may do everything; anyone else sees 404."""

    message = "You may see this BILL connection but not change it; ask an owner or admin."

    def has_permission(self, request: Request, view: Any) -> bool:
        tenant, access = resolve_access(request)
        if tenant is None:
            raise exceptions.NotFound()
        if request.method in SAFE_METHODS:
            return True
        return access == "write"


class TenantConnectionWriteAccess(TenantConnectionAccess):
    """Writers only, whatever the method: the MFA steps act at BILL even when they read."""

    def has_permission(self, request: Request, view: Any) -> bool:
        super().has_permission(request, view)  # 404 for no tenant or no access
        return resolve_access(request)[1] == "write"
