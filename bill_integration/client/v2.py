"""BILL v2 (``/api/v2``): form-encoded POSTs, answers in a ``response_status`` envelope.

v2 answers HTTP 200 even for errors (https://developer.bill.com/v2/docs/common-error-codes), so success is ``response_status == 0``
and nothing else: a 200 without the envelope is :class:`UnexpectedResponse`, never success.
A wrong path is HTTP 404 with ``BDC_1121``; a 5xx (a gateway in front of BILL) is transient.
"""

from __future__ import annotations

import json as jsonlib
from typing import Any

import requests

from ..exceptions import BillAPIError
from .base import HttpClient, parse_json_body, require_bool, require_str, session_credentials
from .errors import error_for_answer, on_code_check, on_text_message, unexpected
from .types import LoginResult, MfaPhone, Organization, SessionInfo, StepUpResult


def raise_for_answer(response: requests.Response) -> Any:
    """``response_data`` of a successful envelope; otherwise raise the matching exception."""
    status = response.status_code
    try:
        body = parse_json_body(response)
    except BillAPIError:
        if status >= 500 or status == 429:
            raise error_for_answer(
                code=None, bill_message=None, http_status=status, session_call=True, api="v2"
            ) from None
        raise
    if not isinstance(body, dict) or "response_status" not in body:
        if status >= 500 or status == 429:
            raise error_for_answer(
                code=None, bill_message=None, http_status=status, session_call=True, api="v2"
            )
        raise unexpected("The answer has no v2 'response_status' envelope.", http_status=status)
    outcome = body["response_status"]
    data = body.get("response_data")
    if outcome == 0 and 200 <= status < 300:
        return data
    if outcome == 1:
        code = data.get("error_code") if isinstance(data, dict) else None
        message = data.get("error_message") if isinstance(data, dict) else None
        raise error_for_answer(
            code=code if isinstance(code, str) else None,
            bill_message=message,
            http_status=status,
            session_call=True,
            api="v2",
        )
    raise unexpected(f"'response_status' is {outcome!r} with HTTP {status}.", http_status=status)


def _api_endpoint(body: Any) -> str | None:
    """``apiEndPoint`` if it is a non-empty string; information only (``LoginResult``)."""
    value = body.get("apiEndPoint") if isinstance(body, dict) else None
    return value if isinstance(value, str) and value else None


class V2Api:
    """The v2 dialect; stateless, used by :class:`bill_integration.client.BillClient`."""

    api_version = "v2"

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
    ) -> LoginResult:
        form = {
            "userName": username,
            "password": password,
            "orgId": organization_id,
            "devKey": dev_key,
        }
        if (
            remember_me_id and device
        ):  # https://developer.bill.com/v2/reference/auth-mfaauthenticate
            form.update(mfaId=remember_me_id, deviceId=device)
        response = http.send("POST", "/Login.json", data=form)
        body = raise_for_answer(response)
        status = response.status_code
        return LoginResult(
            session_id=require_str(body, "sessionId", http_status=status, what="Login"),
            organization_id=require_str(body, "orgId", http_status=status, what="Login"),
            user_id=require_str(body, "usersId", http_status=status, what="Login"),
            trusted=False,
            api_endpoint=_api_endpoint(body),
        )

    def list_orgs(
        self, http: HttpClient, *, username: str, password: str, dev_key: str
    ) -> list[Organization]:
        """``ListOrgs.json``: the organizations these credentials open (no session, no orgId).

        Items carry ``orgId`` and ``orgName`` (https://developer.bill.com/v2/docs/authentication-overview); an item without an id is
        skipped, a missing name is empty. BILL counts it as a login (200 an hour).
        """
        form = {"userName": username, "password": password, "devKey": dev_key}
        data = raise_for_answer(http.send("POST", "/ListOrgs.json", data=form))
        if not isinstance(data, list):
            raise unexpected("ListOrgs: 'response_data' is not a list.", http_status=200)
        found = []
        for item in data:
            org = item.get("orgId") if isinstance(item, dict) else None
            if isinstance(org, str) and org:
                name = item.get("orgName")
                found.append(Organization(id=org, name=name if isinstance(name, str) else ""))
        return found

    def session_info(self, http: HttpClient, *, session_id: str, dev_key: str) -> SessionInfo:
        response = http.send(
            "POST", "/GetSessionInfo.json", data=session_credentials(session_id, dev_key)
        )
        body = raise_for_answer(response)
        status = response.status_code
        return SessionInfo(
            organization_id=require_str(body, "organizationId", http_status=status, what="Session"),
            user_id=require_str(body, "userId", http_status=status, what="Session"),
            mfa_status=None,
        )

    def logout(self, http: HttpClient, *, session_id: str, dev_key: str) -> None:
        raise_for_answer(
            http.send("POST", "/Logout.json", data=session_credentials(session_id, dev_key))
        )

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
        """POST ``path`` with ``data`` (or ``json``) serialised into the ``data`` form field."""
        if method.upper() != "POST":
            raise ValueError(f"Every BILL v2 operation is a POST, not {method.upper()}.")
        payload = data if data is not None else json
        form = session_credentials(session_id, dev_key)
        if payload is not None:
            form["data"] = payload if isinstance(payload, str) else jsonlib.dumps(payload)
        return raise_for_answer(http.send("POST", path, data=form, params=params))

    # --- MFA (https://developer.bill.com/v2/reference/auth-mfachallenge) -----------------------

    def _data_call(
        self, http: HttpClient, path: str, session_id: str, dev_key: str, data: dict[str, Any]
    ) -> tuple[Any, int]:
        form = session_credentials(session_id, dev_key)
        form["data"] = jsonlib.dumps(data)
        response = http.send("POST", path, data=form)
        return raise_for_answer(response), response.status_code

    def mfa_phones(
        self, http: HttpClient, *, session_id: str, dev_key: str
    ) -> list[MfaPhone] | None:
        """v2 has no list of phones: ``None`` (the code goes to the primary or backup phone)."""
        return None

    def mfa_challenge(
        self, http: HttpClient, *, session_id: str, dev_key: str, use_backup: bool
    ) -> str:
        try:
            body, status = self._data_call(
                http, "/MFAChallenge.json", session_id, dev_key, {"useBackup": use_backup}
            )
        except BillAPIError as exc:
            raise on_text_message(exc) from None
        return require_str(body, "challengeId", http_status=status, what="MFAChallenge")

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
        data = {
            "challengeId": challenge_id,
            "token": f"{code[:3]}-{code[3:]}",  # v2 takes 123-456 (BILL's own Node SDK does this)
            "deviceId": device,
            "machineName": machine_name,
            "rememberMe": True,
        }
        try:
            body, status = self._data_call(http, "/MFAAuthenticate.json", session_id, dev_key, data)
        except BillAPIError as exc:
            raise on_code_check(exc) from None
        return require_str(body, "mfaId", http_status=status, what="MFAAuthenticate")

    def mfa_step_up(
        self, http: HttpClient, *, session_id: str, dev_key: str, remember_me_id: str, device: str
    ) -> StepUpResult:
        """v2 has no step-up: ``MFAStatus.json`` says whether the ``mfaId`` still holds."""
        body, status = self._data_call(
            http,
            "/MFAStatus.json",
            session_id,
            dev_key,
            {"mfaId": remember_me_id, "deviceId": device},
        )
        trusted = require_bool(body, "isTrusted", http_status=status, what="MFAStatus")
        return StepUpResult(trusted=trusted, session_trusted=False)
