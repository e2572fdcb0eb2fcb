"""Typed results of the BILL client: frozen dataclasses, secrets left out of ``repr()``.

These are what the rest of the app sees of BILL's answers; the parsing that builds them
lives next to each API version (``v3.py``, ``v2.py``, ``spend.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["LoginResult", "SessionInfo", "SpendUser"]


@dataclass(frozen=True)
class LoginResult:
    """A new BILL session (v3 ``POST /v3/login`` or v2 ``Login.json``).

    ``trusted`` is v3's MFA-trusted flag (always ``False`` on v2, whose login answer has no
    such flag). Nothing reads it yet: it is kept for the upcoming MFA feature, which needs to
    know whether a login gave an MFA-trusted session
    (https://developer.bill.com/reference/login).

    ``api_endpoint`` is v2's ``apiEndPoint``, where BILL says later v2 calls should go; v3 has
    no such field and leaves it ``None``. It is information only: the client never sends a
    request there (the calls go to the configured environment's v2 base URL; the reasons are
    in ``client/__init__.py``, "Choices"). A missing or malformed value is ``None``, never an
    error: a login must not fail over a field the app does not use.
    """

    session_id: str = field(repr=False)
    organization_id: str
    user_id: str
    trusted: bool = False
    api_endpoint: str | None = None


@dataclass(frozen=True)
class SessionInfo:
    """What BILL says about a live session (v3 ``GET /v3/login/session``, v2 ``GetSessionInfo``).

    ``mfa_status`` is v3's ``mfaStatus`` (``"DISABLED"``: the organization has MFA off; other
    values are UNCONFIRMED; https://developer.bill.com/changelog/2024-11-22-mfa-status-improvements-get-api-session-details);
    ``None`` on v2. Nothing reads it yet: it is kept for the upcoming MFA feature.
    """

    organization_id: str
    user_id: str
    mfa_status: str | None = None


@dataclass(frozen=True)
class SpendUser:
    """The Spend & Expense user who generated an API token (``GET /v3/spend/users/current``)."""

    id: str
    email: str
    role: str
    first_name: str = ""
    last_name: str = ""
