"""BILL Spend & Expense: header ``apiToken``, no login, under the v3 base (https://developer.bill.com/docs/spend-expense-api).

BILL's gateway answers 400 when the token header is missing and 401 when the token is wrong
(https://developer.bill.com/docs/webhook-api-error-responses); the body of those errors is
UNCONFIRMED. Spend & Expense has no session, so nothing BILL says on a 401 or 403 can mean
"log in again": both are :class:`InvalidApiToken`, *whatever code* the body carries (a
``BDC_1109`` "Session is invalid" there still means the token is refused; rule 0 of
``errors.py``). Other statuses go through the shared code table (a rate limit on a 429,
say), then the status rules. A 400 (header missing: our bug) is ``UnexpectedResponse``.
Error bodies are read in both shapes seen: the v3 array of ``{code, message}`` objects and a
single object with ``errorCode``/``errorMessage`` (or ``code``/``message``).
"""

from __future__ import annotations

from typing import Any

from django.views.decorators.debug import sensitive_variables

from ..exceptions import BillAPIError, InvalidApiToken
from .base import HttpClient, parse_json_body, require_str
from .errors import error_for_answer, unexpected
from .types import SpendUser
from .v3 import _first_error


def spend_error(body: Any) -> tuple[str | None, Any]:
    """(code, message) of a Spend & Expense error body, in either shape (module docstring)."""
    if isinstance(body, dict) and ("errorCode" in body or "errorMessage" in body):
        code = body.get("errorCode")
        message = body.get("errorMessage", body.get("message"))
        return (code if isinstance(code, str) and code else None), message
    return _first_error(body)


class SpendClient(HttpClient):
    """Client for ``/v3/spend/...``; ``base_url`` is the environment's v3 base."""

    @sensitive_variables()
    def _get(self, path: str, *, api_token: str, params: dict[str, Any] | None = None) -> Any:
        return self.call("GET", path, api_token=api_token, params=params)

    @sensitive_variables()
    def call(
        self,
        method: str,
        path: str,
        *,
        api_token: str,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """Any Spend & Expense call (every HTTP method); parsed JSON (``None`` when empty)."""
        if not isinstance(api_token, str) or not api_token.strip():
            raise InvalidApiToken(f"{InvalidApiToken.default_message} The API token is empty.")
        response = self.send(
            method.upper(), path, headers={"apiToken": api_token}, json=json, params=params
        )
        status = response.status_code
        if 200 <= status < 300:
            return parse_json_body(response)
        try:
            body = parse_json_body(response)
        except BillAPIError:
            body = None
        code, message = spend_error(body)
        raise error_for_answer(
            code=code, bill_message=message, http_status=status, session_call=False, api="spend"
        )

    @sensitive_variables()
    def current_user(self, *, api_token: str) -> SpendUser:
        """The user who generated ``api_token`` (the cheapest call that proves a token works)."""
        body = self._get("/v3/spend/users/current", api_token=api_token)
        status = 200
        if not isinstance(body, dict):
            raise unexpected("Spend user: the answer was not a JSON object.", http_status=status)
        return SpendUser(
            id=require_str(body, "id", http_status=status, what="Spend user"),
            email=require_str(body, "email", http_status=status, what="Spend user"),
            role=require_str(body, "role", http_status=status, what="Spend user"),
            first_name=body.get("firstName") or "",
            last_name=body.get("lastName") or "",
        )

    @sensitive_variables()
    def request(self, path: str, *, api_token: str, params: dict[str, Any] | None = None) -> Any:
        """GET any Spend & Expense path (e.g. ``/v3/spend/budgets``); parsed JSON."""
        return self._get(path, api_token=api_token, params=params)
