"""Link attempts are throttled per tenant and per user (429 + Retry-After); reads are not."""

from __future__ import annotations

import json

import pytest

from bill_integration.models import AuditEvent
from tests.linking_support import CONNECTION_URL, REFRESH_URL, api_as, credentials

pytestmark = pytest.mark.django_db


@pytest.fixture
def rates(bill_settings, bill_environment):
    bill_settings(LINK_THROTTLE_RATES={"tenant": "3/hour", "user": "5/hour"})


def put(client, data):
    return client.put(CONNECTION_URL, data=json.dumps(data), content_type="application/json")


def test_tenant_limit_stops_password_guessing(
    rates, tenant, make_user, bill_emulator, bill_account
):
    first, second = make_user(tenant, "owner"), make_user(tenant, "admin")
    for guess in range(3):
        client = api_as(first if guess % 2 else second)
        assert put(client, credentials(bill_account, password=f"guess-{guess}")).status_code == 400
    # The fourth guess, by either user, never reaches BILL.
    response = put(api_as(first), credentials(bill_account))
    assert response.status_code == 429
    body = response.json()
    assert body["code"] == "throttled" and "minutes" in body["message"]
    assert 1 <= int(response["Retry-After"]) <= 3600
    assert bill_emulator.state.counters(organization_id=bill_account.organization_id)["logins"] == 0
    assert AuditEvent.objects.filter(kind="link_failed").count() == 3
    # Reading the status is never throttled.
    assert api_as(first).get(CONNECTION_URL).status_code == 200


def test_user_limit_spans_tenants(rates, make_user, bill_account):
    from project.tenants.models import Membership, Tenant

    tenants = [Tenant.objects.create(name=f"T{i}", slug=f"t{i}") for i in range(3)]
    user = make_user(tenants[0], "owner")
    for extra in tenants[1:]:
        Membership.objects.create(user=user, tenant=extra, role="owner")
    statuses = []
    for attempt in range(6):
        client = api_as(user, tenant=tenants[attempt % 3])
        statuses.append(put(client, credentials(bill_account, password="wrong")).status_code)
    assert statuses == [400, 400, 400, 400, 400, 429]


def test_other_tenants_are_not_throttled_by_one_tenants_attempts(
    rates, tenant, make_user, bill_account
):
    from project.tenants.models import Tenant

    owner_a = make_user(tenant, "owner")
    for _ in range(3):
        put(api_as(owner_a), credentials(bill_account, password="wrong"))
    assert put(api_as(owner_a), credentials(bill_account)).status_code == 429
    other = Tenant.objects.create(name="B", slug="b")
    owner_b = make_user(other, "owner")
    assert put(api_as(owner_b), credentials(bill_account)).status_code == 201


def test_unauthorised_requests_do_not_use_up_the_tenants_allowance(
    rates, tenant, make_user, bill_account
):
    member = make_user(tenant, "member")
    for _ in range(10):
        assert put(api_as(member), credentials(bill_account)).status_code == 403
    assert put(api_as(make_user(tenant, "owner")), credentials(bill_account)).status_code == 201


def test_default_rates_apply_unconfigured(tenant, make_user, bill_account, bill_environment):
    """With the shipped defaults (10/hour per tenant) the eleventh attempt is refused."""
    owner = make_user(tenant, "owner")
    codes = [
        put(api_as(owner), credentials(bill_account, password="wrong")).status_code
        for _ in range(11)
    ]
    assert codes == [400] * 10 + [429]


# --- POST /connection/refresh/: each refresh is a login from the developer key's shared budget


def logins(emulator, account) -> int:
    return emulator.state.counters(organization_id=account.organization_id)["logins"]


@pytest.fixture
def refresh_rates(bill_settings, bill_environment):
    bill_settings(REFRESH_THROTTLE_RATES={"tenant": "2/hour", "user": "3/hour"})


def test_refresh_is_throttled_per_tenant_before_reaching_bill(
    refresh_rates, tenant, make_user, linked, bill_emulator, bill_account
):
    owner, admin = make_user(tenant, "owner"), make_user(tenant, "admin")
    before = logins(bill_emulator, bill_account)
    assert api_as(owner).post(REFRESH_URL).status_code == 200
    assert api_as(admin).post(REFRESH_URL).status_code == 200
    # The third refresh, by either user, is refused and spends no login of the shared budget.
    response = api_as(owner).post(REFRESH_URL)
    assert response.status_code == 429
    body = response.json()
    assert body["code"] == "throttled" and "minutes" in body["message"]
    assert 1 <= int(response["Retry-After"]) <= 3600
    assert logins(bill_emulator, bill_account) == before + 2
    # Reading the status and linking are counted apart from refreshes.
    assert api_as(owner).get(CONNECTION_URL).status_code == 200
    assert put(api_as(owner), credentials(bill_account)).status_code == 200


def test_refresh_is_throttled_per_user_across_tenants(
    refresh_rates, make_user, bill_emulator, bill_environment
):
    from bill_integration import services
    from project.tenants.models import Membership, Tenant

    tenants = [Tenant.objects.create(name=f"T{i}", slug=f"t{i}") for i in range(2)]
    user = make_user(tenants[0], "owner")
    Membership.objects.create(user=user, tenant=tenants[1], role="owner")
    for each in tenants:
        account = bill_emulator.state.add_account(
            username=f"{each.slug}@example.com", password="pw"
        )
        services.link(each, actor=user, **credentials(account))
    codes = [api_as(user, tenant=tenants[i % 2]).post(REFRESH_URL).status_code for i in range(4)]
    assert codes == [200, 200, 200, 429]  # 2 per tenant would allow a 4th: the user limit held


def test_default_refresh_rate_applies_unconfigured(
    tenant, make_user, linked, bill_emulator, bill_account
):
    """With the shipped defaults (6/hour per tenant) the seventh refresh is refused."""
    owner = make_user(tenant, "owner")
    codes = [api_as(owner).post(REFRESH_URL).status_code for _ in range(7)]
    assert codes == [200] * 6 + [429]


def test_refused_refreshes_by_members_do_not_use_up_the_allowance(
    refresh_rates, tenant, make_user, linked
):
    member = make_user(tenant, "member")
    for _ in range(5):
        assert api_as(member).post(REFRESH_URL).status_code == 403
    assert api_as(make_user(tenant, "owner")).post(REFRESH_URL).status_code == 200


# --- what a 429 says: the action that was refused, in words -------------------------------------


def test_refresh_refusal_speaks_of_refreshes_not_links(refresh_rates, tenant, make_user, linked):
    owner = make_user(tenant, "owner")
    for _ in range(2):
        assert api_as(owner).post(REFRESH_URL).status_code == 200
    body = api_as(owner).post(REFRESH_URL).json()
    assert body["code"] == "throttled"
    assert "refreshes" in body["message"] and "link" not in body["message"].lower()


def test_link_refusal_speaks_of_linking(rates, tenant, make_user, bill_account):
    owner = make_user(tenant, "owner")
    for _ in range(3):
        put(api_as(owner), credentials(bill_account, password="wrong"))
    body = put(api_as(owner), credentials(bill_account)).json()
    assert body["code"] == "throttled"
    assert "link a BILL account" in body["message"] and "refresh" not in body["message"]


def test_a_wait_of_one_minute_is_singular(bill_settings, tenant, make_user, linked):
    bill_settings(REFRESH_THROTTLE_RATES={"tenant": "1/min", "user": None})
    owner = make_user(tenant, "owner")
    assert api_as(owner).post(REFRESH_URL).status_code == 200
    response = api_as(owner).post(REFRESH_URL)
    assert response.status_code == 429 and int(response["Retry-After"]) <= 60
    assert "Wait about 1 minute, then" in response.json()["message"]
