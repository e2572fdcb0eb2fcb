"""The emulator's MFA: phones, challenges, codes, remember-me ids, trusted sessions, payments.

Raw HTTP (``requests``), as ``test_emulator.py``: these hold the emulator to BILL's documented
MFA endpoints (bill-api.md §2.9, §1.7) independently of the app's client.
"""

from __future__ import annotations

import json
import re

import pytest
import requests

from bill_integration.emulator import EmulatorControl
from tests.emulator.test_emulator import (
    assert_v2_error,
    assert_v3_error,
    v2_login,
    v3_headers,
    v3_login,
)

DAY = 24 * 3600


def post(server, account, session_id, path, body=None):
    return requests.post(
        server.v3_base + path, json=body or {}, headers=v3_headers(account, session_id), timeout=5
    )


def v2_call(server, account, session_id, path, data=None):
    form = {"devKey": account.dev_key, "sessionId": session_id}
    if data is not None:
        form["data"] = json.dumps(data)
    return requests.post(server.v2_base + path, data=form, timeout=5)


def login_id(server, account, **changes) -> str:
    response = v3_login(server, account, **changes)
    assert response.status_code == 200
    return response.json()["sessionId"]


def trust(server, account, session_id, device="Acme SaaS") -> str:
    """Challenge, read the code from the control API, validate: the rememberMeId."""
    challenge = post(server, account, session_id, "/v3/mfa/challenge", {"useBackup": False})
    assert challenge.status_code == 200
    code = server.state.mfa_code(account.username)
    assert (
        re.fullmatch(r"\d{6}", code["code"])
        and code["challenge_id"] == challenge.json()["challengeId"]
    )
    validate = post(
        server,
        account,
        session_id,
        "/v3/mfa/challenge/validate",
        {
            "challengeId": challenge.json()["challengeId"],
            "token": code["code"],
            "device": device,
            "machineName": "worker-1",
            "rememberMe": True,
        },
    )
    assert validate.status_code == 200, validate.text
    return validate.json()["rememberMeId"]


def test_v3_payment_needs_a_trusted_session_and_the_challenge_makes_one(
    bill_emulator, bill_account
):
    server, account = bill_emulator, bill_account
    session_id = login_id(server, account)
    assert_v3_error(
        post(server, account, session_id, "/v3/payments"), 403, "BDC_1361", "Untrusted session."
    )

    phones = requests.get(
        server.v3_base + "/v3/mfa/phones", headers=v3_headers(account, session_id), timeout=5
    )
    assert phones.json() == {
        "results": [
            {"type": "MOBILE", "last4digits": account.mfa_phones[0]["number"][-4:], "primary": True}
        ]
    }
    remember_me = trust(server, account, session_id)
    assert 60 <= len(remember_me) <= 80

    paid = post(server, account, session_id, "/v3/payments", {"billId": "00n01X", "amount": 10})
    assert paid.status_code == 200 and paid.json()["status"] == "SCHEDULED"
    assert (
        post(server, account, session_id, "/v3/payments/bulk", {"payments": [{}]}).status_code
        == 200
    )
    details = requests.get(
        server.v3_base + "/v3/login/session", headers=v3_headers(account, session_id), timeout=5
    ).json()
    assert details["mfaStatus"] == "COMPLETE"
    assert server.state.counters(organization_id=account.organization_id)["payments"] == 2


def test_login_with_the_remember_me_id_and_its_device_is_trusted_and_recorded(
    bill_emulator, bill_account
):
    server, account = bill_emulator, bill_account
    remember_me = trust(server, account, login_id(server, account), device="Acme SaaS")

    trusted = v3_login(server, account, rememberMeId=remember_me, device="Acme SaaS").json()
    assert trusted["trusted"] is True
    assert post(server, account, trusted["sessionId"], "/v3/payments").status_code == 200
    other_device = v3_login(server, account, rememberMeId=remember_me, device="Another").json()
    assert other_device["trusted"] is False
    records = server.state.login_records(organization_id=account.organization_id)
    assert [(r["remember_me_id"], r["device"], r["trusted"]) for r in records] == [
        (None, None, False),
        (remember_me, "Acme SaaS", True),
        (remember_me, "Another", False),
    ]


def test_remember_me_ids_expire_after_30_days_and_step_up_then_says_false(
    bill_emulator, bill_account
):
    server, account = bill_emulator, bill_account
    remember_me = trust(server, account, login_id(server, account))
    server.state.advance(30 * DAY - 60)
    session_id = login_id(server, account)  # untrusted: no id sent
    step_up = post(
        server,
        account,
        session_id,
        "/v3/mfa/step-up",
        {"rememberMeId": remember_me, "device": "Acme SaaS"},
    )
    assert step_up.json() == {"trusted": True}
    assert post(server, account, session_id, "/v3/payments").status_code == 200

    server.state.advance(120)  # 30 days and a minute after validate
    later = login_id(server, account)
    assert (
        v3_login(server, account, rememberMeId=remember_me, device="Acme SaaS").json()["trusted"]
        is False
    )
    expired = post(
        server,
        account,
        later,
        "/v3/mfa/step-up",
        {"rememberMeId": remember_me, "device": "Acme SaaS"},
    )
    assert (expired.status_code, expired.json()) == (200, {"trusted": False})
    assert_v3_error(post(server, account, later, "/v3/payments"), 403, "BDC_1361")


def test_no_phone_is_bdc_1354_and_no_backup_phone_too(bill_emulator, bill_account):
    server, account = bill_emulator, bill_account
    session_id = login_id(server, account)
    backup = post(server, account, session_id, "/v3/mfa/challenge", {"useBackup": "true"})
    assert_v3_error(backup, 400, "BDC_1354")
    server.state.set_mfa_phones(account.username, [])
    assert_v3_error(post(server, account, session_id, "/v3/mfa/challenge"), 400, "BDC_1354")
    server.state.set_mfa_phones(
        account.username,
        [{"number": "+15550000001", "primary": True}, {"number": "+15550000002", "primary": False}],
    )
    assert (
        post(server, account, session_id, "/v3/mfa/challenge", {"useBackup": True}).status_code
        == 200
    )
    assert server.state.mfa_code(account.username)["phone_last4"] == "0002"


def test_wrong_codes_then_too_many_attempts_and_a_lockout(bill_emulator, bill_account):
    server, account = bill_emulator, bill_account
    session_id = login_id(server, account)
    challenge_id = post(server, account, session_id, "/v3/mfa/challenge").json()["challengeId"]
    code = server.state.mfa_code(account.username)["code"]
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    body = {"challengeId": challenge_id, "token": wrong, "device": "d", "rememberMe": True}
    for _ in range(2):
        assert_v3_error(
            post(server, account, session_id, "/v3/mfa/challenge/validate", body), 400, "BDC_1357"
        )
    assert_v3_error(
        post(server, account, session_id, "/v3/mfa/challenge/validate", body),
        400,
        "BDC_1358",
        "2-Step Verification too many token response attempts.",
    )
    right = {**body, "token": code}
    assert_v3_error(
        post(server, account, session_id, "/v3/mfa/challenge/validate", right), 400, "BDC_1358"
    )
    assert_v3_error(post(server, account, session_id, "/v3/mfa/challenge"), 400, "BDC_1358")
    server.state.advance(10 * 60)
    assert post(server, account, session_id, "/v3/mfa/challenge").status_code == 200


def test_codes_expire_after_five_minutes(bill_emulator, bill_account):
    server, account = bill_emulator, bill_account
    session_id = login_id(server, account)
    challenge_id = post(server, account, session_id, "/v3/mfa/challenge").json()["challengeId"]
    code = server.state.mfa_code(account.username)["code"]
    server.state.advance(5 * 60)
    body = {"challengeId": challenge_id, "token": code, "device": "d", "rememberMe": True}
    assert_v3_error(
        post(server, account, session_id, "/v3/mfa/challenge/validate", body), 400, "BDC_1356"
    )


def test_five_text_messages_a_minute_per_developer_key(bill_emulator, bill_account):
    server, account = bill_emulator, bill_account
    session_id = login_id(server, account)
    for _ in range(5):
        assert post(server, account, session_id, "/v3/mfa/challenge").status_code == 200
    assert_v3_error(post(server, account, session_id, "/v3/mfa/challenge"), 429, "BDC_1144")
    assert server.state.counters(organization_id=account.organization_id)["mfa_texts"] == 5
    server.state.advance(60)
    assert post(server, account, session_id, "/v3/mfa/challenge").status_code == 200


def test_mfa_off_or_bypassed_needs_no_trust(bill_emulator):
    server = bill_emulator
    off = server.state.add_account(username="off@example.com", password="pw-off", mfa_enabled=False)
    bypass = server.state.add_account(username="by@example.com", password="pw-by", mfa_bypass=True)
    for account, status in ((off, "DISABLED"), (bypass, "CHALLENGE")):
        session_id = login_id(server, account)
        assert post(server, account, session_id, "/v3/payments").status_code == 200
        details = requests.get(
            server.v3_base + "/v3/login/session", headers=v3_headers(account, session_id), timeout=5
        ).json()
        assert (details["mfaStatus"], details["mfaBypass"]) == (status, account is bypass)


def test_v2_flow_mfa_challenge_authenticate_status_and_pay_bills(bill_emulator, bill_account):
    server, account = bill_emulator, bill_account
    session_id = v2_login(server, account).json()["response_data"]["sessionId"]
    assert_v2_error(
        v2_call(server, account, session_id, "/PayBills.json", {"billPays": []}), "BDC_1361"
    )

    challenge = v2_call(server, account, session_id, "/MFAChallenge.json", {"useBackup": False})
    challenge_id = challenge.json()["response_data"]["challengeId"]
    code = server.state.mfa_code(account.username)["code"]
    data = {
        "challengeId": challenge_id,
        "token": code,  # v2 wants 123-456
        "deviceId": "916E333F-1BBC-4471-946D-8059DB9488B6",
        "machineName": "worker-1",
        "rememberMe": True,
    }
    assert_v2_error(v2_call(server, account, session_id, "/MFAAuthenticate.json", data), "BDC_1357")
    data["token"] = f"{code[:3]}-{code[3:]}"
    answer = v2_call(server, account, session_id, "/MFAAuthenticate.json", data).json()
    mfa_id = answer["response_data"]["mfaId"]
    assert re.fullmatch(r"!a[A-Za-z0-9_-]{43}", mfa_id)
    assert (
        v2_call(server, account, session_id, "/PayBills.json", {"billPays": [{}]}).json()[
            "response_status"
        ]
        == 0
    )

    status = v2_call(
        server,
        account,
        session_id,
        "/MFAStatus.json",
        {"mfaId": mfa_id, "deviceId": data["deviceId"]},
    )
    assert status.json()["response_data"] == {"isTrusted": True}
    later = v2_login(server, account, mfaId=mfa_id, deviceId=data["deviceId"]).json()
    later_id = later["response_data"]["sessionId"]
    assert v2_call(server, account, later_id, "/PayBills.json", {}).json()["response_status"] == 0
    assert server.state.login_records(username=account.username)[-1]["trusted"] is True

    server.state.advance(30 * DAY)
    status = v2_call(
        server,
        account,
        later_id,
        "/MFAStatus.json",
        {"mfaId": mfa_id, "deviceId": data["deviceId"]},
    )
    assert_v2_error(status, "BDC_1109")  # the session idled out meanwhile
    fresh = v2_login(server, account, mfaId=mfa_id, deviceId=data["deviceId"]).json()
    fresh_id = fresh["response_data"]["sessionId"]
    status = v2_call(
        server,
        account,
        fresh_id,
        "/MFAStatus.json",
        {"mfaId": mfa_id, "deviceId": data["deviceId"]},
    )
    assert status.json()["response_data"] == {"isTrusted": False}
    assert_v2_error(v2_call(server, account, fresh_id, "/PayBills.json", {}), "BDC_1361")


def test_v2_missing_token_is_a_parameter_error_not_a_system_error(bill_emulator, bill_account):
    server, account = bill_emulator, bill_account
    session_id = v2_login(server, account).json()["response_data"]["sessionId"]
    answer = v2_call(server, account, session_id, "/MFAAuthenticate.json", {"challengeId": "x"})
    assert_v2_error(answer, "BDC_1002")


def test_http_control_reads_codes_sets_phones_and_lists_logins(bill_emulator, bill_account):
    control = EmulatorControl(bill_emulator.url)
    server, account = bill_emulator, bill_account
    with pytest.raises(ValueError, match="No MFA challenge"):
        control.mfa_code(account.username)
    session_id = login_id(server, account)
    post(server, account, session_id, "/v3/mfa/challenge")
    assert control.mfa_code(account.username) == server.state.mfa_code(account.username)
    assert control.set_mfa_phones(account.username, []) == []
    assert server.state.get_account(account.username).mfa_phones == []
    assert control.login_records(organization_id=account.organization_id) == (
        server.state.login_records(organization_id=account.organization_id)
    )
    with pytest.raises(ValueError, match="phones must be a list"):
        control.set_mfa_phones(account.username, "+15550000000")  # type: ignore[arg-type]
    assert requests.get(bill_emulator.url + "/_emulator/mfa", timeout=5).json()["choices"] == {
        "code_lifetime_seconds": 300,
        "max_wrong_codes": 3,
        "lockout_seconds": 600,
        "sms_per_minute": 5,
        "remember_me_days": 30,
    }
