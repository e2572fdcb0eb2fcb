"""The BILL emulator itself: its bodies match bill-api.md field for field, its rules, its controls.

Raw HTTP (``requests``) on purpose: these tests hold the emulator to BILL's documented shapes
independently of our client's parsing.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from bill_integration.emulator import (
    EmulatorControl,
    EmulatorServer,
    EmulatorState,
    ids,
    load_accounts_file,
    write_accounts_file,
)
from bill_integration.emulator import clock as clock_module

ROOT = Path(__file__).resolve().parents[2]
V3_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}\+00:00$")
ORG_ID = re.compile(r"^00801[A-Z]{11}[a-z0-9]{4}$")
USER_ID = re.compile(r"^00601[A-Z]{11}[a-z0-9]{4}$")
DEV_KEY = re.compile(r"^01[A-Z0-9]{18}$")
SESSION_ID = re.compile(r"^!a[A-Za-z0-9_-]{43}$")

# The documented examples (bill-api.md), used as shape templates: key -> type.
V3_LOGIN_EXAMPLE = {
    "organizationId": "string",
    "sessionId": "string",
    "trusted": False,
    "userId": "string",
}
V3_SESSION_EXAMPLE = {
    "organizationId": "string",
    "userId": "string",
    "mfaStatus": "DISABLED",
    "mfaBypass": True,
}
V3_ERROR_EXAMPLE = {
    "timestamp": "2026-12-25T00:00:00.000+00:00",
    "code": "BDC_1109",
    "severity": "ERROR",
    "category": "DOWNSTREAM",
    "message": "Session is invalid.  Please log in.",
}
V3_HEALTH_EXAMPLE = {
    "appId": "string",
    "appEnv": "string",
    "appVersion": "string",
    "bdcRegion": "string",
}
V2_LOGIN_EXAMPLE = {
    "sessionId": "{session_ID}",
    "orgId": "{organization_ID}",
    "apiEndPoint": "https://api-sandbox.bill.com/api/v2",
    "usersId": "{user_ID}",
}
V2_ERROR_EXAMPLE = {
    "response_status": 1,
    "response_message": "Error",
    "response_data": {"error_code": "BDC_1144", "error_message": "Max number ..."},
}
SPEND_USER_EXAMPLE = {
    "id": "string",
    "uuid": "string",
    "firstName": "string",
    "lastName": "string",
    "email": "string",
    "receiptEmail": "string",
    "retired": True,
    "useCompanyMailingAddress": False,
    "smsOptIn": True,
    "hasDateOfBirth": True,
    "role": "BOOKKEEPER",
    "createdTime": "2015-05-10T01:34:15.061Z",
}


def assert_same_shape(actual: dict, example: dict) -> None:
    assert set(actual) == set(example)
    for key, value in example.items():
        assert type(actual[key]) is type(value), key


def v3_login(server, account, **changes):
    body = {
        "username": account.username,
        "password": account.password,
        "organizationId": account.organization_id,
        "devKey": account.dev_key,
        **changes,
    }
    return requests.post(server.v3_base + "/v3/login", json=body, timeout=5)


def v2_login(server, account, **changes):
    form = {
        "userName": account.username,
        "password": account.password,
        "orgId": account.organization_id,
        "devKey": account.dev_key,
        **changes,
    }
    return requests.post(server.v2_base + "/Login.json", data=form, timeout=5)


def v3_headers(account, session_id):
    return {"devKey": account.dev_key, "sessionId": session_id}


def assert_v3_error(response, status: int, code: str | None, message: str | None = None) -> dict:
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, list) and len(body) == 1
    item = body[0]
    expected = dict(V3_ERROR_EXAMPLE)
    if code is None:
        expected.pop("code")
    assert_same_shape(item, expected)
    assert V3_TIMESTAMP.match(item["timestamp"])
    assert item["severity"] in ("ERROR", "WARNING", "INFORMATION")
    assert item["category"] in ("REQUEST", "APPLICATION", "SERVER", "DOWNSTREAM")
    if code:
        assert item["code"] == code
    if message:
        assert item["message"] == message
    return item


def assert_v2_error(response, code: str, message: str | None = None, status: int = 200) -> None:
    assert response.status_code == status
    body = response.json()
    assert_same_shape(body, V2_ERROR_EXAMPLE)
    assert (body["response_status"], body["response_message"]) == (1, "Error")
    assert_same_shape(body["response_data"], V2_ERROR_EXAMPLE["response_data"])
    assert body["response_data"]["error_code"] == code
    if message:
        assert body["response_data"]["error_message"] == message


# --- ids ----------------------------------------------------------------------------------------


def test_generated_ids_have_bill_shapes():
    for _ in range(50):
        assert ORG_ID.match(ids.organization_id())
        assert USER_ID.match(ids.user_id())
        assert DEV_KEY.match(ids.dev_key())
        assert SESSION_ID.match(ids.session_id())
    assert len({ids.session_id() for _ in range(1000)}) == 1000


def test_generated_accounts_are_realistic(bill_emulator):
    account = bill_emulator.state.add_account(username="a@example.com", password="pw")
    assert ORG_ID.match(account.organization_id) and USER_ID.match(account.user_id)
    assert DEV_KEY.match(account.dev_key) and account.api_token
    for secret in (account.password, account.dev_key, account.api_token):
        assert secret not in repr(account)


# --- v3 bodies ----------------------------------------------------------------------------------


def test_v3_login_and_session_bodies_match_the_documented_examples(bill_emulator, bill_account):
    response = v3_login(bill_emulator, bill_account)
    assert response.status_code == 200
    body = response.json()
    assert_same_shape(body, V3_LOGIN_EXAMPLE)
    assert SESSION_ID.match(body["sessionId"]) and ORG_ID.match(body["organizationId"])
    assert USER_ID.match(body["userId"]) and body["trusted"] is False

    session = requests.get(
        bill_emulator.v3_base + "/v3/login/session",
        headers=v3_headers(bill_account, body["sessionId"]),
        timeout=5,
    )
    assert session.status_code == 200
    assert_same_shape(session.json(), V3_SESSION_EXAMPLE)
    # MFA is on and the session not trusted yet (the emulator's mfaStatus values: mfa.py).
    assert session.json()["mfaStatus"] == "CHALLENGE" and session.json()["mfaBypass"] is False


def test_v3_logout_is_an_empty_200_and_ends_the_session(bill_emulator, bill_account):
    session_id = v3_login(bill_emulator, bill_account).json()["sessionId"]
    headers = v3_headers(bill_account, session_id)
    logout = requests.post(bill_emulator.v3_base + "/v3/logout", headers=headers, timeout=5)
    assert (logout.status_code, logout.content) == (200, b"")

    again = requests.get(bill_emulator.v3_base + "/v3/login/session", headers=headers, timeout=5)
    assert_v3_error(again, 401, "BDC_1109", "Session is invalid.  Please log in.")


def test_v3_login_errors(bill_emulator, bill_account):
    assert_v3_error(
        v3_login(bill_emulator, bill_account, password="x"),
        400,
        "BDC_1101",
        "User name and/or password do not match our records.",
    )
    assert_v3_error(
        v3_login(bill_emulator, bill_account, devKey="01NOTAKEYNOTAKEY000"),
        400,
        "BDC_1102",
        "Developer key is invalid.",
    )
    item = assert_v3_error(
        v3_login(bill_emulator, bill_account, organizationId="00801ZZZZZZZZZZZzzzz"),
        400,
        "BDC_1101",
    )
    assert (
        item["message"]
        == "Invalid parameter value for parameter,value: orgId, 00801ZZZZZZZZZZZzzzz."
    )
    # v2 field names sent to v3 (a known pitfall) are a validation error naming the field.
    wrong_names = requests.post(
        bill_emulator.v3_base + "/v3/login",
        timeout=5,
        json={
            "userName": bill_account.username,
            "password": bill_account.password,
            "orgId": bill_account.organization_id,
            "devKey": bill_account.dev_key,
        },
    )
    assert "username" in assert_v3_error(wrong_names, 400, None)["message"]


def test_v3_missing_auth_headers_is_400_and_wrong_ones_401(bill_emulator, bill_account):
    url = bill_emulator.v3_base + "/v3/login/session"
    assert_v3_error(
        requests.get(url, headers={"devKey": bill_account.dev_key}, timeout=5), 400, None
    )
    assert_v3_error(requests.get(url, headers={"sessionId": "!a" + "x" * 43}, timeout=5), 400, None)
    wrong_key = {"devKey": "01NOTAKEYNOTAKEY000", "sessionId": "!a" + "x" * 43}
    assert_v3_error(requests.get(url, headers=wrong_key, timeout=5), 401, "BDC_1102")


def test_v3_unknown_path_is_404_bdc_1121(bill_emulator):
    assert_v3_error(
        requests.get(bill_emulator.v3_base + "/v3/nothing", timeout=5),
        404,
        "BDC_1121",
        "API not supported.",
    )
    assert_v3_error(requests.get(bill_emulator.url + "/elsewhere", timeout=5), 404, "BDC_1121")
    assert_v3_error(requests.get(bill_emulator.v3_base + "/v3/login", timeout=5), 404, "BDC_1121")


def test_v3_health(bill_emulator):
    response = requests.get(bill_emulator.v3_base + "/v3/health", timeout=5)
    assert response.status_code == 200
    assert_same_shape(response.json(), V3_HEALTH_EXAMPLE)


def test_v3_rate_limit_bodies_are_the_documented_ones(bill_emulator, bill_account):
    bill_emulator.state.set_limits(logins_per_hour=1)
    assert v3_login(bill_emulator, bill_account).status_code == 200
    limited = v3_login(bill_emulator, bill_account)
    assert_v3_error(limited, 429, "BDC_1144", "Max number of allowed requests per hour reached: 1.")


# --- v2 bodies ----------------------------------------------------------------------------------


def test_v2_login_body_matches_the_documented_example(bill_emulator, bill_account):
    response = v2_login(bill_emulator, bill_account)
    assert response.status_code == 200
    body = response.json()
    assert (body["response_status"], body["response_message"]) == (0, "Success")
    assert set(body) == {"response_status", "response_message", "response_data"}
    data = body["response_data"]
    assert_same_shape(data, V2_LOGIN_EXAMPLE)
    assert SESSION_ID.match(data["sessionId"]) and len(data["sessionId"]) == 45
    assert ORG_ID.match(data["orgId"]) and USER_ID.match(data["usersId"])
    assert data["apiEndPoint"] == bill_emulator.v2_base


def test_v2_session_info_and_logout_bodies(bill_emulator, bill_account):
    session_id = v2_login(bill_emulator, bill_account).json()["response_data"]["sessionId"]
    form = {"devKey": bill_account.dev_key, "sessionId": session_id}
    info = requests.post(
        bill_emulator.v2_base + "/GetSessionInfo.json", data=form, timeout=5
    ).json()
    assert info == {
        "response_status": 0,
        "response_message": "Success",
        "response_data": {
            "organizationId": bill_account.organization_id,
            "userId": bill_account.user_id,
        },
    }
    logout = requests.post(bill_emulator.v2_base + "/Logout.json", data=form, timeout=5).json()
    assert logout == {"response_status": 0, "response_message": "Success", "response_data": {}}
    again = requests.post(bill_emulator.v2_base + "/GetSessionInfo.json", data=form, timeout=5)
    assert_v2_error(again, "BDC_1109", "Session is invalid. Please log in.")


def test_v2_errors_are_http_200_envelopes(bill_emulator, bill_account):
    assert_v2_error(
        v2_login(bill_emulator, bill_account, password="x"),
        "BDC_1101",
        "User name and/or password do not match our records.",
    )
    assert_v2_error(
        v2_login(bill_emulator, bill_account, devKey="01NOTAKEYNOTAKEY000"),
        "BDC_1102",
        "Developer key is invalid.",
    )
    assert_v2_error(
        v2_login(bill_emulator, bill_account, orgId="fakeOrganizationId"),
        "BDC_1101",
        "Invalid parameter value for parameter,value: orgId, fakeOrganizationId.",
    )
    no_key = requests.post(
        bill_emulator.v2_base + "/GetSessionInfo.json", data={"sessionId": "!a"}, timeout=5
    )
    assert_v2_error(no_key, "BDC_1102", "Developer key must be specified.")


def test_v2_unknown_path_and_get_are_404_bdc_1121(bill_emulator):
    assert_v2_error(
        requests.post(bill_emulator.v2_base + "/Nope.json", timeout=5),
        "BDC_1121",
        "API not supported.",
        status=404,
    )
    assert_v2_error(
        requests.get(bill_emulator.v2_base + "/Login.json", timeout=5), "BDC_1121", status=404
    )


def test_v2_rate_limit_bodies_are_the_documented_ones(bill_emulator, bill_account):
    bill_emulator.state.set_limits(calls_per_hour=2)
    session_id = v2_login(bill_emulator, bill_account).json()["response_data"]["sessionId"]
    form = {"devKey": bill_account.dev_key, "sessionId": session_id}
    assert (
        requests.post(bill_emulator.v2_base + "/GetSessionInfo.json", data=form, timeout=5).json()[
            "response_status"
        ]
        == 0
    )
    third = requests.post(bill_emulator.v2_base + "/GetSessionInfo.json", data=form, timeout=5)
    assert_v2_error(third, "BDC_1144", "Max number of allowed requests per hour reached: 2.")


def test_v2_list_orgs(bill_emulator, bill_account):
    form = {
        "userName": bill_account.username,
        "password": bill_account.password,
        "devKey": bill_account.dev_key,
    }
    body = requests.post(bill_emulator.v2_base + "/ListOrgs.json", data=form, timeout=5).json()
    assert body["response_data"] == [
        {"orgId": bill_account.organization_id, "orgName": bill_account.organization_name}
    ]
    assert bill_emulator.state.counters(dev_key=bill_account.dev_key)["calls"] == 1


# --- Spend --------------------------------------------------------------------------------------


def test_spend_current_user_body_matches_the_documented_example(bill_emulator, bill_account):
    url = bill_emulator.v3_base + "/v3/spend/users/current"
    response = requests.get(url, headers={"apiToken": bill_account.api_token}, timeout=5)
    assert response.status_code == 200
    body = response.json()
    assert_same_shape(body, SPEND_USER_EXAMPLE)
    assert body["role"] in ("ADMIN", "AUDITOR", "BOOKKEEPER", "MEMBER")
    assert body["email"] == bill_account.username

    assert_v3_error(requests.get(url, timeout=5), 400, None)
    assert_v3_error(requests.get(url, headers={"apiToken": "nope"}, timeout=5), 401, None)


# --- rules ----------------------------------------------------------------------------------------


def test_default_limits_are_bills():
    from bill_integration.emulator.state import DEFAULT_LIMITS

    assert DEFAULT_LIMITS == {
        "logins_per_hour": 200,
        "calls_per_hour": 20000,
        "concurrent_per_organization": 3,
        "session_idle_seconds": 35 * 60,
        "sync_session_idle_seconds": 48 * 3600,
        "oauth_token_seconds": 3600,
        "spend_calls_per_minute": 60,
    }


def test_hourly_limits_reset_at_the_top_of_the_emulator_hour(bill_emulator, bill_account):
    state = bill_emulator.state
    now = state.now()
    state.advance(
        (
            now.replace(minute=0, second=0, microsecond=0) + timedelta(minutes=59, seconds=58) - now
        ).total_seconds()
    )
    state.set_limits(logins_per_hour=2)
    assert [v3_login(bill_emulator, bill_account).status_code for _ in range(3)] == [200, 200, 429]
    state.advance(3)  # into the next clock hour
    assert v3_login(bill_emulator, bill_account).status_code == 200


def test_calls_limit_counts_every_request_of_a_dev_key(bill_emulator):
    state = bill_emulator.state
    shared = "01SHAREDKEYFORLIMIT1"
    first = state.add_account(username="one@example.com", password="pw", dev_key=shared)
    second = state.add_account(username="two@example.com", password="pw", dev_key=shared)
    state.set_limits(calls_per_hour=3)
    s1 = v3_login(bill_emulator, first).json()["sessionId"]
    s2 = v3_login(bill_emulator, second).json()["sessionId"]
    url = bill_emulator.v3_base + "/v3/login/session"
    assert requests.get(url, headers=v3_headers(first, s1), timeout=5).status_code == 200
    assert_v3_error(requests.get(url, headers=v3_headers(second, s2), timeout=5), 429, "BDC_1144")
    assert state.counters(dev_key=shared)["rejected"] == 1


def test_concurrency_limit_is_per_dev_key_and_organization(bill_emulator, bill_account):
    state = bill_emulator.state
    session_id = v3_login(bill_emulator, bill_account).json()["sessionId"]
    state.set_fault("latency", organization_id=bill_account.organization_id, seconds=10, count=3)
    url = bill_emulator.v3_base + "/v3/login/session"
    statuses: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: statuses.append(
                requests.get(
                    url, headers=v3_headers(bill_account, session_id), timeout=15
                ).status_code
            )
        )
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while state.counters(organization_id=bill_account.organization_id)["faults"] < 3:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    fourth = requests.get(url, headers=v3_headers(bill_account, session_id), timeout=5)
    assert_v3_error(
        fourth, 429, "BDC_1322", "Max number of concurrent requests per organization reached."
    )
    state.clear_faults()  # wakes the three
    for thread in threads:
        thread.join(timeout=5)
    assert statuses == [200, 200, 200]
    assert (
        requests.get(url, headers=v3_headers(bill_account, session_id), timeout=5).status_code
        == 200
    )


def test_session_idle_expiry_is_sliding(bill_emulator, bill_account):
    state = bill_emulator.state
    session_id = v3_login(bill_emulator, bill_account).json()["sessionId"]
    url = bill_emulator.v3_base + "/v3/login/session"
    headers = v3_headers(bill_account, session_id)
    state.advance(34 * 60 + 59)
    assert requests.get(url, headers=headers, timeout=5).status_code == 200
    state.advance(34 * 60 + 59)
    assert requests.get(url, headers=headers, timeout=5).status_code == 200
    assert state.active_sessions(organization_id=bill_account.organization_id) == 1
    state.advance(35 * 60)
    assert state.active_sessions(organization_id=bill_account.organization_id) == 0
    assert_v3_error(requests.get(url, headers=headers, timeout=5), 401, "BDC_1109")


def test_a_new_login_keeps_older_sessions(bill_emulator, bill_account):
    first = v3_login(bill_emulator, bill_account).json()["sessionId"]
    v3_login(bill_emulator, bill_account)
    url = bill_emulator.v3_base + "/v3/login/session"
    assert requests.get(url, headers=v3_headers(bill_account, first), timeout=5).status_code == 200
    assert bill_emulator.state.active_sessions(organization_id=bill_account.organization_id) == 2


def test_invalidate_sessions_and_change_password(bill_emulator, bill_account):
    state = bill_emulator.state
    session_id = v3_login(bill_emulator, bill_account).json()["sessionId"]
    assert state.invalidate_sessions(organization_id=bill_account.organization_id) == 1
    url = bill_emulator.v3_base + "/v3/login/session"
    assert_v3_error(
        requests.get(url, headers=v3_headers(bill_account, session_id), timeout=5), 401, "BDC_1109"
    )
    state.change_password(bill_account.username, "new-password")
    assert_v3_error(v3_login(bill_emulator, bill_account), 400, "BDC_1101")
    assert v3_login(bill_emulator, bill_account, password="new-password").status_code == 200


# --- faults -------------------------------------------------------------------------------------


def test_account_faults_only_touch_that_account_and_win_over_global(bill_emulator, bill_account):
    state = bill_emulator.state
    other = state.add_account(username="other@example.com", password="pw")
    state.set_fault("error", code="BDC_1001")
    state.set_fault("status", organization_id=bill_account.organization_id, status=502)
    assert v3_login(bill_emulator, bill_account).status_code == 502
    assert_v3_error(v3_login(bill_emulator, other), 500, "BDC_1001", "System error occurred.")
    state.clear_faults()
    assert v3_login(bill_emulator, other).status_code == 200


def test_fault_count_and_path(bill_emulator, bill_account):
    state = bill_emulator.state
    fault_id = state.set_fault(
        "status", dev_key=bill_account.dev_key, status=503, count=2, path="/v3/login"
    )
    assert isinstance(fault_id, int)
    assert (
        requests.get(bill_emulator.v3_base + "/v3/health", timeout=5).status_code == 200
    )  # other path
    statuses = [v3_login(bill_emulator, bill_account).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert state.faults() == []
    assert state.counters(dev_key=bill_account.dev_key)["faults"] == 2


def test_status_fault_json_body_on_v2_keeps_the_5xx(bill_emulator, bill_account):
    bill_emulator.state.set_fault("status", status=500, body="json")
    assert_v2_error(
        v2_login(bill_emulator, bill_account), "BDC_1001", "System error occurred.", status=500
    )


def test_reset_fault_drops_the_connection(bill_emulator, bill_account):
    bill_emulator.state.set_fault("reset", count=1)
    with pytest.raises(requests.ConnectionError):
        v3_login(bill_emulator, bill_account)
    assert v3_login(bill_emulator, bill_account).status_code == 200


def test_hang_fault_answers_nothing_and_reset_wakes_it(bill_emulator, bill_account):
    bill_emulator.state.set_fault("hang", seconds=60)
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(v3_login(bill_emulator, bill_account).status_code)
        except requests.RequestException as exc:
            outcome.append(type(exc))

    thread = threading.Thread(target=call)
    thread.start()
    thread.join(timeout=0.5)
    assert thread.is_alive(), "a hanging request must not be answered"
    bill_emulator.state.reset()
    thread.join(timeout=10)  # far less than the 60 s hang: reset woke it
    assert not thread.is_alive()
    assert outcome == [requests.ConnectionError]  # closed without an answer


def test_drip_fault_sends_the_same_answer_slowly(bill_emulator, bill_account):
    # 300 bytes of body (a login answer is about 150: padded), each after a 0.002 s pause.
    bill_emulator.state.set_fault("drip", interval=0.002, seconds=0.6, headers=True, count=1)
    started = time.monotonic()
    answer = v3_login(bill_emulator, bill_account)
    assert time.monotonic() - started >= 0.5  # a lower bound by construction, never tight
    assert answer.status_code == 200
    assert answer.content.startswith(b" ")  # padded with blanks JSON allows
    assert answer.json()["organizationId"] == bill_account.organization_id
    assert v3_login(bill_emulator, bill_account).content.startswith(b"{")  # used up


def test_drip_fault_stops_on_reset(bill_emulator, bill_account):
    bill_emulator.state.set_fault("drip", interval=0.5, seconds=60)
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(v3_login(bill_emulator, bill_account).status_code)
        except requests.RequestException as exc:
            outcome.append(type(exc))

    thread = threading.Thread(target=call)
    thread.start()
    thread.join(timeout=1)
    assert thread.is_alive(), "a 60 s drip must still be going"
    bill_emulator.state.reset()
    thread.join(timeout=10)  # far less than the 60 s drip: reset stopped it
    assert not thread.is_alive()
    (error,) = outcome  # cut off mid-body: an error, not an answer
    assert isinstance(error, type) and issubclass(error, requests.RequestException)


def test_unknown_fault_kind_and_bad_count_are_refused(bill_emulator):
    with pytest.raises(ValueError, match="Unknown fault kind 'slow'"):
        bill_emulator.state.set_fault("slow")
    with pytest.raises(ValueError, match="count"):
        bill_emulator.state.set_fault("reset", count=0)


# --- control API ----------------------------------------------------------------------------------


PUBLIC_CONTROL_METHODS = {
    "add_account",
    "load_accounts",
    "accounts",
    "get_account",
    "change_password",
    "now",
    "advance",
    "set_offset",
    "offset",
    "set_fault",
    "clear_faults",
    "faults",
    "counters",
    "active_sessions",
    "invalidate_sessions",
    "set_limits",
    "reset",
    "mfa_code",
    "set_mfa_phones",
    "login_records",
}


def test_http_control_has_the_same_methods_as_the_state():
    for name in PUBLIC_CONTROL_METHODS:
        state_method, http_method = getattr(EmulatorState, name), getattr(EmulatorControl, name)
        state_params = [p for p in inspect.signature(state_method).parameters if p != "self"]
        http_params = [p for p in inspect.signature(http_method).parameters if p != "self"]
        if name != "add_account":  # the HTTP twin takes **fields
            assert state_params == http_params, name


def test_http_control_drives_the_same_state(bill_emulator, bill_emulator_control):
    control, state = bill_emulator_control, bill_emulator.state
    account = control.add_account(username="ctl@example.com", password="ctl-pw")
    assert state.get_account("CTL@example.com") == account
    assert control.get_account("ctl@example.com").dev_key == account.dev_key
    assert [a.username for a in control.accounts()] == ["ctl@example.com"]

    before = state.now()
    after = control.advance(3600)
    assert timedelta(seconds=3599) < after - before < timedelta(seconds=3610)
    assert abs((control.now() - state.now()).total_seconds()) < 1
    assert control.offset() == pytest.approx(3600)

    assert v3_login(bill_emulator, account).status_code == 200
    assert control.counters(organization_id=account.organization_id) == state.counters(
        organization_id=account.organization_id
    )
    assert control.counters(organization_id=account.organization_id)["logins"] == 1
    assert control.active_sessions(dev_key=account.dev_key) == 1

    fault = control.set_fault("status", organization_id=account.organization_id, status=504)
    assert state.faults()[0]["id"] == fault
    assert v3_login(bill_emulator, account).status_code == 504
    control.clear_faults()
    assert state.faults() == []

    assert control.invalidate_sessions(organization_id=account.organization_id) == 1
    control.change_password("ctl@example.com", "other")
    assert state.get_account("ctl@example.com").password == "other"
    assert control.set_limits(logins_per_hour=7)["logins_per_hour"] == 7

    control.reset()
    assert (
        state.accounts() == []
        and state.clock.offset == 0
        and state.limits["logins_per_hour"] == 200
    )


def test_http_control_reports_bad_input(bill_emulator_control):
    bill_emulator_control.add_account(username="dup@example.com", password="pw")
    with pytest.raises(ValueError, match="already exists"):
        bill_emulator_control.add_account(username="dup@example.com", password="pw")
    with pytest.raises(ValueError, match="Unknown account field"):
        bill_emulator_control.add_account(username="x@example.com", password="pw", colour="red")
    with pytest.raises(ValueError, match="Unknown fault kind"):
        bill_emulator_control.set_fault("explode")
    with pytest.raises(ValueError, match="Unknown limit"):
        bill_emulator_control.set_limits(speed=1)


def test_counters_split_by_organization_and_dev_key(bill_emulator):
    state = bill_emulator.state
    shared = "01PARTNERKEYFORALL01"
    a = state.add_account(username="a@example.com", password="pw", dev_key=shared)
    b = state.add_account(username="b@example.com", password="pw", dev_key=shared)
    v3_login(bill_emulator, a)
    v3_login(bill_emulator, b)
    v3_login(bill_emulator, b, password="wrong")
    assert state.counters(organization_id=a.organization_id)["logins"] == 1
    assert state.counters(organization_id=b.organization_id)["login_failures"] == 1
    assert state.counters(dev_key=shared)["logins"] == 2
    assert state.counters(organization_id=b.organization_id, dev_key=shared)["calls"] == 2
    assert state.counters()["calls"] == 3


# --- accounts files, standalone use, command, remote clock ---------------------------------------------


def test_accounts_file_round_trip_and_example(tmp_path):
    example = load_accounts_file(ROOT / "bill_integration" / "emulator" / "accounts.example.json")
    state = EmulatorState()
    loaded = state.load_accounts(example)
    assert (
        ORG_ID.pattern
        and loaded[0].organization_id.startswith("008")
        and DEV_KEY.match(loaded[0].dev_key)
    )

    path = tmp_path / "accounts.json"
    write_accounts_file(path, loaded)
    again = EmulatorState().load_accounts(load_accounts_file(path))
    assert [a.to_dict() for a in again] == [a.to_dict() for a in loaded]

    (tmp_path / "bad.json").write_text('{"accounts": "nope"}')
    with pytest.raises(ValueError, match="expected a JSON list"):
        load_accounts_file(tmp_path / "bad.json")


@pytest.mark.slow
def test_standalone_server_without_django(tmp_path):
    script = (
        "import sys, json, urllib.request\n"
        "from bill_integration.emulator import EmulatorServer\n"
        "with EmulatorServer() as s:\n"
        "    urllib.request.urlopen(s.v3_base + '/v3/health').read()\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'django' or m.startswith('django.'))))\n"
    )
    result = subprocess.run(  # the return code is asserted below
        [sys.executable, "-c", script],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


@pytest.mark.slow
def test_manage_py_bill_emulator_prints_where_it_listens_and_its_accounts(tmp_path):
    accounts = tmp_path / "accounts.json"
    accounts.write_text(
        json.dumps(
            [
                {
                    "username": "demo@example.com",
                    "password": "demo-pw",
                    "organization_id": "00801DEMOORGANIZa1b2",
                    "dev_key": "01DEMODEVKEY00000001",
                }
            ]
        )
    )
    with EmulatorServer() as probe:  # find a free port, then free it
        port = probe.port
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "bill_emulator",
            "--port",
            str(port),
            "--accounts",
            str(accounts),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        lines = [process.stdout.readline() for _ in range(4)]
        output = "".join(lines)
        assert f"listening on http://127.0.0.1:{port}" in output, (
            process.stderr.read() if process.poll() else output
        )
        assert "username=demo@example.com password=demo-pw" in output
        assert "organization_id=00801DEMOORGANIZa1b2 dev_key=01DEMODEVKEY00000001" in output
        response = requests.post(
            f"http://127.0.0.1:{port}/connect/v3/login",
            timeout=5,
            json={
                "username": "demo@example.com",
                "password": "demo-pw",
                "organizationId": "00801DEMOORGANIZa1b2",
                "devKey": "01DEMODEVKEY00000001",
            },
        )
        assert response.status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.slow
def test_manage_py_bill_emulator_explains_a_missing_accounts_file(tmp_path):
    result = subprocess.run(  # the return code is asserted below
        [
            sys.executable,
            "manage.py",
            "bill_emulator",
            "--port",
            "0",
            "--accounts",
            str(tmp_path / "none.json"),
        ],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "none.json does not exist" in result.stderr


def test_remote_clock_follows_the_emulator(bill_emulator, monkeypatch):
    monkeypatch.setenv(clock_module.URL_ENV, bill_emulator.url)
    monkeypatch.setattr(clock_module, "_remote", {"offset": 0.0, "fetched": float("-inf")})
    assert abs((clock_module.remote_clock() - datetime.now(UTC)).total_seconds()) < 1

    bill_emulator.state.advance(7200)
    # Cached for about a second, then the new offset is read.
    assert abs((clock_module.remote_clock() - datetime.now(UTC)).total_seconds()) < 1
    time.sleep(clock_module.REMOTE_CACHE_SECONDS + 0.1)
    shifted = clock_module.remote_clock()
    assert abs((shifted - bill_emulator.state.now()).total_seconds()) < 1
    assert shifted.tzinfo is not None


def test_remote_clock_without_an_emulator_is_real_time(monkeypatch):
    monkeypatch.delenv(clock_module.URL_ENV, raising=False)
    assert abs((clock_module.remote_clock() - datetime.now(UTC)).total_seconds()) < 1
    monkeypatch.setenv(
        clock_module.URL_ENV, "http://127.0.0.1:9"
    )  # nothing listens: keep last offset
    monkeypatch.setattr(clock_module, "_remote", {"offset": 60.0, "fetched": float("-inf")})
    assert 59 < (clock_module.remote_clock() - datetime.now(UTC)).total_seconds() < 61


def test_remote_clock_asks_again_right_after_a_failed_fetch(bill_emulator, monkeypatch):
    """A failed fetch keeps the last offset for that call but is not cached as fresh."""
    monkeypatch.setattr(clock_module, "_remote", {"offset": 0.0, "fetched": float("-inf")})
    monkeypatch.setenv(clock_module.URL_ENV, "http://127.0.0.1:9")  # nothing listens
    assert abs((clock_module.remote_clock() - datetime.now(UTC)).total_seconds()) < 1
    bill_emulator.state.advance(7200)
    monkeypatch.setenv(clock_module.URL_ENV, bill_emulator.url)  # the emulator answers again
    # Well within the cache second of the failed fetch: the new offset is read at once.
    shifted = clock_module.remote_clock()
    assert abs((shifted - bill_emulator.state.now()).total_seconds()) < 1


class _SlowClockServer:
    """A real HTTP server answering ``/_emulator/clock`` after ``delay`` seconds."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.offset, self.delay = 0.0, 0.0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's API)
                time.sleep(owner.delay)
                body = json.dumps({"offset": owner.offset}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_remote_clock_counts_the_cache_second_from_the_start_of_a_slow_fetch(monkeypatch):
    """An offset is as old as the moment its fetch started, not the moment the answer came."""
    server = _SlowClockServer()
    try:
        monkeypatch.setattr(clock_module, "_remote", {"offset": 0.0, "fetched": float("-inf")})
        monkeypatch.setenv(clock_module.URL_ENV, server.url)
        server.delay = clock_module.REMOTE_CACHE_SECONDS  # the fetch takes the whole second
        assert abs((clock_module.remote_clock() - datetime.now(UTC)).total_seconds()) < 1
        server.offset, server.delay = 3600.0, 0.0  # the clock moves while the answer travelled
        time.sleep(0.2)
        # Started more than a second ago: stale, so the new offset is read.
        shifted = clock_module.remote_clock() - datetime.now(UTC)
        assert 3599 < shifted.total_seconds() < 3601
    finally:
        server.close()


def test_bill_clock_moves_the_app_clock_with_the_emulator(bill_clock, bill_emulator):
    from bill_integration.conf import now

    bill_clock.advance(3 * 3600)
    assert abs((now() - bill_emulator.state.now()).total_seconds()) < 1
    assert (now() - datetime.now(UTC)) > timedelta(hours=2, minutes=59)


def test_bill_environment_points_the_app_at_the_emulator(bill_environment, bill_emulator):
    from bill_integration.conf import bill_settings

    assert bill_environment == "emulator" and bill_settings.DEFAULT_ENVIRONMENT == "emulator"
    assert bill_settings.base_url("emulator", "v3") == bill_emulator.v3_base
    assert bill_settings.base_url("emulator", "v2") == bill_emulator.v2_base
    assert "sandbox" in bill_settings.ENVIRONMENTS  # the other environments stay


def test_many_accounts_share_one_server(bill_emulator):
    state = bill_emulator.state
    accounts = [
        state.add_account(username=f"t{n}@example.com", password=f"pw{n}") for n in range(2000)
    ]
    picked = accounts[1234]
    assert v3_login(bill_emulator, picked).json()["organizationId"] == picked.organization_id
    assert len({a.organization_id for a in accounts}) == 2000
