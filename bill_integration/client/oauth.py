"""BILL's OAuth client credentials: ``POST /authx/token`` (https://developer.bill.com/docs/oauth-client-credentials).

A developer app's client id and secret buy a short-lived access token, sent on v3 calls as
``Authorization: Bearer`` and nothing else (no ``devKey``, no ``sessionId``, no ``/v3/login``).
UNCONFIRMED, chosen here: the form fields ``grant_type``/``client_id``/``client_secret``
(RFC 6749 names), the answer's ``access_token``/``expires_in`` (seconds; missing means
``auth_methods.OAUTH_DEFAULT_LIFETIME``), and the error statuses (``errors.py`` rule 0b).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.views.decorators.debug import sensitive_variables

from ..exceptions import BillAPIError
from .base import HttpClient, parse_json_body, require_str
from .errors import error_for_answer, unexpected
from .spend import spend_error


@dataclass(frozen=True)
class OAuthToken:
    """An access token and how many seconds BILL said it lives (``None``: not said)."""

    access_token: str = field(repr=False)
    expires_in: int | None


class OAuthClient(HttpClient):
    """Client for BILL's token host (``ENVIRONMENTS[env]["oauth"]``)."""

    @sensitive_variables()
    def token(self, *, client_id: str, client_secret: str) -> OAuthToken:
        """A new access token for the developer app's client credentials."""
        response = self.send(
            "POST",
            "/authx/token",
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": client_secret,
            },
        )
        status = response.status_code
        if not 200 <= status < 300:
            try:
                body = parse_json_body(response)
            except BillAPIError:
                body = None
            code, message = spend_error(body)
            raise error_for_answer(
                code=code, bill_message=message, http_status=status, session_call=False, api="oauth"
            )
        body = parse_json_body(response)
        if not isinstance(body, dict):
            raise unexpected("OAuth token: the answer was not a JSON object.", http_status=status)
        token = require_str(body, "access_token", http_status=status, what="OAuth token")
        expires_in = body.get("expires_in")
        if expires_in is not None and (
            isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in <= 0
        ):
            raise unexpected(
                "OAuth token: 'expires_in' is not a positive number.", http_status=status
            )
        return OAuthToken(access_token=token, expires_in=expires_in)
