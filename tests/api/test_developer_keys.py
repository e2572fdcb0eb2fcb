"""BILL_INTEGRATION["DEVELOPER_KEYS"]: the SaaS supplies the developer key of an environment."""

from __future__ import annotations

import pytest

from bill_integration.checks import E012_DEVELOPER_KEYS, check_settings
from bill_integration.models import BillConnection
from bill_integration.services.common import dev_key_fingerprint
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
    assert stored.dev_key == host.dev_key
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
