"""With canary secrets, no API response, admin page, linking page, audit record or log line
captured during a full linking session contains a secret.

The flow covers success and every kind of failure (bad input echoing canaries in other fields,
characters BILL cannot receive, hostile bodies, BILL refusing, BILL down, conflicts of state,
throttling), so the error paths are checked too.
"""

from __future__ import annotations

import json
import logging

import pytest
from django.urls import reverse

from bill_integration.models import AuditEvent, BillConnection
from tests.linking_support import CONNECTION_URL, REFRESH_URL, api_as

pytestmark = pytest.mark.django_db

CANARY_PASSWORD = "canary-pw-Z1xQ9-do-not-leak"
CANARY_DEV_KEY = "01CANARYDEVKEYZZ9Q01"
CANARY_TOKEN = "canary-token-Q7mW2-do-not-leak"
CANARIES = [CANARY_PASSWORD, CANARY_DEV_KEY, CANARY_TOKEN]


@pytest.fixture
def canary_account(bill_emulator):
    return bill_emulator.state.add_account(
        username="canary@example.com",
        password=CANARY_PASSWORD,
        dev_key=CANARY_DEV_KEY,
        api_token=CANARY_TOKEN,
    )


def test_no_canary_anywhere(
    client,
    tenant,
    make_user,
    django_user_model,
    canary_account,
    bill_emulator,
    bill_environment,
    caplog,
    bill_settings,
):
    caplog.set_level(logging.DEBUG)
    bill_settings(LINK_THROTTLE_RATES={"tenant": "100/hour", "user": None})
    bodies: list[str] = []
    sessions: set[str] = set()

    def note_session():
        stored = BillConnection.objects.filter(tenant=tenant).first()
        if stored is not None and stored.session_id:
            sessions.add(stored.session_id)

    owner = make_user(tenant, "owner")
    member = make_user(tenant, "member")
    api = api_as(owner)
    good = {
        "username": canary_account.username,
        "password": CANARY_PASSWORD,
        "organization_id": canary_account.organization_id,
        "dev_key": CANARY_DEV_KEY,
        "api_token": CANARY_TOKEN,
        "environment": "emulator",
    }

    def put(data, as_=api):
        response = as_.put(CONNECTION_URL, data=json.dumps(data), content_type="application/json")
        bodies.append(response.content.decode())
        return response

    # Bad input of every kind, with canaries in the fields.
    put({**good, "password": CANARY_PASSWORD * 500})
    put({**good, "dev_key": CANARY_DEV_KEY + "\x00"})
    put({**good, "api_token": [CANARY_TOKEN]})
    put({**good, "environment": CANARY_PASSWORD})
    put({**good, "api_version": CANARY_TOKEN})
    put({**good, "organization_id": CANARY_DEV_KEY})
    put({**good, "username": CANARY_PASSWORD})
    put({**good, "password": CANARY_PASSWORD + "-wrong"})
    put({**good, "api_token": CANARY_TOKEN + "-wrong"})
    put({**good, "dev_key": "01NOTTHEKEYZZZZZZZ01"})
    bill_emulator.state.set_fault("status", status=503)
    put(good)
    bill_emulator.state.clear_faults()
    bill_emulator.state.set_fault("error", code="BDC_1322", count=1)
    put(good)
    bill_emulator.state.clear_faults()
    raw = api.put(
        CONNECTION_URL, data=f'{{"password": "{CANARY_PASSWORD}"', content_type="application/json"
    )
    bodies.append(raw.content.decode())
    # Characters BILL cannot receive, next to the canaries: refused naming the character only.
    put({**good, "api_token": CANARY_TOKEN + "\u200b"})
    put({**good, "dev_key": CANARY_DEV_KEY + "\u2019"})
    put({**good, "password": "\ufeff" + CANARY_PASSWORD})
    # Hostile bodies carrying canaries: too deep, too large, not an object.
    for hostile in (
        f'{{"password": "{CANARY_PASSWORD}", "x": ' + "[" * 100_000,
        json.dumps({**good, "padding": "x" * (3 * 1024 * 1024)}),
        json.dumps([CANARY_PASSWORD, CANARY_DEV_KEY, CANARY_TOKEN]),
    ):
        response = api.put(CONNECTION_URL, data=hostile, content_type="application/json")
        assert response.status_code in (400, 413), response.content[:200]
        bodies.append(response.content.decode())
    put(good, as_=api_as(member))

    # Success, reads, refresh, relink.
    assert put(good).status_code == 201
    note_session()
    for client_ in (api, api_as(member)):
        bodies.append(client_.get(CONNECTION_URL).content.decode())
    bodies.append(api.post(REFRESH_URL).content.decode())
    note_session()
    assert put(good).status_code == 200
    note_session()
    put({**good, "password": "wrong-now"})
    bodies.append(api.get(CONNECTION_URL).content.decode())

    # The linking page.
    client.force_login(owner)
    bodies.append(client.get("/connect/bill/").content.decode())

    # The admin: list, change, failed change, actions, audit trail.
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(root)
    connection = BillConnection.objects.without_secrets().get(tenant=tenant)
    list_url = reverse("admin:bill_integration_billconnection_changelist")
    change_url = reverse("admin:bill_integration_billconnection_change", args=[connection.pk])
    bodies.append(client.get(list_url).content.decode())
    bodies.append(client.get(change_url).content.decode())
    bodies.append(client.get(reverse("admin:bill_integration_billconnection_add")).content.decode())
    failed = client.post(
        change_url,
        {
            "environment": "emulator",
            "api_version": "v3",
            "username": canary_account.username,
            "organization_id": canary_account.organization_id,
            "password": CANARY_PASSWORD + "x",
            "dev_key": "",
            "api_token": "",
            "audit_events-TOTAL_FORMS": "0",
            "audit_events-INITIAL_FORMS": "0",
        },
    )
    bodies.append(failed.content.decode())
    # The actions queue tasks: run them at once, as a worker would, so their logs are checked.
    from celery import current_app

    eager = current_app.conf.task_always_eager
    current_app.conf.task_always_eager = True
    try:
        for action in ("refresh_now", "verify_credentials"):
            response = client.post(
                list_url, {"action": action, "_selected_action": [connection.pk]}, follow=True
            )
            bodies.append(response.content.decode())
            note_session()
    finally:
        current_app.conf.task_always_eager = eager
    assert len(sessions) >= 4  # the queued forced refresh ran
    bodies.append(
        client.get(reverse("admin:bill_integration_auditevent_changelist")).content.decode()
    )
    for event in AuditEvent.objects.all():
        bodies.append(
            client.get(
                reverse("admin:bill_integration_auditevent_change", args=[event.pk])
            ).content.decode()
        )
        bodies.append(json.dumps(event.detail))
        bodies.append(repr(event) + str(event))
    bodies.append(repr(BillConnection.objects.get(tenant=tenant)))
    bodies.append(str(BillConnection.objects.get(tenant=tenant)))
    response = client.post(
        list_url, {"action": "unlink_selected", "_selected_action": [connection.pk]}, follow=True
    )
    bodies.append(response.content.decode())
    bodies.append(api.delete(CONNECTION_URL).content.decode())

    # Sanity: the flow really ran (so the absence of canaries means something).
    assert len(sessions) >= 3
    assert AuditEvent.objects.filter(kind="link_failed").count() >= 5
    assert any("invalid_credentials" in body for body in bodies)

    logs = "\n".join(record.getMessage() + " " + repr(record.__dict__) for record in caplog.records)
    assert logs, "nothing was logged: the log half of this test would be vacuous"
    haystacks = {"responses and pages": "\n".join(bodies), "logs": logs}
    for where, text in haystacks.items():
        for secret in [*CANARIES, *sessions]:
            assert secret not in text, f"a secret leaked into {where}"
