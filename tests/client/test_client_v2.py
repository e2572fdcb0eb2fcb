"""v2-specific behaviour of the BILL client (form posts, errors inside HTTP 200), over real HTTP.

The lifecycle shared with v3 (expiry, logout, limits, faults) runs for both versions in
``test_client_v3.py``.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import pytest

from bill_integration.client import BillClient, get_client
from bill_integration.exceptions import (
    InvalidCredentials,
    InvalidDevKey,
    SessionInvalid,
    UnexpectedResponse,
)
from tests.canned_http import CannedServer, reply


class RecordingClient(BillClient):
    """Keeps every prepared request so a test can see exactly what went over the wire."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.prepared = []

    def send(self, method, path, **kwargs):
        response = super().send(method, path, **kwargs)
        self.prepared.append(response.request)
        return response


@pytest.fixture
def recording(bill_environment, bill_settings):
    bill_settings(CLIENT_CLASS="tests.client.test_client_v2.RecordingClient")

    def make(api_version="v2") -> RecordingClient:
        return get_client(bill_environment, api_version)

    return make


def login(client, account, **changes):
    return client.login(
        **{
            "username": account.username,
            "password": account.password,
            "organization_id": account.organization_id,
            "dev_key": account.dev_key,
            **changes,
        }
    )


def form_of(prepared) -> dict[str, str]:
    body = prepared.body if isinstance(prepared.body, str) else prepared.body.decode()
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


def test_login_posts_the_documented_form_fields(recording, bill_account):
    client = recording()
    login(client, bill_account)

    sent = client.prepared[-1]
    assert sent.method == "POST" and sent.url.endswith("/api/v2/Login.json")
    assert sent.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert form_of(sent) == {
        "userName": bill_account.username,
        "password": bill_account.password,
        "orgId": bill_account.organization_id,
        "devKey": bill_account.dev_key,
    }


def test_errors_arrive_inside_http_200_and_are_still_errors(bill_environment, bill_account):
    client = get_client(bill_environment, "v2")
    with pytest.raises(InvalidCredentials) as caught:
        login(client, bill_account, password="wrong")
    assert (caught.value.bill_code, caught.value.http_status) == ("BDC_1101", 200)

    result = login(client, bill_account)
    client.logout(session_id=result.session_id, dev_key=bill_account.dev_key)
    with pytest.raises(SessionInvalid) as caught:
        client.session_info(session_id=result.session_id, dev_key=bill_account.dev_key)
    assert (caught.value.bill_code, caught.value.http_status) == ("BDC_1109", 200)


def test_session_calls_send_dev_key_and_session_in_the_form(recording, bill_account):
    client = recording()
    result = login(client, bill_account)
    client.session_info(session_id=result.session_id, dev_key=bill_account.dev_key)
    client.logout(session_id=result.session_id, dev_key=bill_account.dev_key)

    for prepared, path in zip(
        client.prepared[1:], ("/GetSessionInfo.json", "/Logout.json"), strict=True
    ):
        assert prepared.method == "POST" and prepared.url.endswith("/api/v2" + path)
        assert form_of(prepared) == {"devKey": bill_account.dev_key, "sessionId": result.session_id}


def test_request_sends_data_as_a_json_string_form_field(recording, bill_account):
    client = recording()
    result = login(client, bill_account)
    payload = {"start": 0, "max": 999, "filters": [{"field": "isActive", "op": "=", "value": "1"}]}

    answer = client.request(
        "POST",
        "/List/Vendor.json",
        session_id=result.session_id,
        dev_key=bill_account.dev_key,
        data=payload,
    )

    assert answer == []
    form = form_of(client.prepared[-1])
    assert json.loads(form["data"]) == payload
    assert (form["devKey"], form["sessionId"]) == (bill_account.dev_key, result.session_id)


def test_request_refuses_anything_but_post(bill_environment, bill_account):
    client = get_client(bill_environment, "v2")
    with pytest.raises(ValueError, match="POST"):
        client.request(
            "GET", "/List/Vendor.json", session_id="!a" + "s" * 43, dev_key=bill_account.dev_key
        )


def test_missing_dev_key_is_reported_as_invalid_dev_key(bill_environment, bill_account):
    client = get_client(bill_environment, "v2")
    result = login(client, bill_account)
    with pytest.raises(InvalidDevKey) as caught:
        client.session_info(session_id=result.session_id, dev_key="")
    assert "Developer key must be specified." in str(caught.value)


def test_unknown_operation_is_unexpected_404(bill_environment, bill_account):
    client = get_client(bill_environment, "v2")
    result = login(client, bill_account)
    with pytest.raises(UnexpectedResponse) as caught:
        client.request(
            "POST", "/NoSuchThing.json", session_id=result.session_id, dev_key=bill_account.dev_key
        )
    assert (caught.value.bill_code, caught.value.http_status) == ("BDC_1121", 404)


@pytest.mark.parametrize("api_version", ["v3", "v2"])
def test_no_secret_ever_travels_in_a_url(recording, bill_emulator, api_version):
    account = bill_emulator.state.add_account(
        username="url-canary@example.com", password="url-canary-pw"
    )
    client = recording(api_version)
    result = login(client, account)
    client.session_info(session_id=result.session_id, dev_key=account.dev_key)
    if api_version == "v3":
        client.request(
            "GET",
            "/v3/vendors",
            session_id=result.session_id,
            dev_key=account.dev_key,
            params={"max": 5},
        )
    client.logout(session_id=result.session_id, dev_key=account.dev_key)

    assert len(client.prepared) >= 3
    for prepared in client.prepared:
        for secret in (account.password, account.dev_key, result.session_id, account.username):
            assert secret not in prepared.url
    with pytest.raises(ValueError, match="secret"):
        client.request(
            "GET" if api_version == "v3" else "POST",
            "/v3/vendors",
            session_id=result.session_id,
            dev_key=account.dev_key,
            params={"sessionId": result.session_id},
        )


def test_request_refuses_a_path_on_another_host(bill_environment):
    client = get_client(bill_environment, "v3")
    with pytest.raises(ValueError, match="relative"):
        client.request(
            "GET", "https://evil.example.com/steal", session_id="!a" + "s" * 43, dev_key="01X"
        )


def test_later_calls_never_follow_the_login_answers_api_endpoint():
    # BILL's login answer names an apiEndPoint for later v2 calls. The client records it but
    # sends every call to the configured base URL: a session must never go to a host named by
    # a response (client/__init__.py, "Choices").
    elsewhere_calls = []

    def elsewhere(handler):
        elsewhere_calls.append(handler.path)
        reply(handler, 200, {"response_status": 0, "response_message": "Success"})

    def bill(handler):
        if handler.path.endswith("/Login.json"):
            data = {
                "sessionId": "!a" + "s" * 43,
                "orgId": "00801ABCDEFGHIJKabcd",
                "apiEndPoint": other.url + "/api/v2",
                "usersId": "00601ABCDEFGHIJKabcd",
            }
        else:
            data = {"organizationId": "00801ABCDEFGHIJKabcd", "userId": "00601ABCDEFGHIJKabcd"}
        reply(
            handler,
            200,
            {"response_status": 0, "response_message": "Success", "response_data": data},
        )

    with CannedServer(elsewhere) as other, CannedServer(bill) as configured:
        client = BillClient(configured.url + "/api/v2", "v2", connect_timeout=5, read_timeout=5)
        result = client.login(
            username="u@example.com", password="pw", organization_id="00801X", dev_key="01X"
        )
        assert result.api_endpoint == other.url + "/api/v2"
        client.session_info(session_id=result.session_id, dev_key="01X")
        client.request("POST", "/List/Vendor.json", session_id=result.session_id, dev_key="01X")
        client.logout(session_id=result.session_id, dev_key="01X")

    assert elsewhere_calls == []
    assert [path for _, path in configured.requests] == [
        "/api/v2/Login.json",
        "/api/v2/GetSessionInfo.json",
        "/api/v2/List/Vendor.json",
        "/api/v2/Logout.json",
    ]
