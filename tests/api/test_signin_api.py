"""PUT /api/bill/connection/ with each sign-in method: link, refuse bad input per method."""

from __future__ import annotations

import pytest

from bill_integration import services
from bill_integration.auth_methods import AuthMethod, rules
from bill_integration.models import BillConnection, ConnectionStatus
from tests.linking_support import CONNECTION_URL

pytestmark = pytest.mark.django_db


def body(method: str, account) -> dict:
    login = {"organization_id": account.organization_id, "dev_key": account.dev_key}
    fields = {
        AuthMethod.USER_PASSWORD: {"username": account.username, "password": account.password},
        AuthMethod.SYNC_TOKEN: {"token_name": account.username, "sync_token": account.password},
        AuthMethod.CONSOLE_TOKEN: {
            "username": account.username,
            "console_token": account.console_token,
        },
        AuthMethod.SPEND_TOKEN: {"api_token": account.api_token},
        AuthMethod.OAUTH_CLIENT: {
            "client_id": account.client_id,
            "client_secret": account.client_secret,
        },
    }[method]
    if method in (AuthMethod.USER_PASSWORD, AuthMethod.SYNC_TOKEN, AuthMethod.CONSOLE_TOKEN):
        fields.update(login)
    return {"auth_method": method, "environment": "emulator", **fields}


KIND = {
    AuthMethod.USER_PASSWORD: "user",
    AuthMethod.SYNC_TOKEN: "sync_token",
    AuthMethod.CONSOLE_TOKEN: "console",
    AuthMethod.SPEND_TOKEN: "spend",
    AuthMethod.OAUTH_CLIENT: "oauth",
}


@pytest.mark.parametrize("method", list(KIND))
def test_each_method_links_through_the_api_and_unlinks(
    method, tenant, owner_api, bill_emulator, bill_app
):
    account = bill_emulator.state.add_account(kind=KIND[method])
    answer = owner_api.put(CONNECTION_URL, body(method, account), format="json")
    assert answer.status_code == 201, answer.content
    text = answer.content.decode()
    secrets = (account.password, account.dev_key, account.api_token, account.console_token)
    for secret in (*secrets, account.client_secret):
        assert not secret or secret not in text
    stored = BillConnection.objects.get(tenant=tenant)
    assert stored.auth_method == method
    path = "/v3/spend/budgets" if method == AuthMethod.SPEND_TOKEN else "/v3/vendors"
    services.get_session(tenant).request("GET", path)
    assert owner_api.delete(CONNECTION_URL).status_code in (200, 204)
    assert not BillConnection.objects.filter(tenant=tenant).exists()


def test_sync_token_name_is_not_an_email_and_links(tenant, owner_api, bill_emulator, bill_app):
    account = bill_emulator.state.add_account(kind="sync_token", api_token="")
    assert "@" not in account.username
    answer = owner_api.put(CONNECTION_URL, body(AuthMethod.SYNC_TOKEN, account), format="json")
    assert answer.status_code == 201, answer.content


@pytest.mark.parametrize(
    ("method", "drop", "add", "field"),
    [
        (AuthMethod.SYNC_TOKEN, "sync_token", {}, "sync_token"),
        (AuthMethod.CONSOLE_TOKEN, "console_token", {}, "console_token"),
        (AuthMethod.OAUTH_CLIENT, "client_secret", {}, "client_secret"),
        (AuthMethod.SPEND_TOKEN, None, {"password": "x"}, "password"),
        (AuthMethod.OAUTH_CLIENT, None, {"dev_key": "abc"}, "dev_key"),
        (AuthMethod.CONSOLE_TOKEN, None, {"password": "hunter2"}, "password"),
    ],
)
def test_bad_input_per_method_is_refused_naming_the_field_with_no_bill_call(
    method, drop, add, field, tenant, owner_api, bill_emulator, bill_app
):
    account = bill_emulator.state.add_account(kind=KIND[method])
    data = body(method, account)
    if drop:
        data.pop(drop)
    data.update(add)
    before = bill_emulator.state.counters()["calls"]
    answer = owner_api.put(CONNECTION_URL, data, format="json")
    assert answer.status_code == 400
    assert field in answer.content.decode()
    assert not BillConnection.objects.filter(tenant=tenant).exists()
    assert bill_emulator.state.counters()["calls"] == before


def test_changing_method_is_a_relink_and_a_refused_one_leaves_the_old_credentials(
    tenant, owner_api, bill_emulator, bill_app
):
    user = bill_emulator.state.add_account(kind="user")
    assert (
        owner_api.put(
            CONNECTION_URL, body(AuthMethod.USER_PASSWORD, user), format="json"
        ).status_code
        == 201
    )
    oauth = bill_emulator.state.add_account(kind="oauth")
    wrong = {**body(AuthMethod.OAUTH_CLIENT, oauth), "client_secret": "not-the-secret"}
    assert owner_api.put(CONNECTION_URL, wrong, format="json").status_code >= 400
    stored = BillConnection.objects.get(tenant=tenant)
    assert stored.auth_method == AuthMethod.USER_PASSWORD and stored.password == user.password
    assert (
        owner_api.put(
            CONNECTION_URL, body(AuthMethod.OAUTH_CLIENT, oauth), format="json"
        ).status_code
        == 200
    )
    stored = BillConnection.objects.get(tenant=tenant)
    assert stored.auth_method == AuthMethod.OAUTH_CLIENT
    assert stored.password is None and stored.dev_key is None  # the old method's secrets gone


@pytest.mark.parametrize("method", list(KIND))
def test_the_status_document_names_the_method_and_offers_mfa_only_where_it_applies(
    method, tenant, owner_api, bill_emulator, bill_app
):
    account = bill_emulator.state.add_account(kind=KIND[method])
    owner_api.put(CONNECTION_URL, body(method, account), format="json")
    status = owner_api.get(CONNECTION_URL).json()
    assert status["auth_method"] == method
    assert (status["mfa"] is not None) == rules(method).mfa_trust


@pytest.mark.parametrize("status", [ConnectionStatus.NEEDS_RELINK, ConnectionStatus.DISABLED])
def test_no_mfa_step_while_the_details_must_be_entered_again(
    status, tenant, owner_api, bill_emulator, bill_app
):
    account = bill_emulator.state.add_account(kind="user")
    owner_api.put(CONNECTION_URL, body(AuthMethod.USER_PASSWORD, account), format="json")
    assert owner_api.get(CONNECTION_URL).json()["mfa"] is not None
    BillConnection.objects.filter(tenant=tenant).update(status=status)
    document = owner_api.get(CONNECTION_URL).json()
    assert document["status"] == status and document["mfa"] is None
    assert document["auth_method"] == AuthMethod.USER_PASSWORD


def test_nothing_linked_has_no_method(owner_api):
    assert owner_api.get(CONNECTION_URL).json()["auth_method"] is None
