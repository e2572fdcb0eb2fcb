"""The client's MFA calls: against the emulator (v3, v2), and BILL's odd answers by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bill_integration.client import get_client
from bill_integration.conf import override_clock
from bill_integration.exceptions import (
    MfaCodeRejected,
    MfaPhoneMissing,
    MfaTextLimited,
    MfaTooManyAttempts,
    RateLimited,
    UnexpectedResponse,
)
from tests.client.test_client_parsing import CannedClient, answer, envelope_error, v3_error

MOMENT = datetime(2026, 12, 4, 10, 30, tzinfo=UTC)


def login(client, account, **extra):
    return client.login(
        username=account.username,
        password=account.password,
        organization_id=account.organization_id,
        dev_key=account.dev_key,
        **extra,
    )


@pytest.mark.parametrize("api_version", ["v3", "v2"])
def test_challenge_validate_then_a_login_with_the_id_is_trusted(
    bill_environment, bill_emulator, bill_account, api_version
):
    client = get_client(bill_environment, api_version)
    session = login(client, bill_account)
    auth = {"session_id": session.session_id, "dev_key": bill_account.dev_key}
    challenge_id = client.mfa_challenge(**auth)
    code = bill_emulator.state.mfa_code(bill_account.username)["code"]
    # v2 wants "123-456" and v3 six digits: the emulator refuses the other form (BDC_1357).
    remember_me = client.mfa_validate(
        **auth, challenge_id=challenge_id, code=code, device="Acme", machine_name="Acme"
    )
    assert remember_me
    again = login(client, bill_account, remember_me_id=remember_me, device="Acme")
    record = bill_emulator.state.login_records(username=bill_account.username)[-1]
    assert (record["remember_me_id"], record["device"], record["trusted"]) == (
        remember_me,
        "Acme",
        True,
    )
    assert again.trusted is (api_version == "v3")  # v2's login answer has no such flag
    step_up = client.mfa_step_up(**auth, remember_me_id=remember_me, device="Acme")
    assert (step_up.trusted, step_up.session_trusted) == (True, api_version == "v3")
    wrong = client.mfa_step_up(**auth, remember_me_id=remember_me, device="Other")
    assert (wrong.trusted, wrong.session_trusted) == (False, False)


def test_v3_phones_show_the_last_four_digits_only(bill_environment, bill_emulator, bill_account):
    client = get_client(bill_environment, "v3")
    session = login(client, bill_account)
    phones = client.mfa_phones(session_id=session.session_id, dev_key=bill_account.dev_key)
    number = bill_account.mfa_phones[0]["number"]
    assert [(p.type, p.last4digits, p.primary) for p in phones] == [("MOBILE", number[-4:], True)]
    assert phones[0].masked == f"•••• {number[-4:]}" and number not in repr(phones)
    v2 = get_client(bill_environment, "v2")
    v2_session = login(v2, bill_account)
    assert v2.mfa_phones(session_id=v2_session.session_id, dev_key=bill_account.dev_key) is None


def test_no_phone_is_mfa_phone_missing(bill_environment, bill_emulator, bill_account):
    bill_emulator.state.set_mfa_phones(bill_account.username, [])
    for api_version in ("v3", "v2"):
        client = get_client(bill_environment, api_version)
        session = login(client, bill_account)
        with pytest.raises(MfaPhoneMissing) as refused:
            client.mfa_challenge(session_id=session.session_id, dev_key=bill_account.dev_key)
        assert refused.value.bill_code == "BDC_1354"


# --- odd answers, by hand ---------------------------------------------------------------------


def validate(client):
    return client.mfa_validate(
        session_id="!a",
        dev_key="01X",
        challenge_id="!c",
        code="123456",
        device="d",
        machine_name="m",
    )


@pytest.mark.parametrize(
    ("api_version", "response"),
    [
        ("v3", answer(400, v3_error("BDC_9999", "Token is invalid."))),
        ("v3", answer(400, v3_error("BDC_1356"))),
        ("v3", answer(400, v3_error("BDC_1374"))),
        ("v2", answer(200, envelope_error("BDC_9999", "Wrong token."))),
    ],
)
def test_any_bill_code_refusing_a_code_check_is_code_rejected(api_version, response):
    with pytest.raises(MfaCodeRejected) as refused:
        validate(CannedClient(api_version, response))
    assert refused.value.bill_code.startswith("BDC_")


def test_a_code_check_without_a_bill_code_stays_unexpected():
    with pytest.raises(UnexpectedResponse):
        validate(CannedClient("v3", answer(400, v3_error(None, "token: must not be null"))))


def test_too_many_attempts_waits_ten_minutes():
    with override_clock(lambda: MOMENT), pytest.raises(MfaTooManyAttempts) as refused:
        validate(CannedClient("v3", answer(400, v3_error("BDC_1358"))))
    assert refused.value.retry_at == MOMENT + timedelta(minutes=10)
    assert isinstance(refused.value, RateLimited) and refused.value.scope == "mfa_attempts"


@pytest.mark.parametrize(
    "response",
    [answer(429, v3_error("BDC_1144")), answer(400, v3_error("BDC_1144")), answer(429, b"")],
)
def test_a_rate_limit_on_a_challenge_is_the_text_message_limit(response):
    client = CannedClient("v3", response)
    with override_clock(lambda: MOMENT), pytest.raises(MfaTextLimited) as refused:
        client.mfa_challenge(session_id="!a", dev_key="01X")
    assert refused.value.retry_at == MOMENT + timedelta(minutes=1)
    assert refused.value.scope == "mfa_texts"  # the gateway pauses only "hourly"


@pytest.mark.parametrize(
    ("call", "body"),
    [
        ("step_up", {"trusted": "yes"}),
        ("step_up", {}),
        ("phones", {"results": "none"}),
        ("phones", {"results": [{"last4digits": "1234", "primary": "yes"}]}),
        ("challenge", {}),
        ("validate", {"rememberMeId": 5}),
        ("session", {"organizationId": "008", "userId": "006", "mfaBypass": "no"}),
    ],
)
def test_malformed_mfa_answers_are_unexpected(call, body):
    client = CannedClient("v3", answer(200, body))
    auth = {"session_id": "!a", "dev_key": "01X"}
    calls = {
        "step_up": lambda: client.mfa_step_up(**auth, remember_me_id="r", device="d"),
        "phones": lambda: client.mfa_phones(**auth),
        "challenge": lambda: client.mfa_challenge(**auth),
        "validate": lambda: validate(client),
        "session": lambda: client.session_info(**auth),
    }
    with pytest.raises(UnexpectedResponse):
        calls[call]()


def test_v2_mfa_status_must_say_is_trusted():
    client = CannedClient("v2", answer(200, {"response_status": 0, "response_data": {}}))
    with pytest.raises(UnexpectedResponse):
        client.mfa_step_up(session_id="!a", dev_key="01X", remember_me_id="r", device="d")
