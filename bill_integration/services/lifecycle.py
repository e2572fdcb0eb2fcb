"""A connection's lifecycle: logging in, keeping alive, and what each failure does to it.

The only writer of a connection's session and status fields (linking writes credentials;
key rotation rewrites ciphertext only). Every function here runs with the connection's row
locked by the caller (:mod:`locking`), writes with :func:`locking.fenced_write`, records an
:class:`~bill_integration.models.AuditEvent` for logins, failures and status transitions
(never for keep-alives: one every half hour per tenant would be most of the table), and
queues one signal per status *transition*, never per retry.

The failure policy (:func:`record_failure`), by what BILL said:

==========================  ==================  =============================================
exception                   status              next attempt
==========================  ==================  =============================================
InvalidCredentials          needs_relink        none: no automatic login until a relink
UntrustedSession (MFA) [†]  needs_relink        none: logging in again cannot fix it
RateLimited, BILL's 1144    rate_limited        the next clock hour (the key is paused)
RateLimited, BDC_1322       rate_limited        backoff
LoginBudgetExhausted        rate_limited [*]    when a login of the budget frees up
TransientError              degraded            exponential backoff with full jitter
anything else               degraded (kept)     backoff; logged as an error
DecryptionFailed            needs_relink        recovers on its own once a key decrypts it
==========================  ==================  =============================================

[*] A connection already ``degraded`` stays ``degraded``: during a BILL outage its failed
logins are what spent the budget, and the outage is what a person should read about.
[†] BDC_1361 on the app's own login or keep-alive. On a caller's request it is not a failure
of the connection: ``services/mfa.py`` steps up once or marks "trust needed".
"""

from __future__ import annotations

import logging
import random
import time
from datetime import datetime, timedelta
from typing import Any, cast

from .. import signals
from ..auth_methods import SPEND_USER, rules
from ..client.errors import start_of_next_hour
from ..conf import bill_settings, now
from ..exceptions import (
    BillIntegrationError,
    ConflictError,
    InvalidCredentials,
    LoginBudgetExhausted,
    RateLimited,
    SessionInvalid,
    TransientError,
    UntrustedSession,
    UpkeepShareExhausted,
)
from ..models import SESSION_FIELDS, STATUS_FIELDS, AuditEvent, BillConnection
from ..models import ConnectionStatus as Status
from . import gateway, spend_only, trust
from .common import developer_key, log_failure, log_outcome, record
from .freshness import (
    BUDGET_EXHAUSTED,
    UNHEALTHY_STATUSES,
    expiry,
    keepalive_after,
    renewal_pending,
)
from .locking import Effects, fenced_write

logger = logging.getLogger("bill_integration.sessions")

#: Outcomes of a refresh (also the refresh task's result: no secret in it).
KEPT_ALIVE, LOGGED_IN, RENEWAL_DEFERRED = "kept_alive", "logged_in", "renewal_deferred"
#: Upkeep turned away (``UPKEEP_SHARE``, login pacing or the callers' reserve): nothing failed.
UPKEEP_DEFERRED = "upkeep_deferred"
#: Logins a person asked for (not renewals): they draw on the tenant's own allowance.
ATTEMPT_REASONS = frozenset({"forced", "manual"})


def login(connection: BillConnection, effects: Effects, *, reason: str) -> None:
    """Log in with the stored credentials and store the new session (caller holds the lock).

    While MFA trust holds, the login sends the remember-me id and its device, so the new
    session is trusted with no person involved (:mod:`.trust`).
    """
    started = time.monotonic()
    remember_me, device = trust.usable_remember_me(connection, now())
    account = gateway.Account.of(connection, remember_me_id=remember_me, device=device)
    result = gateway.login(account, attempt=reason in ATTEMPT_REASONS)
    moment = now()
    old_status = connection.status
    read_version = connection.version
    connection.session_id = result.session_id
    connection.user_id = result.user_id or connection.user_id
    connection.session_obtained_at = moment
    connection.session_last_used_at = moment
    connection.session_expires_at = expiry(connection, result, moment)
    # v2's login answer has no "trusted": a valid mfaId sent counts (trust.py's choices).
    sent = remember_me is not None
    trusted = result.trusted or (sent and connection.api_version == "v2")
    connection.session_trusted = trusted
    lost, news = trust.lose(connection, moment) if sent and not trusted else ([], False)
    mark_healthy(connection, moment)
    moved = _follow_key(connection, account.fingerprint)
    try:
        fields = [*SESSION_FIELDS, *STATUS_FIELDS, *lost, *moved]
        fenced_write(connection, read_version, fields, bump=True)
    except ConflictError:
        # The row changed under us (relinked, or a writer without the lock): write nothing,
        # log the fresh session out; the caller records no failure either (see conflicted).
        gateway.logout_quietly(account, result.session_id)
        raise
    record(
        connection,
        AuditEvent.Kind.SESSION_REFRESHED,
        reason=reason,
        version=connection.version,
        trusted=connection.session_trusted,
    )
    if news:  # BILL did not honour the remember-me id: trust ended
        trust.report_expired(connection, effects, reason="login")
    log_outcome("login", connection, LOGGED_IN, duration=time.monotonic() - started)
    effects.add(signals.connection_session_refreshed, connection, reason=reason)
    note_recovery(connection, old_status, effects)


def keep_alive(connection: BillConnection, effects: Effects) -> str:
    """Reset BILL's idle timer with ``session_info``; log in if BILL says the session is gone."""
    started = time.monotonic()
    if rules(connection.auth_method).probe == SPEND_USER:
        return spend_only.check_token(connection, started)  # no session: check the token
    try:
        info = gateway.session_info(connection)
    except SessionInvalid:
        login(connection, effects, reason="session_gone")
        return LOGGED_IN
    moment = now()
    # BILL's word on MFA for this organization and developer key (mfaStatus, mfaBypass).
    connection.mfa_status = (info.mfa_status or "")[:32]
    connection.mfa_bypass = info.mfa_bypass
    old_status = connection.status
    pending = renewal_pending(connection)
    retry_at = connection.next_attempt_at
    connection.session_last_used_at = moment
    mark_healthy(connection, moment)
    if pending:  # still waiting for the login budget to renew the session: keep the mark
        connection.last_error_code = BUDGET_EXHAUSTED
        connection.next_attempt_at = retry_at
    fields = ["session_last_used_at", "mfa_status", "mfa_bypass", *STATUS_FIELDS]
    fields += _follow_key(connection, developer_key(connection)[1])
    fenced_write(connection, connection.version, fields, bump=False)
    log_outcome("keep_alive", connection, KEPT_ALIVE, duration=time.monotonic() - started)
    note_recovery(connection, old_status, effects)
    return KEPT_ALIVE


def renew(
    connection: BillConnection, effects: Effects, *, reason: str, keep_alive_too: bool
) -> str:
    """Renew a live session that passed ``MAX_SESSION_AGE``; if the budget refuses, keep it.

    ``MAX_SESSION_AGE`` is our policy, BILL still accepts the session: when the developer
    key's login budget refuses the renewal, or its rules defer it (background logins paced, or
    behind the callers' reserve), the session stays in use (status ``active``,
    ``last_error_code`` ``login_budget_exhausted`` marks the pending renewal,
    ``next_attempt_at`` says when to try again) and, with ``keep_alive_too``, BILL's idle
    timer is reset so the session lives on meanwhile. Only a spent budget counts and logs a
    shortfall; a deferral was counted by the gateway.
    """
    try:
        login(connection, effects, reason=reason)
        return LOGGED_IN
    except UpkeepShareExhausted as exc:
        # Paced, or the callers' reserve. Were the session dropped at MAX_SESSION_AGE, its next
        # caller would wait for a login, spent from the same short budget, for a session BILL
        # still accepts.
        refused: RateLimited = exc
        retry_at = exc.retry_at or now() + bill_settings.SWEEP_INTERVAL
    except LoginBudgetExhausted as exc:  # our own budget is spent: count the shortfall
        refused = exc
        retry_at = _shortfall(connection, exc, now(), "keeps its live session past MAX_SESSION_AGE")
    outcome = RENEWAL_DEFERRED
    if keep_alive_too:
        outcome = keep_alive(connection, effects)
    if outcome != LOGGED_IN:
        connection.last_error_code = BUDGET_EXHAUSTED
        connection.last_error_message = str(refused)[:500]
        connection.next_attempt_at = retry_at
        fenced_write(
            connection,
            connection.version,
            ["last_error_code", "last_error_message", "next_attempt_at"],
            bump=False,
        )
    return outcome


def renew_or_keep_alive(connection: BillConnection, effects: Effects, at: datetime) -> str:
    """The sweep's renewal of a live session past ``MAX_SESSION_AGE`` (keep-alive if refused)."""
    idle_enough = at - cast(datetime, connection.session_last_used_at) >= keepalive_after(
        connection
    )
    return renew(connection, effects, reason="max_age", keep_alive_too=idle_enough)


def _follow_key(connection: BillConnection, fingerprint: str) -> list[str]:
    """Count the row under the key its calls now carry (a rotated host key); fields to write."""
    if fingerprint == connection.dev_key_fingerprint:
        return []
    connection.dev_key_fingerprint = fingerprint
    return ["dev_key_fingerprint"]


def mark_healthy(connection: BillConnection, moment: datetime) -> None:
    connection.last_refresh_at = moment
    connection.status = Status.ACTIVE
    connection.last_error_code = ""
    connection.last_error_message = ""
    connection.consecutive_failures = 0
    connection.next_attempt_at = None


def note_recovery(connection: BillConnection, old_status: str, effects: Effects) -> None:
    if old_status in UNHEALTHY_STATUSES:
        record(connection, AuditEvent.Kind.STATUS_CHANGED, old=old_status, new=connection.status)
        effects.add(signals.connection_recovered, connection)


# --- failures --------------------------------------------------------------------------------


def backoff_delay(failures: int) -> timedelta:
    """Exponential backoff with full jitter, never shorter than ``BACKOFF_BASE``.

    The n-th consecutive failure waits a random time between ``BACKOFF_BASE`` and
    ``min(BACKOFF_MAX, BACKOFF_BASE * 2**(n-1))``: a floor so one tenant cannot hammer BILL,
    jitter so tenants that failed together spread out.
    """
    base = bill_settings.BACKOFF_BASE.total_seconds()
    cap = min(bill_settings.BACKOFF_MAX.total_seconds(), base * 2 ** max(0, failures - 1))
    return timedelta(seconds=random.uniform(base, max(base, cap)))


def _shortfall(
    connection: BillConnection, exc: RateLimited, moment: datetime, what: str
) -> datetime:
    """Count and log a login the budget refused; returns when to try again."""
    total = gateway.record_shortfall(connection.dev_key_fingerprint)
    retry_at = exc.retry_at or moment + backoff_delay(1)
    logger.warning(
        "bill login budget exhausted: connection=%s %s; login retried from %s "
        "(shortfalls for this developer key: %s)",
        connection.pk,
        what,
        retry_at.isoformat(),
        total,
    )
    return retry_at


def _policy(
    connection: BillConnection, exc: BillIntegrationError, moment: datetime
) -> tuple[str, datetime | None, str, int, int]:
    """``(status, next attempt, code, failures, log level)`` for a failure (the table above)."""
    old_status = connection.status
    failures = connection.consecutive_failures + 1
    code = getattr(exc, "bill_code", None) or exc.code
    if isinstance(exc, InvalidCredentials):
        return Status.NEEDS_RELINK, None, code, failures, logging.WARNING
    if isinstance(exc, UntrustedSession):
        # BDC_1361: BILL wants MFA for this account; logging in again cannot fix that.
        return Status.NEEDS_RELINK, None, exc.code, failures, logging.WARNING
    if isinstance(exc, LoginBudgetExhausted):
        # Not the tenant's failure: the developer key's budget is spent.
        retry_at = _shortfall(connection, exc, moment, "waits")
        if old_status == Status.DEGRADED:
            return old_status, retry_at, connection.last_error_code, failures - 1, logging.WARNING
        return Status.RATE_LIMITED, retry_at, BUDGET_EXHAUSTED, failures - 1, logging.WARNING
    if isinstance(exc, RateLimited):
        if exc.scope == "hourly":
            retry_at = exc.retry_at or start_of_next_hour(moment)
        else:  # BDC_1322, or our own slots stayed busy
            retry_at = moment + backoff_delay(failures)
        return Status.RATE_LIMITED, retry_at, code, failures, logging.WARNING
    if isinstance(exc, TransientError):
        return Status.DEGRADED, moment + backoff_delay(failures), code, failures, logging.WARNING
    # Unexpected answer: fail loudly, keep a failing status as it is.
    status = old_status if old_status != Status.ACTIVE else Status.DEGRADED
    return status, moment + backoff_delay(failures), code, failures, logging.ERROR


def record_failure(
    connection: BillConnection,
    exc: BillIntegrationError,
    effects: Effects,
    *,
    action: str,
    started: float,
) -> None:
    """Write what went wrong to the status fields only; signal a transition once.

    ``started`` is ``time.monotonic()`` when the attempt began: the log line carries how long
    BILL took to fail (a timeout and a refusal look very different).
    """
    if isinstance(exc, UpkeepShareExhausted):
        deferred(connection, exc, action=action, started=started)
        return
    moment = now()
    old_status = connection.status
    new_status, next_attempt, code, failures, level = _policy(connection, exc, moment)
    connection.status = new_status
    connection.last_error_code = str(code)[:64]
    connection.last_error_message = str(exc)[:500]
    connection.consecutive_failures = failures
    connection.next_attempt_at = next_attempt
    connection.last_refresh_at = moment
    fenced_write(connection, connection.version, STATUS_FIELDS, bump=False)
    log_failure(action, connection, exc, started=started, level=level)
    if new_status != old_status:
        transition(connection, old_status, new_status, effects, error=exc)


def deferred(
    connection: BillConnection, exc: UpkeepShareExhausted, *, action: str, started: float
) -> str:
    """Upkeep turned away: log it, write nothing (no status, no backoff, no failure count).

    The connection stays due: the next sweep tries again, and a caller who needs the
    session meanwhile logs in (interactive logins are served first). The gateway counted the
    deferral (``HourOfCalls.deferred``).
    """
    logger.info("bill upkeep deferred: connection=%s %s", connection.pk, exc)
    log_outcome(action, connection, UPKEEP_DEFERRED, duration=time.monotonic() - started)
    return UPKEEP_DEFERRED


def transition(
    connection: BillConnection, old: str, new: str, effects: Effects, *, error: Any = None
) -> None:
    """Audit and signal one status transition (the one shape every transition uses)."""
    record(
        connection,
        AuditEvent.Kind.STATUS_CHANGED,
        old=old,
        new=new,
        code=connection.last_error_code,
    )
    if new == Status.NEEDS_RELINK:
        effects.add(signals.connection_needs_relink, connection, error=error)
    elif new == Status.ACTIVE and old != Status.ACTIVE:
        effects.add(signals.connection_recovered, connection)
    elif old == Status.ACTIVE:
        effects.add(signals.connection_degraded, connection, error=error)


def conflicted(
    connection: BillConnection, exc: ConflictError, *, action: str, started: float
) -> None:
    """Log a lost fenced write. Nothing is written: the row belongs to whoever moved it on.

    Recording it as a failure would be another fenced write with the same stale version
    (another ConflictError), and the newer state is healthy as far as we know.
    """
    log_outcome(action, connection, f"failed:{exc.code}", duration=time.monotonic() - started)
