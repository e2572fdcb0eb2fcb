"""Parsing of odd BILL answers, without a network: hand-built ``requests.Response`` objects.

These are the only client tests that do not go through the emulator; they pin down how the
client reads bodies BILL (or a proxy in front of it) might send but the emulator never does.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import requests

from bill_integration.client import BillClient, SpendClient
from bill_integration.client.errors import BILL_ERROR_CODES, MAX_BILL_MESSAGE, start_of_next_hour
from bill_integration.conf import override_clock
from bill_integration.exceptions import (
    InvalidApiToken,
    InvalidCredentials,
    InvalidDevKey,
    RateLimited,
    SessionInvalid,
    TransientError,
    UnexpectedResponse,
    UntrustedSession,
)

HTML_502 = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


def answer(
    status: int, body: object = b"", content_type: str = "application/json"
) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response.headers["Content-Type"] = content_type
    return response


def v3_error(code: str | None, message: str = "m", **extra) -> list[dict]:
    item = {
        "timestamp": "2026-12-25T00:00:00.000+00:00",
        "severity": "ERROR",
        "category": "DOWNSTREAM",
        "message": message,
        **extra,
    }
    if code:
        item["code"] = code
    return [item]


def envelope_error(code: str, message: str = "m") -> dict:
    return {
        "response_status": 1,
        "response_message": "Error",
        "response_data": {"error_code": code, "error_message": message},
    }


class CannedClient(BillClient):
    """Answers every send() with a prepared response (parsing only; no socket)."""

    def __init__(self, api_version: str, response: requests.Response) -> None:
        super().__init__(
            "http://bill.invalid/connect", api_version, connect_timeout=1, read_timeout=1
        )
        self.response = response

    def send(self, method, path, **kwargs):
        return self.response


def login(client):
    return client.login(
        username="u@example.com", password="pw", organization_id="00801X", dev_key="01X"
    )


# --- v3 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "exception"),
    [
        (answer(200, b""), UnexpectedResponse),  # empty body
        (answer(200, b"   "), UnexpectedResponse),
        (answer(200, HTML_502, "text/html"), UnexpectedResponse),  # HTML page with a 200
        (answer(502, HTML_502, "text/html"), TransientError),  # proxy error page
        (answer(503, b""), TransientError),
        (answer(200, []), UnexpectedResponse),  # a list, not an object
        (
            answer(200, {"sessionId": "!abc", "organizationId": "008"}),
            UnexpectedResponse,
        ),  # no userId
        (
            answer(200, {"sessionId": 12, "organizationId": "008", "userId": "006"}),
            UnexpectedResponse,
        ),
        (
            answer(
                200, {"sessionId": "!a", "organizationId": "008", "userId": "006", "trusted": "no"}
            ),
            UnexpectedResponse,
        ),
        (answer(400, v3_error("BDC_1101")), InvalidCredentials),
        (answer(401, v3_error("BDC_1102")), InvalidDevKey),
        (answer(400, v3_error(None, "devKey: must not be null")), UnexpectedResponse),  # code-less
        (answer(401, b""), UnexpectedResponse),  # 401 without a code at login: not "bad password"
        (answer(429, v3_error("BDC_1144")), RateLimited),
        (answer(500, v3_error("BDC_1322")), RateLimited),  # the code decides, not the status
        (answer(302, b""), UnexpectedResponse),
    ],
)
def test_v3_login_answers(response, exception):
    with pytest.raises(exception) as caught:
        login(CannedClient("v3", response))
    assert type(caught.value) is exception
    assert caught.value.http_status == response.status_code


def test_v3_login_success_is_parsed():
    body = {
        "organizationId": "00801ABCDEFGHIJKabcd",
        "sessionId": "!a" + "Z" * 43,
        "trusted": True,
        "userId": "00601ABCDEFGHIJKabcd",
    }
    result = login(CannedClient("v3", answer(200, body)))
    assert (result.organization_id, result.user_id, result.trusted) == (
        body["organizationId"],
        body["userId"],
        True,
    )
    assert "!a" + "Z" * 43 not in repr(result)


def test_v3_missing_field_error_names_the_field():
    with pytest.raises(UnexpectedResponse, match="'userId'"):
        login(CannedClient("v3", answer(200, {"sessionId": "!a", "organizationId": "008"})))


@pytest.mark.parametrize(
    ("response", "exception"),
    [
        (answer(401, b""), SessionInvalid),  # a session call's bare 401 is a dead session
        (answer(401, v3_error("BDC_1109", "Session is invalid.  Please log in.")), SessionInvalid),
        (answer(403, v3_error("BDC_1361", "Untrusted session.", params={})), UntrustedSession),
        (answer(403, v3_error(None)), UnexpectedResponse),
        (answer(404, v3_error("BDC_1121")), UnexpectedResponse),
        (answer(504, HTML_502, "text/html"), TransientError),
        (answer(200, {"organizationId": "008"}), UnexpectedResponse),
        (answer(200, {"response_status": 0}), UnexpectedResponse),  # a v2 envelope on v3
    ],
)
def test_v3_session_call_answers(response, exception):
    client = CannedClient("v3", response)
    with pytest.raises(exception):
        client.session_info(session_id="!a", dev_key="01X")


def test_v3_session_info_without_mfa_status_is_fine():
    client = CannedClient("v3", answer(200, {"organizationId": "008", "userId": "006"}))
    assert client.session_info(session_id="!a", dev_key="01X").mfa_status is None


def test_v3_logout_accepts_an_empty_200():
    assert CannedClient("v3", answer(200, b"")).logout(session_id="!a", dev_key="01X") is None


def test_v3_request_returns_none_for_an_empty_body_and_json_otherwise():
    assert (
        CannedClient("v3", answer(204, b"")).request("DELETE", "/v3/x", session_id="s", dev_key="d")
        is None
    )
    body = {"results": [1]}
    assert (
        CannedClient("v3", answer(200, body)).request("GET", "/v3/x", session_id="s", dev_key="d")
        == body
    )


# --- v2 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "exception", "code"),
    [
        (answer(200, envelope_error("BDC_1109")), SessionInvalid, "BDC_1109"),
        (answer(200, envelope_error("BDC_1101")), InvalidCredentials, "BDC_1101"),
        (answer(200, envelope_error("BDC_1102")), InvalidDevKey, "BDC_1102"),
        (answer(200, envelope_error("BDC_1144")), RateLimited, "BDC_1144"),
        (answer(200, envelope_error("BDC_1322")), RateLimited, "BDC_1322"),
        (answer(200, envelope_error("BDC_1001")), TransientError, "BDC_1001"),
        (answer(200, envelope_error("BDC_1145")), UnexpectedResponse, "BDC_1145"),
        (
            answer(200, {"response_status": 1, "response_message": "Error"}),
            UnexpectedResponse,
            None,
        ),
        (answer(200, {"response_status": 1, "response_data": "oops"}), UnexpectedResponse, None),
        (answer(200, {"response_status": 2, "response_data": {}}), UnexpectedResponse, None),
        (
            answer(200, {"response_data": {"organizationId": "008", "userId": "006"}}),
            UnexpectedResponse,
            None,
        ),
        (answer(200, {}), UnexpectedResponse, None),
        (answer(200, b""), UnexpectedResponse, None),  # "a 200 with an empty body read as success"
        (answer(200, HTML_502, "text/html"), UnexpectedResponse, None),
        (answer(502, HTML_502, "text/html"), TransientError, None),
        (answer(500, envelope_error("BDC_9999")), TransientError, "BDC_9999"),
        (answer(404, envelope_error("BDC_1121")), UnexpectedResponse, "BDC_1121"),
        (answer(404, {"response_status": 0, "response_data": {}}), UnexpectedResponse, None),
    ],
)
def test_v2_answers(response, exception, code):
    client = CannedClient("v2", response)
    with pytest.raises(exception) as caught:
        client.session_info(session_id="!a", dev_key="01X")
    assert type(caught.value) is exception
    assert caught.value.bill_code == code


def test_v2_login_success_and_missing_fields():
    data = {
        "sessionId": "!a" + "q" * 43,
        "orgId": "00801ABCDEFGHIJKabcd",
        "apiEndPoint": "https://api-stage.bill.com/api/v2",
        "usersId": "00601ABCDEFGHIJKabcd",
    }
    ok = {"response_status": 0, "response_message": "Success", "response_data": data}
    result = login(CannedClient("v2", answer(200, ok)))
    assert (result.organization_id, result.user_id, result.api_endpoint, result.trusted) == (
        data["orgId"],
        data["usersId"],
        data["apiEndPoint"],
        False,
    )

    without_user = {**ok, "response_data": {k: v for k, v in data.items() if k != "usersId"}}
    with pytest.raises(UnexpectedResponse, match="'usersId'"):
        login(CannedClient("v2", answer(200, without_user)))
    without_endpoint = {
        **ok,
        "response_data": {k: v for k, v in data.items() if k != "apiEndPoint"},
    }
    assert login(CannedClient("v2", answer(200, without_endpoint))).api_endpoint is None


@pytest.mark.parametrize("value", ["", 42, ["https://api.bill.com/api/v2"]])
def test_v2_login_does_not_fail_over_an_unusable_api_endpoint(value):
    # apiEndPoint is information only (never followed), so a login must not fail over it.
    data = {
        "sessionId": "!a" + "q" * 43,
        "orgId": "00801ABCDEFGHIJKabcd",
        "apiEndPoint": value,
        "usersId": "00601ABCDEFGHIJKabcd",
    }
    ok = {"response_status": 0, "response_message": "Success", "response_data": data}
    result = login(CannedClient("v2", answer(200, ok)))
    assert (result.user_id, result.api_endpoint) == (data["usersId"], None)


def test_v2_session_info_uses_its_own_field_names():
    ok = {
        "response_status": 0,
        "response_message": "Success",
        "response_data": {"organizationId": "008A", "userId": "006B"},
    }
    info = CannedClient("v2", answer(200, ok)).session_info(session_id="!a", dev_key="01X")
    assert (info.organization_id, info.user_id, info.mfa_status) == ("008A", "006B", None)
    with pytest.raises(UnexpectedResponse):  # Login's names are not accepted here
        CannedClient(
            "v2", answer(200, {**ok, "response_data": {"orgId": "008A", "usersId": "006B"}})
        ).session_info(session_id="!a", dev_key="01X")


# --- rules shared by all ----------------------------------------------------------------------


def test_rate_limit_hourly_retry_at_is_the_next_hour_of_the_app_clock():
    fixed = datetime(2026, 12, 25, 14, 37, 12, tzinfo=UTC)
    with override_clock(lambda: fixed):
        with pytest.raises(RateLimited) as caught:
            CannedClient("v2", answer(200, envelope_error("BDC_1144"))).session_info(
                session_id="!a", dev_key="01X"
            )
        assert caught.value.scope == "hourly"
        assert caught.value.retry_at == datetime(2026, 12, 25, 15, 0, tzinfo=UTC)
        with pytest.raises(RateLimited) as caught:
            CannedClient("v3", answer(429, v3_error("BDC_1322"))).session_info(
                session_id="!a", dev_key="01X"
            )
        assert (caught.value.scope, caught.value.retry_at) == ("concurrency", None)


def test_start_of_next_hour_rolls_over_midnight():
    assert start_of_next_hour(datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)) == datetime(
        2027, 1, 1, tzinfo=UTC
    )


def test_bill_message_is_kept_but_shortened_and_body_is_never_copied():
    long_message = "Session is invalid. " + "x" * 1000
    with pytest.raises(SessionInvalid) as caught:
        CannedClient("v3", answer(401, v3_error("BDC_1109", long_message))).session_info(
            session_id="!a", dev_key="d"
        )
    text = str(caught.value)
    assert "Session is invalid." in text and "[BDC_1109]" in text and "(HTTP 401)" in text
    assert len(text) < MAX_BILL_MESSAGE + 200
    with pytest.raises(UnexpectedResponse) as caught:
        login(CannedClient("v3", answer(200, b"<html>secret-looking body</html>", "text/html")))
    assert "secret-looking" not in str(caught.value) and "text/html" in str(caught.value)


def test_the_code_table_covers_the_documented_auth_codes():
    assert {"BDC_1101", "BDC_1102", "BDC_1109", "BDC_1144", "BDC_1322", "BDC_1361"} <= set(
        BILL_ERROR_CODES
    )


def test_spend_statuses():
    class CannedSpend(SpendClient):
        def __init__(self, response):
            super().__init__("http://bill.invalid/connect", connect_timeout=1, read_timeout=1)
            self.response = response

        def send(self, method, path, **kwargs):
            return self.response

    with pytest.raises(InvalidApiToken):
        CannedSpend(answer(401, b"")).current_user(api_token="t")
    for status, body in (
        (401, v3_error("BDC_1109", "Session is invalid.  Please log in.")),
        (403, v3_error("BDC_1361", "Untrusted session.")),
        (403, HTML_502),
        (401, {"errorCode": "BDC_1109", "errorMessage": "Session is invalid."}),
    ):
        with pytest.raises(InvalidApiToken):
            CannedSpend(answer(status, body)).current_user(api_token="t")
    with pytest.raises(UnexpectedResponse):
        CannedSpend(answer(400, v3_error(None, "apiToken: header is required"))).current_user(
            api_token="t"
        )
    with pytest.raises(TransientError):
        CannedSpend(answer(503, HTML_502, "text/html")).current_user(api_token="t")
    with pytest.raises(UnexpectedResponse, match="'email'"):
        CannedSpend(answer(200, {"id": "VXNlcjox", "role": "ADMIN"})).current_user(api_token="t")


def test_unknown_api_version_is_a_configuration_error():
    from bill_integration.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="v4"):
        BillClient("http://bill.invalid", "v4")


@pytest.mark.parametrize(
    ("dev_key", "session_id", "exception", "field"),
    [
        ("01KEY\n", "!asession", InvalidDevKey, "devKey"),
        (" 01KEY", "!asession", InvalidDevKey, "devKey"),
        ("01KEY", "!asession\r\nX-Evil: 1", SessionInvalid, "sessionId"),
    ],
)
def test_credentials_http_cannot_carry_are_refused_before_sending(
    dev_key, session_id, exception, field
):
    # Nothing listens on port 9: the error must come from our check, not from the network.
    client = BillClient("http://127.0.0.1:9/connect", "v3", connect_timeout=1, read_timeout=1)
    with pytest.raises(exception, match=field) as caught:
        client.session_info(session_id=session_id, dev_key=dev_key)
    assert dev_key.strip() not in str(caught.value) and "X-Evil" not in str(caught.value)


def test_unusable_base_url_is_a_configuration_error():
    from bill_integration.exceptions import ConfigurationError

    client = BillClient("gateway.stage.bill.com/connect", "v3", connect_timeout=1, read_timeout=1)
    with pytest.raises(ConfigurationError, match="ENVIRONMENTS"):
        client.session_info(session_id="!a", dev_key="01X")
