"""No admin page shows a secret to anyone: view-only staff, change-only staff or a superuser.

A connection is linked with canary secrets, relinked, refreshed and verified through the admin
(so the list, change page, history and audit trail all have content), then every page is
scanned for the password, developer key, API token and every session id BILL handed out.
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from bill_integration.models import AuditEvent, BillConnection

pytestmark = pytest.mark.django_db

CANARY_PASSWORD = "canary-admin-pw-K4vR8-do-not-leak"
CANARY_DEV_KEY = "01CANARYADMINKEY7Q01"
CANARY_TOKEN = "canary-admin-token-P2nX6-do-not-leak"

LIST_URL = reverse("admin:bill_integration_billconnection_changelist")
AUDIT_LIST_URL = reverse("admin:bill_integration_auditevent_changelist")


def _staff(django_user_model, name: str, *codenames: str):
    user = django_user_model.objects.create_user(name, password="pw", is_staff=True)
    permissions = Permission.objects.filter(
        content_type__app_label="bill_integration", codename__in=codenames
    )
    assert permissions.count() == len(codenames)
    user.user_permissions.set(permissions)
    return user


@pytest.fixture
def canary_connection(tenant, bill_emulator, bill_connection):
    account = bill_emulator.state.add_account(
        username="admin-canary@example.com",
        password=CANARY_PASSWORD,
        dev_key=CANARY_DEV_KEY,
        api_token=CANARY_TOKEN,
    )
    return bill_connection(tenant=tenant, account=account, link=True, api_token=CANARY_TOKEN)


@pytest.fixture
def run_tasks_at_once():
    from celery import current_app

    conf = current_app.conf
    saved = conf.task_always_eager
    conf.task_always_eager = True
    yield
    conf.task_always_eager = saved


def _pages(client, connection_pk) -> dict[str, str]:
    urls = {
        "list": LIST_URL,
        "change": reverse("admin:bill_integration_billconnection_change", args=[connection_pk]),
        "history": reverse("admin:bill_integration_billconnection_history", args=[connection_pk]),
        "audit list": AUDIT_LIST_URL,
    }
    for event in AuditEvent.objects.all():
        urls[f"audit {event.pk}"] = reverse(
            "admin:bill_integration_auditevent_change", args=[event.pk]
        )
    pages = {}
    for name, url in urls.items():
        response = client.get(url)
        assert response.status_code == 200, (name, response.status_code)
        pages[name] = response.content.decode()
    return pages


def test_no_admin_page_shows_a_secret_whatever_the_permission(
    client, django_user_model, canary_connection, run_tasks_at_once
):
    pk = canary_connection.pk
    sessions = {BillConnection.objects.get(pk=pk).session_id}
    viewer = _staff(django_user_model, "viewer", "view_billconnection", "view_auditevent")
    changer = _staff(django_user_model, "changer", "change_billconnection", "view_auditevent")
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    change_url = reverse("admin:bill_integration_billconnection_change", args=[pk])
    bodies: list[str] = []

    # The change-only user relinks (api_version only), saves unchanged, refreshes, verifies.
    client.force_login(changer)
    form = {
        "environment": canary_connection.environment,
        "api_version": "v2",
        "username": canary_connection.username,
        "organization_id": canary_connection.organization_id,
        "password": "",
        "dev_key": "",
        "api_token": "",
        "audit_events-TOTAL_FORMS": "0",
        "audit_events-INITIAL_FORMS": "0",
    }
    for data in (form, {**form, "_continue": "1"}):  # a relink, then an unchanged save
        bodies.append(client.post(change_url, data, follow=True).content.decode())
        sessions.add(BillConnection.objects.get(pk=pk).session_id)
    assert "No changes." in bodies[-1]
    for action in ("refresh_now", "verify_credentials"):
        response = client.post(LIST_URL, {"action": action, "_selected_action": [pk]}, follow=True)
        bodies.append(response.content.decode())
        sessions.add(BillConnection.objects.get(pk=pk).session_id)
    assert len(sessions) == 3  # link, relink, forced refresh: the flow really ran
    assert AuditEvent.objects.filter(kind="relinked").exists()

    canaries = [CANARY_PASSWORD, CANARY_DEV_KEY, CANARY_TOKEN, *sessions]
    for user in (viewer, changer, root):
        client.force_login(user)
        pages = _pages(client, pk)
        change = pages["change"]
        # What is shown instead: whether each secret is stored, and when they were set.
        for label in ("Password", "Developer key", "Spend &amp; Expense API token"):
            row = re.search(rf"<label>{label}:</label>\s*<div class=\"readonly\">([^<]*)<", change)
            assert row and row.group(1) == "stored", (user.username, label)
        assert "Credentials last set" in change
        assert "canary" not in re.sub(r"admin-canary@example\.com", "", change)
        editable = 'type="password" name="password"' in change
        assert editable == (user is not viewer), user.username
        assert "Relinked" in pages["history"] or "Changed" in pages["history"]
        for name, html in pages.items():
            for canary in canaries:
                assert canary not in html, (user.username, name)
    for body in bodies:
        for canary in canaries:
            assert canary not in body


@pytest.mark.parametrize(
    "codenames",
    [
        ("view_billconnection",),
        ("change_billconnection",),
        ("view_billconnection", "change_billconnection"),
    ],
)
def test_the_change_page_never_shows_a_stored_secret(
    client, django_user_model, canary_connection, codenames
):
    client.force_login(_staff(django_user_model, "staff", *codenames))
    change = client.get(
        reverse("admin:bill_integration_billconnection_change", args=[canary_connection.pk])
    )
    assert change.status_code == 200
    html = change.content.decode()
    session_id = BillConnection.objects.get(pk=canary_connection.pk).session_id
    for canary in (CANARY_PASSWORD, CANARY_DEV_KEY, CANARY_TOKEN, session_id):
        assert canary not in html


def test_a_missing_api_token_shows_as_not_stored(client, django_user_model, tenant, linked):
    viewer = _staff(django_user_model, "viewer", "view_billconnection")
    client.force_login(viewer)
    change = client.get(
        reverse("admin:bill_integration_billconnection_change", args=[linked.pk])
    ).content.decode()
    token = re.search(
        r"<label>Spend &amp; Expense API token:</label>\s*<div class=\"readonly\">([^<]*)<", change
    )
    assert token.group(1) == "not stored"
    assert BillConnection.objects.get(pk=linked.pk).password not in change


@pytest.mark.parametrize(
    ("field", "value"),
    [("api_token", "tok\u200ben"), ("dev_key", "key\u201c1"), ("password", "pass\u200bword")],
)
def test_the_admin_form_refuses_invisible_or_unsendable_characters_before_bill(
    field, value, tenant, bill_emulator, bill_account, bill_environment
):
    from bill_integration.admin_forms import BillConnectionForm

    data = {
        "tenant": tenant.pk,
        "environment": bill_environment,
        "api_version": "v3",
        "username": bill_account.username,
        "organization_id": bill_account.organization_id,
        "password": bill_account.password,
        "dev_key": bill_account.dev_key,
        "api_token": "",
        field: value,
    }
    form = BillConnectionForm(data=data)
    assert not form.is_valid()
    assert field in form.errors
    assert bill_emulator.state.counters(organization_id=bill_account.organization_id)["logins"] == 0
