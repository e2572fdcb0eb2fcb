"""BILL's MFA, emulated: phones, text-message challenges, codes, remember-me ids, trust.

What BILL documents (https://developer.bill.com/docs/mfa-element-implementation, https://developer.bill.com/v2/reference/auth-mfachallenge; https://developer.bill.com/docs/mfa-element-implementation):

* ``GET /v3/mfa/phones`` lists the user's phones (``type``, ``last4digits``, ``primary``);
* ``POST /v3/mfa/challenge`` (v2 ``MFAChallenge.json``) texts a 6-digit code to the primary
  phone (``useBackup``: the backup phone) and answers a ``challengeId``; no phone: BDC_1354;
* ``POST /v3/mfa/challenge/validate`` (v2 ``MFAAuthenticate.json``, token as ``123-456``) with
  ``rememberMe: true`` makes the session trusted and answers a ``rememberMeId`` (v2 ``mfaId``)
  valid 30 days;
* a login with ``rememberMeId`` + ``device`` (v2 ``mfaId`` + ``deviceId``) is trusted;
  ``POST /v3/mfa/step-up`` trusts a live session (``{"trusted": false}`` when the id expired);
  v2 ``MFAStatus.json`` answers ``isTrusted`` for an ``mfaId``;
* text-message endpoints: 5 per minute; too many wrong codes: BDC_1358.

Where BILL is UNCONFIRMED the emulator chooses, in this one table (:data:`CHOICES`)::

    what                                    choice
    ------------------------------------    -------------------------------------------------
    code lifetime                           5 minutes (OSS notes say "~5 min")
    wrong codes per challenge               3; the third answers BDC_1358 and locks the user
    lockout after BDC_1358                  10 minutes (OSS advice: "wait 5-10 min")
    wrong code                              HTTP 400 BDC_1357 (code and text invented)
    expired code                            HTTP 400 BDC_1356 (OSS-claimed "MFA_EXPIRED")
    5-per-minute text limit                 per developer key; HTTP 429 BDC_1144 "per minute"
    challenge tied to                       the user (not the session that asked)
    trust lifetime                          30 days from validate; logins do not extend it
    login with an expired/foreign id        succeeds untrusted (``trusted: false``), no error
    v3 token / v2 token                     exactly 6 digits / exactly ``ddd-ddd``
    v3 ``useBackup``                        boolean, or the string "true"/"false" (Postman)
    ``mfaStatus``                           DISABLED (MFA off), COMPLETE (trusted session),
                                            CHALLENGE (phone set up), SETUP (no phone)
    protected operations                    trusted session, unless MFA is off or bypassed

Codes are readable through the control API (``GET /_emulator/mfa/code?username=``), so
tests and the demo can finish the flow without a phone. Nothing here imports Django.
"""

from __future__ import annotations

import secrets
import threading
from collections import defaultdict, deque
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from . import ids

CODE_LIFETIME = timedelta(minutes=5)
MAX_WRONG_CODES = 3
LOCKOUT = timedelta(minutes=10)
SMS_PER_MINUTE = 5
REMEMBER_ME_LIFETIME = timedelta(days=30)

#: The UNCONFIRMED choices above, for a reader of ``GET /_emulator/mfa`` or a test.
CHOICES = {
    "code_lifetime_seconds": int(CODE_LIFETIME.total_seconds()),
    "max_wrong_codes": MAX_WRONG_CODES,
    "lockout_seconds": int(LOCKOUT.total_seconds()),
    "sms_per_minute": SMS_PER_MINUTE,
    "remember_me_days": REMEMBER_ME_LIFETIME.days,
}

MFA_MESSAGES = {
    "BDC_1354": "Specified 2-Step Verification phone is not setup or is invalid.",
    "BDC_1356": "2-Step Verification token has expired.",
    "BDC_1357": "2-Step Verification token response is invalid.",
    "BDC_1358": "2-Step Verification too many token response attempts.",
}
SMS_LIMIT = ("BDC_1144", f"Max number of text messages per minute reached: {SMS_PER_MINUTE}.")


def default_phones() -> list[dict[str, Any]]:
    """One primary mobile phone, as a new BILL user who set up 2-step verification has."""
    return [
        {"number": "+1555" + f"{secrets.randbelow(10**7):07d}", "type": "MOBILE", "primary": True}
    ]


def remember_me_id(api: str) -> str:
    """v2 ``mfaId``: ``!a`` + 43 characters (https://developer.bill.com/docs/sign-up-process); v3: 64 (OSS: "~60-80")."""
    return ids.session_id() if api == "v2" else secrets.token_urlsafe(48)


class MfaError(Exception):
    """An MFA refusal; the state turns it into an ``EmulatedError`` of the right API."""

    def __init__(self, code: str, message: str | None = None, status: int = 400) -> None:
        self.code, self.status = code, status
        self.message = message or MFA_MESSAGES.get(code, "")
        super().__init__(f"{code}: {self.message}")


@dataclass
class Challenge:
    id: str
    username: str
    code: str
    created_at: datetime
    phone_last4: str
    wrong: int = 0
    used: bool = False


@dataclass
class RememberMe:
    username: str
    device: str
    api: str
    issued_at: datetime
    expires_at: datetime


@dataclass
class LoginRecord:
    """One login as BILL saw it (``GET /_emulator/logins``): what was sent, what was answered."""

    at: str
    api: str
    username: str
    organization_id: str
    remember_me_id: str | None
    device: str | None
    trusted: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MfaBook:
    """Challenges, lockouts, text-message windows and remember-me ids of one emulator."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._challenges: dict[str, Challenge] = {}
        self._latest: dict[str, str] = {}  # username -> its newest challenge id
        self._locked_until: dict[str, datetime] = {}
        self._texts: dict[str, deque[datetime]] = defaultdict(deque)  # dev key -> send times
        self._remembered: dict[str, RememberMe] = {}
        self.logins: list[LoginRecord] = []

    @staticmethod
    def phones(account: Any) -> list[dict[str, Any]]:
        return [
            {
                "type": phone.get("type", "MOBILE"),
                "last4digits": str(phone.get("number", ""))[-4:],
                "primary": bool(phone.get("primary", False)),
            }
            for phone in account.mfa_phones
        ]

    def _check_lockout(self, username: str, now: datetime) -> None:
        until = self._locked_until.get(username)
        if until is not None and now < until:
            raise MfaError("BDC_1358")

    def challenge(self, account: Any, dev_key: str, *, use_backup: bool, now: datetime) -> str:
        """Text a new code to the user's primary (or backup) phone; return the challenge id."""
        username = account.username.lower()
        with self._lock:
            self._check_lockout(username, now)
            phones = [p for p in account.mfa_phones if bool(p.get("primary")) != use_backup]
            if not phones:
                raise MfaError("BDC_1354")
            window = self._texts[dev_key]
            while window and now - window[0] >= timedelta(minutes=1):
                window.popleft()
            if len(window) >= SMS_PER_MINUTE:
                raise MfaError(*SMS_LIMIT, status=429)
            window.append(now)
            challenge = Challenge(
                id=ids.session_id(),
                username=username,
                code=f"{secrets.randbelow(10**6):06d}",
                created_at=now,
                phone_last4=str(phones[0].get("number", ""))[-4:],
            )
            self._challenges[challenge.id] = challenge
            self._latest[username] = challenge.id
            return challenge.id

    def validate(
        self,
        account: Any,
        *,
        challenge_id: Any,
        token: Any,
        device: str,
        remember_me: bool,
        api: str,
        now: datetime,
    ) -> str | None:
        """Check a code; the session becomes trusted. Returns the remember-me id, if asked."""
        username = account.username.lower()
        with self._lock:
            self._check_lockout(username, now)
            challenge = (
                self._challenges.get(challenge_id) if isinstance(challenge_id, str) else None
            )
            if challenge is None or challenge.username != username or challenge.used:
                raise MfaError("BDC_1357")
            if now - challenge.created_at >= CODE_LIFETIME:
                raise MfaError("BDC_1356")
            code = challenge.code
            expected = code if api == "v3" else f"{code[:3]}-{code[3:]}"
            if token != expected:
                challenge.wrong += 1
                if challenge.wrong >= MAX_WRONG_CODES:
                    challenge.used = True
                    self._locked_until[username] = now + LOCKOUT
                    raise MfaError("BDC_1358")
                raise MfaError("BDC_1357")
            challenge.used = True
            if not remember_me:
                return None
            identifier = remember_me_id(api)
            self._remembered[identifier] = RememberMe(
                username=username,
                device=device,
                api=api,
                issued_at=now,
                expires_at=now + REMEMBER_ME_LIFETIME,
            )
            return identifier

    def trusts(self, account: Any, remember_me: Any, device: Any, now: datetime) -> bool:
        """Whether a remember-me id (with its device) makes this user's session trusted."""
        if not isinstance(remember_me, str) or not remember_me:
            return False
        with self._lock:
            entry = self._remembered.get(remember_me)
            return (
                entry is not None
                and entry.username == account.username.lower()
                and entry.device == device
                and now < entry.expires_at
            )

    def record_login(self, record: LoginRecord) -> None:
        with self._lock:
            self.logins.append(record)

    def latest_code(self, username: str) -> dict[str, Any]:
        """The newest challenge of ``username``: its code, id, phone and whether it is used."""
        with self._lock:
            challenge_id = self._latest.get(username.lower())
            if challenge_id is None:
                raise ValueError(f"No MFA challenge was sent for {username!r}.")
            challenge = self._challenges[challenge_id]
            return {
                "code": challenge.code,
                "challenge_id": challenge.id,
                "phone_last4": challenge.phone_last4,
                "used": challenge.used,
                "sent_at": challenge.created_at.isoformat(),
            }

    def login_records(
        self, organization_id: str | None = None, username: str | None = None
    ) -> list[dict[str, Any]]:
        with self._lock:
            return [
                record.to_dict()
                for record in self.logins
                if (organization_id is None or record.organization_id == organization_id)
                and (username is None or record.username == username.lower())
            ]
