"""bill_demo_setup: one emulator account of each sign-in method, printed, each of which links."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command

from bill_integration import services
from bill_integration.auth_methods import AuthMethod
from tests.session_support import make_tenant

pytestmark = pytest.mark.django_db

KINDS = {
    "user": AuthMethod.USER_PASSWORD,
    "sync_token": AuthMethod.SYNC_TOKEN,
    "console": AuthMethod.CONSOLE_TOKEN,
    "spend": AuthMethod.SPEND_TOKEN,
    "oauth": AuthMethod.OAUTH_CLIENT,
}


def arguments(item: dict) -> dict:
    """``services.link`` keyword arguments for a demo account."""
    method = KINDS[item.get("kind", "user")]
    if method == AuthMethod.SPEND_TOKEN:
        return {"auth_method": method, "api_token": item["api_token"]}
    if method == AuthMethod.OAUTH_CLIENT:
        return {
            "auth_method": method,
            "oauth_client_id": item["client_id"],
            "oauth_client_secret": item["client_secret"],
        }
    secret = (
        {"console_token": item["console_token"]}
        if item.get("console_token")
        else {"password": item["password"]}
    )
    return {
        "auth_method": method,
        "username": item["username"],
        "organization_id": item["organization_id"],
        "dev_key": item["dev_key"],
        **secret,
    }


def test_the_demo_makes_one_account_of_each_method_and_each_links(
    settings, tmp_path, bill_emulator, bill_environment
):
    settings.STATE_DIR = tmp_path
    out = StringIO()
    call_command("bill_demo_setup", stdout=out)
    call_command("bill_demo_setup", stdout=StringIO())  # idempotent
    accounts = json.loads((tmp_path / "bill-accounts.json").read_text())["accounts"]
    assert sorted(item.get("kind", "user") for item in accounts) == sorted(KINDS)
    assert len(accounts[0]["other_organizations"]) == 2
    text = out.getvalue()
    for item in accounts[1:]:
        secret = item.get("console_token") or item.get("client_secret") or item["api_token"]
        if item["kind"] == "sync_token":
            secret = item["password"]
        assert secret in text, item["kind"]
    bill_emulator.state.load_accounts(accounts)
    for item in accounts:
        connection = services.link(make_tenant(), environment=bill_environment, **arguments(item))
        assert connection.auth_method == KINDS[item.get("kind", "user")]
