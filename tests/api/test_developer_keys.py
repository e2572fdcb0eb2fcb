"""BILL_INTEGRATION["DEVELOPER_KEYS"]: the SaaS supplies the developer key of an environment."""

from __future__ import annotations

import pytest

from bill_integration import services
from bill_integration.checks import E012_DEVELOPER_KEYS, check_settings
from bill_integration.models import BillConnection
from bill_integration.services.common import dev_key_fingerprint
from bill_integration.services.sweep import refresh_due
from tests.linking_support import CONNECTION_URL, api_as, credentials
from tests.session_support import make_tenant

pytestmark = pytest.mark.django_db

ORGANIZATIONS_URL = "/api/bill/connection/organizations/"


def without_key(account, **overrides):
    body = credentials(account, **overrides)
    body.pop("dev_key")
    return body


def test_tenants_link_without_a_key_and_are_grouped_under_the_hosts(
    tenant, owner_api, bill_emulator, bill_app, bill_settings, make_user
):
    host = bill_emulator.state.add_account()
    bill_settings(DEVELOPER_KEYS={"emulator": host.dev_key})
    answer = owner_api.put(CONNECTION_URL, without_key(host), format="json")
    assert answer.status_code == 201, answer.content
    stored = BillConnection.objects.get(tenant=tenant)
    assert stored.dev_key is None  # the host's key is read from the settings, never copied
    assert stored.dev_key_fingerprint == dev_key_fingerprint(host.dev_key)

    other = bill_emulator.state.add_account(dev_key=host.dev_key)
    other_api = api_as(make_user(make_tenant(), "owner"))
    assert other_api.put(CONNECTION_URL, without_key(other), format="json").status_code == 201
    fingerprints = set(BillConnection.objects.values_list("dev_key_fingerprint", flat=True))
    assert fingerprints == {dev_key_fingerprint(host.dev_key)}


def test_a_tenants_own_key_is_refused_naming_the_field_unless_allowed(
    tenant, owner_api, bill_emulator, bill_app, bill_settings
):
    host = bill_emulator.state.add_account()
    mine = bill_emulator.state.add_account()
    bill_settings(DEVELOPER_KEYS={"emulator": host.dev_key})
    refused = owner_api.put(CONNECTION_URL, credentials(mine), format="json")
    assert refused.status_code == 400
    assert list(refused.json()["fields"]) == ["dev_key"]
    assert not BillConnection.objects.filter(tenant=tenant).exists()

    bill_settings(ALLOW_TENANT_DEVELOPER_KEY=True)
    accepted = owner_api.put(CONNECTION_URL, credentials(mine), format="json")
    assert accepted.status_code == 201, accepted.content
    assert BillConnection.objects.get(tenant=tenant).dev_key == mine.dev_key


def test_without_a_host_key_for_the_environment_the_field_is_required(
    owner_api, bill_emulator, bill_app, bill_settings
):
    account = bill_emulator.state.add_account()
    bill_settings(DEVELOPER_KEYS={"sandbox": "01ABCDEFGHIJKLMNOP12"})
    answer = owner_api.put(CONNECTION_URL, without_key(account), format="json")
    assert answer.status_code == 400
    assert "dev_key" in answer.json()["fields"]


def test_organizations_are_listed_with_the_hosts_key(
    owner_api, bill_emulator, bill_app, bill_settings
):
    account = bill_emulator.state.add_account()
    bill_settings(DEVELOPER_KEYS={"emulator": account.dev_key})
    body = without_key(account)
    body.pop("organization_id")
    answer = owner_api.post(ORGANIZATIONS_URL, body, format="json")
    assert answer.status_code == 200, answer.content
    assert [org["id"] for org in answer.json()["organizations"]] == [account.organization_id]


@pytest.mark.parametrize(
    "value",
    [["key"], {"sandbox": 12}, {"sandbox": ""}, {"sandbox": "has space"}, {"sandbox": "k" * 65}],
)
def test_check_refuses_malformed_developer_keys(settings, value):
    settings.BILL_INTEGRATION = {"DEVELOPER_KEYS": value}
    errors = [m for m in check_settings() if m.id == E012_DEVELOPER_KEYS]
    assert errors
    assert all("has space" not in m.msg for m in errors)


def test_check_accepts_well_formed_developer_keys(settings):
    settings.BILL_INTEGRATION = {"DEVELOPER_KEYS": {"sandbox": "01ABCDEFGHIJKLMNOP12"}}
    assert not [m for m in check_settings() if m.id == E012_DEVELOPER_KEYS]


def test_a_rotated_host_key_is_used_from_the_next_call_with_no_relink(
    bill_emulator, bill_app, bill_settings, bill_clock
):
    """The host key is read at each login and call: rotating it in the settings is enough.

    Two tenants link under host key A. BILL then issues B and revokes A; the host changes
    DEVELOPER_KEYS. Callers' requests keep working (the session opened with A is refused
    with B, and one login with B replaces it), the sweep keeps both connections active for a
    day with no call made with A, and the limits count both under B's fingerprint.
    """
    old = bill_emulator.state.add_account(api_token="")
    other = bill_emulator.state.add_account(dev_key=old.dev_key, api_token="")
    bill_settings(DEVELOPER_KEYS={"emulator": old.dev_key})
    tenants = [make_tenant(), make_tenant()]
    for tenant, account in zip(tenants, (old, other), strict=True):
        body = without_key(account)
        body.pop("environment"), body.pop("api_version")
        services.link(tenant, environment="emulator", **body)

    new_key = "01ROTATEDHOSTKEY0001"
    assert bill_emulator.state.rotate_dev_key(old.dev_key, new_key) == 2
    bill_settings(DEVELOPER_KEYS={"emulator": new_key})
    calls_with_old = bill_emulator.state.counters(dev_key=old.dev_key)["calls"]

    for tenant in tenants:
        assert services.get_session(tenant).request("GET", "/v3/vendors") is not None
    for _ in range(24 * 15):  # a day of sweeps, one every 4 minutes
        bill_clock.advance(4 * 60)
        refresh_due()
    rows = BillConnection.objects.without_secrets().filter(tenant__in=tenants)
    assert {row.status for row in rows} == {"active"}
    assert {row.dev_key_fingerprint for row in rows} == {dev_key_fingerprint(new_key)}
    assert bill_emulator.state.counters(dev_key=old.dev_key)["calls"] == calls_with_old
    assert bill_emulator.state.counters(dev_key=new_key)["logins"] >= 2
