"""Shared fixtures: tenants, users with roles, and the BILL emulator (the app's own plugin)."""

from __future__ import annotations

import pytest

pytest_plugins = [
    "bill_integration.emulator.pytest_plugin",
    "tests.linking_support",  # fixtures of the linking tests (API, admin, page)
    "tests.session_support",  # fixtures of the session-keeping tests (linked, limiters)
    "tests.mfa_support",  # fixtures of the MFA trust tests (signal capture)
]


@pytest.fixture
def bill_tenant_factory():
    """Tenants of ``bill_connection()`` are the example project's, named "Tenant <n>"."""
    from tests.session_support import make_tenant

    return make_tenant


@pytest.fixture
def tenant(db):
    from project.tenants.models import Tenant

    return Tenant.objects.create(name="Acme", slug="acme")


@pytest.fixture
def make_user(db, django_user_model):
    """make_user(tenant, role) -> a user with that role in the tenant (or none)."""
    from project.tenants.models import Membership

    counter = {"n": 0}

    def make(tenant=None, role: str | None = "owner", **extra):
        counter["n"] += 1
        user = django_user_model.objects.create_user(
            username=f"user{counter['n']}", password="pw-for-tests", **extra
        )
        if tenant is not None and role is not None:
            Membership.objects.create(user=user, tenant=tenant, role=role)
        return user

    return make
