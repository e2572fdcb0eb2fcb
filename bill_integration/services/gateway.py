"""The one road to BILL: every call the app makes to BILL goes through this module.

Logins, logouts, keep-alives, verification and callers' own requests all pass here, and only
here is the sequence written out that BILL's limits demand:

1. a **login** first takes one login from the developer key's hourly budget
   (:func:`bill_integration.limits.take_login`; BILL allows 200 logins per developer key per
   hour: https://developer.bill.com/docs/api-rate-limits);
2. every call to an organization holds one of its **concurrency slots** for its length
   (:func:`bill_integration.limits.request_slot`; BILL allows 3 concurrent requests per
   developer key and organization);
3. the client makes the call (:mod:`bill_integration.client`);
4. what BILL answered is applied to the shared limits: a BDC_1144 ("max requests per hour")
   pauses the whole developer key until the next hour for every worker
   (:func:`bill_integration.limits.pause_dev_key`). BDC_1322 ("max concurrent requests") needs
   nothing shared: the slots already keep us at BILL's three, so it is only raised, and the
   caller backs off.

No other module imports the client or calls ``limits.take_login``/``limits.request_slot``
(``tests/services/test_architecture.py`` checks it). The session logic (``single_flight``,
``lifecycle``, ``linking``) decides *when* to call BILL; this module decides *how*.

MFA calls (phones, the text-message challenge, the code, step-up) hold a slot like any call;
a challenge's rate-limit answer is BILL's 5-texts-a-minute rule (``client/errors.py``), which
pauses nothing. Our own text-message throttle is in ``services/mfa.py``.

Spend & Expense calls carry their own API token and BILL counts them separately from the
developer key's AP/AR limits, so they take no developer-key slot: they take one of the token's
60 calls a minute instead (:func:`bill_integration.limits.spend_call`, key ``spend:...``).

Every sign-in method (``auth_methods.METHODS``) goes through the same functions: a login is a
``POST /v3/login`` (user/password, sync token, console token with ``consoleApiToken`` and no
password) or, for OAuth client credentials, a ``POST /authx/token`` whose access token is the
"session" (sent as ``Authorization: Bearer``, never with a devKey); a Spend & Expense-only
connection has no login at all.

**Every call is counted** (:mod:`bill_integration.limits.counting`) per developer key and
kind, once it holds its slot: a caller's request, a login a caller waited for, a keep-alive,
a background login, anything else. Work inside :func:`background` (the sweep) is *upkeep*:
a keep-alive or a login there first takes room under ``UPKEEP_SHARE`` of BILL's hourly call
limit, and under the limit itself after callers' calls (check and count in one atomic step:
upkeep never makes the call that pushes a key into BDC_1144), and is refused with
:class:`~bill_integration.exceptions.UpkeepShareExhausted` when there is none, before the
login budget or a slot is touched; a background login is also paced (``LOGINS_PER_MINUTE``)
and leaves ``LOGIN_RESERVE_FOR_CALLERS`` of the login budget to callers. A count that fails
(the limiter's store hiccups after the slot was granted) is logged, never the caller's error.
Spend & Expense calls are not counted here: BILL limits them per API token, not per key.

Secrets stay out of logs and error reports: every function that handles one is marked with
``sensitive_variables``, and the dataclasses keep them out of ``repr()``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.views.decorators.debug import sensitive_variables

from .. import limits
from ..auth_methods import NONE, OAUTH_TOKEN, AuthMethod, rules
from ..client import (
    LoginResult,
    MfaPhone,
    Organization,
    SessionInfo,
    SpendUser,
    StepUpResult,
    get_client,
    get_oauth_client,
    get_spend_client,
)
from ..client.base import session_credentials
from ..conf import now
from ..exceptions import ConfigurationError, RateLimited, UpkeepShareExhausted
from ..limits import BACKGROUND_LOGIN, CALLER, CALLER_LOGIN, KEEP_ALIVE, OTHER, UPKEEP_KINDS
from .accounts import Account, SessionHolder
from .common import developer_key

logger = logging.getLogger("bill_integration")

__all__ = [
    "Account",
    "SessionHolder",
    "background",
    "batch",
    "check_api_token",
    "in_background",
    "login",
    "list_organizations",
    "logout_quietly",
    "mfa_challenge",
    "mfa_phones",
    "mfa_step_up",
    "mfa_validate",
    "record_shortfall",
    "request",
    "session_credentials",
    "session_info",
]


def _bearer(holder: SessionHolder) -> str | None:
    """An OAuth connection's access token (sent as ``Authorization: Bearer``), else ``None``."""
    return holder.session_id if holder.auth_method == AuthMethod.OAUTH_CLIENT else None


_background: ContextVar[bool] = ContextVar("bill_integration_background", default=False)


@contextmanager
def background() -> Iterator[None]:
    """Calls made inside the block are upkeep (the sweep's keep-alives and logins).

    Inside it a keep-alive or a login must find room under ``UPKEEP_SHARE`` (else
    :class:`UpkeepShareExhausted`), and a login is paced and leaves the callers' reserve.
    Nested blocks and other threads are unaffected (a context variable).
    """
    token = _background.set(True)
    try:
        yield
    finally:
        _background.reset(token)


def in_background() -> bool:
    """Whether the current call is upkeep (inside :func:`background`)."""
    return _background.get()


def _take_upkeep(fingerprint: str, kind: str) -> None:
    """Count one upkeep call under the share and BILL's limit, or refuse it (counted as
    deferred)."""
    if limits.take_upkeep(fingerprint, kind):
        return
    _count(fingerprint, limits.counting.DEFERRED)
    raise UpkeepShareExhausted(
        f"No room for upkeep in the rolling hour: it may use {limits.upkeep_limit()} calls "
        "(UPKEEP_SHARE), and only what callers leave of BILL's hourly limit.",
        retry_at=limits.counting.minute_of(now()) + limits.counting.MINUTE,
    )


def _count(fingerprint: str, kind: str, n: int = 1) -> None:
    """Count a call; a failure to count never fails the call (the slot was granted)."""
    try:
        limits.count_call(fingerprint, kind, n=n)
    except Exception as exc:  # noqa: BLE001 - counting is bookkeeping, the call goes on
        logger.warning("bill call not counted (%s: %s)", type(exc).__name__, exc)


@contextmanager
def _bill_call(
    fingerprint: str, organization_id: str, kind: str = OTHER, *, counted: bool = False
) -> Iterator[None]:
    """Hold one of the organization's slots for a call, count it, and apply BILL's BDC_1144.

    Upkeep (a keep-alive or a login inside :func:`background`) takes its room under the share
    first, unless the caller already did (``counted``); a slot our own limiter refused then
    gives it back.
    """
    upkeep = kind in UPKEEP_KINDS and in_background()
    if upkeep and not counted:
        _take_upkeep(fingerprint, kind)
        counted = True
    try:
        # An uncounted call is counted with its slot, in the same atomic step (one round trip).
        with limits.request_slot(fingerprint, organization_id, count=None if counted else kind):
            yield
    except RateLimited as exc:
        if counted and not exc.from_bill and not isinstance(exc, UpkeepShareExhausted):
            _count(fingerprint, kind, -1)  # no call was made: our own slot or pause refused
        # Only BILL's own answer pauses the key: our limiter's refusal (no HTTP status) is
        # the pause itself, or a busy slot, and repeating it would only move the time.
        if exc.from_bill and exc.scope == "hourly":
            limits.pause_dev_key(fingerprint, exc.retry_at)
        raise


@sensitive_variables("account")
def login(account: Account, *, attempt: bool = False) -> LoginResult:
    """Open a new BILL session for ``account``: one login of the budget, one slot, one call.

    ``attempt`` marks a login someone asked for that may well fail (a link, a forced refresh,
    a verification): it draws on the tenant's own hourly allowance and never on the share of
    the budget kept for renewals of linked connections (see ``limits.take_login``).

    Raises :class:`~bill_integration.exceptions.LoginBudgetExhausted` (the budget is spent;
    BILL was not asked) or what BILL answered.
    """
    entry = rules(account.auth_method)
    if entry.renewal == NONE:
        raise ConfigurationError(f"A {entry.method} connection has no login.")
    upkeep = in_background() and not attempt
    kind = BACKGROUND_LOGIN if upkeep else OTHER if attempt else CALLER_LOGIN
    if upkeep:
        _take_upkeep(account.fingerprint, kind)  # before the login budget: nothing wasted
    try:
        limits.take_login(
            account.fingerprint,
            attempt_by=account.tenant_key if attempt else None,
            background=upkeep,
        )
    except RateLimited:
        if upkeep:
            _count(account.fingerprint, kind, -1)  # no login: give the upkeep room back
            _count(account.fingerprint, limits.counting.DEFERRED)
        raise
    if entry.renewal == OAUTH_TOKEN:
        return _oauth_token(account, kind, counted=upkeep)
    console = account.auth_method == AuthMethod.CONSOLE_TOKEN
    with _bill_call(account.fingerprint, account.organization_id, kind, counted=upkeep):
        return get_client(account.environment, account.api_version).login(
            username=account.username,
            password="" if console else account.password,
            organization_id=account.organization_id,
            dev_key=account.dev_key,
            remember_me_id=account.remember_me_id,
            device=account.device,
            console_token=account.console_token if console else None,
        )


@sensitive_variables("account")
def list_organizations(account: Account) -> list[Organization]:
    """The organizations ``account``'s credentials open (v2 ``ListOrgs.json``, no session).

    BILL counts it as a login, so it takes one from the budget as an *attempt* of the tenant
    (``account.tenant_key``), and holds a slot of the key (no organization yet: ``list_orgs``).
    """
    limits.take_login(account.fingerprint, attempt_by=account.tenant_key or None)
    with _bill_call(account.fingerprint, "list_orgs"):
        return get_client(account.environment, "v2").list_organizations(
            username=account.username, password=account.password, dev_key=account.dev_key
        )


@sensitive_variables("account", "token", "info")
def _oauth_token(account: Account, kind: str, *, counted: bool) -> LoginResult:
    """OAuth client credentials: a new access token, then whose organization it reaches.

    Counted as one login of ``kind`` (the token call); the organization check is ``OTHER``.
    The organization is asked for only when it is not known yet (a link): a renewal of a
    linked connection is one call, the token request (benchmark "upkeep per sign-in method").
    """
    with _bill_call(account.fingerprint, "oauth", kind, counted=counted):
        token = get_oauth_client(account.environment).token(
            client_id=account.oauth_client_id, client_secret=account.oauth_client_secret or ""
        )
    if account.organization_id:
        return LoginResult(
            session_id=token.access_token,
            organization_id=account.organization_id,
            user_id="",
            expires_in=token.expires_in,
        )
    with _bill_call(account.fingerprint, account.organization_id or "oauth", OTHER):
        info = get_client(account.environment, "v3").session_info(
            session_id="", dev_key="", bearer=token.access_token
        )
    return LoginResult(
        session_id=token.access_token,
        organization_id=info.organization_id,
        user_id=info.user_id,
        expires_in=token.expires_in,
    )


@sensitive_variables("holder", "dev_key")
def session_info(holder: SessionHolder) -> SessionInfo:
    """BILL's cheapest authenticated call: proves the session alive and resets its idle timer."""
    dev_key, fingerprint = developer_key(holder)
    with _bill_call(fingerprint, holder.organization_id, KEEP_ALIVE):
        return get_client(holder.environment, holder.api_version).session_info(
            session_id=holder.session_id, dev_key=dev_key, bearer=_bearer(holder)
        )


@sensitive_variables("holder", "dev_key")
def request(
    holder: SessionHolder,
    method: str,
    path: str,
    *,
    json: Any = None,
    data: Any = None,
    params: dict[str, Any] | None = None,
) -> Any:
    """A caller's own call with ``holder``'s session: parsed JSON (v3) or ``response_data`` (v2).

    A Spend & Expense-only connection sends its ``apiToken`` (any HTTP method) within the
    token's 60 calls a minute; an OAuth connection sends its ``Authorization: Bearer`` token.
    """
    if holder.auth_method == AuthMethod.SPEND_TOKEN:
        limits.spend_call(holder.dev_key_fingerprint)
        return get_spend_client(holder.environment).call(
            method, path, api_token=holder.api_token or "", json=json, params=params
        )
    dev_key, fingerprint = developer_key(holder)
    with _bill_call(fingerprint, holder.organization_id, CALLER):
        return get_client(holder.environment, holder.api_version).request(
            method,
            path,
            session_id=holder.session_id,
            dev_key=dev_key,
            json=json,
            data=data,
            params=params,
            bearer=_bearer(holder),
        )


# --- MFA: the text-message challenge, the code, step-up (every call holds a slot) ------------


@sensitive_variables("holder", "dev_key")
def mfa_phones(holder: SessionHolder) -> list[MfaPhone] | None:
    """The user's 2-step verification phones (last four digits only); ``None`` on v2."""
    dev_key, fingerprint = developer_key(holder)
    with _bill_call(fingerprint, holder.organization_id):
        return get_client(holder.environment, holder.api_version).mfa_phones(
            session_id=holder.session_id, dev_key=dev_key
        )


@sensitive_variables("holder", "dev_key")
def mfa_challenge(holder: SessionHolder, *, use_backup: bool) -> str:
    """Have BILL text a code to the user's primary (or backup) phone; the challenge id."""
    dev_key, fingerprint = developer_key(holder)
    with _bill_call(fingerprint, holder.organization_id):
        return get_client(holder.environment, holder.api_version).mfa_challenge(
            session_id=holder.session_id, dev_key=dev_key, use_backup=use_backup
        )


@sensitive_variables("holder", "dev_key", "code")
def mfa_validate(
    holder: SessionHolder, *, challenge_id: str, code: str, device: str, machine_name: str
) -> str:
    """Confirm the code ("remember me"): the session is trusted; returns the remember-me id."""
    dev_key, fingerprint = developer_key(holder)
    with _bill_call(fingerprint, holder.organization_id):
        return get_client(holder.environment, holder.api_version).mfa_validate(
            session_id=holder.session_id,
            dev_key=dev_key,
            challenge_id=challenge_id,
            code=code,
            device=device,
            machine_name=machine_name,
        )


@sensitive_variables("holder", "dev_key", "remember_me_id")
def mfa_step_up(holder: SessionHolder, *, remember_me_id: str, device: str) -> StepUpResult:
    """Make the live session trusted with a stored remember-me id (v3); check the id (v2)."""
    dev_key, fingerprint = developer_key(holder)
    with _bill_call(fingerprint, holder.organization_id):
        return get_client(holder.environment, holder.api_version).mfa_step_up(
            session_id=holder.session_id,
            dev_key=dev_key,
            remember_me_id=remember_me_id,
            device=device,
        )


@sensitive_variables("account", "session_id")
def logout_quietly(account: Account, session_id: str) -> None:
    """Best effort: end a session we will not keep, so it does not stay open at BILL.

    Never raises: a session left open expires on its own after BILL's idle timeout. It holds
    a slot like any call (never a login) and is skipped while the developer key is paused.
    OAuth tokens and Spend & Expense tokens have no session to end: nothing is sent.
    """
    if rules(account.auth_method).renewal != "login" or not session_id:
        return
    try:
        with _bill_call(account.fingerprint, account.organization_id):
            get_client(account.environment, account.api_version).logout(
                session_id=session_id, dev_key=account.dev_key
            )
    except Exception as exc:  # noqa: BLE001 - best effort; the session expires on its own
        logger.info("bill logout skipped: %s", type(exc).__name__)


@sensitive_variables("api_token")
def check_api_token(environment: str, api_token: str, *, key: str = "") -> SpendUser:
    """Prove a Spend & Expense API token works (the user who generated it).

    ``key`` (``spend:<fingerprint>``) counts the call in that token's 60 calls a minute.
    """
    if key:
        limits.spend_call(key)
    return get_spend_client(environment).current_user(api_token=api_token)


def record_shortfall(fingerprint: str) -> int:
    """Count one due login the budget could not cover; returns the developer key's total."""
    return limits.record_shortfall(fingerprint)


def batch() -> Any:
    """Reuse the limiter's connections for a loop of calls (the sweep run in-process)."""
    return limits.batch()
