"""BILL v3 (``/connect/v3``): JSON bodies, ``devKey`` + ``sessionId`` headers (https://developer.bill.com/docs/whats-different-in-v3).

Errors come as HTTP 4xx/5xx with a JSON array of ``{timestamp, code, severity, category,
message}``; :func:`raise_for_answer` turns them into the taxonomy via ``errors.py``.
UNCONFIRMED (BILL does not document it): the status of a failed login (the Postman collection says 400)
and of rate-limit errors; we read the code, never the status, for those.
"""

from __future__ import annotations

from typing import Any

import requests

from ..exceptions import BillAPIError
from .base import HttpClient, parse_json_body, require_bool, require_str, session_credentials
from .errors import error_for_answer, on_code_check, on_text_message, unexpected
from .types import LoginResult, MfaPhone, SessionInfo, StepUpResult


def _first_error(body: Any) -> tuple[str | None, Any]:
    """(code, message) of the first error object in a v3 error body, if there is one."""
    items = body if isinstance(body, list) else [body] if isinstance(body, dict) else []
    for item in items:
        if isinstance(item, dict):
            code = item.get("code")
            return (code if isinstance(code, str) and code else None), item.get("message")
    return None, None


def _optional_bool(body: Any, key: str, *, http_status: int, what: str) -> bool | None:
    value = body.get(key) if isinstance(body, dict) else None
    if value is not None and not isinstance(value, bool):
        raise unexpected(f"{what}: field {key!r} is not a boolean.", http_status=http_status)
    return value


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


def auth_headers(session_id: str, dev_key: str, bearer: str | None = None) -> dict[str, str]:
    """v3 credentials: ``devKey`` + ``sessionId``, or an OAuth ``Authorization: Bearer`` alone."""
    if bearer:
        return {"Authorization": f"Bearer {bearer}"}
    return session_credentials(session_id, dev_key)


class V3Api:
    """The v3 dialect; stateless, used by :class:`bill_integration.client.BillClient`."""

    api_version = "v3"

    def login(
        self,
        http: HttpClient,
        *,
        username: str,
        password: str,
        organization_id: str,
        dev_key: str,
        remember_me_id: str | None = None,
        device: str | None = None,
        console_token: str | None = None,
    ) -> LoginResult:
        body = {"username": username, "organizationId": organization_id, "devKey": dev_key}
        if console_token:  # Accountant Console: consoleApiToken and no password (https://developer.bill.com/docs/bill-accountant-console-operations)
            body["consoleApiToken"] = console_token
        else:
            body["password"] = password
        if (
            remember_me_id and device
        ):  # an MFA-trusted session (https://developer.bill.com/reference/login)
            body.update(rememberMeId=remember_me_id, device=device)
        response = http.send("POST", "/v3/login", json=body)
        body = raise_for_answer(response, session_call=False)
        status = response.status_code
        trusted = require_bool(body, "trusted", http_status=status, what="Login", default=False)
        return LoginResult(
            session_id=require_str(body, "sessionId", http_status=status, what="Login"),
            organization_id=require_str(body, "organizationId", http_status=status, what="Login"),
            user_id=require_str(body, "userId", http_status=status, what="Login"),
            trusted=trusted,
            api_endpoint=None,
        )

    def session_info(
        self, http: HttpClient, *, session_id: str, dev_key: str, bearer: str | None = None
    ) -> SessionInfo:
        response = http.send(
            "GET", "/v3/login/session", headers=auth_headers(session_id, dev_key, bearer)
        )
        body = raise_for_answer(response, session_call=True)
        status = response.status_code
        return SessionInfo(
            organization_id=require_str(body, "organizationId", http_status=status, what="Session"),
            user_id=require_str(body, "userId", http_status=status, what="Session"),
            mfa_status=require_str(
                body, "mfaStatus", http_status=status, what="Session", optional=True
            ),
            mfa_bypass=_optional_bool(body, "mfaBypass", http_status=status, what="Session"),
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
        bearer: str | None = None,
    ) -> Any:
        response = http.send(
            method.upper(),
            path,
            headers=auth_headers(session_id, dev_key, bearer),
            json=json,
            data=data,
            params=params,
        )
        return raise_for_answer(response, session_call=True)

    # --- MFA (https://developer.bill.com/changelog/2024-07-22-new-v3-api-endpoints-for-mfa) ----

    def _session_call(
        self,
        http: HttpClient,
        method: str,
        path: str,
        session_id: str,
        dev_key: str,
        body: Any = None,
    ) -> tuple[Any, int]:
        response = http.send(
            method, path, headers=session_credentials(session_id, dev_key), json=body
        )
        return raise_for_answer(response, session_call=True), response.status_code

    def mfa_phones(self, http: HttpClient, *, session_id: str, dev_key: str) -> list[MfaPhone]:
        body, status = self._session_call(http, "GET", "/v3/mfa/phones", session_id, dev_key)
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, list):
            raise unexpected("MFA phones: field 'results' is not a list.", http_status=status)
        phones = []
        for item in results:
            if not isinstance(item, dict) or not isinstance(item.get("primary", False), bool):
                raise unexpected("MFA phones: an entry is not a phone.", http_status=status)
            last4 = item.get("last4digits")
            phones.append(
                MfaPhone(
                    type=str(item.get("type") or "MOBILE"),
                    last4digits=str(last4)[-4:] if last4 else "",
                    primary=bool(item.get("primary", False)),
                )
            )
        return phones

    def mfa_challenge(
        self, http: HttpClient, *, session_id: str, dev_key: str, use_backup: bool
    ) -> str:
        try:
            body, status = self._session_call(
                http, "POST", "/v3/mfa/challenge", session_id, dev_key, {"useBackup": use_backup}
            )
        except BillAPIError as exc:
            raise on_text_message(exc) from None
        return require_str(body, "challengeId", http_status=status, what="MFA challenge")

    def mfa_validate(
        self,
        http: HttpClient,
        *,
        session_id: str,
        dev_key: str,
        challenge_id: str,
        code: str,
        device: str,
        machine_name: str,
    ) -> str:
        request = {
            "challengeId": challenge_id,
            "token": code,  # six digits
            "device": device,
            "machineName": machine_name,
            "rememberMe": True,
        }
        try:
            body, status = self._session_call(
                http, "POST", "/v3/mfa/challenge/validate", session_id, dev_key, request
            )
        except BillAPIError as exc:
            raise on_code_check(exc) from None
        return require_str(body, "rememberMeId", http_status=status, what="MFA validate")

    def mfa_step_up(
        self, http: HttpClient, *, session_id: str, dev_key: str, remember_me_id: str, device: str
    ) -> StepUpResult:
        body, status = self._session_call(
            http,
            "POST",
            "/v3/mfa/step-up",
            session_id,
            dev_key,
            {"rememberMeId": remember_me_id, "device": device},
        )
        trusted = require_bool(body, "trusted", http_status=status, what="MFA step-up")
        return StepUpResult(trusted=trusted, session_trusted=trusted)
