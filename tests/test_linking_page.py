"""The "Connect your BILL account" page and the example project's sign-in page (test client)."""

from __future__ import annotations

import json
import re
from datetime import datetime

import pytest

from tests.linking_support import CONNECTION_URL

pytestmark = pytest.mark.django_db


def page_config(html: str) -> dict:
    match = re.search(
        r'<script id="bill-connect-config" type="application/json">(.*?)</script>', html, re.DOTALL
    )
    assert match, "the page carries its configuration as JSON"
    return json.loads(match.group(1))


def test_anonymous_is_sent_to_sign_in(client):
    response = client.get("/connect/bill/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/connect/bill/")
    login = client.get(response["Location"])
    assert login.status_code == 200 and b'name="password"' in login.content


def test_root_redirects_to_the_page(client):
    assert client.get("/")["Location"] == "/connect/bill/"


def test_page_renders_the_form_with_the_default_environment(client, tenant, make_user):
    client.force_login(make_user(tenant, "owner"))
    response = client.get("/connect/bill/")
    html = response.content.decode()
    assert response.status_code == 200
    for name in ("username", "password", "organization_id", "dev_key", "api_token", "environment"):
        assert f'name="{name}"' in html
    assert '<option value="emulator" selected>' in html
    assert 'type="password"' in html
    assert "starts with 008" in html  # one line of help per field
    config = page_config(html)
    assert config["connectionUrl"] == "/api/bill/connection/"
    assert config["refreshUrl"] == "/api/bill/connection/refresh/"
    assert config["tenant"] == ""
    assert config["labels"]["active"] == "Linked"
    assert "bill_integration/connect.js" in html and "bill_integration/connect.css" in html
    assert response.cookies.get("csrftoken")


@pytest.mark.parametrize(
    "given,sent",
    [("7", "7"), ("abc-1_2", "abc-1_2"), ("<script>", ""), ("1 2", ""), ("x" * 65, "")],
)
def test_tenant_query_only_becomes_a_safe_header_value(client, tenant, make_user, given, sent):
    client.force_login(make_user(tenant, "owner"))
    html = client.get("/connect/bill/", {"tenant": given}).content.decode()
    assert page_config(html)["tenant"] == sent
    assert "<script>" not in html.split('id="bill-connect-config"')[1].split("</script>")[0]


def test_static_files_exist():
    from django.contrib.staticfiles import finders

    for name in ("bill_integration/connect.js", "bill_integration/connect.css"):
        assert finders.find(name), name


# --- the status document's additions for the page ---------------------------------------------


def test_status_carries_the_server_time(owner_api, linked, bill_clock):
    from bill_integration.conf import now

    bill_clock.advance(3600)
    body = owner_api.get(CONNECTION_URL).json()
    served = datetime.fromisoformat(body["server_time"].replace("Z", "+00:00"))
    assert abs((served - now()).total_seconds()) < 5  # the app's clock, not the wall clock
    assert body["session_age_seconds"] >= 3600


def test_status_without_a_connection_carries_the_server_time(owner_api, tenant):
    body = owner_api.get(CONNECTION_URL).json()
    assert body["status"] == "not_linked" and body["server_time"]


@pytest.mark.parametrize(
    "code,kind,timed",
    [
        ("bill_unavailable", "unreachable", True),
        ("BDC_1001", "unreachable", True),
        ("BDC_1144", "rate_limited", True),
        ("login_budget_exhausted", "login_budget", True),
        ("BDC_1101", "credentials", True),
        ("invalid_dev_key", "credentials", True),
        ("invalid_api_token", "api_token", True),
        ("mfa_required", "mfa", True),
        ("bill_unexpected_response", "unexpected", True),
        ("decryption_failed", "unreadable", False),
        ("something_new", "other", False),
    ],
)
def test_last_error_says_its_kind_and_when(owner_api, linked, code, kind, timed):
    from bill_integration.models import BillConnection

    BillConnection.objects.filter(pk=linked.pk).update(
        status="degraded", last_error_code=code, last_error_message="x"
    )
    stored = BillConnection.objects.without_secrets().get(pk=linked.pk)
    error = owner_api.get(CONNECTION_URL).json()["last_error"]
    assert error["code"] == code and error["kind"] == kind
    if timed:
        at = datetime.fromisoformat(error["at"].replace("Z", "+00:00"))
        assert at == stored.last_refresh_at
    else:
        assert error["at"] is None


def test_an_outage_is_recorded_with_its_time(owner_api, linked, bill_emulator):
    from bill_integration import services
    from bill_integration.exceptions import TransientError

    bill_emulator.state.set_fault("status", status=503)
    with pytest.raises(TransientError):
        services.refresh(linked.tenant)
    body = owner_api.get(CONNECTION_URL).json()
    assert body["status"] == "degraded"
    assert body["last_error"]["kind"] == "unreachable"
    assert body["last_error"]["at"] == body["last_refresh_at"]
    assert body["next_attempt_at"] > body["last_error"]["at"]
