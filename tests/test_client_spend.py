"""The Spend & Expense client (header ``apiToken``, no login) against the emulator over HTTP."""

from __future__ import annotations

import pytest

from bill_integration.client import SpendClient, SpendUser, get_spend_client
from bill_integration.exceptions import (
    InvalidApiToken,
    InvalidCredentials,
    RateLimited,
    TransientError,
)


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


def test_spend_rate_limit_code_wins_over_status(spend, bill_account, bill_emulator):
    bill_emulator.state.set_fault(
        "error", organization_id=bill_account.organization_id, code="BDC_1144", status=401
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
