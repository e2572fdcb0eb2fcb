"""The Connect page with each sign-in method: the method's fields only, picking the organization."""

from __future__ import annotations

import pytest

from bill_integration.models import BillConnection
from tests.pages.test_browser import (  # noqa: F401  (fixtures)
    active_id,
    browser,
    open_page,
    people,
    serious_violations,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

OTHERS = [
    {"organizationId": "00801ZZZZZZZZZZZZZZ2", "name": "Beta Holdings"},
    {"organizationId": "00801ZZZZZZZZZZZZZZ3", "name": "Acme Subsidiary"},
]


def test_link_with_a_sync_token_through_the_page(
    browser,
    live_server,
    people,
    bill_environment,
    bill_emulator,  # noqa: F811
):
    tenant = people
    account = bill_emulator.state.add_account(kind="sync_token", api_token="")
    page = open_page(browser, live_server, "owner")
    page.wait_for_selector("#bill-form")
    page.select_option("#bill-auth-method", "sync_token")
    # Only the sync token's fields are shown.
    assert page.is_visible("#bill-token-name") and page.is_visible("#bill-sync-token")
    assert page.is_hidden("#bill-username") and page.is_hidden("#bill-password")
    assert page.is_hidden("#bill-api-token") and page.is_hidden("#bill-client-id")
    assert serious_violations(page) == []
    page.fill("#bill-token-name", account.username)
    page.fill("#bill-sync-token", account.password)
    page.fill("#bill-organization-id", account.organization_id)
    page.fill("#bill-dev-key", account.dev_key)
    page.click("#bill-connect-button")
    page.wait_for_selector("#bill-status")
    assert active_id(page) == "bill-status-title"
    stored = BillConnection.objects.get(tenant=tenant)
    assert stored.auth_method == "sync_token"
    assert stored.username == account.username
    assert page.input_value("#bill-sync-token") == ""  # secrets are not kept in the page


def test_a_person_with_three_organizations_picks_one_on_the_page(
    browser,
    live_server,
    people,
    bill_environment,
    bill_emulator,  # noqa: F811
):
    tenant = people
    account = bill_emulator.state.add_account(
        organization_name="Main Co", other_organizations=OTHERS, api_token=""
    )
    page = open_page(browser, live_server, "owner")
    page.wait_for_selector("#bill-form")
    assert page.is_visible("#bill-organization-hint")
    page.fill("#bill-username", account.username)
    page.fill("#bill-password", account.password)
    page.fill("#bill-dev-key", account.dev_key)
    page.click("#bill-connect-button")  # no organization ID: BILL lists them
    page.wait_for_selector("#bill-organization-choice")
    assert active_id(page) == "bill-organization-choice"
    options = page.locator("#bill-organization-choice option").all_text_contents()
    assert options[1:] == [
        "Acme Subsidiary (00801ZZZZZZZZZZZZZZ3)",
        "Beta Holdings (00801ZZZZZZZZZZZZZZ2)",
        f"Main Co ({account.organization_id})",
    ]
    assert serious_violations(page) == []
    assert not BillConnection.objects.filter(tenant=tenant).exists()
    page.select_option("#bill-organization-choice", "00801ZZZZZZZZZZZZZZ2")
    assert page.input_value("#bill-organization-id") == "00801ZZZZZZZZZZZZZZ2"
    page.click("#bill-connect-button")
    page.wait_for_selector("#bill-status")
    assert BillConnection.objects.get(tenant=tenant).organization_id == "00801ZZZZZZZZZZZZZZ2"
    assert page.text_content("#bill-fact-organization") == "00801ZZZZZZZZZZZZZZ2"


def test_a_person_with_one_organization_is_not_asked(
    browser,
    live_server,
    people,
    bill_environment,
    bill_emulator,
    bill_settings,  # noqa: F811
):
    tenant = people
    account = bill_emulator.state.add_account(api_token="")
    bill_settings(DEVELOPER_KEYS={"emulator": account.dev_key})
    page = open_page(browser, live_server, "owner")
    page.wait_for_selector("#bill-form")
    assert page.is_hidden("#bill-dev-key")  # the service supplies the developer key
    page.fill("#bill-username", account.username)
    page.fill("#bill-password", account.password)
    page.click("#bill-connect-button")
    page.wait_for_selector("#bill-status")
    stored = BillConnection.objects.get(tenant=tenant)
    assert stored.organization_id == account.organization_id
    assert stored.dev_key is None  # the service's key is read from the settings, not copied
