"""How the example project finds the tenant of a request and what its user may do.

Plugged into bill_integration by ``BILL_INTEGRATION["TENANT_RESOLVER"]`` and
``BILL_INTEGRATION["ACCESS_POLICY"]``.

Choosing a tenant: a user who belongs to several tenants names one with the ``X-Tenant-ID``
request header (the tenant's id); the linking page sends it, and ``?tenant=<id>`` on the page's
own URL only tells the page which header to send. Without the header, a user with exactly one
membership gets that tenant, and a user with several gets none (the API answers 404 and says
to send the header). The tenant is never taken from the request body or the API's query string,
and a tenant the user does not belong to is the same as no tenant at all.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from .models import Membership, Tenant

TENANT_HEADER = "X-Tenant-ID"
WRITE_ROLES = {Membership.Role.OWNER, Membership.Role.ADMIN}


def _membership(request: HttpRequest) -> Membership | None:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    cached = getattr(request, "_tenant_membership", False)
    if cached is not False:
        return cached
    memberships = Membership.objects.select_related("tenant").filter(user=user)
    wanted = request.headers.get(TENANT_HEADER)
    if wanted:
        membership = (
            memberships.filter(tenant_id=wanted).first()
            if wanted.isascii() and wanted.isdigit() and len(wanted) <= 18
            else None
        )
    else:
        found = list(memberships[:2])
        membership = found[0] if len(found) == 1 else None
    request._tenant_membership = membership  # type: ignore[attr-defined]
    if membership is not None:
        # The access policy is asked with (user, tenant) right after: let it reuse this role
        # instead of querying the same membership again.
        membership.tenant._resolved_role = (user.pk, membership.role)  # type: ignore[attr-defined]
    return membership


def resolve_tenant(request: HttpRequest) -> Tenant | None:
    membership = _membership(request)
    return membership.tenant if membership else None


def membership_access(user: Any, tenant: Tenant) -> str | None:
    if user is None or not user.is_authenticated or tenant is None:
        return None
    resolved = getattr(tenant, "_resolved_role", None)
    if resolved is not None and resolved[0] == user.pk:
        role = resolved[1]  # loaded by resolve_tenant() for this same request
    else:
        role = (
            Membership.objects.filter(user=user, tenant=tenant)
            .values_list("role", flat=True)
            .first()
        )
    if role in WRITE_ROLES:
        return "write"
    if role == Membership.Role.MEMBER:
        return "read"
    return None
