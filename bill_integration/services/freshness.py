"""The rules of a session's life, as pure functions of a connection row and a moment.

No database, no BILL: :mod:`single_flight`, :mod:`lifecycle`, :mod:`sweep` and
:func:`bill_integration.services.get_session` all judge a session by these, so the hot path,
the sweep and the tests agree on what "valid" and "due" mean.

* **Alive**: BILL's sliding idle timer still runs: a session id is stored, and
  ``at < session_last_used_at + SESSION_IDLE_TIMEOUT - SESSION_SAFETY_MARGIN``. BILL ends a
  session after 35 minutes without a call, and any call resets the timer
  (https://developer.bill.com/docs/api-rate-limits). ``session_last_used_at`` is written at
  most once per ``LAST_USED_WRITE_INTERVAL``, so it only ever *under*-estimates freshness.
* **Valid**: alive, not ``needs_relink``/``disabled``, and younger than ``MAX_SESSION_AGE``.
  ``MAX_SESSION_AGE`` is our policy, not BILL's: while a renewal the login budget refused or
  deferred is pending (:func:`renewal_pending`), an older session that is still alive stays
  valid.
* **Due** (:func:`due_action`): what the sweep should do now: keep the session alive once it
  has been idle ``keepalive_after_idle()``, log in when there is no session, when it surely
  expired, or when ``MAX_SESSION_AGE`` is near.
* **Next due** (:func:`next_due_at`): the first moment :func:`due_action` answers something,
  stored in ``BillConnection.next_due_at`` with every write of the inputs (``DUE_FIELDS``), so
  the sweep selects ``next_due_at <= now`` on a partial index instead of scanning the table.

Each sign-in method has its own rules (``auth_methods.METHODS``): a sync-token session idles
48 hours and is kept alive after 12; an OAuth access token has no idle timer and is renewed
``OAUTH_RENEW_BEFORE`` before it expires (``session_expires_at``), never by a password login; a
Spend & Expense-only connection has no session at all (always usable, never due).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any, cast

from .. import constants
from ..auth_methods import LOGIN as RENEW_BY_LOGIN
from ..auth_methods import NONE, OAUTH_DEFAULT_LIFETIME, OAUTH_RENEW_BEFORE, OAUTH_TOKEN, rules
from ..conf import bill_settings, keepalive_after_idle
from ..exceptions import ConnectionDisabled, ConnectionNeedsRelink, LoginBudgetExhausted
from ..models import SWEPT_STATUSES, BillConnection, ConnectionStatus
from . import warmth

#: The columns get_session() reads: enough to judge validity and build a BillSession.
HOT_FIELDS = (
    "auth_method",
    "session_id",
    "session_expires_at",
    "dev_key",
    "dev_key_fingerprint",
    "organization_id",
    "user_id",
    "api_version",
    "environment",
    "status",
    "session_obtained_at",
    "session_last_used_at",
    "next_attempt_at",
    "last_error_code",
    "version",
    "usage_last_at",
)
UNHEALTHY_STATUSES = (ConnectionStatus.DEGRADED, ConnectionStatus.RATE_LIMITED)
#: last_error_code of an active connection whose MAX_SESSION_AGE renewal waits for the budget.
BUDGET_EXHAUSTED = LoginBudgetExhausted.code
#: Sweep actions.
LOGIN, KEEP_ALIVE = "login", "keep_alive"


def check_usable(connection: BillConnection) -> None:
    """Raise when the connection waits for a person (relink) or an operator (disabled)."""
    if connection.status == ConnectionStatus.NEEDS_RELINK:
        raise ConnectionNeedsRelink()
    if connection.status == ConnectionStatus.DISABLED:
        raise ConnectionDisabled()


def idle_timeout(connection: BillConnection) -> timedelta | None:
    """BILL's idle timeout of this connection's sessions (``None``: no idle timer)."""
    entry = rules(connection.auth_method)
    if entry.idle_timeout == constants.SESSION_IDLE_TIMEOUT:
        return bill_settings.SESSION_IDLE_TIMEOUT  # a project's deprecated value still counts
    return entry.idle_timeout


def keepalive_after(connection: BillConnection) -> timedelta:
    """How long this connection's session may idle before the sweep keeps it alive."""
    return rules(connection.auth_method).keepalive_after or keepalive_after_idle()


def expiry(connection: BillConnection, result: Any, moment: datetime) -> datetime | None:
    """When an OAuth access token runs out (BILL's ``expires_in``); ``None`` for sessions."""
    if rules(connection.auth_method).renewal != OAUTH_TOKEN:
        return None
    lifetime = result.expires_in
    return moment + (timedelta(seconds=lifetime) if lifetime else OAUTH_DEFAULT_LIFETIME)


def session_is_alive(connection: BillConnection, at: datetime) -> bool:
    """Whether BILL's idle timer still runs for the stored session at ``at`` (any age)."""
    if connection.status in (ConnectionStatus.NEEDS_RELINK, ConnectionStatus.DISABLED):
        return False
    entry = rules(connection.auth_method)
    if entry.renewal == NONE:
        return True  # Spend & Expense only: the API token is the credential, no session
    if not connection.session_id:
        return False
    if entry.renewal == OAUTH_TOKEN:
        expires = connection.session_expires_at
        return expires is not None and at < expires - bill_settings.SESSION_SAFETY_MARGIN
    last_used = connection.session_last_used_at
    timeout = idle_timeout(connection)
    if last_used is None or timeout is None:
        return False
    return at < last_used + timeout - bill_settings.SESSION_SAFETY_MARGIN


def renewal_pending(connection: BillConnection) -> bool:
    """Whether a ``MAX_SESSION_AGE`` renewal waits for the login budget or its pace (the session
    stays in use meanwhile)."""
    return (
        connection.status == ConnectionStatus.ACTIVE
        and connection.last_error_code == BUDGET_EXHAUSTED
    )


def session_is_valid(connection: BillConnection, at: datetime) -> bool:
    """Whether BILL would still accept the stored session at ``at`` (with the safety margin)."""
    if not session_is_alive(connection, at):
        return False
    max_age = bill_settings.MAX_SESSION_AGE
    by_login = rules(connection.auth_method).renewal == RENEW_BY_LOGIN
    if by_login and max_age is not None and not renewal_pending(connection):
        obtained = connection.session_obtained_at
        if obtained is None or at >= obtained + max_age:
            return False
    return True


#: ``MAX_SESSION_AGE`` renewals come up to this share of the age early, by connection.
RENEWAL_SPREAD = 0.1
#: The golden ratio's fraction: ``pk * it mod 1`` spreads consecutive ids evenly over [0, 1).
_GOLDEN = 0.6180339887498949


def renewal_at(connection: BillConnection) -> datetime | None:
    """When the sweep renews this session for ``MAX_SESSION_AGE`` (``None``: no session age
    recorded, or no ``MAX_SESSION_AGE``).

    Up to ``RENEWAL_SPREAD`` of the age before the age (less the safety margin), by a fixed
    fraction of the connection's id: tenants linked together (an import, a migration) renew
    spread over ~17 hours of a 7-day age instead of in one sweep, which would spend the
    developer key's 200 logins an hour at once. The same connection always gets the same
    moment.
    """
    max_age = bill_settings.MAX_SESSION_AGE
    obtained = connection.session_obtained_at
    if max_age is None or obtained is None:
        return None
    early = max_age * RENEWAL_SPREAD * _spread(getattr(connection, "pk", None))
    return obtained + max_age - bill_settings.SESSION_SAFETY_MARGIN - early


def _spread(pk: Any) -> float:
    """A fraction in [0, 1) fixed per connection id (consecutive ids evenly apart)."""
    if pk is None:
        return 0.0
    if not isinstance(pk, int):  # a custom primary key: any stable number will do
        pk = int.from_bytes(hashlib.blake2b(str(pk).encode(), digest_size=8).digest(), "big")
    return (pk * _GOLDEN) % 1.0


def backing_off(connection: BillConnection, at: datetime) -> bool:
    """Whether the connection waits (``next_attempt_at``) after a failure."""
    return connection.next_attempt_at is not None and connection.next_attempt_at > at


def due_action(
    connection: BillConnection, at: datetime, *, pressure: float = 0.0, login_pressure: float = 0.0
) -> str | None:
    """What the sweep should do for ``connection`` at ``at``: :data:`LOGIN`, :data:`KEEP_ALIVE`
    or ``None``. :func:`bill_integration.services.sweep.due_connection_ids` is the same rule
    as one query (before the warmth decision, which needs the row's usage history).

    Work that would keep a session warm (a keep-alive, a renewal, a login for a session that
    lapsed) is done only when :func:`warmth.decide` says so at ``pressure``; a tenant let
    lapse logs in when it next calls (``get_session``), or just before its usual time.
    ``pressure`` and ``login_pressure`` (0..1) say how short the developer key's calls and
    logins run (``sweep.budget_pressures``).
    """
    action = session_work(connection, at)
    if action is None:
        return None
    decision = warmth.decide(connection, at, pressure=pressure, login_pressure=login_pressure)
    return action if decision.keep_warm else None


def session_work(connection: BillConnection, at: datetime) -> str | None:
    """What keeping ``connection``'s session warm needs at ``at``, whether or not it is worth it."""
    if connection.status not in SWEPT_STATUSES:
        return None
    entry = rules(connection.auth_method)
    if entry.renewal == NONE:
        return None  # Spend & Expense only: nothing to keep
    if entry.renewal == OAUTH_TOKEN:
        if backing_off(connection, at):
            return None
        expires = connection.session_expires_at
        renew = not connection.session_id or expires is None or at >= expires - OAUTH_RENEW_BEFORE
        return LOGIN if renew else None
    timeout = idle_timeout(connection) or bill_settings.SESSION_IDLE_TIMEOUT
    keep_after = keepalive_after(connection)
    if backing_off(connection, at):
        # Backing off; but a session whose renewal waits for the budget is still kept alive.
        alive = renewal_pending(connection) and session_is_alive(connection, at)
        # alive: session_last_used_at is set.
        idle_enough = alive and at - cast(datetime, connection.session_last_used_at) >= keep_after
        return KEEP_ALIVE if idle_enough else None
    last_used = connection.session_last_used_at
    if last_used is None or not connection.session_id:
        return LOGIN
    if bill_settings.MAX_SESSION_AGE is not None:
        renew_at = renewal_at(connection)
        if renew_at is None or at >= renew_at:
            return LOGIN
    idle = at - last_used
    # Past the idle limit even allowing for the throttled last-use lag: surely gone at BILL.
    if idle >= timeout + bill_settings.LAST_USED_WRITE_INTERVAL:
        return LOGIN
    if idle >= keep_after:
        return KEEP_ALIVE
    return None


def next_due_at(connection: BillConnection, at: datetime) -> datetime | None:
    """The first moment from ``at`` on when :func:`due_action` answers something (``None``:
    never, until the row is written again). ``at`` itself when the connection is due now.

    :func:`due_action` only compares ``at`` with moments stored on the row (each rule is
    ``at >= moment`` or ``at < moment``), so its answer can only change at those moments: the
    first of them (or ``at``) at which it answers is exact. Valid while the row's
    ``DUE_FIELDS`` are unchanged; every writer of them stores a new value, except the hot
    path's use mark, which only makes the row due *later* (the sweep's re-check then stores
    the new moment).
    """
    if connection.status not in SWEPT_STATUSES or rules(connection.auth_method).renewal == NONE:
        return None
    for moment in sorted({at, *(m for m in _moments(connection, at) if m > at)}):
        if due_action(connection, moment) is not None:
            return moment
    return None


def _moments(connection: BillConnection, at: datetime) -> list[datetime]:
    """Every moment at which :func:`due_action`'s answer for this row may change."""
    settings = bill_settings
    moments = [connection.next_attempt_at]
    if connection.session_expires_at is not None:
        moments.append(connection.session_expires_at - OAUTH_RENEW_BEFORE)
    last_used = connection.session_last_used_at
    if last_used is not None:
        timeout = idle_timeout(connection) or settings.SESSION_IDLE_TIMEOUT
        moments += [
            last_used + keepalive_after(connection),
            last_used + timeout + settings.LAST_USED_WRITE_INTERVAL,
            last_used + timeout - settings.SESSION_SAFETY_MARGIN,
        ]
    moments.append(renewal_at(connection))
    # A session let lapse is due again only when the tenant's usual hour comes (warmth), and
    # an hour a visit was made in stops counting that visit when it ends.
    moments += warmth.prewarm_moments(connection, at)
    called = getattr(connection, "usage_last_at", None)
    if called is not None:
        moments.append(called.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1))
    return [moment for moment in moments if moment is not None]
