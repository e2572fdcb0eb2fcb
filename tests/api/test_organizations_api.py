"""POST /api/bill/connection/organizations/: pick the organization from BILL's list, then link it."""

from __future__ import annotations

import pytest

from bill_integration import limits
from bill_integration.models import BillConnection
from bill_integration.services.common import dev_key_fingerprint
from tests.linking_support import CONNECTION_URL, api_as, credentials

pytestmark = pytest.mark.django_db

ORGANIZATIONS_URL = "/api/bill/connection/organizations/"
OTHERS = [
    {"organizationId": "00801ZZZZZZZZZZZZZZ2", "name": "Beta Holdings"},
    {"organizationId": "00801ZZZZZZZZZZZZZZ3", "name": "Acme Subsidiary"},
]


def listing(account, **overrides):
    body = credentials(account, **overrides)
    body.pop("organization_id")
    body.pop("api_version")
    return body


def test_a_person_with_three_organizations_picks_one_and_links_it(
    tenant, owner_api, bill_emulator, bill_app
):
    account = bill_emulator.state.add_account(
        organization_name="Main Co", other_organizations=OTHERS, api_token=""
    )
    answer = owner_api.post(ORGANIZATIONS_URL, listing(account), format="json")
    assert answer.status_code == 200, answer.content
    found = answer.json()["organizations"]
    assert [org["name"] for org in found] == ["Acme Subsidiary", "Beta Holdings", "Main Co"]
    assert account.password not in answer.content.decode()
    assert not BillConnection.objects.filter(tenant=tenant).exists()  # nothing stored
    # ListOrgs counts as a login: one from the developer key's budget.
    assert limits.status(dev_key_fingerprint(account.dev_key)).logins_used == 1

    chosen = next(org for org in found if org["name"] == "Beta Holdings")
    linked = owner_api.put(
        CONNECTION_URL, credentials(account, organization_id=chosen["id"]), format="json"
    )
    assert linked.status_code == 201, linked.content
    assert BillConnection.objects.get(tenant=tenant).organization_id == chosen["id"]
    assert linked.json()["organization_id"] == "00801ZZZZZZZZZZZZZZ2"


def test_sync_token_credentials_list_their_organizations(owner_api, bill_emulator, bill_app):
    account = bill_emulator.state.add_account(kind="sync_token", other_organizations=OTHERS[:1])
    body = {
        "auth_method": "sync_token",
        "token_name": account.username,
        "sync_token": account.password,
        "dev_key": account.dev_key,
        "environment": "emulator",
    }
    answer = owner_api.post(ORGANIZATIONS_URL, body, format="json")
    assert answer.status_code == 200, answer.content
    assert {org["id"] for org in answer.json()["organizations"]} == {
        account.organization_id,
        "00801ZZZZZZZZZZZZZZ2",
    }


def test_only_the_credentials_of_the_request_are_listed(owner_api, bill_emulator, bill_app):
    other_tenants = bill_emulator.state.add_account(other_organizations=OTHERS)
    mine = bill_emulator.state.add_account(dev_key=other_tenants.dev_key)
    answer = owner_api.post(ORGANIZATIONS_URL, listing(mine), format="json")
    assert [org["id"] for org in answer.json()["organizations"]] == [mine.organization_id]


def test_wrong_password_is_refused_and_organization_id_is_not_asked(
    owner_api, bill_emulator, bill_app
):
    account = bill_emulator.state.add_account()
    wrong = owner_api.post(ORGANIZATIONS_URL, listing(account, password="nope"), format="json")
    assert wrong.status_code == 400
    assert wrong.json()["code"] == "invalid_credentials"
    with_org = owner_api.post(ORGANIZATIONS_URL, credentials(account), format="json")
    assert with_org.status_code == 400
    assert "organization_id" in with_org.json()["fields"]


def test_methods_bill_cannot_list_for_are_refused_naming_the_field(owner_api, bill_app):
    body = {"auth_method": "spend_token", "api_token": "x" * 20, "environment": "emulator"}
    answer = owner_api.post(ORGANIZATIONS_URL, body, format="json")
    assert answer.status_code == 400
    assert "auth_method" in answer.json()["fields"]


def test_readers_and_strangers_cannot_list(tenant, make_user, bill_emulator, bill_app):
    account = bill_emulator.state.add_account()
    reader = api_as(make_user(tenant, "member"))
    assert reader.post(ORGANIZATIONS_URL, listing(account), format="json").status_code in (403, 404)
    assert api_as().post(ORGANIZATIONS_URL, listing(account), format="json").status_code == 404


def test_listing_is_throttled_like_a_link(owner_api, bill_emulator, bill_app, bill_settings):
    bill_settings(LINK_THROTTLE_RATES={"tenant": "1/hour", "user": "10/hour"})
    account = bill_emulator.state.add_account()
    assert owner_api.post(ORGANIZATIONS_URL, listing(account), format="json").status_code == 200
    again = owner_api.post(ORGANIZATIONS_URL, listing(account), format="json")
    assert again.status_code == 429
    assert again.json()["code"] == "throttled"
