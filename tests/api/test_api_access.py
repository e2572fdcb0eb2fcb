"""Tenant isolation: for every endpoint and method, who gets in, and that nothing leaks across.

The matrix: another tenant's owner, a member (reads only), a user of no tenant, anonymous, a
multi-tenant user naming a tenant by header (allowed only for their own), and forged tenants in
the body or the query string (never honoured).
"""

from __future__ import annotations

import json

import pytest

from bill_integration.models import AuditEvent, BillConnection
from tests.linking_support import CONNECTION_URL, REFRESH_URL, api_as, credentials

pytestmark = pytest.mark.django_db

ENDPOINTS = [
    ("get", CONNECTION_URL),
    ("put", CONNECTION_URL),
    ("delete", CONNECTION_URL),
    ("post", REFRESH_URL),
]
WRITES = [e for e in ENDPOINTS if e[0] != "get"]


@pytest.fixture
def victim(linked, tenant, bill_account):
    """Tenant A, linked; every test checks A is untouched and never shown."""
    return {
        "tenant": tenant,
        "connection": linked,
        "account": bill_account,
        "row": _snapshot(tenant),
    }


@pytest.fixture
def other_tenant(db):
    from project.tenants.models import Tenant

    return Tenant.objects.create(name="Other Co", slug="other-co")


def _snapshot(tenant):
    c = BillConnection.objects.get(tenant=tenant)
    return (c.version, c.username, c.password, c.dev_key, c.session_id, c.status)


def _call(client, method, url, body=None, **extra):
    if method != "get":
        return getattr(client, method)(
            url, data=json.dumps(body or {}), content_type="application/json", **extra
        )
    return getattr(client, method)(url, **extra)


def _assert_no_foreign_data(response, victim):
    text = response.content.decode()
    account = victim["account"]
    for value in (account.organization_id, account.username, account.password, account.dev_key):
        assert value not in text


def _assert_untouched(victim):
    assert _snapshot(victim["tenant"]) == victim["row"]


@pytest.mark.parametrize("method,url", ENDPOINTS)
def test_anonymous_gets_404(victim, method, url, bill_account):
    response = _call(api_as(None), method, url, credentials(bill_account))
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    _assert_no_foreign_data(response, victim)
    _assert_untouched(victim)


@pytest.mark.parametrize("method,url", ENDPOINTS)
def test_user_of_no_tenant_gets_404(victim, make_user, method, url, bill_account):
    stranger = make_user(None)
    response = _call(api_as(stranger), method, url, credentials(bill_account))
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    _assert_no_foreign_data(response, victim)
    _assert_untouched(victim)


@pytest.mark.parametrize("method,url", ENDPOINTS)
def test_other_tenants_owner_never_reaches_tenant_a(
    victim, other_tenant, make_user, method, url, bill_emulator, bill_environment
):
    intruder = make_user(other_tenant, "owner")
    other_account = bill_emulator.state.add_account(
        username="intruder@example.com", password="intruder-pw"
    )
    # Naming tenant A by header: not a member there, so it is as if no tenant existed.
    response = _call(
        api_as(intruder, tenant=victim["tenant"]), method, url, credentials(other_account)
    )
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    _assert_no_foreign_data(response, victim)
    _assert_untouched(victim)


@pytest.mark.parametrize("method,url", ENDPOINTS)
def test_forged_tenant_in_body_or_query_is_ignored(
    victim, other_tenant, make_user, method, url, bill_emulator, bill_environment
):
    intruder = make_user(other_tenant, "owner")
    other_account = bill_emulator.state.add_account(
        username="intruder@example.com", password="intruder-pw"
    )
    body = {
        **credentials(other_account),
        "tenant": victim["tenant"].pk,
        "tenant_id": victim["tenant"].pk,
    }
    query = f"?tenant={victim['tenant'].pk}&tenant_id={victim['tenant'].pk}"
    response = _call(api_as(intruder), method, url + query, body)
    # Whatever the intruder did, it happened to their own tenant, never to A.
    assert response.status_code in (200, 201, 204, 404), response.content
    _assert_no_foreign_data(response, victim)
    _assert_untouched(victim)
    if method == "put":
        assert BillConnection.objects.get(tenant=other_tenant).username == other_account.username


@pytest.mark.parametrize("method,url", WRITES)
def test_member_may_not_write(victim, tenant, make_user, method, url, bill_account):
    member = make_user(tenant, "member")
    response = _call(api_as(member), method, url, credentials(bill_account))
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    _assert_untouched(victim)
    assert not AuditEvent.objects.filter(actor=member).exists()


def test_member_may_read(victim, tenant, make_user):
    member = make_user(tenant, "member")
    response = api_as(member).get(CONNECTION_URL)
    assert response.status_code == 200
    body = response.json()
    assert body["can_change"] is False
    assert body["organization_id"] == victim["account"].organization_id


@pytest.mark.parametrize("role", ["owner", "admin"])
def test_owner_and_admin_may_write(tenant, make_user, role, bill_account, bill_environment):
    user = make_user(tenant, role)
    client = api_as(user)
    assert _call(client, "put", CONNECTION_URL, credentials(bill_account)).status_code == 201
    assert _call(client, "post", REFRESH_URL).status_code == 200
    assert client.get(CONNECTION_URL).json()["can_change"] is True
    assert _call(client, "delete", CONNECTION_URL).status_code == 204


class TestMultiTenantUser:
    """A user in two tenants picks one with X-Tenant-ID; without it the API asks for it."""

    @pytest.fixture
    def setup(self, victim, other_tenant, make_user):
        from project.tenants.models import Membership

        user = make_user(victim["tenant"], "member")
        Membership.objects.create(user=user, tenant=other_tenant, role="owner")
        return user, other_tenant

    def test_without_header_no_tenant(self, setup):
        user, _ = setup
        response = api_as(user).get(CONNECTION_URL)
        assert response.status_code == 404
        assert "X-Tenant-ID" in response.json()["message"]

    def test_header_picks_each_tenant_with_its_own_rights(self, setup, victim, bill_account):
        user, other_tenant = setup
        on_a = api_as(user, tenant=victim["tenant"])
        assert on_a.get(CONNECTION_URL).json()["organization_id"] == bill_account.organization_id
        assert on_a.delete(CONNECTION_URL).status_code == 403  # member in A
        on_b = api_as(user, tenant=other_tenant)
        body = on_b.get(CONNECTION_URL).json()
        assert body["status"] == "not_linked" and body["can_change"] is True  # owner in B
        _assert_untouched(victim)

    @pytest.mark.parametrize("header", ["999999", "abc", "", "1 OR 1=1", "-1"])
    def test_bad_header_is_no_tenant(self, setup, header):
        user, _ = setup
        client = api_as(user)
        client.credentials(HTTP_X_TENANT_ID=header)
        assert client.get(CONNECTION_URL).status_code == 404
