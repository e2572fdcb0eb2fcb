"""The page's "Trust this app for payments" step (server side) and the admin's trust views."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.urls import reverse

from bill_integration.conf import now
from bill_integration.constants import MFA_TRUST_LIFETIME
from bill_integration.models import BillConnection

pytestmark = pytest.mark.django_db

LIST_URL = reverse("admin:bill_integration_billconnection_changelist")
CANARY_ID = "canary-remember-me-K9qZ-do-not-leak-00000000000000000000000000000"


def mfa_config(html: str) -> dict:
    match = re.search(
        r'<script id="bill-mfa-config" type="application/json">(.*?)</script>', html, re.DOTALL
    )
    assert match, "the step carries its configuration as JSON"
    return json.loads(match.group(1))


def test_the_page_includes_the_step_with_its_urls_and_words(client, tenant, make_user):
    client.force_login(make_user(tenant, "owner"))
    html = client.get("/connect/bill/", {"tenant": str(tenant.pk)}).content.decode()
    assert 'id="bill-mfa"' in html and "bill_integration/mfa.js" in html
    assert "Trust this app for payments" in html and 'autocomplete="one-time-code"' in html
    config = mfa_config(html)
    assert config["phonesUrl"] == "/api/bill/connection/mfa/phones/"
    assert config["challengeUrl"] == "/api/bill/connection/mfa/challenge/"
    assert config["validateUrl"] == "/api/bill/connection/mfa/validate/"
    assert config["forgetUrl"] == "/api/bill/connection/mfa/forget/"
    assert config["tenant"] == str(tenant.pk)
    assert "add a mobile phone" in config["labels"]["no_phone"]
    assert 'name="csrfmiddlewaretoken"' in html.split('id="bill-mfa"')[1]


def test_a_hostile_tenant_query_never_reaches_the_steps_config(client, tenant, make_user):
    client.force_login(make_user(tenant, "owner"))
    html = client.get("/connect/bill/", {"tenant": "<script>x"}).content.decode()
    assert mfa_config(html)["tenant"] == ""


@pytest.fixture
def connections(make_connection, bill_app):
    """Four connections: trusted, expiring, expired and never trusted."""
    made = {}
    for name, left in (
        ("trusted", timedelta(days=20)),
        ("expiring", timedelta(days=2)),
        ("expired", timedelta(days=-1)),
        ("none", None),
    ):
        connection = make_connection()
        if left is not None:
            connection.mfa_remember_id = CANARY_ID
            connection.mfa_device = "Acme (bill_integration)"
            connection.mfa_trust_expires_at = now() + left
            connection.mfa_trusted_at = connection.mfa_trust_expires_at - MFA_TRUST_LIFETIME
            connection.save()
        made[name] = connection
    return made


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("expiring_or_expired", {"expiring", "expired"}),
        ("expiring", {"expiring"}),
        ("expired", {"expired"}),
        ("trusted", {"trusted"}),
        ("not_set_up", {"none"}),
    ],
)
def test_the_list_filters_trust_expiring_or_expired(admin_client, connections, choice, expected):
    response = admin_client.get(LIST_URL, {"trust": choice})
    assert response.status_code == 200
    shown = {obj.pk for obj in response.context["cl"].result_list}
    assert shown == {connections[name].pk for name in expected}
    assert "trust for payments" in response.content.decode()


def test_the_change_page_shows_the_trust_never_the_id(admin_client, connections, django_user_model):
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.set(
        Permission.objects.filter(codename__in=["view_billconnection", "view_auditevent"])
    )
    for client_user in (None, viewer):
        if client_user is not None:
            admin_client.force_login(client_user)
        for name, connection in connections.items():
            url = reverse("admin:bill_integration_billconnection_change", args=[connection.pk])
            html = admin_client.get(url).content.decode()
            assert "Trust for payments" in html
            assert CANARY_ID not in html
            if name == "expiring":
                assert "expiring" in html and "Acme (bill_integration)" in html
                assert "stored" in html
            if name == "none":
                assert "not set up" in html
        assert CANARY_ID not in admin_client.get(LIST_URL).content.decode()
    assert BillConnection.objects.get(pk=connections["trusted"].pk).mfa_remember_id == CANARY_ID


def test_the_demo_says_where_to_read_the_code(settings, tmp_path):
    from io import StringIO

    from django.core.management import call_command

    settings.STATE_DIR = tmp_path
    settings.EMULATOR_PORT = 8111
    out = StringIO()
    call_command("bill_demo_setup", stdout=out)
    text = out.getvalue()
    assert "Trust this app for payments" in text
    assert "http://127.0.0.1:8111/_emulator/mfa/code?username=ap@demo-co.example" in text
    accounts = json.loads((tmp_path / "bill-accounts.json").read_text())["accounts"]
    assert accounts[0]["mfa_phones"][0]["primary"] is True
