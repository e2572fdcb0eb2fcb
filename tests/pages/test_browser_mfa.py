"""A real browser trusts the app for payments: the page's step, a code from BILL, forget.

Playwright drives Debian's Chromium, as ``test_browser.py`` (whose fixtures this reuses); the
code is read from the emulator's control API, as a person would read their phone.
"""

from __future__ import annotations

import pytest

from bill_integration import services
from bill_integration.models import BillConnection
from tests.linking_support import credentials
from tests.mfa_support import code_for, pay
from tests.pages.test_browser import browser, people, sign_in  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_trust_this_app_for_payments_through_the_page(
    browser,  # noqa: F811
    live_server,
    people,  # noqa: F811
    bill_environment,
    bill_emulator,
    bill_account,
):
    tenant = people
    services.link(tenant, **credentials(bill_account))
    page = browser.new_page()
    page.set_default_timeout(15_000)
    sign_in(page, live_server.url, "/connect/bill/", "owner", "owner-pw-123")
    page.wait_for_selector("#bill-mfa:not([hidden])")
    page.wait_for_selector("[data-testid=mfa-state][data-state=not_set_up]")
    assert "Not trusted for payments yet" in page.text_content("[data-testid=mfa-state]")

    page.click("#bill-mfa-start")
    page.wait_for_selector("#bill-mfa-send:not([hidden])")
    last4 = bill_account.mfa_phones[0]["number"][-4:]
    assert f"•••• {last4}" in page.text_content("#bill-mfa-phones")
    page.click("#bill-mfa-send-button")
    page.wait_for_selector("#bill-mfa-code:not([hidden])")
    assert last4 in page.text_content("#bill-mfa-message")

    code = code_for(bill_emulator, bill_account)
    page.fill("#bill-mfa-code-input", "000000" if code != "000000" else "111111")
    page.click("#bill-mfa-confirm")
    page.wait_for_selector("#bill-mfa-message.is-error")
    assert "wrong or has expired" in page.text_content("#bill-mfa-message")
    page.fill("#bill-mfa-code-input", f"{code[:3]} {code[3:]}")
    page.click("#bill-mfa-confirm")
    page.wait_for_selector("[data-testid=mfa-state][data-state=trusted]")
    assert "Trusted for payments until" in page.text_content("[data-testid=mfa-state]")
    assert page.input_value("#bill-mfa-code-input") == ""  # the code is not kept in the page
    assert BillConnection.objects.get(tenant=tenant).mfa_remember_id
    assert pay(tenant)["status"] == "SCHEDULED"

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#bill-mfa-forget")
    page.wait_for_selector("[data-testid=mfa-state][data-state=not_set_up]")
    assert BillConnection.objects.get(tenant=tenant).mfa_remember_id is None
