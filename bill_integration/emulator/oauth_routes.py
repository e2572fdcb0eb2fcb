"""The emulator's OAuth token endpoint: ``POST /authx/token`` (https://developer.bill.com/docs/oauth-client-credentials).

Form fields ``grant_type=client_credentials``, ``client_id``, ``client_secret`` (names
UNCONFIRMED: RFC 6749's). Answers ``{"access_token", "token_type": "Bearer", "expires_in"}``;
the token is accepted as ``Authorization: Bearer`` on v3 session routes until it expires
(``limits["oauth_token_seconds"]``, 3600 by default), then answered 401. Wrong client
credentials: 401 ``{"error": "invalid_client"}``; another grant type: 400
``{"error": "unsupported_grant_type"}`` (shapes UNCONFIRMED).
"""

from __future__ import annotations

from typing import Any

from .state import EmulatedError

OAUTH_TOKEN_PATH = "/authx/token"


def oauth_token(handler: Any) -> None:
    """Serve one token request (``handler`` is the server's request handler)."""
    if handler.command != "POST":
        handler._send(405, {"error": "method_not_allowed"})
        return
    form = handler._form()
    if form.get("grant_type") != "client_credentials":
        handler._send(400, {"error": "unsupported_grant_type"})
        return
    state = handler.state
    try:
        session = state.oauth_token(form.get("client_id", ""), form.get("client_secret", ""))
    except EmulatedError:
        handler._send(401, {"error": "invalid_client"})
        return
    handler._send(
        200,
        {
            "access_token": session.session_id,
            "token_type": "Bearer",
            "expires_in": state.limits["oauth_token_seconds"],
        },
    )
