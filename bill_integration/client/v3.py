"""BILL v3 (``/connect/v3``): JSON bodies, ``devKey`` + ``sessionId`` headers (bill-api.md §2).

Errors come as HTTP 4xx/5xx with a JSON array of ``{timestamp, code, severity, category,
message}``; :func:`raise_for_answer` turns them into the taxonomy via ``errors.py``.
UNCONFIRMED (bill-api.md §8): the status of a failed login (the Postman collection says 400)
and of rate-limit errors; we read the code, never the status, for those.
"""

from __future__ import annotations

from typing import Any

import requests

from ..exceptions import BillAPIError
from .base import HttpClient, parse_json_body, require_str, session_credentials
from .errors import error_for_answer, unexpected
from .types import LoginResult, SessionInfo


def _first_error(body: Any) -> tuple[str | None, Any]:
    """(code, message) of the first error object in a v3 error body, if there is one."""
    items = body if isinstance(body, list) else [body] if isinstance(body, dict) else []
    for item in items:
        if isinstance(item, dict):
            code = item.get("code")
            return (code if isinstance(code, str) and code else None), item.get("message")
    return None, None


def raise_for_answer(response: requests.Response, *, session_call: bool) -> Any:
    """The parsed body of a 2xx answer; otherwise raise the matching exception."""
    status = response.status_code
    if 200 <= status < 300:
        return parse_json_body(response)
    try:
        body = parse_json_body(response)
    except BillAPIError:
        body = None  # an HTML error page from a proxy: the status alone decides below
    code, message = _first_error(body)
    raise error_for_answer(
        code=code, bill_message=message, http_status=status, session_call=session_call, api="v3"
    )


class V3Api:
    """The v3 dialect; stateless, used by :class:`bill_integration.client.BillClient`."""

    api_version = "v3"

    def login(
        self, http: HttpClient, *, username: str, password: str, organization_id: str, dev_key: str
    ) -> LoginResult:
        response = http.send(
            "POST",
            "/v3/login",
            json={
                "username": username,
                "password": password,
                "organizationId": organization_id,
                "devKey": dev_key,
            },
        )
        body = raise_for_answer(response, session_call=False)
        status = response.status_code
        trusted = body.get("trusted", False) if isinstance(body, dict) else False
        if not isinstance(trusted, bool):
            raise unexpected("Login: field 'trusted' is not a boolean.", http_status=status)
        return LoginResult(
            session_id=require_str(body, "sessionId", http_status=status, what="Login"),
            organization_id=require_str(body, "organizationId", http_status=status, what="Login"),
            user_id=require_str(body, "userId", http_status=status, what="Login"),
            trusted=trusted,
            api_endpoint=None,
        )

    def session_info(self, http: HttpClient, *, session_id: str, dev_key: str) -> SessionInfo:
        response = http.send(
            "GET", "/v3/login/session", headers=session_credentials(session_id, dev_key)
        )
        body = raise_for_answer(response, session_call=True)
        status = response.status_code
        return SessionInfo(
            organization_id=require_str(body, "organizationId", http_status=status, what="Session"),
            user_id=require_str(body, "userId", http_status=status, what="Session"),
            mfa_status=require_str(
                body, "mfaStatus", http_status=status, what="Session", optional=True
            ),
        )

    def logout(self, http: HttpClient, *, session_id: str, dev_key: str) -> None:
        response = http.send("POST", "/v3/logout", headers=session_credentials(session_id, dev_key))
        raise_for_answer(response, session_call=True)  # BILL answers 200 with an empty body

    def request(
        self,
        http: HttpClient,
        method: str,
        path: str,
        *,
        session_id: str,
        dev_key: str,
        json: Any = None,
        data: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        response = http.send(
            method.upper(),
            path,
            headers=session_credentials(session_id, dev_key),
            json=json,
            data=data,
            params=params,
        )
        return raise_for_answer(response, session_call=True)
