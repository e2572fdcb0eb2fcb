"""``/api/bill/connection/mfa/...``: trusting the app for payments through the REST API.

Against the emulator over HTTP: a payment refused with BDC_1361, the trust flow, the payment
accepted; 31 days of sweeps (warning once at 25 days, expiry once at 30, a clear "trust
expired" error, re-trust); BILL's refusals as the API answers them; input, access, throttles.
"""

from __future__ import annotations

import json

import pytest

from bill_integration.exceptions import MfaTrustExpired, UntrustedSession
from bill_integration.models import AuditEvent, BillConnection
from bill_integration.services import refresh_due
from tests.linking_support import CONNECTION_URL, api_as, credentials
from tests.mfa_support import code_for, pay, wrong

pytestmark = pytest.mark.django_db

PHONES_URL = CONNECTION_URL + "mfa/phones/"
CHALLENGE_URL = CONNECTION_URL + "mfa/challenge/"
VALIDATE_URL = CONNECTION_URL + "mfa/validate/"
FORGET_URL = CONNECTION_URL + "mfa/forget/"
HOUR = 3600
DAY = 24 * HOUR


def post(api, url, body=None):
    return api.post(url, data=json.dumps(body or {}), content_type="application/json")


def trust_via_api(api, emulator, account) -> dict:
    """The page's three steps: phones, challenge, validate. Returns the status document."""
    phones = api.get(PHONES_URL)
    assert phones.status_code == 200, phones.content
    challenge = post(api, CHALLENGE_URL, {"use_backup": False})
    assert challenge.status_code == 200, challenge.content
    code = code_for(emulator, account)
    body = {"challenge_id": challenge.json()["challenge_id"], "code": f"{code[:3]} {code[3:]}"}
    validated = post(api, VALIDATE_URL, body)
    assert validated.status_code == 200, validated.content
    return validated.json()


@pytest.fixture
def linked_api(bill_app, bill_emulator, bill_account, tenant, owner_api):
    response = owner_api.put(
        CONNECTION_URL, data=json.dumps(credentials(bill_account)), content_type="application/json"
    )
    assert response.status_code == 201
    return owner_api


def test_link_payment_refused_trust_through_the_api_then_payment_accepted(
    linked_api, bill_emulator, bill_account, tenant, mfa_sent
):
    with pytest.raises(UntrustedSession) as refused:
        pay(tenant)
    assert (refused.value.bill_code, refused.value.http_status) == ("BDC_1361", 403)
    status = linked_api.get(CONNECTION_URL).json()
    assert status["status"] == "active" and status["mfa"]["state"] == "needed"
    assert "Trust this app for payments" in status["mfa"]["message"]

    phones = linked_api.get(PHONES_URL).json()
    last4 = bill_account.mfa_phones[0]["number"][-4:]
    assert phones == {
        "listed": True,
        "phones": [
            {"type": "MOBILE", "last4digits": last4, "primary": True, "masked": f"•••• {last4}"}
        ],
    }
    status = trust_via_api(linked_api, bill_emulator, bill_account)
    trust = status["mfa"]
    assert trust["state"] == "trusted" and trust["session_trusted"] is True
    assert trust["message"].startswith("Trusted for payments until ")
    assert trust["trusted_until"] and "remember" not in json.dumps(status).lower()
    assert pay(tenant)["status"] == "SCHEDULED"
    assert mfa_sent["connection_mfa_trusted"] == 1
    assert mfa_sent.calls[-1][1]["actor"].is_authenticated


def test_thirty_one_days_of_sweeps_warn_once_at_25_expire_once_at_30_then_re_trust(
    linked_api, bill_app, bill_emulator, bill_account, tenant, mfa_sent, bill_settings
):
    # A tenant kept warm (pinned): the sweep logs in again each time the session idled out.
    bill_settings(WARMTH="always")
    trust_via_api(linked_api, bill_emulator, bill_account)
    connection = BillConnection.objects.get(tenant=tenant)
    remember_me = connection.mfa_remember_id
    step = 6 * HOUR
    first_seen: dict[str, float] = {}
    elapsed = 0
    while elapsed < 31 * DAY:
        bill_app.advance(step)
        elapsed += step
        refresh_due()  # the sweep, in-process: the session idled out, so it logs in again
        for name in ("connection_mfa_expiring", "connection_mfa_expired"):
            if mfa_sent[name] and name not in first_seen:
                first_seen[name] = elapsed / DAY
    assert mfa_sent["connection_mfa_expiring"] == 1 and mfa_sent["connection_mfa_expired"] == 1
    assert 25 <= first_seen["connection_mfa_expiring"] < 25.25
    assert 30 <= first_seen["connection_mfa_expired"] < 30.25

    logins = bill_emulator.state.login_records(organization_id=bill_account.organization_id)
    renewals = logins[1:]  # after the link
    assert len(renewals) >= 120  # the sweep renewed the session every six hours
    before_expiry = [r for r in renewals if r["remember_me_id"]]
    assert len(before_expiry) >= 115
    assert all(r["remember_me_id"] == remember_me and r["trusted"] for r in before_expiry)
    assert not renewals[-1]["remember_me_id"] and not renewals[-1]["trusted"]

    with pytest.raises(MfaTrustExpired) as refused:
        pay(tenant)
    assert "Trust for payments expired" in refused.value.for_customer()
    status = linked_api.get(CONNECTION_URL).json()
    assert status["mfa"]["state"] == "expired" and "expired" in status["mfa"]["message"]
    kinds = AuditEvent.objects.filter(kind__in=("mfa_expiring", "mfa_expired"))
    assert sorted(kinds.values_list("kind", flat=True)) == ["mfa_expired", "mfa_expiring"]

    status = trust_via_api(linked_api, bill_emulator, bill_account)  # re-trust
    assert status["mfa"]["state"] == "trusted"
    assert pay(tenant)["status"] == "SCHEDULED"


def test_bills_refusals_as_the_api_answers_them(
    linked_api, bill_emulator, bill_account, tenant, settings
):
    before = BillConnection.objects.filter(tenant=tenant).values().get()
    challenge_id = post(linked_api, CHALLENGE_URL).json()["challenge_id"]
    code = code_for(bill_emulator, bill_account)
    body = {"challenge_id": challenge_id, "code": wrong(code)}
    for _ in range(2):
        refused = post(linked_api, VALIDATE_URL, body)
        assert (refused.status_code, refused.json()["code"]) == (400, "mfa_code_invalid")
        assert "wrong or has expired" in refused.json()["message"]
    locked = post(linked_api, VALIDATE_URL, body)
    assert (locked.status_code, locked.json()["code"]) == (429, "mfa_too_many_attempts")
    assert 540 < int(locked["Retry-After"]) <= 600
    assert "Ask for a new code in about 10 minutes" in locked.json()["message"]
    assert BillConnection.objects.filter(tenant=tenant).values().get() == before

    bill_emulator.state.set_mfa_phones(bill_account.username, [])
    bill_emulator.state.advance(600)
    no_phone = post(linked_api, CHALLENGE_URL)
    assert (no_phone.status_code, no_phone.json()["code"]) == (409, "mfa_no_phone")
    assert "add a mobile phone" in no_phone.json()["message"]
    assert BillConnection.objects.filter(tenant=tenant).values().get() == before


@pytest.mark.parametrize(
    ("url", "body", "field"),
    [
        (VALIDATE_URL, {"challenge_id": "!abc", "code": "12345"}, "code"),
        (VALIDATE_URL, {"challenge_id": "!abc", "code": 123456}, "code"),
        (VALIDATE_URL, {"challenge_id": "!abc", "code": "12a456"}, "code"),
        (VALIDATE_URL, {"code": "123456"}, "challenge_id"),
        (VALIDATE_URL, {"challenge_id": "a b", "code": "123456"}, "challenge_id"),
        (CHALLENGE_URL, {"use_backup": "yes"}, "use_backup"),
        (CHALLENGE_URL, {"use_backup": 1}, "use_backup"),
        (VALIDATE_URL, ["123456"], "non_field_errors"),
    ],
)
def test_bad_input_is_400_naming_the_field_and_bill_is_not_asked(
    linked_api, bill_emulator, bill_account, tenant, url, body, field
):
    calls = bill_emulator.state.counters(organization_id=bill_account.organization_id)["calls"]
    before = BillConnection.objects.filter(tenant=tenant).values().get()
    response = linked_api.post(url, data=json.dumps(body), content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "validation_error" and field in response.json()["fields"]
    assert (
        bill_emulator.state.counters(organization_id=bill_account.organization_id)["calls"] == calls
    )
    assert BillConnection.objects.filter(tenant=tenant).values().get() == before


def test_only_owners_and_admins_may_take_the_steps(linked_api, tenant, make_user):
    member = api_as(make_user(tenant, "member"))
    for method, url in (
        ("get", PHONES_URL),
        ("post", CHALLENGE_URL),
        ("post", VALIDATE_URL),
        ("post", FORGET_URL),
    ):
        response = getattr(member, method)(url)
        assert (response.status_code, response.json()["code"]) == (403, "permission_denied")
        stranger = api_as(make_user(None, None))
        assert getattr(stranger, method)(url).status_code == 404
    assert member.get(CONNECTION_URL).json()["mfa"]["state"] == "not_set_up"


def test_the_steps_are_throttled_per_tenant(linked_api, bill_settings):
    bill_settings(MFA_THROTTLE_RATES={"tenant": "2/hour", "user": None})
    assert linked_api.get(PHONES_URL).status_code == 200
    assert post(linked_api, CHALLENGE_URL).status_code == 200
    throttled = post(linked_api, CHALLENGE_URL)
    assert (throttled.status_code, throttled.json()["code"]) == (429, "throttled")
    assert int(throttled["Retry-After"]) > 0
    assert "trusting this app for payments" in throttled.json()["message"]


def test_forget_and_not_linked(linked_api, bill_emulator, bill_account, tenant, mfa_sent):
    trust_via_api(linked_api, bill_emulator, bill_account)
    forgotten = post(linked_api, FORGET_URL)
    assert forgotten.status_code == 200 and forgotten.json()["mfa"]["state"] == "not_set_up"
    assert mfa_sent["connection_mfa_forgotten"] == 1
    assert linked_api.delete(CONNECTION_URL).status_code == 204
    assert linked_api.get(CONNECTION_URL).json()["mfa"] is None
    gone = linked_api.get(PHONES_URL)
    assert (gone.status_code, gone.json()["code"]) == (404, "not_linked")


def test_v2_lists_no_phones_but_trusts_all_the_same(
    bill_app, bill_emulator, bill_account, tenant, owner_api
):
    body = json.dumps(credentials(bill_account, api_version="v2"))
    assert (
        owner_api.put(CONNECTION_URL, data=body, content_type="application/json").status_code == 201
    )
    assert owner_api.get(PHONES_URL).json() == {"listed": False, "phones": []}
    with pytest.raises(UntrustedSession):
        pay(tenant, "v2")
    challenge = post(owner_api, CHALLENGE_URL)
    code = code_for(bill_emulator, bill_account)
    validated = post(
        owner_api,
        VALIDATE_URL,
        {"challenge_id": challenge.json()["challenge_id"], "code": f"{code[:3]}-{code[3:]}"},
    )
    assert validated.json()["mfa"]["state"] == "trusted"
    assert pay(tenant, "v2")["sentPay"]["count"] == 1


def test_the_schema_documents_the_mfa_steps(client):
    document = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    paths = document["paths"]
    assert "get" in paths["/api/bill/connection/mfa/phones/"]
    for step in ("challenge", "validate", "forget"):
        assert "post" in paths[f"/api/bill/connection/mfa/{step}/"]
    validate = paths["/api/bill/connection/mfa/validate/"]["post"]
    assert {"200", "400", "403", "404", "409", "429"} <= set(validate["responses"])
    schemas = document["components"]["schemas"]
    assert schemas["MfaValidate"]["properties"]["code"]["writeOnly"] is True
    assert "mfa" in schemas["ConnectionStatus"]["properties"]
    code_ref = schemas["BillError"]["properties"]["code"]["allOf"][0]["$ref"]
    codes = schemas[code_ref.rsplit("/", 1)[-1]]["enum"]
    for code in (
        "mfa_required",
        "mfa_trust_expired",
        "mfa_no_phone",
        "mfa_code_invalid",
        "mfa_too_many_attempts",
        "mfa_text_limited",
    ):
        assert code in codes
