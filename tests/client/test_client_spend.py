"""The Spend & Expense client (header ``apiToken``, no login) against the emulator over HTTP."""

from __future__ import annotations

import json

import pytest

from bill_integration.client import SpendClient, SpendUser, get_spend_client
from bill_integration.exceptions import (
    InvalidApiToken,
    InvalidCredentials,
    RateLimited,
    TransientError,
)
from tests.canned_http import CannedServer, reply
from tests.linking_support import CONNECTION_URL, credentials


@pytest.fixture
def spend(bill_environment) -> SpendClient:
    return get_spend_client(bill_environment)


def test_valid_token_returns_its_user(spend, bill_account, bill_emulator):
    user = spend.current_user(api_token=bill_account.api_token)

    assert isinstance(user, SpendUser)
    assert user == SpendUser(
        id=bill_account.spend_user_id,
        email=bill_account.username,
        role="ADMIN",
        first_name=bill_account.first_name,
        last_name=bill_account.last_name,
    )
    assert bill_emulator.state.counters(organization_id=bill_account.organization_id)["spend"] == 1


def test_spend_client_uses_the_v3_base(spend, bill_emulator):
    assert spend.base_url == bill_emulator.v3_base
    assert get_spend_client("emulator") is spend


def test_invalid_token_is_invalid_api_token(spend, bill_account):
    with pytest.raises(InvalidApiToken) as caught:
        spend.current_user(api_token="not-a-real-token")
    assert caught.value.http_status == 401
    assert isinstance(caught.value, InvalidCredentials)  # the app treats it like bad credentials


def test_empty_token_fails_before_any_request(spend, bill_account, bill_emulator):
    with pytest.raises(InvalidApiToken, match="empty"):
        spend.current_user(api_token="  ")
    assert bill_emulator.state.counters()["calls"] == 0
    assert bill_emulator.state.counters()["spend"] == 0


def test_spend_5xx_is_transient(spend, bill_account, bill_emulator):
    bill_emulator.state.set_fault(
        "status", organization_id=bill_account.organization_id, status=502
    )
    with pytest.raises(TransientError) as caught:
        spend.current_user(api_token=bill_account.api_token)
    assert caught.value.http_status == 502


def test_spend_rate_limit_code_wins_over_a_non_token_status(spend, bill_account, bill_emulator):
    bill_emulator.state.set_fault(
        "error", organization_id=bill_account.organization_id, code="BDC_1144", status=400
    )
    with pytest.raises(RateLimited):
        spend.current_user(api_token=bill_account.api_token)


def test_token_never_in_error_text_or_url(spend, bill_emulator, settings):
    canary = "canary-spend-token-91be"
    bill_emulator.state.add_account(
        username="spend-canary@example.com", password="pw", api_token=canary
    )
    user = spend.current_user(api_token=canary)
    assert canary not in repr(user)

    errors = []
    for kind, params in (("status", {"status": 503}), ("reset", {}), ("hang", {"seconds": 5})):
        bill_emulator.state.set_fault(kind, count=1, **params)
        if kind == "hang":
            spend = SpendClient(bill_emulator.v3_base, connect_timeout=1, read_timeout=0.3)
        with pytest.raises(TransientError) as caught:
            spend.current_user(api_token=canary)
        errors.append(caught.value)
    with pytest.raises(InvalidApiToken) as caught:
        spend.current_user(api_token=canary + "-wrong")
    errors.append(caught.value)

    for error in errors:
        assert canary not in str(error) and canary not in repr(error)


# A wrong token is a wrong token, whatever code BILL attaches: Spend & Expense has no session
# to renew, so a BDC_1109 there must not read as "session expired" (it used to surface as a
# 502 session_invalid on the Connect page instead of "check the API token").
@pytest.mark.parametrize(
    "status, code",
    [(401, "BDC_1109"), (401, "BDC_1144"), (401, "BDC_1001"), (403, "BDC_1361"), (403, "BDC_1109")],
)
def test_a_refused_token_is_invalid_api_token_whatever_the_code(
    spend, bill_account, bill_emulator, status, code
):
    bill_emulator.state.set_fault(
        "error", dev_key=bill_account.dev_key, path="/v3/spend", code=code, status=status
    )
    for call in (
        lambda: spend.current_user(api_token=bill_account.api_token),
        lambda: spend.request("/v3/spend/budgets", api_token=bill_account.api_token),
    ):
        with pytest.raises(InvalidApiToken) as caught:
            call()
        assert (caught.value.http_status, caught.value.bill_code) == (status, code)
        assert caught.value.code == "invalid_api_token"


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_token_in_an_error_code_object_is_invalid_api_token(status):
    # The other error shape seen for Spend & Expense: one object with errorCode/errorMessage.
    def refuse(handler):
        reply(handler, status, {"errorCode": "BDC_1109", "errorMessage": "Session is invalid."})

    with CannedServer(refuse) as server:
        client = SpendClient(server.url + "/connect", connect_timeout=5, read_timeout=5)
        with pytest.raises(InvalidApiToken) as caught:
            client.current_user(api_token="wrong-token")
    assert (caught.value.http_status, caught.value.bill_code) == (status, "BDC_1109")
    assert server.requests == [("GET", "/connect/v3/spend/users/current")]


def test_a_rate_limit_in_an_error_code_object_is_read():
    def limited(handler):
        reply(handler, 400, {"errorCode": "BDC_1144", "errorMessage": "Max number reached."})

    with CannedServer(limited) as server:
        client = SpendClient(server.url + "/connect", connect_timeout=5, read_timeout=5)
        with pytest.raises(RateLimited) as caught:
            client.current_user(api_token="token")
    assert caught.value.bill_code == "BDC_1144"


@pytest.mark.django_db
def test_connect_api_says_invalid_api_token_when_spend_answers_401_with_a_session_code(
    owner_api, bill_account, bill_emulator, bill_environment
):
    # The customer-visible end of the rule above: before it, this was a 502 session_invalid.
    bill_emulator.state.set_fault(
        "error", dev_key=bill_account.dev_key, path="/v3/spend", code="BDC_1109", status=401
    )
    response = owner_api.put(
        CONNECTION_URL,
        data=json.dumps(credentials(bill_account, api_token=bill_account.api_token)),
        content_type="application/json",
    )
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_api_token"
