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
    assert config["labels"]["active"] == "Connected"
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


# --- what the guided page says ---------------------------------------------------------------


def test_each_field_says_where_to_find_it_in_bill(client, tenant, make_user):
    client.force_login(make_user(tenant, "owner"))
    html = client.get("/connect/bill/").content.decode()
    assert html.count("Settings → Sync &amp; Integrations → Manage Developer Keys") >= 3
    assert "It starts with 008." in html
    assert "Settings → API tokens → Generate new token" in html
    assert 'href="https://developer.bill.com/docs/sign-up-process"' in html
    assert 'rel="noopener noreferrer"' in html
    for field in ("environment", "username", "password", "organization-id", "dev-key", "api-token"):
        assert f'id="bill-{field}-help"' in html
        assert f'aria-describedby="bill-{field}-help"' in html
        assert f'id="bill-{field}-error"' in html


@pytest.mark.parametrize(
    "name,label",
    [
        ("sandbox", "BILL sandbox (test)"),
        ("production", "BILL production"),
        ("emulator", "Local BILL emulator"),
        ("eu_staging", "Eu Staging"),
        ("partner-prod", "Partner Prod"),
    ],
)
def test_environments_have_human_names(name, label):
    from bill_integration.views import environment_label

    assert environment_label(name) == label


def test_the_form_and_the_script_name_environments_alike(client, tenant, make_user, bill_settings):
    bill_settings(
        ENVIRONMENTS={
            **bill_settings.current().get("ENVIRONMENTS", {}),
            "eu_staging": {"v3": "https://eu.invalid/connect", "v2": "https://eu.invalid/v2"},
        },
    )
    client.force_login(make_user(tenant, "owner"))
    html = client.get("/connect/bill/").content.decode()
    assert '<option value="sandbox">BILL sandbox (test)</option>' in html
    assert '<option value="eu_staging">Eu Staging</option>' in html
    assert page_config(html)["environments"]["production"] == "BILL production"


def test_every_word_of_the_script_comes_from_the_template():
    """connect.js shows no text of its own: its labels come translated from the view."""
    from django.contrib.staticfiles import finders

    from bill_integration.views import PAGE_LABELS

    script = open(finders.find("bill_integration/connect.js"), encoding="utf-8").read()
    used = set(re.findall(r"labels\.(\w+)", script))
    used |= {f"error_{kind}" for kind in ("unreachable", "rate_limited", "mfa")}
    used |= {f"required_{name}" for name in ("username", "password", "dev_key")}
    assert used <= set(PAGE_LABELS)
    # String literals long enough to be sentences would be untranslated words.
    code = re.sub(r"^\s*(//|\*|/\*).*$", "", script, flags=re.MULTILINE)
    technical = {"use strict", "#bill-stepper [data-step]", "bill-badge is-"}
    literals = re.findall(r'"([^"\\]*)"', code)
    sentences = [s for s in literals if " " in s.strip() and "'" not in s and s not in technical]
    assert sentences == []


def test_labels_are_translatable():
    from django.utils.functional import Promise

    from bill_integration.views import ENVIRONMENT_LABELS, FIELD_HELP, PAGE_LABELS

    for texts in (PAGE_LABELS, FIELD_HELP, ENVIRONMENT_LABELS):
        assert all(isinstance(text, Promise) for text in texts.values())


def test_the_page_polls_and_redraws_on_a_schedule(client, tenant, make_user):
    client.force_login(make_user(tenant, "owner"))
    config = page_config(client.get("/connect/bill/").content.decode())
    assert 15 <= config["pollSeconds"] <= 30
    assert 1 <= config["tickSeconds"] <= 10
    assert config["language"] in ("en", "en-us")


def test_no_favicon_request(client, tenant, make_user):
    """Both the app's base template and the example project's carry an inline SVG icon."""
    from django.template.loader import render_to_string

    client.force_login(make_user(tenant, "owner"))
    html = client.get("/connect/bill/").content.decode()
    assert '<link rel="icon" type="image/svg+xml" href="data:image/svg+xml,' in html
    assert "Example SaaS" in html  # the project's layout
    bare = render_to_string("bill_integration/base.html")
    assert '<link rel="icon" type="image/svg+xml" href="data:image/svg+xml,' in bare


def test_the_mfa_step_has_its_place():
    """Another step (MFA trust for payments) is added inside the linked state, with its script."""
    from django.template.loader import get_template

    source = get_template("bill_integration/connect.html").template.source
    linked = source.split('id="bill-linked"', 1)[1].split("</div>\n\n  <form", 1)[0]
    assert "{# MFA step #}" in linked
    assert "{# MFA script" in source.split("{% block content %}")[0]


def test_a_user_of_several_organizations_is_offered_a_choice(client, tenant, make_user):
    from project.tenants.models import Membership, Tenant

    other = Tenant.objects.create(name="Other Co", slug="other-co")
    user = make_user(tenant, "owner")
    Membership.objects.create(user=user, tenant=other, role="member")
    client.force_login(user)
    html = client.get("/connect/bill/").content.decode()
    chooser = html.split('id="bill-no-access"', 1)[1].split("</section>", 1)[0]
    assert f'<a href="?tenant={tenant.pk}">Acme</a>' in chooser
    assert f'<a href="?tenant={other.pk}">Other Co</a>' in chooser
    assert "?tenant=&lt;" not in html and "?tenant=<" not in html


def test_the_apps_own_chooser_names_no_url():
    from django.template.loader import get_template
    from django.test import override_settings

    # Without the example project's override, the app's template is used.
    with override_settings(
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
    ):
        text = get_template("bill_integration/_choose_organization.html").render({})
    assert "organization menu" in text and "?tenant" not in text


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


def test_a_projects_base_template_wraps_the_page(client, tenant, make_user, settings, tmp_path):
    """The README's example: override bill_integration/base.html, add to extra_head."""
    folder = tmp_path / "bill_integration"
    folder.mkdir()
    (folder / "base.html").write_text(
        '{% extends "base.html" %}\n'
        '{% block extra_head %}{{ block.super }}<link rel="stylesheet" href="/static/site.css">'
        "{% endblock %}\n"
    )
    settings.TEMPLATES = [
        {**settings.TEMPLATES[0], "DIRS": [tmp_path, *settings.TEMPLATES[0]["DIRS"]]}
    ]
    client.force_login(make_user(tenant, "owner"))
    html = client.get("/connect/bill/").content.decode()
    assert '<link rel="stylesheet" href="/static/site.css">' in html
    assert "bill_integration/connect.css" in html and "Example SaaS" in html
