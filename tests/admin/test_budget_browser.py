"""The admin's budget page in a real browser: reached from the connections list, its SVG chart
drawn with bars and limit lines, no serious accessibility finding (axe-core).

With ``BILL_SCREENSHOTS=1`` the page is written to ``docs/screenshots/admin-budget.png`` (the
admin how-to shows it), otherwise to a temporary directory. Uses the Connect page's browser
set-up (``tests/pages/test_browser.py``): Debian's Chromium, nothing downloaded.
"""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bill_integration import limits
from bill_integration.models import BillConnection, ConnectionStatus
from tests.pages.test_browser import SCREENSHOTS, browser, serious_violations  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def seed_a_day(fingerprint: str, now: datetime) -> None:
    """24 hours of one busy developer key: keep-alives around the clock, callers by day."""
    rng = random.Random(13)
    for hours_ago in range(23, -1, -1):
        at = now - timedelta(hours=hours_ago)
        hour = at.hour
        working = 8 <= hour < 18
        fraction = 0.5 if hours_ago == 0 else 1.0  # the running hour is half over
        kinds = {
            limits.KEEP_ALIVE: rng.randint(3300, 3700),
            limits.BACKGROUND_LOGIN: rng.randint(15, 40),
            limits.CALLER: rng.randint(6000, 9500) if working else rng.randint(300, 1200),
            limits.CALLER_LOGIN: rng.randint(20, 60) if working else rng.randint(0, 8),
            limits.OTHER: rng.randint(150, 400),
        }
        for kind, n in kinds.items():
            limits.count_call(fingerprint, kind, n=int(n * fraction), at=at.replace(minute=5))
        if hours_ago == 0:  # the login budget's own window: the running hour's logins
            for _ in range(
                int((kinds[limits.CALLER_LOGIN] + kinds[limits.BACKGROUND_LOGIN]) * fraction)
            ):
                limits.take_login(fingerprint)


@pytest.fixture
def busy_key(transactional_db, bill_clock, bill_connection, django_user_model):
    real = datetime.now(UTC)
    target = real.replace(minute=30, second=0, microsecond=0) + timedelta(hours=1)
    bill_clock.set_offset((target - real).total_seconds())
    first = bill_connection()
    key = first.account.dev_key
    for _ in range(3):
        bill_connection(dev_key=key)
    for _ in range(2):
        bill_connection(dev_key=key, login=False, idle=3600)
    waiting = bill_connection(dev_key=key, login=False)
    BillConnection.objects.filter(pk=waiting.pk).update(status=ConnectionStatus.NEEDS_RELINK)
    limits.reset()
    seed_a_day(first.dev_key_fingerprint, bill_clock.now())
    django_user_model.objects.create_superuser("root", "root@example.com", "root-pw-123")
    yield first.dev_key_fingerprint
    limits.reset()


def test_the_budget_page_draws_its_chart(browser, live_server, busy_key, tmp_path):  # noqa: F811
    context = browser.new_context(viewport={"width": 1180, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(live_server.url + "/admin/login/?next=/admin/bill_integration/billconnection/")
    page.fill("#id_username", "root")
    page.fill("#id_password", "root-pw-123")
    page.click("[type=submit]")
    page.click("text=Budget per developer key")
    page.click(f"a:has-text('{busy_key[:12]}')")
    chart = page.locator("svg.bill-budget-chart")
    chart.wait_for()
    assert chart.is_visible()
    box = chart.bounding_box()
    assert box and box["width"] > 600 and box["height"] > 250
    assert page.locator("svg.bill-budget-chart g.bar").count() == 24
    assert page.locator("svg.bill-budget-chart rect.segment").count() >= 24 * 4
    tallest = max(
        float(height)
        for height in page.eval_on_selector_all(
            "svg.bill-budget-chart rect.segment", "els => els.map(e => e.getAttribute('height'))"
        )
    )
    assert tallest > 20  # bars that show, not slivers
    assert page.locator("svg.bill-budget-chart line.limit").count() == 2
    assert page.locator("svg.bill-budget-chart title").first.text_content()
    assert page.locator("#bill-budget-table tbody tr").count() == 24
    assert serious_violations(page) == []
    folder = SCREENSHOTS if os.environ.get("BILL_SCREENSHOTS") == "1" else Path(tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / "admin-budget.png"), full_page=True)
    context.close()
