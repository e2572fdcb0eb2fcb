"""Fixtures and helpers shared by the linking tests (services, API, admin, page, leaks).

Loaded as a plugin by ``tests/conftest.py``, so its fixtures are available to every test;
test modules import only the plain helpers (``credentials``, ``api_as``, the URLs).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

CONNECTION_URL = "/api/bill/connection/"
REFRESH_URL = "/api/bill/connection/refresh/"


@pytest.fixture(autouse=True)
def _fresh_throttles():
    """Throttle counters live in the (local-memory) cache: every test starts from zero; so do
    the status documents (their own local-memory cache)."""
    from bill_integration.api.status_cache import documents

    cache.clear()
    documents.clear()
    yield
    cache.clear()
    documents.clear()


def credentials(account: Any, **overrides: Any) -> dict[str, Any]:
    """The link form's fields for an emulator account."""
    data = {
        "username": account.username,
        "password": account.password,
        "organization_id": account.organization_id,
        "dev_key": account.dev_key,
        "environment": "emulator",
        "api_version": "v3",
    }
    data.update(overrides)
    return data


def api_as(user: Any = None, *, tenant: Any = None) -> APIClient:
    """An API client signed in as ``user`` (anonymous if None), naming ``tenant`` by header."""
    client = APIClient()
    if user is not None:
        client.force_login(user)
    if tenant is not None:
        client.credentials(HTTP_X_TENANT_ID=str(tenant.pk))
    return client


@pytest.fixture
def owner(tenant, make_user):
    return make_user(tenant, "owner")


@pytest.fixture
def owner_api(owner):
    return api_as(owner)


@pytest.fixture
def linked(tenant, owner, bill_account, bill_connection):
    """``tenant`` linked to ``bill_account`` on the emulator through the service, by ``owner``."""
    return bill_connection(tenant=tenant, account=bill_account, link=True, actor=owner)
