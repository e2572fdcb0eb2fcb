"""Every sign-in method's secrets are encrypted at rest, write-only, and never shown or logged.

Canary secrets per method go through a link, a refused relink, the status document, the admin's
change page, the audit trail, the log and the session's ``repr``; none may appear anywhere, and
the database holds each only as ciphertext.
"""

from __future__ import annotations

import json
import logging

import pytest
from django.db.models import TextField
from django.db.models.functions import Cast
from django.urls import reverse

from bill_integration import services
from bill_integration.auth_methods import METHODS, AuthMethod, rules
from bill_integration.models import AuditEvent, BillConnection
from tests.api.test_signin_api import KIND, body
from tests.linking_support import CONNECTION_URL

pytestmark = pytest.mark.django_db

CANARY = {
    "password": "canary-pw-K3vX8-do-not-leak",
    "dev_key": "01CANARYMETHODKEY901",
    "api_token": "canary-spend-Q7mW2-do-not-leak",
    "console_token": "canary-console-P4nJ6-do-not-leak",
    "client_secret": "canary-oauth-R2tB5-do-not-leak",
}


@pytest.mark.parametrize("method", list(METHODS))
def test_no_secret_of_any_method_is_shown_logged_or_stored_in_clear(
    method, tenant, owner_api, client, django_user_model, bill_emulator, bill_app, caplog
):
    caplog.set_level(logging.DEBUG)
    extra = {
        AuthMethod.CONSOLE_TOKEN: {"console_token": CANARY["console_token"]},
        AuthMethod.OAUTH_CLIENT: {"client_secret": CANARY["client_secret"]},
    }.get(method, {})
    account = bill_emulator.state.add_account(
        kind=KIND[method],
        password=CANARY["password"],
        dev_key=CANARY["dev_key"],
        api_token=CANARY["api_token"] if method == AuthMethod.SPEND_TOKEN else "",
        **extra,
    )
    pages = []
    linked = owner_api.put(CONNECTION_URL, body(method, account), format="json")
    assert linked.status_code == 201, linked.content
    pages.append(linked.content.decode())
    # A refused relink (a wrong secret) takes the error path with the canaries in the body.
    secret_field = {
        AuthMethod.USER_PASSWORD: "password",
        AuthMethod.SYNC_TOKEN: "sync_token",
        AuthMethod.CONSOLE_TOKEN: "console_token",
        AuthMethod.SPEND_TOKEN: "api_token",
        AuthMethod.OAUTH_CLIENT: "client_secret",
    }[method]
    wrong = {**body(method, account), secret_field: "not-the-secret-at-all"}
    pages.append(owner_api.put(CONNECTION_URL, wrong, format="json").content.decode())
    pages.append(owner_api.get(CONNECTION_URL).content.decode())
    connection = BillConnection.objects.get(tenant=tenant)
    client.force_login(django_user_model.objects.create_superuser("root", "r@example.com", "pw"))
    change = reverse("admin:bill_integration_billconnection_change", args=[connection.pk])
    pages.append(client.get(change).content.decode())
    pages.append(json.dumps(list(AuditEvent.objects.values("kind", "detail")), default=str))
    pages.append(caplog.text)
    pages.append(repr(services.get_session(tenant)))

    used = [CANARY[name] for name in CANARY if name != "dev_key" or rules(method).uses_dev_key]
    for text in pages:
        for canary in used:
            assert canary not in text

    columns = rules(method).secrets
    raw = (
        BillConnection.objects.filter(pk=connection.pk)
        .annotate(**{f"raw_{c}": Cast(c, output_field=TextField()) for c in columns})
        .values(*(f"raw_{c}" for c in columns))
        .get()
    )
    stored = [value for value in raw.values() if value]
    assert stored, "the method's secrets are stored"
    for value in stored:
        for canary in CANARY.values():
            assert canary not in value  # ciphertext only
