"""BILL Spend & Expense: header ``apiToken``, no login, under the v3 base (bill-api.md §4).

BILL answers 400 when the token header is missing and 401 when the token is wrong; the body
of those errors is UNCONFIRMED, so the status decides here (401 → InvalidApiToken), after any
BDC code from the shared table (a rate limit, say).
"""

from __future__ import annotations

from typing import Any

from django.views.decorators.debug import sensitive_variables

from ..exceptions import BillAPIError, InvalidApiToken
from .base import HttpClient, parse_json_body, require_str
from .errors import error_for_answer, error_for_code, unexpected
from .types import SpendUser
from .v3 import _first_error


class SpendClient(HttpClient):
    """Client for ``/v3/spend/...``; ``base_url`` is the environment's v3 base."""

    @sensitive_variables()
    def _get(self, path: str, *, api_token: str, params: dict[str, Any] | None = None) -> Any:
        if not isinstance(api_token, str) or not api_token.strip():
            raise InvalidApiToken(f"{InvalidApiToken.default_message} The API token is empty.")
        response = self.send("GET", path, headers={"apiToken": api_token}, params=params)
        status = response.status_code
        if 200 <= status < 300:
            return parse_json_body(response)
        try:
            body = parse_json_body(response)
        except BillAPIError:
            body = None
        code, message = _first_error(body)
        known = error_for_code(code, message, http_status=status) if code else None
        if known is not None:
            raise known
        if status == 401:
            raise InvalidApiToken(http_status=status, bill_code=code)
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
