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
developer key's AP/AR limits, so they take no developer-key slot.

Secrets stay out of logs and error reports: every function that handles one is marked with
``sensitive_variables``, and the dataclasses keep them out of ``repr()``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.views.decorators.debug import sensitive_variables

from .. import limits
from ..client import (
    LoginResult,
    MfaPhone,
    SessionInfo,
    SpendUser,
    StepUpResult,
    get_client,
    get_spend_client,
)
from ..client.base import session_credentials
from ..exceptions import RateLimited

logger = logging.getLogger("bill_integration")

__all__ = [
    "Account",
    "batch",
    "check_api_token",
    "login",
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


@dataclass(frozen=True)
class Account:
    """What a login needs: where, which API version, and the account's credentials."""

    environment: str
    api_version: str
    username: str
    password: str = field(repr=False)
    organization_id: str
    dev_key: str = field(repr=False)
    #: ``dev_key_fingerprint`` of the developer key: the limits are counted per key.
    fingerprint: str = field(repr=False)
    #: The tenant's primary key, as text: its own allowance of login attempts is counted by it.
    tenant_key: str = ""
    #: BILL's MFA remember-me id (v3 ``rememberMeId``, v2 ``mfaId``) and the device it was
    #: given to: a login that sends both gets an MFA-trusted session (services/trust.py).
    remember_me_id: str | None = field(default=None, repr=False)
    device: str | None = None

    @classmethod
    def of(
        cls, connection: Any, *, remember_me_id: str | None = None, device: str | None = None
    ) -> Account:
        """The account of a stored connection (decrypts its password and developer key)."""
        return cls(
            environment=connection.environment,
            api_version=connection.api_version,
            username=connection.username,
            password=connection.password,
            organization_id=connection.organization_id,
            dev_key=connection.dev_key,
            fingerprint=connection.dev_key_fingerprint,
            tenant_key=str(connection.tenant_id),
            remember_me_id=remember_me_id,
            device=device,
        )


class SessionHolder(Protocol):
    """Anything that holds a live session: a ``BillSession`` or a locked ``BillConnection``."""

    environment: str
    api_version: str
    organization_id: str
    session_id: str
    dev_key: str
    dev_key_fingerprint: str


@contextmanager
def _bill_call(fingerprint: str, organization_id: str) -> Iterator[None]:
    """Hold one of the organization's slots for a call, and apply BILL's BDC_1144 to the key."""
    try:
        with limits.request_slot(fingerprint, organization_id):
            yield
    except RateLimited as exc:
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
    limits.take_login(account.fingerprint, attempt_by=account.tenant_key if attempt else None)
    with _bill_call(account.fingerprint, account.organization_id):
        return get_client(account.environment, account.api_version).login(
            username=account.username,
            password=account.password,
            organization_id=account.organization_id,
            dev_key=account.dev_key,
            remember_me_id=account.remember_me_id,
            device=account.device,
        )


@sensitive_variables("holder")
def session_info(holder: SessionHolder) -> SessionInfo:
    """BILL's cheapest authenticated call: proves the session alive and resets its idle timer."""
    with _bill_call(holder.dev_key_fingerprint, holder.organization_id):
        return get_client(holder.environment, holder.api_version).session_info(
            session_id=holder.session_id, dev_key=holder.dev_key
        )


@sensitive_variables("holder")
def request(
    holder: SessionHolder,
    method: str,
    path: str,
    *,
    json: Any = None,
    data: Any = None,
    params: dict[str, Any] | None = None,
) -> Any:
    """A caller's own call with ``holder``'s session: parsed JSON (v3) or ``response_data`` (v2)."""
    with _bill_call(holder.dev_key_fingerprint, holder.organization_id):
        return get_client(holder.environment, holder.api_version).request(
            method,
            path,
            session_id=holder.session_id,
            dev_key=holder.dev_key,
            json=json,
            data=data,
            params=params,
        )


# --- MFA: the text-message challenge, the code, step-up (every call holds a slot) ------------


@sensitive_variables("holder")
def mfa_phones(holder: SessionHolder) -> list[MfaPhone] | None:
    """The user's 2-step verification phones (last four digits only); ``None`` on v2."""
    with _bill_call(holder.dev_key_fingerprint, holder.organization_id):
        return get_client(holder.environment, holder.api_version).mfa_phones(
            session_id=holder.session_id, dev_key=holder.dev_key
        )


@sensitive_variables("holder")
def mfa_challenge(holder: SessionHolder, *, use_backup: bool) -> str:
    """Have BILL text a code to the user's primary (or backup) phone; the challenge id."""
    with _bill_call(holder.dev_key_fingerprint, holder.organization_id):
        return get_client(holder.environment, holder.api_version).mfa_challenge(
            session_id=holder.session_id, dev_key=holder.dev_key, use_backup=use_backup
        )


@sensitive_variables("holder", "code")
def mfa_validate(
    holder: SessionHolder, *, challenge_id: str, code: str, device: str, machine_name: str
) -> str:
    """Confirm the code ("remember me"): the session is trusted; returns the remember-me id."""
    with _bill_call(holder.dev_key_fingerprint, holder.organization_id):
        return get_client(holder.environment, holder.api_version).mfa_validate(
            session_id=holder.session_id,
            dev_key=holder.dev_key,
            challenge_id=challenge_id,
            code=code,
            device=device,
            machine_name=machine_name,
        )


@sensitive_variables("holder", "remember_me_id")
def mfa_step_up(holder: SessionHolder, *, remember_me_id: str, device: str) -> StepUpResult:
    """Make the live session trusted with a stored remember-me id (v3); check the id (v2)."""
    with _bill_call(holder.dev_key_fingerprint, holder.organization_id):
        return get_client(holder.environment, holder.api_version).mfa_step_up(
            session_id=holder.session_id,
            dev_key=holder.dev_key,
            remember_me_id=remember_me_id,
            device=device,
        )


@sensitive_variables("account", "session_id")
def logout_quietly(account: Account, session_id: str) -> None:
    """Best effort: end a session we will not keep, so it does not stay open at BILL.

    Never raises: a session left open expires on its own after BILL's idle timeout. It holds
    a slot like any call (never a login) and is skipped while the developer key is paused.
    """
    try:
        with _bill_call(account.fingerprint, account.organization_id):
            get_client(account.environment, account.api_version).logout(
                session_id=session_id, dev_key=account.dev_key
            )
    except Exception as exc:  # noqa: BLE001 - best effort; the session expires on its own
        logger.info("bill logout skipped: %s", type(exc).__name__)


@sensitive_variables("api_token")
def check_api_token(environment: str, api_token: str) -> SpendUser:
    """Prove a Spend & Expense API token works (the user who generated it)."""
    return get_spend_client(environment).current_user(api_token=api_token)


def record_shortfall(fingerprint: str) -> int:
    """Count one due login the budget could not cover; returns the developer key's total."""
    return limits.record_shortfall(fingerprint)


def batch() -> Any:
    """Reuse the limiter's connections for a loop of calls (the sweep run in-process)."""
    return limits.batch()
