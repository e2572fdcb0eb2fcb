"""Typed results of the BILL client: frozen dataclasses, secrets left out of ``repr()``.

These are what the rest of the app sees of BILL's answers; the parsing that builds them
lives next to each API version (``v3.py``, ``v2.py``, ``spend.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["LoginResult", "MfaPhone", "Organization", "SessionInfo", "SpendUser", "StepUpResult"]


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
    #: An OAuth access token's lifetime in seconds (``expires_in``); ``None`` for BILL sessions.
    expires_in: int | None = None


@dataclass(frozen=True)
class SessionInfo:
    """What BILL says about a live session (v3 ``GET /v3/login/session``, v2 ``GetSessionInfo``).

    ``mfa_status`` and ``mfa_bypass`` are v3's ``mfaStatus`` (``DISABLED``: MFA is off for the
    organization; other values UNCONFIRMED) and ``mfaBypass`` (MFA off for the developer key);
    ``None`` on v2 or when BILL leaves them out.
    """

    organization_id: str
    user_id: str
    mfa_status: str | None = None
    mfa_bypass: bool | None = None


@dataclass(frozen=True)
class MfaPhone:
    """A phone of the BILL user's 2-step verification (``GET /v3/mfa/phones``): never the number."""

    type: str
    last4digits: str
    primary: bool

    @property
    def masked(self) -> str:
        return f"•••• {self.last4digits}" if self.last4digits else "••••"


@dataclass(frozen=True)
class StepUpResult:
    """What BILL said about a stored remember-me id.

    v3 ``POST /v3/mfa/step-up``: ``trusted`` and, if so, the current session is now trusted
    (``session_trusted``). v2 has no step-up: ``MFAStatus.json`` only says whether the
    ``mfaId`` still holds (``trusted``), and a new login with it gives a trusted session
    (``session_trusted`` is ``False``).
    """

    trusted: bool
    session_trusted: bool


@dataclass(frozen=True)
class SpendUser:
    """The Spend & Expense user who generated an API token (``GET /v3/spend/users/current``)."""

    id: str
    email: str
    role: str
    first_name: str = ""
    last_name: str = ""


@dataclass(frozen=True)
class Organization:
    """An organization BILL says some credentials may open (v2 ``ListOrgs.json``)."""

    id: str
    name: str
