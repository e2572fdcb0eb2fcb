"""The "Connect your BILL account" page and the example project's sign-in page (test client)."""

from __future__ import annotations

import json
import re

import pytest

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
