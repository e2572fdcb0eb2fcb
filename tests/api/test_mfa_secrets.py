"""Canary scan: BILL's remember-me id and the texted code never leave the service layer.

A whole MFA session (wrong codes, a good one, the sweep's renewals and notices, forget,
re-trust, a payment, a crash mid-validate) is run through the REST API; then every response,
page, admin page, audit record, queued task's arguments, the error report of the crash, and
every log line are searched for each remember-me id BILL handed out and each code it texted.
"""

from __future__ import annotations

import json
import logging
import re

import pytest
from django.urls import reverse

from bill_integration import tasks
from bill_integration.models import AuditEvent, BillConnection
from bill_integration.services import trust
from tests.linking_support import CONNECTION_URL, credentials
from tests.mfa_support import code_for, pay, wrong

pytestmark = pytest.mark.django_db

DAY = 24 * 3600


def code_pattern(code: str) -> re.Pattern[str]:
    """The code as six digits or 123-456 / 123 456, not inside a longer run of digits, nor as
    the microseconds of a timestamp (``.908172``), which are not the code."""
    forms = "|".join(
        re.escape(f) for f in (code, f"{code[:3]}-{code[3:]}", f"{code[:3]} {code[3:]}")
    )
    return re.compile(rf"(?<![.\d])(?:{forms})(?!\d)")


def test_no_remember_me_id_or_code_anywhere(
    client,
    tenant,
    owner,
    owner_api,
    django_user_model,
    bill_app,
    bill_emulator,
    bill_account,
    caplog,
    settings,
    bill_settings,
    monkeypatch,
):
    caplog.set_level(logging.DEBUG)
    bill_settings(MFA_THROTTLE_RATES={"tenant": None, "user": None})
    api = owner_api
    bodies: list[str] = []
    codes: set[str] = set()
    ids: set[str] = set()
    queued: list[str] = []

    def call(method, url, body=None):
        response = getattr(api, method)(
            url,
            data=json.dumps(body) if body is not None else None,
            content_type="application/json",
        )
        bodies.append(response.content.decode())
        return response

    def note_id():
        stored = BillConnection.objects.get(tenant=tenant).mfa_remember_id
        if stored:
            ids.add(stored)

    def challenge():
        challenge_id = call("post", CONNECTION_URL + "mfa/challenge/", {}).json()["challenge_id"]
        code = code_for(bill_emulator, bill_account)
        codes.add(code)
        return challenge_id, code

    for task in (tasks.refresh_session, tasks.force_refresh_session, tasks.verify_connection):
        monkeypatch.setattr(
            task,
            "apply_async",
            lambda args=(), kwargs=None, **opts: queued.append(repr((args, kwargs, opts))),
        )

    assert call("put", CONNECTION_URL, credentials(bill_account)).status_code == 201
    call("get", CONNECTION_URL + "mfa/phones/")
    challenge_id, code = challenge()
    for bad in (wrong(code), f"{wrong(code)[:3]}-{wrong(code)[3:]}"):
        call("post", CONNECTION_URL + "mfa/validate/", {"challenge_id": challenge_id, "code": bad})
    assert (
        call(
            "post", CONNECTION_URL + "mfa/validate/", {"challenge_id": challenge_id, "code": code}
        ).status_code
        == 200
    )
    note_id()
    pay(tenant)
    call("get", CONNECTION_URL)

    # The sweep renews the trusted session (sending the id), then warns and expires.
    from bill_integration.services import refresh_due

    for _ in range(31 * 4):
        bill_app.advance(6 * 3600)
        refresh_due(
            dispatch=lambda connection_id: tasks.enqueue(tasks.refresh_session, connection_id)
        )
        refresh_due()
    call("get", CONNECTION_URL)

    # Re-trust, a crash right after BILL answered (the error report), forget, trust again.
    challenge_id, code = challenge()
    with monkeypatch.context() as patched:
        patched.setattr(
            trust, "establish", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("x"))
        )
        settings.DEBUG = True
        api.raise_request_exception = False
        crashed = call(
            "post", CONNECTION_URL + "mfa/validate/", {"challenge_id": challenge_id, "code": code}
        )
        settings.DEBUG = False
    assert crashed.status_code == 500 and "Traceback" in crashed.content.decode()
    challenge_id, code = challenge()
    call("post", CONNECTION_URL + "mfa/validate/", {"challenge_id": challenge_id, "code": code})
    note_id()
    call("post", CONNECTION_URL + "mfa/forget/", {})
    challenge_id, code = challenge()
    call("post", CONNECTION_URL + "mfa/validate/", {"challenge_id": challenge_id, "code": code})
    note_id()

    # Pages: the Connect page, the admin (list, change, filter, audit trail, actions).
    client.force_login(owner)
    bodies.append(client.get("/connect/bill/").content.decode())
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(root)
    connection = BillConnection.objects.without_secrets().get(tenant=tenant)
    list_url = reverse("admin:bill_integration_billconnection_changelist")
    for url in (
        list_url,
        list_url + "?trust=expiring_or_expired",
        reverse("admin:bill_integration_billconnection_change", args=[connection.pk]),
        reverse("admin:bill_integration_auditevent_changelist"),
    ):
        bodies.append(client.get(url).content.decode())
    for action in ("refresh_now", "verify_credentials"):
        bodies.append(
            client.post(
                list_url, {"action": action, "_selected_action": [connection.pk]}, follow=True
            ).content.decode()
        )
    for event in AuditEvent.objects.all():
        bodies.append(
            client.get(
                reverse("admin:bill_integration_auditevent_change", args=[event.pk])
            ).content.decode()
        )
        bodies.append(json.dumps(event.detail) + repr(event) + str(event))
    stored = BillConnection.objects.get(tenant=tenant)
    bodies.append(repr(stored) + str(stored))

    # Sanity: the flow really ran, so the absence of canaries means something.
    assert len(ids) >= 3 and len(codes) >= 4
    assert AuditEvent.objects.filter(kind="mfa_expired").exists()
    assert AuditEvent.objects.filter(kind="mfa_failed").count() >= 2
    assert any('"state":"trusted"' in body.replace(" ", "") for body in bodies)
    assert len(queued) >= 3  # the sweep's and the admin's tasks: ids only
    assert all(re.fullmatch(r"\(\(\d+,\), None, \{.*\}\)", q) for q in queued), queued[:3]
    logins = bill_emulator.state.login_records(organization_id=bill_account.organization_id)
    assert any(record["remember_me_id"] in ids for record in logins)  # ids really were used

    logs = "\n".join(record.getMessage() + " " + repr(record.__dict__) for record in caplog.records)
    assert logs
    haystacks = {
        "responses and pages": "\n".join(bodies),
        "task messages": "\n".join(queued),
        "logs": logs,
    }
    for where, text in haystacks.items():
        for remember_me in ids:
            assert remember_me not in text, f"a remember-me id leaked into {where}"
        for code in codes:
            assert not code_pattern(code).search(text), f"a texted code leaked into {where}"
