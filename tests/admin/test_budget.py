"""The budget per developer key: one report (``services/budget.py``), shown by the admin page
(with its SVG chart) and by ``manage.py bill_status --budget``, with the same numbers."""

from __future__ import annotations

import html
import io
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.urls import reverse

from bill_integration import limits
from bill_integration.budget_chart import budget_svg, nice_step
from bill_integration.models import BillConnection, ConnectionStatus
from bill_integration.services import budget

pytestmark = pytest.mark.django_db

LIST_URL = reverse("admin:bill_integration_billconnection_changelist")
INDEX_URL = reverse("admin:bill_integration_billconnection_budget")


def key_url(label: str) -> str:
    return reverse("admin:bill_integration_billconnection_budget_key", args=[label])


@pytest.fixture
def half_past(bill_clock):
    """The app's (and BILL's) clock at half past the next hour: the hour cannot turn mid-test."""
    real = datetime.now(UTC)
    target = real.replace(minute=30, second=0, microsecond=0) + timedelta(hours=1)
    bill_clock.set_offset((target - real).total_seconds())
    limits.reset()
    yield bill_clock.now()
    limits.reset()


@pytest.fixture
def seeded(half_past, bill_connection):
    """One developer key: a warm, a lapsed and a relink-waiting tenant, and counted calls."""
    warm = bill_connection()
    key = warm.account.dev_key
    bill_connection(dev_key=key, login=False, idle=3600)  # lapsed: idle past BILL's 35 min
    waiting = bill_connection(dev_key=key)
    BillConnection.objects.filter(pk=waiting.pk).update(status=ConnectionStatus.NEEDS_RELINK)
    fingerprint = warm.dev_key_fingerprint
    limits.reset()  # forget the set-up's own logins: only the seeded counts below
    now = half_past
    seed = {
        # hours ago: {kind: n}
        5: {limits.KEEP_ALIVE: 400, limits.CALLER: 900, limits.BACKGROUND_LOGIN: 3},
        3: {limits.KEEP_ALIVE: 350, limits.CALLER: 3000, limits.CALLER_LOGIN: 4},
        2: {limits.KEEP_ALIVE: 300, limits.CALLER: 1200, limits.OTHER: 7},
        1: {limits.KEEP_ALIVE: 320, limits.CALLER: 800, limits.CALLER_LOGIN: 2},
        0: {limits.KEEP_ALIVE: 100, limits.CALLER: 150},  # the running hour
    }
    for hours_ago, kinds in seed.items():
        # The last clock hour's calls at :40, inside the rolling hour that ends at :30.
        at = now - timedelta(hours=hours_ago) + timedelta(minutes=10 if hours_ago == 1 else 0)
        for kind, n in kinds.items():
            limits.count_call(fingerprint, kind, n=n, at=at)
    return fingerprint


@pytest.fixture
def staff_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return client


def test_the_report_counts_by_hour_and_kind_and_tells_warm_from_lapsed(seeded, half_past):
    report = budget.key_budget(seeded)
    assert len(report.hours) == 24 and report.hours[-1].start == half_past.replace(
        minute=0, second=0, microsecond=0
    )
    assert [h.total for h in report.hours[-6:]] == [1303, 0, 3354, 1507, 1122, 250]
    assert report.hours[-4].caller_login == 4 and report.caller_logins == 6
    assert report.tenants == budget.Tenants(total=3, warm=1, lapsed=1, waiting_for_a_person=1)
    # The rolling hour: the last clock hour's calls (at :40) and the running hour's.
    assert report.last_hour.total == 1122 + 250
    # The next hour: the busiest of the last 3 complete hours (3,354) and the rolling hour.
    assert report.predicted_calls == 3354 and report.call_headroom == 20_000 - 3354
    assert report.predicted_logins == 4
    assert report.upkeep_limit == limits.upkeep_limit() == 12_000


def test_the_command_and_the_page_show_the_same_numbers(seeded, staff_client):
    label = seeded[:12]
    out = io.StringIO()
    call_command("bill_status", "--budget", "--json", stdout=out)
    (facts,) = json.loads(out.getvalue())
    assert facts["dev_key"] == label
    page = staff_client.get(key_url(label))
    assert page.status_code == 200
    text = html.unescape(page.content.decode())
    figures = dict(re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", text))
    assert figures == facts["figures"]
    assert figures["logins paid by callers, 24 h"] == "6"
    table = text[text.index('id="bill-budget-table"') :]
    cells = [
        re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row)
        for row in re.findall(r"<tr>(.*?)</tr>", table)
    ]
    header, *rows = cells
    assert [dict(zip(header, row, strict=True)) for row in rows] == facts["hours"]
    # The tables of the command show the same strings.
    out = io.StringIO()
    call_command("bill_status", "--budget", "--key", label, stdout=out)
    printed = out.getvalue()
    for what, value in facts["figures"].items():
        assert what in printed and value in printed
    assert "3,354" in printed and "3,000" in printed


def test_the_page_draws_stacked_bars_limit_lines_and_a_text_alternative(seeded, staff_client):
    page = staff_client.get(key_url(seeded[:12])).content.decode()
    start = page.index('class="bill-budget-chart"')
    svg = page[start : page.index("</svg>", start)]
    assert 'role="img"' in svg and "<title id=" in svg and "<desc id=" in svg
    assert svg.count('class="segment"') == 14  # one per non-zero kind and hour seeded
    assert svg.count('class="limit"') == 1  # the upkeep share is in reach, BILL's limit not
    assert "BILL&#x27;s limit: above this scale" in svg
    assert "<script" not in page[page.index("bill-budget") :]


def test_a_key_near_its_limit_shows_both_lines(half_past, bill_connection):
    connection = bill_connection()
    limits.count_call(connection.dev_key_fingerprint, limits.CALLER, n=15_000, at=half_past)
    svg = str(budget_svg(budget.key_budget(connection.dev_key_fingerprint)))
    assert svg.count('class="limit"') == 2 and "above this scale" not in svg


def test_the_connections_list_links_to_the_budget(seeded, staff_client):
    listing = staff_client.get(LIST_URL).content.decode()
    assert INDEX_URL in listing
    index = staff_client.get(INDEX_URL).content.decode()
    assert key_url(seeded[:12]) in index and seeded not in index  # never the whole fingerprint


def test_staff_only_with_the_view_permission(seeded, client, django_user_model):
    assert client.get(INDEX_URL).status_code == 302  # to the admin's login
    staff = django_user_model.objects.create_user("clerk", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.get(INDEX_URL).status_code == 403
    assert client.get(key_url(seeded[:12])).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_billconnection"))
    assert client.get(INDEX_URL).status_code == 200


def test_an_unknown_key_is_404(seeded, staff_client):
    assert staff_client.get(key_url("nothing-like")).status_code == 404


def test_the_page_and_command_show_no_secret(seeded, staff_client):
    row = BillConnection.objects.filter(dev_key_fingerprint=seeded).first()
    page = staff_client.get(key_url(seeded[:12])).content.decode()
    out = io.StringIO()
    call_command("bill_status", "--budget", stdout=out)
    for secret in (row.password, row.dev_key, row.session_id, seeded):
        assert secret not in page and secret not in out.getvalue()


@pytest.mark.parametrize(("top", "step"), [(10, 2), (1303 * 1.2, 500), (24_000, 5000), (7, 2)])
def test_ticks_are_round(top, step):
    assert nice_step(top) == step
