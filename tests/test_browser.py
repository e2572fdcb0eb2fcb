"""A real browser links a BILL account: through the page, then through the admin.

Playwright drives Debian's Chromium (``/usr/bin/chromium``); nothing is downloaded at test time.
Without Chromium the test skips and says how to install it, unless ``BILL_REQUIRE_BROWSER=1``
(set by ``.ci/run``), where a missing browser fails the run instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.db import connections

from bill_integration.models import AuditEvent, BillConnection

CHROMIUM = Path(os.environ.get("BILL_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def browser(monkeypatch):
    if not CHROMIUM.exists():
        message = (
            f"Chromium not found at {CHROMIUM}. Install Debian's package: "
            "sudo apt-get install chromium (or set BILL_CHROMIUM to its path)."
        )
        if os.environ.get("BILL_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    # Playwright's sync API runs an event loop in this thread; the ORM calls made by the test
    # itself are still plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
            # The test's ORM calls ran in Playwright's greenlet, whose context has its own
            # database connection: close it, or it outlives the test database.
            connections.close_all()


@pytest.fixture
def people(transactional_db, django_user_model):
    from project.tenants.models import Membership, Tenant

    tenant = Tenant.objects.create(name="Demo Co", slug="demo-co")
    owner = django_user_model.objects.create_user(username="owner", password="owner-pw-123")
    Membership.objects.create(user=owner, tenant=tenant, role="owner")
    django_user_model.objects.create_superuser("root", "root@example.com", "root-pw-123")
    return tenant


def sign_in(page, base_url: str, path: str, username: str, password: str) -> None:
    page.goto(base_url + path)
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("[type=submit]")
    page.wait_for_load_state("networkidle")


def test_link_through_the_page_then_the_admin(
    browser, live_server, people, bill_environment, bill_emulator, bill_account
):
    tenant = people
    page = browser.new_page()
    page.set_default_timeout(15_000)

    # The page: sign in, fill the form, Connect.
    sign_in(page, live_server.url, "/connect/bill/", "owner", "owner-pw-123")
    assert page.url.endswith("/connect/bill/")
    page.wait_for_selector("#bill-form:not([hidden])")
    assert page.input_value("#bill-environment") == "emulator"
    page.fill("#bill-username", bill_account.username)
    page.fill("#bill-password", "not-the-password")
    page.fill("#bill-organization-id", bill_account.organization_id)
    page.fill("#bill-dev-key", bill_account.dev_key)
    page.click("#bill-connect-button")
    page.wait_for_selector("#bill-message.is-error")
    assert "sandbox" in page.text_content("#bill-message")
    assert not BillConnection.objects.filter(tenant=tenant).exists()

    page.fill("#bill-password", bill_account.password)
    page.click("#bill-connect-button")
    page.wait_for_selector("#bill-status:not([hidden])")
    assert page.text_content("[data-testid=status-badge]").strip() == "Linked"
    assert page.text_content("#bill-fact-organization") == bill_account.organization_id
    assert "ago" in page.text_content("#bill-fact-session")
    assert page.input_value("#bill-password") == ""  # secrets are not kept in the page
    assert BillConnection.objects.get(tenant=tenant).username == bill_account.username

    # Refresh, then Disconnect (confirming the dialog).
    page.click("#bill-refresh")
    page.wait_for_selector("#bill-message.is-success >> text=New BILL session")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#bill-disconnect")
    page.wait_for_selector("#bill-form:not([hidden])")
    assert not BillConnection.objects.filter(tenant=tenant).exists()

    # The admin: add a connection through the same service.
    admin = browser.new_page()
    admin.set_default_timeout(15_000)
    sign_in(admin, live_server.url, "/admin/login/?next=/admin/", "root", "root-pw-123")
    admin.goto(live_server.url + "/admin/bill_integration/billconnection/add/")
    admin.select_option("#id_tenant", str(tenant.pk))
    admin.select_option("#id_environment", "emulator")
    admin.fill("#id_username", bill_account.username)
    admin.fill("#id_organization_id", bill_account.organization_id)
    admin.fill("#id_password", bill_account.password)
    admin.fill("#id_dev_key", bill_account.dev_key)
    admin.click("input[name=_save]")
    admin.wait_for_selector(".messagelist .success")
    assert "Active" in admin.text_content("#result_list")
    stored = BillConnection.objects.get(tenant=tenant)
    assert stored.password == bill_account.password
    assert AuditEvent.objects.filter(kind="linked", actor__username="root").exists()

    # The page shows what the admin linked.
    page.reload()
    page.wait_for_selector("#bill-status:not([hidden])")
    assert page.text_content("[data-testid=status-badge]").strip() == "Linked"
