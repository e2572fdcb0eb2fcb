"""Everything the emulator remembers: accounts, sessions, limits, faults, counters.

One lock guards it all; every lookup is a dict access, so ten thousand tenants cost no more
per request than one. The HTTP layer (``server.py``) only parses and formats; the rules of
BILL (https://developer.bill.com/docs/api-rate-limits) live here:

* Sessions expire after 35 minutes without a call (sliding, on the emulator's clock); any
  authenticated call resets the timer; logout ends a session at once; a session only works
  with the developer key it was created with. A new login does not end older sessions
  (UNCONFIRMED at BILL; BILL does not document it).
* Per developer key and clock hour: 200 logins, 20,000 calls (both ``BDC_1144``, reset at the
  top of the emulator's hour). Per developer key and organization: 3 requests in flight; the
  4th is refused with ``BDC_1322``.
* Faults (latency, 5xx status, hang, reset, drop, forced error code, a slow drip) for one account (by
  organization id and/or developer key) or for everyone.
* MFA (``mfa.py``): phones per account, challenges with 6-digit codes, remember-me ids that
  expire after 30 days, trusted sessions; protected operations (payments) refuse an
  untrusted session with BDC_1361 unless the account's MFA is off or bypassed.

The public methods are also served over HTTP under ``/_emulator/`` and mirrored by
:class:`bill_integration.emulator.control.EmulatorControl` with the same names and meaning.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from . import ids
from .clock import EmulatorClock
from .mfa import LoginRecord, MfaBook, default_phones

#: BILL's published limits (https://developer.bill.com/docs/api-rate-limits); ``set_limits()`` may lower them for a test.
DEFAULT_LIMITS: dict[str, int] = {
    "logins_per_hour": 200,
    "calls_per_hour": 20000,
    "concurrent_per_organization": 3,
    "session_idle_seconds": 35 * 60,
    # Sync-token sessions: 48 hours of inactivity (https://developer.bill.com/docs/token-based-sign-in).
    "sync_session_idle_seconds": 48 * 3600,
    # OAuth access tokens' expires_in (BILL says only "short-lived": UNCONFIRMED).
    "oauth_token_seconds": 3600,
    # Spend & Expense calls per minute per API token (answered 429 BDC_1144 past it: UNCONFIRMED).
    "spend_calls_per_minute": 60,
}

#: Account kinds: how the account signs in (``Account.kind``).
ACCOUNT_KINDS = ("user", "sync_token", "console", "oauth", "spend")

#: Fault kinds and what they do to a matching request.
FAULT_KINDS = {
    "latency": "wait `seconds` (default 1) while holding a concurrency slot, then answer normally",
    "status": "answer HTTP `status` (default 503) with a gateway HTML page (`body='json'`: BDC_1001)",
    "hang": "hold the request `seconds` (default 30), then close the connection without an answer",
    "reset": "close the connection at once with a TCP reset, no answer",
    "drop": "close the connection at once (an orderly close), no answer",
    "error": "answer BILL error `code` (default BDC_1001) in the API's own error shape",
    "drip": (
        "answer normally but one byte every `interval` seconds (default 1), the body padded "
        "with leading blanks to last at least `seconds` (default 30); `headers=True` drips "
        "the status line and headers too, else only the body"
    ),
}

COUNTER_NAMES = (
    "calls",
    "logins",
    "login_failures",
    "session_info",
    "logouts",
    "spend",
    "rejected",
    "faults",
    "mfa_texts",
    "payments",
    "console_logins",
    "oauth_tokens",
    "oauth_failures",
    "expired_tokens_used",
    "spend_rejected",
)

MESSAGES = {
    "BDC_1001": "System error occurred.",
    "BDC_1101": "User name and/or password do not match our records.",
    "BDC_1102": "Developer key is invalid.",
    "BDC_1109": "Session is invalid.  Please log in.",
    "BDC_1121": "API not supported.",
    "BDC_1144": "Max number of allowed requests per hour reached: 20000.",
    "BDC_1322": "Max number of concurrent requests per organization reached.",
    "BDC_1361": "Untrusted session.",
    "BDC_1358": "2-Step Verification too many token response attempts.",
}

#: HTTP status of each error on v3 (v2 always answers 200, except 1121 → 404).
#: UNCONFIRMED choices: login failures 400 (Postman collection), rate limits 429.
V3_STATUS = {
    "BDC_1001": 500,
    "BDC_1101": 400,
    "BDC_1102": 401,
    "BDC_1109": 401,
    "BDC_1121": 404,
    "BDC_1144": 429,
    "BDC_1322": 429,
    "BDC_1361": 403,
}


class EmulatedError(Exception):
    """A BILL error answer: ``code`` (may be ``None`` for a code-less validation error)."""

    def __init__(
        self,
        code: str | None,
        message: str | None = None,
        *,
        status: int | None = None,
        category: str = "DOWNSTREAM",
    ) -> None:
        self.code = code
        self.message = message or MESSAGES.get(code or "", "Request is invalid.")
        self.status = status or V3_STATUS.get(code or "", 400)
        self.category = category
        super().__init__(f"{code}: {self.message}")


@dataclass(kw_only=True)
class Account:
    """A fake BILL user in one organization, with its developer key and Spend token."""

    username: str
    password: str = field(repr=False)
    organization_id: str
    dev_key: str = field(repr=False)
    api_token: str | None = field(default=None, repr=False)
    user_id: str = field(default_factory=ids.user_id)
    organization_name: str = "Emulated Organization"
    first_name: str = "Emma"
    last_name: str = "Ulator"
    spend_role: str = "ADMIN"
    spend_user_id: str = field(default_factory=ids.spend_user_id)
    spend_uuid: str = field(default_factory=ids.spend_uuid)
    #: 2-step verification phones: ``{"number", "type", "primary"}``; ``[]``: none set up.
    mfa_phones: list[dict[str, Any]] = field(default_factory=default_phones)
    #: False: MFA is off for the organization (``mfaStatus`` DISABLED, payments need no trust).
    mfa_enabled: bool = True
    #: True: MFA is bypassed at the developer-key level (``mfaBypass``).
    mfa_bypass: bool = False
    #: How it signs in: "user" (email + password), "sync_token" (token name + token, 48 h
    #: idle sessions), "console" (console email + ``consoleApiToken``, no password), "oauth"
    #: (client id + secret at ``/authx/token``), "spend" (Spend & Expense API token only).
    kind: str = "user"
    console_token: str | None = field(default=None, repr=False)
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    #: Other organizations the same credentials reach (``{"organizationId", "name"}``),
    #: listed by ``GET /v3/login/organizations`` and ``ListOrgs.json``, and accepted at login.
    other_organizations: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """All fields, secrets included: this is the fake service's own control plane."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Account:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"Unknown account field(s): {', '.join(sorted(unknown))}.")
        return cls(**data)


@dataclass(slots=True)
class Session:
    session_id: str
    account: Account
    dev_key: str
    api: str
    created_at: datetime
    last_used: datetime
    trusted: bool = False
    #: An OAuth access token's end (``None``: a BILL session with an idle timer).
    expires_at: datetime | None = None
    #: The organization this session is in (an account's other organizations may be chosen).
    organization_id: str = ""


@dataclass
class Fault:
    id: int
    kind: str
    organization_id: str | None
    dev_key: str | None
    params: dict[str, Any]
    remaining: int | None = None  # None: until cleared
    path: str | None = None  # only requests whose path contains this

    def matches(self, organization_id: str | None, dev_key: str | None, path: str) -> bool:
        if self.organization_id is not None and self.organization_id != organization_id:
            return False
        if self.dev_key is not None and self.dev_key != dev_key:
            return False
        return self.path is None or self.path in path

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "organization_id": self.organization_id,
            "dev_key": self.dev_key,
            "params": self.params,
            "remaining": self.remaining,
            "path": self.path,
        }


@dataclass(slots=True)
class _HourUsage:
    hour: datetime
    logins: int = 0
    calls: int = 0


@dataclass(frozen=True, slots=True)
class Slot:
    """A request in flight for (dev_key, organization_id); released when it answers."""

    dev_key: str
    organization_id: str


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


class EmulatorState:
    """Thread-safe state of one emulator. Public methods = the control API."""

    def __init__(self, clock: EmulatorClock | None = None) -> None:
        self.clock = clock or EmulatorClock()
        self._lock = threading.Lock()
        self._fault_ids = itertools.count(1)
        self._clear()

    def _clear(self) -> None:
        self._accounts: dict[str, Account] = {}  # lower-case username -> account
        self._by_org: dict[str, list[Account]] = defaultdict(list)
        self._by_token: dict[str, Account] = {}
        self._dev_keys: dict[str, int] = defaultdict(int)  # registered devKey -> accounts using it
        self._sessions: dict[str, Session] = {}
        self._spend_calls: dict[str, list[datetime]] = defaultdict(list)
        self._usage: dict[str, _HourUsage] = {}
        self._inflight: dict[tuple[str, str], int] = defaultdict(int)
        self._faults: list[Fault] = []
        self._counters: dict[tuple[str, str], dict[str, int]] = {}
        self.limits = dict(DEFAULT_LIMITS)
        self.mfa = MfaBook()
        # Wakes requests held by latency/hang faults when the state is reset.
        self.wake = threading.Event()

    # --- control API (mirrored by EmulatorControl) ---------------------------------------------

    def add_account(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        organization_id: str | None = None,
        dev_key: str | None = None,
        api_token: str | None = None,
        **extra: Any,
    ) -> Account:
        """Add a fake BILL user; missing ids, keys and secrets are generated realistically.

        Several accounts may share a ``dev_key`` (an app partner's key used for many
        organizations). ``api_token=""`` gives an account without a Spend token.
        """
        allowed = {f.name for f in fields(Account)}
        unknown = set(extra) - allowed
        if unknown:
            raise ValueError(f"Unknown account field(s): {', '.join(sorted(unknown))}.")
        kind = extra.get("kind", "user")
        if kind not in ACCOUNT_KINDS:
            raise ValueError(f"Unknown account kind {kind!r}; use one of {ACCOUNT_KINDS}.")
        if kind == "console":
            extra.setdefault("console_token", ids.api_token())
        if kind == "oauth":
            extra.setdefault("client_id", "app_" + ids.password().lower())
            extra.setdefault("client_secret", ids.api_token())
        default_name = f"user-{ids.password().lower()}@example.com"
        if kind == "sync_token":
            default_name = f"sync-{ids.password().lower()}"  # a token's name, not an email
        account = Account(
            username=username or default_name,
            password=password or ids.password(),
            organization_id=organization_id or ids.organization_id(),
            dev_key=dev_key or ids.dev_key(),
            api_token=ids.api_token() if api_token is None else (api_token or None),
            **extra,
        )
        key = account.username.lower()
        with self._lock:
            if key in self._accounts:
                raise ValueError(f"An account with username {account.username!r} already exists.")
            if account.api_token and account.api_token in self._by_token:
                raise ValueError("Another account already has that api_token.")
            self._accounts[key] = account
            self._by_org[account.organization_id].append(account)
            self._dev_keys[account.dev_key] += 1
            if account.api_token:
                self._by_token[account.api_token] = account
        return replace(account)  # a copy: callers cannot change the emulator behind its lock

    def rotate_dev_key(self, old: str, new: str) -> int:
        """BILL issues ``new`` in place of ``old``: every account of ``old`` moves to ``new``,
        and ``old`` is revoked (logins and calls with it are refused with BDC_1102, as for an
        unknown key). Sessions opened with ``old`` are not accepted with ``new`` (BDC_1109).
        Returns the number of accounts moved.
        """
        with self._lock:
            moved = [a for a in self._accounts.values() if a.dev_key == old]
            for account in moved:
                account.dev_key = new
            self._dev_keys[new] += len(moved)
            self._dev_keys.pop(old, None)
        return len(moved)

    def load_accounts(self, accounts: list[dict[str, Any]]) -> list[Account]:
        """Add many accounts (dicts with the fields of :class:`Account`)."""
        return [self.add_account(**dict(item)) for item in accounts]

    def accounts(self) -> list[Account]:
        with self._lock:
            return [replace(a) for a in self._accounts.values()]

    def get_account(self, username: str) -> Account:
        with self._lock:
            return replace(self._account(username))

    def _account(self, username: str) -> Account:
        try:
            return self._accounts[username.lower()]
        except KeyError:
            raise ValueError(f"No account with username {username!r}.") from None

    def change_password(self, username: str, password: str) -> None:
        """As if the user changed their BILL password (existing sessions keep working)."""
        with self._lock:
            self._account(username).password = password

    def now(self) -> datetime:
        return self.clock.now()

    def advance(self, seconds: float) -> datetime:
        """Move the emulator's clock forward (sessions age, hours roll over)."""
        return self.clock.advance(seconds)

    def set_offset(self, seconds: float) -> datetime:
        """Set the clock to real time plus ``seconds``."""
        return self.clock.set_offset(seconds)

    def offset(self) -> float:
        """Seconds the emulator's clock is ahead of real time."""
        return self.clock.offset

    def set_fault(
        self,
        kind: str,
        *,
        organization_id: str | None = None,
        dev_key: str | None = None,
        count: int | None = None,
        path: str | None = None,
        **params: Any,
    ) -> int:
        """Make matching requests misbehave (see :data:`FAULT_KINDS`); returns the fault id.

        ``organization_id``/``dev_key`` narrow it to one account (both: both must match);
        neither: every request. ``count`` applies it that many times only; ``path`` only to
        paths containing that text. Account faults win over global ones.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"Unknown fault kind {kind!r}; use one of {sorted(FAULT_KINDS)}.")
        if count is not None and int(count) < 1:
            raise ValueError("count must be at least 1.")
        with self._lock:
            fault = Fault(
                id=next(self._fault_ids),
                kind=kind,
                organization_id=organization_id,
                dev_key=dev_key,
                params=params,
                remaining=None if count is None else int(count),
                path=path,
            )
            self._faults.append(fault)
        return fault.id

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
        self._wake_waiters()

    def faults(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.to_dict() for f in self._faults]

    def counters(
        self, organization_id: str | None = None, dev_key: str | None = None
    ) -> dict[str, int]:
        """Totals of :data:`COUNTER_NAMES` for an organization, a developer key, both, or all."""
        total = dict.fromkeys(COUNTER_NAMES, 0)
        with self._lock:
            if organization_id is not None and dev_key is not None:
                rows = [self._counters.get((dev_key, organization_id), {})]
            else:
                rows = [
                    row
                    for (key, org), row in self._counters.items()
                    if (organization_id is None or org == organization_id)
                    and (dev_key is None or key == dev_key)
                ]
            for row in rows:
                for name, value in row.items():
                    total[name] += value
        return total

    def active_sessions(
        self, organization_id: str | None = None, dev_key: str | None = None
    ) -> int:
        """Sessions not logged out and not idle past the limit."""
        now = self.now()
        with self._lock:
            return sum(
                1
                for s in self._sessions.values()
                if self._alive(s, now)
                and (organization_id is None or s.account.organization_id == organization_id)
                and (dev_key is None or s.dev_key == dev_key)
            )

    def invalidate_sessions(
        self, organization_id: str | None = None, dev_key: str | None = None
    ) -> int:
        """End sessions as BILL might on its own (all, or one organization's / key's)."""
        with self._lock:
            doomed = [
                sid
                for sid, s in self._sessions.items()
                if (organization_id is None or s.account.organization_id == organization_id)
                and (dev_key is None or s.dev_key == dev_key)
            ]
            for sid in doomed:
                del self._sessions[sid]
        return len(doomed)

    def set_limits(self, **limits: int) -> dict[str, int]:
        """Change limits (names of :data:`DEFAULT_LIMITS`) until the next ``reset()``."""
        unknown = set(limits) - set(DEFAULT_LIMITS)
        if unknown:
            raise ValueError(f"Unknown limit(s): {', '.join(sorted(unknown))}.")
        with self._lock:
            self.limits.update({k: int(v) for k, v in limits.items()})
            return dict(self.limits)

    def mfa_code(self, username: str) -> dict[str, Any]:
        """The newest MFA challenge texted to ``username``: ``code`` (6 digits), ``challenge_id``,
        ``phone_last4``, ``used``, ``sent_at`` (what the user would read on their phone)."""
        return self.mfa.latest_code(username)

    def set_mfa_phones(self, username: str, phones: object) -> list[dict[str, Any]]:
        """Replace a user's 2-step verification phones (``[]``: none, so BDC_1354)."""
        if not isinstance(phones, list) or not all(isinstance(p, dict) for p in phones):
            raise ValueError("phones must be a list of objects with number, type and primary.")
        with self._lock:
            self._account(username).mfa_phones = [dict(p) for p in phones]
            return [dict(p) for p in phones]

    def login_records(
        self, organization_id: str | None = None, username: str | None = None
    ) -> list[dict[str, Any]]:
        """Every login so far (oldest first): what was sent (remember-me id, device) and
        whether the session was trusted."""
        return self.mfa.login_records(organization_id=organization_id, username=username)

    def reset(self) -> None:
        """Forget accounts, sessions, faults, counters and limits; the clock back to real time."""
        with self._lock:
            old_wake = self.wake
            self._clear()
        old_wake.set()
        self.clock.set_offset(0)

    def _wake_waiters(self) -> None:
        with self._lock:
            old, self.wake = self.wake, threading.Event()
        old.set()

    # --- used by the HTTP server ------------------------------------------------------------------

    def _count(self, dev_key: str | None, organization_id: str | None, **increments: int) -> None:
        row = self._counters.setdefault((dev_key or "", organization_id or ""), {})
        for name, value in increments.items():
            row[name] = row.get(name, 0) + value

    def count(self, dev_key: str | None, organization_id: str | None, **increments: int) -> None:
        with self._lock:
            self._count(dev_key, organization_id, **increments)

    def is_dev_key(self, dev_key: str | None) -> bool:
        with self._lock:
            return bool(dev_key) and self._dev_keys.get(dev_key or "", 0) > 0

    def peek_session(self, session_id: str | None) -> Session | None:
        """The session without checking or touching it (to know its organization early)."""
        if not session_id:
            return None
        with self._lock:
            return self._sessions.get(session_id)

    def account_for_token(self, api_token: str | None) -> Account | None:
        if not api_token:
            return None
        with self._lock:
            return self._by_token.get(api_token)

    def acquire(
        self, dev_key: str | None, organization_id: str | None, *, login: bool
    ) -> Slot | None:
        """Admit one request under the hourly and concurrency limits, or raise BDC_1144/1322.

        Requests with an unknown developer key are not limited (they fail with BDC_1102).
        """
        with self._lock:
            if not dev_key or self._dev_keys.get(dev_key, 0) == 0:
                self._count(dev_key, organization_id, calls=1)
                return None
            hour = _hour(self.clock.now())
            usage = self._usage.get(dev_key)
            if usage is None or usage.hour != hour:
                usage = self._usage[dev_key] = _HourUsage(hour)
            self._count(dev_key, organization_id, calls=1)
            if login and usage.logins >= self.limits["logins_per_hour"]:
                self._count(dev_key, organization_id, rejected=1)
                raise EmulatedError(
                    "BDC_1144",
                    f"Max number of allowed requests per hour reached: "
                    f"{self.limits['logins_per_hour']}.",
                )
            if usage.calls >= self.limits["calls_per_hour"]:
                self._count(dev_key, organization_id, rejected=1)
                raise EmulatedError(
                    "BDC_1144",
                    f"Max number of allowed requests per hour reached: {self.limits['calls_per_hour']}.",
                )
            if organization_id:
                key = (dev_key, organization_id)
                if self._inflight[key] >= self.limits["concurrent_per_organization"]:
                    self._count(dev_key, organization_id, rejected=1)
                    raise EmulatedError("BDC_1322")
            usage.calls += 1
            if login:
                usage.logins += 1
            if not organization_id:
                return None
            self._inflight[(dev_key, organization_id)] += 1
            return Slot(dev_key, organization_id)

    def release(self, slot: Slot | None) -> None:
        if slot is None:
            return
        with self._lock:
            key = (slot.dev_key, slot.organization_id)
            remaining = self._inflight.get(key, 0) - 1
            if remaining > 0:
                self._inflight[key] = remaining
            else:
                self._inflight.pop(key, None)

    def take_fault(
        self, organization_id: str | None, dev_key: str | None, path: str
    ) -> Fault | None:
        """The fault for this request (account faults before global ones), used up by one."""
        with self._lock:
            if not self._faults:
                return None
            chosen = None
            for fault in self._faults:
                if fault.matches(organization_id, dev_key, path):
                    specific = fault.organization_id is not None or fault.dev_key is not None
                    if specific:
                        chosen = fault
                        break
                    chosen = chosen or fault
            if chosen is None:
                return None
            if chosen.remaining is not None:
                chosen.remaining -= 1
                if chosen.remaining <= 0:
                    self._faults.remove(chosen)
            self._count(dev_key, organization_id, faults=1)
            return chosen

    def _alive(self, session: Session, now: datetime) -> bool:
        """Whether the session's idle timer (or an OAuth token's lifetime) still runs."""
        if session.expires_at is not None:
            return now < session.expires_at
        limit = "sync_session_idle_seconds" if session.account.kind == "sync_token" else None
        idle = self.limits[limit or "session_idle_seconds"]
        return now - session.last_used < timedelta(seconds=idle)

    def login(
        self,
        *,
        api: str,
        username: str,
        password: str,
        organization_id: str,
        dev_key: str,
        remember_me_id: str | None = None,
        device: str | None = None,
        console_token: str | None = None,
    ) -> Session:
        """Check credentials as BILL does (devKey first, then user and password, then org).

        With a remember-me id (v3 ``rememberMeId``, v2 ``mfaId``) and its ``device`` still
        valid for this user, the new session is trusted; otherwise it is not (no error).
        Every login is recorded (:meth:`login_records`).
        """
        with self._lock:
            if self._dev_keys.get(dev_key, 0) == 0:
                self._count(dev_key, organization_id, login_failures=1)
                raise EmulatedError("BDC_1102", status=400)  # login failures are 400 (UNCONFIRMED)
            account = self._accounts.get(username.lower())
            if console_token:  # Accountant Console: consoleApiToken instead of the password
                accepted = account is not None and account.console_token == console_token
            else:
                accepted = (
                    account is not None
                    and account.kind in ("user", "sync_token")
                    and account.password == password
                )
            if not accepted or account is None:
                self._count(dev_key, organization_id, login_failures=1)
                raise EmulatedError("BDC_1101")
            if organization_id not in _org_ids(account):
                self._count(dev_key, organization_id, login_failures=1)
                # BILL's message is known (https://developer.bill.com/reference/auth-login); the code is UNCONFIRMED: BDC_1101.
                raise EmulatedError(
                    "BDC_1101",
                    f"Invalid parameter value for parameter,value: orgId, {organization_id}.",
                )
            now = self.clock.now()
            session = Session(
                session_id=ids.session_id(),
                account=account,
                dev_key=dev_key,
                api=api,
                created_at=now,
                last_used=now,
                trusted=account.kind != "sync_token"
                and self.mfa.trusts(account, remember_me_id, device, now),
                organization_id=organization_id,
            )
            self._sessions[session.session_id] = session
            self._count(dev_key, organization_id, logins=1)
            if console_token:
                self._count(dev_key, organization_id, console_logins=1)
        self.mfa.record_login(
            LoginRecord(
                at=now.isoformat(),
                api=api,
                username=account.username.lower(),
                organization_id=organization_id,
                remember_me_id=remember_me_id or None,
                device=device or None,
                trusted=session.trusted,
            )
        )
        return session

    def authenticate(self, session_id: str, dev_key: str) -> Session:
        """The live session for this devKey, its idle timer reset; else BDC_1102 / BDC_1109."""
        with self._lock:
            if self._dev_keys.get(dev_key, 0) == 0:
                raise EmulatedError("BDC_1102")
            session = self._sessions.get(session_id)
            if session is None or session.dev_key != dev_key:
                raise EmulatedError("BDC_1109")
            now = self.clock.now()
            if not self._alive(session, now):
                del self._sessions[session_id]
                raise EmulatedError("BDC_1109")
            session.last_used = now
            return session

    # --- OAuth client credentials (oauth_routes.py) and organizations ---------------------------

    def oauth_token(self, client_id: str, client_secret: str) -> Session:
        """A new access token for a developer app's client credentials, or 401."""
        with self._lock:
            matches = [
                a for a in self._accounts.values() if a.kind == "oauth" and a.client_id == client_id
            ]
            account = matches[0] if matches else None
            if account is None or account.client_secret != client_secret:
                self._count(None, None, oauth_failures=1)
                raise EmulatedError(None, "invalid_client", status=401, category="REQUEST")
            now = self.clock.now()
            session = Session(
                session_id=ids.session_id(),
                account=account,
                dev_key="",
                api="v3",
                created_at=now,
                last_used=now,
                expires_at=now + timedelta(seconds=self.limits["oauth_token_seconds"]),
                organization_id=account.organization_id,
            )
            self._sessions[session.session_id] = session
            self._count(None, account.organization_id, oauth_tokens=1)
            return session

    def authenticate_bearer(self, token: str) -> Session:
        """The OAuth token's session; an expired or unknown token is HTTP 401 (UNCONFIRMED)."""
        with self._lock:
            session = self._sessions.get(token)
            if session is None or session.expires_at is None:
                raise EmulatedError(None, "Invalid access token.", status=401, category="AUTH")
            if not self._alive(session, self.clock.now()):
                self._count(None, session.account.organization_id, expired_tokens_used=1)
                raise EmulatedError(None, "Access token expired.", status=401, category="AUTH")
            session.last_used = self.clock.now()
            return session

    def spend_call(self, account: Account) -> None:
        """Count one Spend & Expense call of ``account``'s token; 429 past the minute's limit."""
        with self._lock:
            now = self.clock.now()
            calls = [t for t in self._spend_calls[account.api_token or ""] if now - t < _MINUTE]
            if len(calls) >= self.limits["spend_calls_per_minute"]:
                self._count(account.dev_key, account.organization_id, spend_rejected=1)
                raise EmulatedError(
                    "BDC_1144", "Max number of allowed requests per minute reached.", status=429
                )
            calls.append(now)
            self._spend_calls[account.api_token or ""] = calls

    def logout(self, session: Session) -> None:
        with self._lock:
            self._sessions.pop(session.session_id, None)
            self._count(session.dev_key, session.account.organization_id, logouts=1)

    def mfa_status_of(self, session: Session) -> str:
        """``mfaStatus`` of ``GET /v3/login/session`` (the values are UNCONFIRMED: see mfa.py)."""
        if not session.account.mfa_enabled:
            return "DISABLED"
        if session.trusted:
            return "COMPLETE"
        return "CHALLENGE" if session.account.mfa_phones else "SETUP"

    def protected(self, session: Session) -> None:
        """An MFA-protected operation (payments): BDC_1361 unless the session may do it."""
        account = session.account
        if not (session.trusted or not account.mfa_enabled or account.mfa_bypass):
            raise EmulatedError("BDC_1361")
        self.count(session.dev_key, account.organization_id, payments=1)

    def orgs_for(self, username: str, password: str) -> list[Account]:
        with self._lock:
            account = self._accounts.get(username.lower())
            if account is None or account.password != password:
                raise EmulatedError("BDC_1101")
            return [account]


_MINUTE = timedelta(minutes=1)


def _org_ids(account: Account) -> list[str]:
    """Every organization ``account``'s credentials reach (its own first)."""
    return [account.organization_id] + [o["organizationId"] for o in account.other_organizations]


def organizations(account: Account) -> list[dict[str, str]]:
    """The organizations listing of ``account``: ``{"organizationId", "name"}`` each."""
    own = {"organizationId": account.organization_id, "name": account.organization_name}
    return [own, *account.other_organizations]


def accounts_document(data: Any, source: str = "accounts") -> list[dict[str, Any]]:
    """The account objects of an accounts document: ``{"accounts": [...]}`` or a bare list.

    The one format of ``manage.py bill_emulator --accounts FILE``, of
    ``POST /_emulator/accounts`` and of :func:`write_accounts_file`; each object has the fields
    of :class:`Account` (see the package docstring). ``ValueError`` names ``source`` otherwise.
    """
    if isinstance(data, dict):
        data = data.get("accounts")
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ValueError(
            f'{source}: expected a JSON list of accounts or {{"accounts": [...]}}, each an object '
            "with at least username and password."
        )
    return data


def load_accounts_file(path: str | Path) -> list[dict[str, Any]]:
    """Read an accounts file: a JSON list of account objects, or ``{"accounts": [...]}``."""
    return accounts_document(json.loads(Path(path).read_text(encoding="utf-8")), str(path))


def write_accounts_file(path: str | Path, accounts: list[Account]) -> None:
    """Write accounts in the format :func:`load_accounts_file` reads."""
    Path(path).write_text(
        json.dumps({"accounts": [a.to_dict() for a in accounts]}, indent=2) + "\n", encoding="utf-8"
    )
