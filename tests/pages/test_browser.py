"""A real browser uses the Connect page (and the admin): every state, keyboard only, live status.

Playwright drives Debian's Chromium (``/usr/bin/chromium``); nothing is downloaded at test time.
Without Chromium the tests skip and say how to install it, unless ``BILL_REQUIRE_BROWSER=1``
(set by ``.ci/run``), where a missing browser fails the run instead.

Accessibility: axe-core (vendored in ``tests/vendor/axe.min.js``, never part of the package) is
injected into each state of the page and must report no serious or critical violation. Each
state is also screenshotted; with ``BILL_SCREENSHOTS=1`` the screenshots are written to
``docs/screenshots/connect-<state>.png`` (the README shows them), otherwise to a temporary
directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from django.db import connections

from bill_integration import services
from bill_integration.exceptions import InvalidCredentials, TransientError
from bill_integration.models import AuditEvent, BillConnection, ConnectionStatus

ROOT = Path(__file__).resolve().parents[2]
AXE = Path(__file__).resolve().parents[1] / "vendor" / "axe.min.js"
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = Path(os.environ.get("BILL_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 900, "height": 760}
PAGE = "/connect/bill/"

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
    """Tenant "Demo Co" with an owner and a read-only member; a superuser; a user of two tenants."""
    from project.tenants.models import Membership, Tenant

    tenant = Tenant.objects.create(name="Demo Co", slug="demo-co")
    other = Tenant.objects.create(name="Other Co", slug="other-co")
    owner = django_user_model.objects.create_user(username="owner", password="owner-pw-123")
    Membership.objects.create(user=owner, tenant=tenant, role="owner")
    member = django_user_model.objects.create_user(username="member", password="member-pw-123")
    Membership.objects.create(user=member, tenant=tenant, role="member")
    both = django_user_model.objects.create_user(username="both", password="both-pw-123")
    Membership.objects.create(user=both, tenant=tenant, role="owner")
    Membership.objects.create(user=both, tenant=other, role="member")
    django_user_model.objects.create_superuser("root", "root@example.com", "root-pw-123")
    return tenant


PASSWORDS = {"owner": "owner-pw-123", "member": "member-pw-123", "both": "both-pw-123"}


def sign_in(page, base_url: str, path: str, username: str, password: str) -> None:
    page.goto(base_url + path)
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("[type=submit]")
    page.wait_for_load_state("networkidle")


def open_page(browser, live_server, username: str, *, path: str = PAGE, **options):
    """A new browser context signed in as ``username`` on the Connect page."""
    options.setdefault("viewport", VIEWPORT)
    context = browser.new_context(**options)
    page = context.new_page()
    page.set_default_timeout(15_000)
    sign_in(page, live_server.url, path, username, PASSWORDS[username])
    page.wait_for_selector("#bill-loading", state="hidden")
    return page


def link(tenant, account, environment: str = "emulator") -> BillConnection:
    return services.link(
        tenant,
        username=account.username,
        password=account.password,
        organization_id=account.organization_id,
        dev_key=account.dev_key,
        environment=environment,
    )


def fill_form(page, account, **overrides) -> None:
    values = {
        "#bill-username": account.username,
        "#bill-password": account.password,
        "#bill-organization-id": account.organization_id,
        "#bill-dev-key": account.dev_key,
        **overrides,
    }
    for selector, value in values.items():
        page.fill(selector, value)


def active_id(page) -> str:
    return page.evaluate("document.activeElement && document.activeElement.id")


def serious_violations(page) -> list[str]:
    """axe-core's serious and critical findings on the page as it is now, one line each."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    results = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at "
        + ", ".join(str(node["target"]) for node in v["nodes"])
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def screenshot(page, state: str, tmp_path: Path) -> Path:
    folder = SCREENSHOTS if os.environ.get("BILL_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"connect-{state}.png"
    page.screenshot(path=str(target), full_page=True)
    return target


# --- every state: axe-core and a screenshot -------------------------------------------------------


def _state_empty(browser, live_server, tenant, account):
    page = open_page(browser, live_server, "owner")
    page.wait_for_selector("#bill-form")
    return page


def _state_error_input(browser, live_server, tenant, account):
    page = _state_empty(browser, live_server, tenant, account)
    fill_form(page, account, **{"#bill-organization-id": "12345", "#bill-dev-key": "01 AB"})
    page.click("#bill-connect-button")
    page.wait_for_selector("#bill-error-summary")
    return page


def _state_error_bill(browser, live_server, tenant, account):
    page = _state_empty(browser, live_server, tenant, account)
    fill_form(page, account, **{"#bill-password": "not-the-password"})
    page.click("#bill-connect-button")
    page.wait_for_selector("#bill-error-summary")
    return page


def _state_linked(browser, live_server, tenant, account):
    link(tenant, account)
    page = open_page(browser, live_server, "owner")
    page.wait_for_selector("#bill-status")
    return page


def _state_degraded(browser, live_server, tenant, account, emulator):
    link(tenant, account)
    emulator.state.set_fault("status", status=503)
    with pytest.raises(TransientError):
        services.refresh(tenant)
    emulator.state.clear_faults()
    page = open_page(browser, live_server, "owner")
    page.wait_for_selector("#bill-status-problem")
    return page


def _state_needs_relink(browser, live_server, tenant, account, emulator):
    link(tenant, account)
    emulator.state.set_fault("error", code="BDC_1101", path="/login")
    with pytest.raises(InvalidCredentials):
        services.refresh(tenant, force=True)
    emulator.state.clear_faults()
    page = open_page(browser, live_server, "owner")
    page.wait_for_selector("#bill-form")
    return page


def _state_read_only(browser, live_server, tenant, account):
    link(tenant, account)
    page = open_page(browser, live_server, "member")
    page.wait_for_selector("#bill-status")
    return page


def _state_choose_organization(browser, live_server, tenant, account):
    page = open_page(browser, live_server, "both")
    page.wait_for_selector("#bill-no-access")
    return page


STATES = {
    "empty": _state_empty,
    "error-input": _state_error_input,
    "error-bill": _state_error_bill,
    "linked": _state_linked,
    "degraded": _state_degraded,
    "needs-relink": _state_needs_relink,
    "read-only": _state_read_only,
    "choose-organization": _state_choose_organization,
}


@pytest.mark.parametrize("state", list(STATES))
def test_every_state_has_no_serious_accessibility_violation(
    state, browser, live_server, people, bill_environment, bill_emulator, bill_account, tmp_path
):
    setup = STATES[state]
    if state in ("degraded", "needs-relink"):
        page = setup(browser, live_server, people, bill_account, bill_emulator)
    else:
        page = setup(browser, live_server, people, bill_account)
    assert serious_violations(page) == []
    image = screenshot(page, state, tmp_path)
    assert image.stat().st_size < 250_000
    html = page.content()
    for secret in (bill_account.password, bill_account.dev_key):
        assert secret not in html


def test_screenshots_in_the_docs_are_small_and_referenced():
    """One per state (here) and one per sign-in method (``test_browser_methods.py``)."""
    from bill_integration.auth_methods import METHODS

    readme = (ROOT / "README.md").read_text()
    images = sorted(SCREENSHOTS.glob("connect-*.png"))
    states = [i for i in images if not i.name.startswith("connect-method-")]
    methods = [i for i in images if i.name.startswith("connect-method-")]
    assert {image.name[len("connect-") : -len(".png")] for image in states} == set(STATES)
    assert {i.name[len("connect-method-") : -len(".png")] for i in methods} == set(METHODS)
    assert sum(image.stat().st_size for image in states) < 1_500_000
    assert sum(image.stat().st_size for image in methods) < 800_000
    for image in images:
        assert f"docs/screenshots/{image.name}" in readme


# --- the flows ------------------------------------------------------------------------------------


def test_link_through_the_page_then_the_admin(
    browser, live_server, people, bill_environment, bill_emulator, bill_account
):
    tenant = people
    page = open_page(browser, live_server, "owner")
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))

    # The page: a guided step with human words for the environment.
    assert page.url.endswith(PAGE)
    page.wait_for_selector("#bill-form")
    assert page.input_value("#bill-environment") == "emulator"
    assert page.text_content("#bill-environment option:checked").strip() == "Local BILL emulator"
    assert page.get_attribute("[data-step=details]", "aria-current") == "step"

    # BILL refuses: an error summary names the problem and the fields, and takes the focus.
    fill_form(page, bill_account, **{"#bill-password": "not-the-password"})
    page.click("#bill-connect-button")
    page.wait_for_selector("#bill-error-summary")
    assert active_id(page) == "bill-error-summary"
    assert page.text_content("#bill-error-summary-title") == "BILL did not accept these details"
    assert "sandbox" in page.text_content("#bill-error-summary")
    links = page.locator("#bill-error-summary-list a")
    assert links.all_text_contents() == [
        "User name (email)",
        "Password",
        "Organization ID",
        "BILL environment",
    ]
    # BILL does not say which one is wrong: none is marked invalid.
    assert page.locator("[aria-invalid]").count() == 0
    assert not BillConnection.objects.filter(tenant=tenant).exists()

    # A link in the summary takes the person to the field.
    links.nth(1).click()
    assert active_id(page) == "bill-password"

    page.fill("#bill-password", bill_account.password)
    page.click("#bill-connect-button")
    page.wait_for_selector("#bill-status")
    assert active_id(page) == "bill-status-title"  # not <body>
    assert page.is_hidden("#bill-error-summary")
    assert page.get_attribute("#bill-password", "aria-invalid") is None
    assert page.text_content("[data-testid=status-badge]").strip() == "Connected"
    assert page.text_content("#bill-fact-organization") == bill_account.organization_id
    assert page.text_content("#bill-fact-environment") == "Local BILL emulator · API v3"
    assert page.text_content("#bill-fact-session") == "obtained just now"
    assert page.input_value("#bill-password") == ""  # secrets are not kept in the page
    assert page.get_attribute("[data-step=connected]", "aria-current") == "step"
    assert BillConnection.objects.get(tenant=tenant).username == bill_account.username

    # Refresh, then Disconnect (confirming the dialog).
    page.click("#bill-refresh")
    page.wait_for_selector("#bill-message.is-success >> text=New BILL session")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#bill-disconnect")
    page.wait_for_selector("#bill-form")
    page.wait_for_function("document.activeElement.id === 'bill-form-title'")
    assert not BillConnection.objects.filter(tenant=tenant).exists()
    # The inline SVG icon: the browser never asks for /favicon.ico.
    assert not [url for url in requests if url.endswith("/favicon.ico")]

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
    page.wait_for_selector("#bill-status")
    assert page.text_content("[data-testid=status-badge]").strip() == "Connected"


def test_bad_input_lists_each_field_and_marks_it(
    browser, live_server, people, bill_environment, bill_account
):
    page = _state_error_input(browser, live_server, people, bill_account)
    assert active_id(page) == "bill-error-summary"
    assert page.text_content("#bill-error-summary-title") == "Some details need fixing"
    items = page.locator("#bill-error-summary-list a").all_text_contents()
    assert [item.split(":")[0] for item in items] == ["Organization ID", "Developer key"]
    assert "starts with 008" in items[0] and "space" in items[1]
    for field in ("organization-id", "dev-key"):
        assert page.get_attribute(f"#bill-{field}", "aria-invalid") == "true"
        described = page.get_attribute(f"#bill-{field}", "aria-describedby").split()
        assert described == [f"bill-{field}-error", f"bill-{field}-help"]
        assert page.is_visible(f"#bill-{field}-error")
    assert page.get_attribute("#bill-username", "aria-invalid") is None
    assert page.get_attribute("#bill-username", "aria-describedby") == "bill-username-help"
    assert page.get_attribute("#bill-error-summary-list a >> nth=0", "href") == (
        "#bill-organization-id"
    )

    # Empty required fields are named at once, without asking the server.
    puts: list[str] = []
    page.on("request", lambda request: request.method == "PUT" and puts.append(request.url))
    for field in ("username", "password", "organization-id", "dev-key"):
        page.fill(f"#bill-{field}", "")
    page.click("#bill-connect-button")
    page.wait_for_selector("#bill-username-error")
    assert active_id(page) == "bill-error-summary"
    assert page.locator("#bill-error-summary-list a").all_text_contents() == [
        "User name (email): Enter the email address you sign in to BILL with.",
        "Password: Enter your BILL password.",
        "Organization ID: Enter your BILL organization ID (it starts with 008).",
        "Developer key: Enter your BILL developer key.",
    ]
    assert page.locator("[aria-invalid=true]").count() == 4
    assert puts == []


def test_keyboard_only(browser, live_server, people, bill_environment, bill_account):
    page = open_page(browser, live_server, "owner")
    page.wait_for_selector("#bill-form")
    for _ in range(15):  # past the site's header and the link to BILL's guide
        page.keyboard.press("Tab")
        if active_id(page) == "bill-environment":
            break
    assert active_id(page) == "bill-environment"
    order = []
    typed = {
        "bill-username": bill_account.username,
        "bill-password": "not-the-password",
        "bill-organization-id": bill_account.organization_id,
        "bill-dev-key": bill_account.dev_key,
    }
    for _ in range(6):
        page.keyboard.press("Tab")
        order.append(active_id(page))
        if active_id(page) in typed:
            page.keyboard.type(typed[active_id(page)])
    assert order == [
        "bill-username",
        "bill-password",
        "bill-organization-id",
        "bill-dev-key",
        "bill-api-token",
        "bill-connect-button",
    ]
    page.keyboard.press("Enter")
    page.wait_for_selector("#bill-error-summary")
    assert active_id(page) == "bill-error-summary"

    # From the summary to the password field, fix it, submit with Enter.
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Password"
    page.keyboard.press("Enter")
    assert active_id(page) == "bill-password"
    page.keyboard.press("Control+A")
    page.keyboard.type(bill_account.password)
    page.keyboard.press("Enter")
    page.wait_for_selector("#bill-status")
    assert active_id(page) == "bill-status-title"

    # The actions, in order, by keyboard.
    page.keyboard.press("Tab")
    assert active_id(page) == "bill-refresh"
    page.keyboard.press("Enter")
    page.wait_for_selector("#bill-message.is-success >> text=New BILL session")
    page.keyboard.press("Tab")
    assert active_id(page) == "bill-show-form"
    page.keyboard.press("Enter")
    assert active_id(page) == "bill-password"
    page.keyboard.press("Shift+Tab")  # the user name, filled in from the connection
    assert active_id(page) == "bill-username"
    assert page.input_value("#bill-username") == bill_account.username
    page.focus("#bill-cancel")
    page.keyboard.press("Enter")
    assert page.is_hidden("#bill-form")
    assert active_id(page) == "bill-show-form"
    page.keyboard.press("Tab")
    assert active_id(page) == "bill-disconnect"
    page.once("dialog", lambda dialog: dialog.accept())
    page.keyboard.press("Enter")
    page.wait_for_selector("#bill-form")
    page.wait_for_function("document.activeElement.id === 'bill-form-title'")


def test_read_only_member_sees_no_actions(
    browser, live_server, people, bill_environment, bill_account
):
    page = open_page(browser, live_server, "member")
    # Nothing linked: said so, no form, no "choose an organization".
    page.wait_for_selector("#bill-read-only-empty")
    assert page.is_hidden("#bill-form") and page.is_hidden("#bill-no-access")

    link(people, bill_account)
    page.reload()
    page.wait_for_selector("#bill-status")
    for button in ("#bill-refresh", "#bill-show-form", "#bill-disconnect"):
        assert page.is_hidden(button)
        assert page.locator(button).bounding_box() is None
    assert page.get_by_role("button").count() == page.locator(".site-header button").count()
    assert page.is_visible("#bill-read-only")
    assert page.is_hidden("#bill-form")


def test_a_user_of_several_organizations_chooses_one(
    browser, live_server, people, bill_environment, bill_account
):
    page = _state_choose_organization(browser, live_server, people, bill_account)
    text = page.text_content("#bill-no-access")
    assert "?tenant=" not in text
    assert page.is_hidden("#bill-form") and page.is_hidden("#bill-stepper")
    page.get_by_role("link", name="Demo Co").click()
    page.wait_for_selector("#bill-form")
    assert page.url.endswith(f"{PAGE}?tenant={people.pk}")
    fill_form(page, bill_account)
    page.click("#bill-connect-button")
    page.wait_for_selector("#bill-status")
    assert BillConnection.objects.filter(tenant=people).exists()


def test_problems_are_worded_for_the_background(
    browser, live_server, people, bill_environment, bill_emulator, bill_account
):
    page = _state_degraded(browser, live_server, people, bill_account, bill_emulator)
    badge = page.text_content("[data-testid=status-badge]")
    assert badge == "Connected · BILL not answering"
    problem = page.text_content("#bill-status-problem")
    assert re.search(r"BILL was unreachable at \d{1,2}:\d\d", problem), problem
    assert "retries on its own" in problem and "Nothing was changed" not in problem
    assert re.fullmatch(
        r"in \d+ (seconds|minutes?) \(\d{1,2}:\d\d( [AP]M)?\)", page.text_content("#bill-fact-next")
    )

    page = _state_needs_relink(browser, live_server, people, bill_account, bill_emulator)
    assert page.text_content("[data-testid=status-badge]") == "Needs your attention"
    assert "Enter them again" in page.text_content("#bill-status-problem")
    assert page.is_hidden("#bill-fact-next-row")
    assert page.get_attribute("[data-step=details]", "aria-current") == "step"
    assert page.text_content("#bill-fact-session") == "None until the details are entered again"
    assert page.text_content("#bill-fact-refresh") == "just now (failed)"
    # Only what helps: enter the details again (prefilled but for secrets) or disconnect.
    assert page.is_hidden("#bill-refresh") and page.is_hidden("#bill-show-form")
    assert page.is_hidden("#bill-cancel") and page.is_visible("#bill-disconnect")
    assert page.input_value("#bill-username") == bill_account.username
    assert page.input_value("#bill-organization-id") == bill_account.organization_id
    assert page.input_value("#bill-password") == ""


def test_the_page_keeps_itself_current(
    browser, live_server, people, bill_environment, bill_emulator, bill_account, bill_clock
):
    tenant = people
    link(tenant, bill_account)
    context = browser.new_context(viewport=VIEWPORT)
    context.clock.install()
    page = context.new_page()
    page.set_default_timeout(15_000)
    sign_in(page, live_server.url, PAGE, "owner", PASSWORDS["owner"])
    page.wait_for_selector("#bill-status")
    assert page.text_content("#bill-fact-session") == "obtained just now"
    page.clock.pause_at(page.evaluate("Date.now()") / 1000 + 1)  # seconds since the epoch

    # Relative times are redrawn every few seconds, between two status checks.
    page.clock.run_for(15_000)
    session = page.text_content("#bill-fact-session")
    match = re.fullmatch(r"obtained (\d+) seconds ago", session)
    assert match, session
    seconds = int(match.group(1))
    assert 15 <= seconds <= 20
    assert re.fullmatch(
        r"Status checked 1\d seconds ago\. This page checks again every 20 seconds\.",
        page.text_content("#bill-checked"),
    )

    # The status is asked for again: ten minutes later on the server's clock...
    bill_clock.advance(600)
    page.clock.run_for(10_000)
    page.wait_for_function(
        "document.getElementById('bill-fact-session').textContent === 'obtained 10 minutes ago'"
    )
    assert page.text_content("#bill-fact-refresh") == "10 minutes ago"

    # ... a keep-alive made by the sweep shows...
    services.keep_alive(tenant)
    page.clock.run_for(20_000)
    page.wait_for_function(
        "document.getElementById('bill-fact-refresh').textContent === 'just now'"
    )
    assert page.text_content("#bill-fact-session") == "obtained 10 minutes ago"

    # ... and so does BILL going away, without a reload.
    bill_emulator.state.set_fault("status", status=503)
    with pytest.raises(TransientError):
        services.refresh(tenant)
    assert BillConnection.objects.get(tenant=tenant).status == ConnectionStatus.DEGRADED
    page.clock.run_for(20_000)
    page.wait_for_selector("#bill-status-problem")
    assert page.text_content("[data-testid=status-badge]") == "Connected · BILL not answering"
    assert page.is_visible("#bill-fact-next-row")
    # Said once, politely, to screen readers too; the focus stays where it was.
    assert page.text_content("#bill-message") == (
        "The connection's status changed: Connected · BILL not answering."
    )
    assert page.get_attribute("#bill-message", "aria-live") == "polite"
    assert active_id(page) != "bill-error-summary"


def test_reduced_motion_stops_the_busy_spinner(
    browser, live_server, people, bill_environment, bill_emulator, bill_account
):
    spin = (
        "getComputedStyle(document.getElementById('bill-connect-button'), '::before').animationName"
    )
    for motion, expected in (("no-preference", "bill-spin"), ("reduce", "none")):
        page = open_page(browser, live_server, "owner", reduced_motion=motion)
        page.wait_for_selector("#bill-form")
        fill_form(page, bill_account)
        fault = bill_emulator.state.set_fault("latency", seconds=3, path="/login")
        page.click("#bill-connect-button")
        page.wait_for_selector("#bill-connect-button[aria-busy=true]")
        assert page.evaluate(spin) == expected
        page.wait_for_selector("#bill-status")
        bill_emulator.state.clear_faults()
        assert fault
        BillConnection.objects.all().delete()
