"""The Connect page links with every sign-in method, against the emulator over HTTP.

For each method a person chooses it under "How do you sign in to BILL?", sees only its fields,
fills them and connects; BILL (the emulator) accepts, the status card names the method, and
``get_session().request(...)`` works. Each filled form is screenshotted: with
``BILL_SCREENSHOTS=1`` to ``docs/screenshots/connect-method-<method>.png`` (README's sign-in
methods table shows them), otherwise to a temporary directory.

A relink preselects the connection's method, and the "Trust this app for payments" step is
not shown while the connection needs its details entered again.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bill_integration import services
from bill_integration.auth_methods import METHODS, AuthMethod, api_fields
from bill_integration.exceptions import InvalidCredentials
from bill_integration.models import BillConnection
from tests.pages.test_browser import (  # noqa: F401  (fixtures)
    SCREENSHOTS,
    active_id,
    browser,
    open_page,
    people,
    serious_violations,
    sign_in,
)
from tests.services.test_signin_methods import KIND, PROBE, service_credentials

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ADMIN_ADD = "/admin/bill_integration/billconnection/add/"

#: Every input of the form, by API field name.
INPUTS = {
    "username": "#bill-username",
    "password": "#bill-password",
    "token_name": "#bill-token-name",
    "sync_token": "#bill-sync-token",
    "console_token": "#bill-console-token",
    "client_id": "#bill-client-id",
    "client_secret": "#bill-client-secret",
    "organization_id": "#bill-organization-id",
    "dev_key": "#bill-dev-key",
    "api_token": "#bill-api-token",
}


def typed(method: str, account) -> dict[str, str]:
    """What a person types for ``method``, by API field name."""
    login = {"organization_id": account.organization_id, "dev_key": account.dev_key}
    return {
        AuthMethod.USER_PASSWORD: {
            "username": account.username,
            "password": account.password,
            **login,
        },
        AuthMethod.SYNC_TOKEN: {
            "token_name": account.username,
            "sync_token": account.password,
            **login,
        },
        AuthMethod.CONSOLE_TOKEN: {
            "username": account.username,
            "console_token": account.console_token,
            **login,
        },
        AuthMethod.SPEND_TOKEN: {"api_token": account.api_token},
        AuthMethod.OAUTH_CLIENT: {
            "client_id": account.client_id,
            "client_secret": account.client_secret,
        },
    }[method]


def method_screenshot(page, method: str, tmp_path: Path) -> Path:
    folder = SCREENSHOTS if os.environ.get("BILL_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"connect-method-{method}.png"
    page.screenshot(path=str(target), full_page=True)
    return target


@pytest.mark.parametrize("method", list(METHODS))
def test_link_through_the_page_with_each_method(
    method,
    browser,
    live_server,
    people,
    bill_environment,
    bill_emulator,
    tmp_path,  # noqa: F811
):
    tenant = people
    extra = {} if method == AuthMethod.SPEND_TOKEN else {"api_token": ""}
    account = bill_emulator.state.add_account(kind=KIND[method], **extra)
    values = typed(method, account)
    page = open_page(browser, live_server, "owner")
    page.wait_for_selector("#bill-form")
    page.select_option("#bill-auth-method", method)
    for name, selector in INPUTS.items():  # only this method's fields are shown
        assert page.is_visible(selector) == (name in api_fields(method)), name
    assert page.is_visible(f"[data-method-help={method}]")
    if method == AuthMethod.SPEND_TOKEN:  # its one field is not "optional" here
        assert page.text_content("#bill-spend-legend") == "Spend & Expense"
        assert "Leave it empty" not in page.text_content("#bill-api-token-help")
    elif method == AuthMethod.USER_PASSWORD:
        assert page.text_content("#bill-spend-legend") == "Spend & Expense (optional)"
    for name, value in values.items():
        page.fill(INPUTS[name], value)
    assert serious_violations(page) == []
    image = method_screenshot(page, method, tmp_path)
    assert image.stat().st_size < 250_000

    before = sum(bill_emulator.state.counters().values())
    page.click("#bill-connect-button")
    page.wait_for_selector("#bill-status")
    assert active_id(page) == "bill-status-title"
    assert sum(bill_emulator.state.counters().values()) > before  # BILL was asked, over HTTP
    stored = BillConnection.objects.get(tenant=tenant)
    assert stored.auth_method == method
    assert page.text_content("#bill-fact-method") == str(AuthMethod(method).label)
    html = page.content()
    for secret in (account.password, account.console_token, account.client_secret):
        assert not secret or secret not in html
    if method == AuthMethod.SPEND_TOKEN:
        assert account.api_token not in html
    assert services.get_session(tenant).request("GET", PROBE.get(method, "/v3/vendors"))


@pytest.mark.parametrize("method", [AuthMethod.CONSOLE_TOKEN, AuthMethod.SYNC_TOKEN])
def test_a_relink_preselects_the_method_and_hides_the_mfa_step(
    method,
    browser,
    live_server,
    people,
    bill_environment,
    bill_emulator,  # noqa: F811
):
    tenant = people
    account = bill_emulator.state.add_account(kind=KIND[method], api_token="")
    services.link(
        tenant, auth_method=method, environment="emulator", **service_credentials(method, account)
    )
    page = open_page(browser, live_server, "owner")
    page.wait_for_selector("#bill-status")
    page.click("#bill-show-form")  # "Change credentials" offers the connection's method
    assert page.input_value("#bill-auth-method") == method
    if method == AuthMethod.CONSOLE_TOKEN:  # BILL's MFA trust applies to console logins
        page.wait_for_selector("#bill-mfa:not([hidden])")
    page.close()

    bill_emulator.state.set_fault("error", code="BDC_1101", path="/login")
    with pytest.raises(InvalidCredentials):
        services.refresh(tenant, force=True)
    bill_emulator.state.clear_faults()
    assert BillConnection.objects.get(tenant=tenant).status == "needs_relink"
    page = open_page(browser, live_server, "owner")
    page.wait_for_selector("#bill-form")
    assert page.input_value("#bill-auth-method") == method
    name_field = "#bill-username" if method == AuthMethod.CONSOLE_TOKEN else "#bill-token-name"
    assert page.input_value(name_field) == account.username
    assert page.is_hidden("#bill-mfa")
    assert page.is_hidden("#bill-password")


def test_the_admin_form_shows_only_the_chosen_methods_inputs(
    browser,
    live_server,
    people,
    bill_environment,
    bill_emulator,  # noqa: F811
):
    tenant = people
    account = bill_emulator.state.add_account(kind="console", api_token="")
    page = browser.new_page()
    page.set_default_timeout(15_000)
    sign_in(page, live_server.url, ADMIN_ADD, "root", "root-pw-123")
    rows = {name: f".form-row.field-{name}" for name in INPUTS}
    for method in METHODS:
        page.select_option("#id_auth_method", method)
        for name, row in rows.items():
            assert page.is_visible(row) == (name in api_fields(method)), (method, name)
    page.select_option("#id_tenant", str(tenant.pk))
    page.select_option("#id_environment", "emulator")
    page.select_option("#id_auth_method", AuthMethod.CONSOLE_TOKEN)
    page.fill("#id_username", account.username)
    page.fill("#id_console_token", account.console_token)
    page.fill("#id_organization_id", account.organization_id)
    page.fill("#id_dev_key", account.dev_key)
    page.click("[name=_save]")
    page.wait_for_selector(".messagelist")
    stored = BillConnection.objects.get(tenant=tenant)
    assert stored.auth_method == AuthMethod.CONSOLE_TOKEN
    assert bill_emulator.state.counters()["console_logins"] == 1
