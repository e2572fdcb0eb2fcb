"""Which tenant a request is about, and what its user may do there: two settings, two callables.

``BILL_INTEGRATION["TENANT_RESOLVER"]`` and ``BILL_INTEGRATION["ACCESS_POLICY"]`` hold dotted
paths (checked by ``manage.py check``: ``bill_integration.E006`` when one does not import or is
not callable). The REST API and the Connect page call them on every request, in this order:

``TENANT_RESOLVER(request) -> tenant | None``
    Called only for a signed-in ``request.user``; ``request`` is the API view's DRF
    ``Request``, which reads like Django's ``HttpRequest`` (``headers``, ``user``,
    ``session``). Return an instance of ``BILL_INTEGRATION_TENANT_MODEL``, or ``None`` when
    the request names no tenant the user may see: the API then answers 404 (the same answer
    as "no access", so nothing is revealed). Read the tenant from what the server trusts (the session, the user's memberships, a
    header it checks against them), never from the body or the query string as given.
    **Honour the** ``X-Tenant-ID`` **header**: a user who belongs to several tenants names one
    with it (the tenant's primary key). The Connect page at ``/connect/bill/?tenant=<pk>``
    sends it on each of its API calls; a resolver that ignores it makes that page manage
    whatever tenant the resolver picks instead. Without the header, a user with exactly one
    tenant should get that one.

``ACCESS_POLICY(user, tenant) -> "write" | "read" | None``
    Called with ``request.user`` and the resolver's tenant (never ``None`` there). ``"write"``
    may link, relink, unlink and refresh; ``"read"`` may see the status (never a secret);
    ``None`` is no access at all (404, as above). A member who tries to write gets 403.

The defaults below fit the default tenant model, ``AUTH_USER_MODEL``: each signed-in user is
its own tenant and may manage its own connection.

A complete resolver and policy for organizations with memberships and roles (this is what a
SaaS usually has; the example project in the source repository does the same)::

    # accounts/models.py
    class Organization(models.Model):
        name = models.CharField(max_length=200)

    class Membership(models.Model):
        class Role(models.TextChoices):
            OWNER = "owner"
            ADMIN = "admin"
            MEMBER = "member"

        user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
        organization = models.ForeignKey(Organization, on_delete=models.CASCADE)
        role = models.CharField(max_length=10, choices=Role.choices)

    # accounts/bill.py
    from .models import Membership

    TENANT_HEADER = "X-Tenant-ID"

    def tenant_from_request(request):
        user = request.user
        if not user.is_authenticated:
            return None
        memberships = Membership.objects.filter(user=user).select_related("organization")
        wanted = request.headers.get(TENANT_HEADER)
        if wanted:  # the organization the page (or an API client) names
            if not wanted.isdigit():
                return None
            membership = memberships.filter(organization_id=int(wanted)).first()
        else:  # one organization: that one; several: the caller must say which
            found = list(memberships[:2])
            membership = found[0] if len(found) == 1 else None
        return membership.organization if membership else None

    def access(user, organization):
        role = (
            Membership.objects.filter(user=user, organization=organization)
            .values_list("role", flat=True)
            .first()
        )
        if role in (Membership.Role.OWNER, Membership.Role.ADMIN):
            return "write"
        if role == Membership.Role.MEMBER:
            return "read"
        return None

    # settings.py
    BILL_INTEGRATION_TENANT_MODEL = "accounts.Organization"
    BILL_INTEGRATION = {
        "TENANT_RESOLVER": "accounts.bill.tenant_from_request",
        "ACCESS_POLICY": "accounts.bill.access",
    }
"""

from __future__ import annotations

from typing import Any, Literal

from django.http import HttpRequest

Access = Literal["write", "read"] | None


def user_is_tenant(request: HttpRequest) -> Any | None:
    """The signed-in user is the tenant (for ``BILL_INTEGRATION_TENANT_MODEL = AUTH_USER_MODEL``)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    return user


def staff_or_self_access(user: Any, tenant: Any) -> Access:
    """A user may manage the connection of the tenant that is itself."""
    if user is None or not user.is_authenticated or tenant is None:
        return None
    if tenant._meta.label == user._meta.label and tenant.pk == user.pk:
        return "write"
    return None
