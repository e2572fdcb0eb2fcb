"""Default ways to find the tenant of a request and what a user may do with it.

Both are settings (``TENANT_RESOLVER``, ``ACCESS_POLICY``) holding dotted paths, so a project
with organizations, memberships and roles plugs in its own (the example project does, in
``project/tenants/access.py``). The defaults fit the default tenant model, ``AUTH_USER_MODEL``:
each signed-in user is its own tenant and may manage its own connection.
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
