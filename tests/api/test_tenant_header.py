"""The example project's X-Tenant-ID header: only a plain tenant id the user belongs to counts."""

from __future__ import annotations

import pytest
from django.test import Client

from project.tenants.models import Membership, Tenant

URL = "/api/bill/connection/"


@pytest.fixture
def two_tenants_user(tenant, make_user):
    user = make_user(tenant, "owner")
    second = Tenant.objects.create(name="Beta", slug="beta")
    Membership.objects.create(user=user, tenant=second, role="member")
    client = Client()
    client.force_login(user)
    return client, second


@pytest.mark.parametrize("header", ["²", "١٢", "1e3", " 1", "-1", "9" * 40, "1; DROP TABLE"])
def test_odd_tenant_headers_are_no_tenant_not_a_server_error(two_tenants_user, header):
    client, _ = two_tenants_user
    response = client.get(URL, headers={"X-Tenant-ID": header})
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_a_user_in_two_tenants_picks_one_with_the_header(two_tenants_user, tenant):
    client, second = two_tenants_user
    assert client.get(URL).status_code == 404  # two memberships, no header: ambiguous
    assert client.get(URL, headers={"X-Tenant-ID": str(tenant.pk)}).status_code == 200
    # Member of the second tenant: may read, may not write.
    assert client.get(URL, headers={"X-Tenant-ID": str(second.pk)}).status_code == 200
    assert client.delete(URL, headers={"X-Tenant-ID": str(second.pk)}).status_code == 403


def test_a_tenant_the_user_does_not_belong_to_is_no_tenant(two_tenants_user):
    client, _ = two_tenants_user
    stranger = Tenant.objects.create(name="Gamma", slug="gamma")
    assert client.get(URL, headers={"X-Tenant-ID": str(stranger.pk)}).status_code == 404
