"""The sweep: find the connections whose session needs work, and do it, one row at a time.

Beat runs ``bill_integration.refresh_due_sessions`` every ``SWEEP_INTERVAL``; it calls
:func:`refresh_due` with a ``dispatch_batch`` that sends one ``bill_integration.refresh_sessions``
task per ``SWEEP_BATCH_SIZE`` due ids, and each task runs :func:`refresh_connections` (each id
through :func:`refresh_connection`, one limiter batch). Without Celery,
``manage.py bill_refresh_sessions`` runs the same functions in-process.

* :func:`due_connection_ids` finds due connections with one query on the partial index of
  ``next_due_at`` (:func:`freshness.next_due_at`, stored with every session write), most
  recently used first (so a login-budget shortfall hits idle tenants).
* :func:`refresh_connection` re-checks under the row lock (``skip_locked``: a duplicate task
  for a row being handled does nothing) that the work is still due, then keeps a live
  session alive with BILL's cheapest authenticated call, or logs in when BILL says the
  session is gone, when it surely expired, or when ``MAX_SESSION_AGE`` passed.
* Connections set aside because no key decrypted their secrets are looked at too
  (:func:`undecryptable.restore_all_decryptable`, no call to BILL): a key mistake put right
  returns them to service without a relink.
* MFA trust about to end, or ended, is noticed before it bites (:func:`trust.notify_expiry`,
  no call to BILL): ``connection_mfa_expiring`` once ``MFA_EXPIRY_WARNING`` before BILL's 30
  days run out, ``connection_mfa_expired`` once they have.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.checks import Error
from django.db import transaction
from django.db.models import F, QuerySet

from .. import limits
from ..conf import bill_settings, now
from ..constants import MAX_CALLS_PER_HOUR
from ..exceptions import (
    BillIntegrationError,
    ConflictError,
    DecryptionFailed,
    LimiterUnavailable,
    UpkeepShareExhausted,
)
from ..models import BillConnection
from . import gateway, lifecycle, trust, undecryptable, warmth
from .freshness import (
    KEEP_ALIVE,
    LOGIN,
    SWEPT_STATUSES,
    backing_off,
    due_action,
    next_due_at,
    session_is_alive,
    session_work,
)
from .locking import Effects, lock

#: Share of BILL's hourly call limit (all kinds) and of the login budget spent in the rolling
#: hour from which keeping sessions warm gets dearer (calls) or more worth it (logins).
CALLS_PRESSURE_FROM = 0.8
LOGINS_PRESSURE_FROM = 0.5
E016_SWEEP_BATCH_SIZE = "bill_integration.E016"
#: A batch's ids are refreshed one after another in one task: more would hold a worker thread
#: for minutes (1,000 keep-alives at 100 ms) and leave the other threads idle at the end.
MAX_BATCH_SIZE = 1000
#: A sweep with at least this many due ids is sent in at least this many messages.
MIN_MESSAGES = 64
#: Outcomes of :func:`refresh_connection` besides lifecycle's kept_alive/logged_in/...
NOT_DUE, BUSY, MISSING = "not_due", "busy", "missing"

Progress = Callable[[int, str], Any]


def due_connection_ids(at: datetime | None = None, *, limit: int | None = None) -> list[int]:
    """Ids of the connections due at ``at``, most recently used first (one query).

    ``status in SWEPT_STATUSES AND next_due_at <= at``: a range of the partial index
    ``bill_conn_next_due``, so the cost follows the number due, not the table (the sort of
    the due rows by last use is over those rows only). ``next_due_at`` is a lower bound
    (:func:`freshness.next_due_at`); :func:`refresh_connection` re-checks each row with
    :func:`freshness.due_action` under its lock and stores the right moment when it is not due.
    """
    at = at or now()
    query = BillConnection.objects.filter(
        status__in=SWEPT_STATUSES, next_due_at__lte=at
    ).values_list("pk", flat=True)
    return list(_most_recent_first(query)[:limit] if limit else _most_recent_first(query))


def _most_recent_first(query: QuerySet[Any]) -> QuerySet[Any]:
    """The order one sweep works in: most recently used first, so within a sweep a short
    ``UPKEEP_SHARE`` or login budget cuts the idlest. Across the hour the least valuable are
    cut by the pressure :func:`warmth.decide` weighs (:func:`budget_pressures`)."""
    return query.order_by(F("session_last_used_at").desc(nulls_last=True), "pk")


def swept_connection_ids(*, tenant: Any = None) -> list[int]:
    """Every connection the sweep looks after (or the one of ``tenant``), due or not."""
    query = BillConnection.objects.filter(status__in=SWEPT_STATUSES)
    if tenant is not None:
        query = query.filter(tenant_id=getattr(tenant, "pk", tenant))
    return list(_most_recent_first(query.values_list("pk", flat=True)))


@dataclass(frozen=True)
class PlannedRefresh:
    """What a refresh would do for one connection (``bill_refresh_sessions --dry-run``)."""

    connection_id: int
    tenant_id: Any
    organization_id: str
    status: str
    action: str  # "login", "keep_alive" or "none"


def plan_due(*, tenant: Any = None, include_all: bool = False) -> list[PlannedRefresh]:
    """What :func:`refresh_due` (or, with ``tenant``/``include_all``, :func:`refresh_now`)
    would do, connection by connection, without calling BILL or changing anything."""
    forced = include_all or tenant is not None
    ids = swept_connection_ids(tenant=tenant) if forced else due_connection_ids()
    moment = now()
    rows = BillConnection.objects.without_secrets().filter(pk__in=ids).order_by("pk")
    return [
        PlannedRefresh(
            connection_id=row.pk,
            tenant_id=row.tenant_id,
            organization_id=row.organization_id,
            status=row.status,
            action=due_action(row, moment) or (KEEP_ALIVE if forced else "none"),
        )
        for row in rows
    ]


def refresh_due(
    *,
    dispatch: Callable[[int], Any] | None = None,
    dispatch_batch: Callable[[list[int]], Any] | None = None,
    progress: Progress | None = None,
    tenant: Any = None,
    include_all: bool = False,
) -> list[int]:
    """Handle every due connection; return their ids.

    ``dispatch_batch(ids)`` hands the ids to someone else in lists of at most
    ``SWEEP_BATCH_SIZE`` (:func:`batch_size`), in order (the beat task sends one ``refresh_sessions`` message per list);
    ``dispatch(connection_id)`` one by one. Without either each is refreshed here, in order,
    and ``progress(connection_id, outcome)`` is called after each (the management command's
    bar). ``tenant`` and ``include_all`` are deprecated: use :func:`refresh_now`.
    """
    if tenant is not None or include_all:
        warnings.warn(
            "refresh_due(tenant=..., include_all=...) is deprecated; use "
            "bill_integration.services.refresh_now(tenant=...) instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return refresh_now(tenant=tenant, progress=progress)
    undecryptable.restore_all_decryptable()
    trust.notify_expiry()
    ids = due_connection_ids()
    if dispatch_batch is not None:
        size = batch_size(len(ids))
        for start in range(0, len(ids), size):
            dispatch_batch(ids[start : start + size])
        return ids
    if dispatch is not None:
        for connection_id in ids:
            dispatch(connection_id)
        return ids
    return _refresh_each(ids, force_due=False, progress=progress)


def batch_size(due: int) -> int:
    """Ids per message for a sweep of ``due`` ids: ``SWEEP_BATCH_SIZE``, or fewer so the sweep
    is at least :data:`MIN_MESSAGES` messages. A batch runs on one worker thread, one id after
    another: 1,000 due in batches of 100 would keep 10 threads busy for 10 s and the rest idle;
    in 67 batches of 15 every thread of a usual pool gets work. Batching is for large sweeps,
    where one message per id cost the beat about a millisecond each."""
    return max(1, min(bill_settings.SWEEP_BATCH_SIZE, due // MIN_MESSAGES))


def refresh_now(*, tenant: Any = None, progress: Progress | None = None) -> list[int]:
    """Keep alive (or log in for) every swept connection now, due or not, or ``tenant``'s one."""
    undecryptable.restore_all_decryptable()
    return _refresh_each(swept_connection_ids(tenant=tenant), force_due=True, progress=progress)


def _refresh_each(ids: Iterable[int], *, force_due: bool, progress: Progress | None) -> list[int]:
    done = []
    with gateway.batch():
        for connection_id in ids:
            outcome = refresh_connection(connection_id, force_due=force_due)
            done.append(connection_id)
            if progress is not None:
                progress(connection_id, outcome)
    return done


def refresh_connections(connection_ids: Iterable[int]) -> list[str]:
    """Refresh each connection still due, in order, within one limiter batch (the
    ``refresh_sessions`` task's body): one outcome per id, as :func:`refresh_connection`."""
    with gateway.batch():
        return [refresh_connection(connection_id) for connection_id in connection_ids]


def check_batch_size(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """E016: ``SWEEP_BATCH_SIZE`` is a whole number from 1 to 1,000 (checks.py registers it)."""
    size = bill_settings.SWEEP_BATCH_SIZE
    if isinstance(size, int) and not isinstance(size, bool) and 1 <= size <= MAX_BATCH_SIZE:
        return []
    return [
        Error(
            f"BILL_INTEGRATION: SWEEP_BATCH_SIZE must be a whole number from 1 to "
            f"{MAX_BATCH_SIZE:,} (got {size!r}).",
            hint="Each batch is one task refreshing its connections one after another: 50-100 "
            "keeps a batch within a few seconds of BILL calls and the worker threads busy.",
            id=E016_SWEEP_BATCH_SIZE,
        )
    ]


def refresh_connection(connection_id: int, *, force_due: bool = False) -> str:
    """Refresh one connection if it is still due (the Celery task's body; safe to repeat).

    Returns an outcome without secrets: ``kept_alive``, ``logged_in``, ``renewal_deferred``,
    ``upkeep_deferred`` (no room under ``UPKEEP_SHARE``, or a background login paced or
    leaving the callers' reserve: nothing written), ``not_due``, ``busy`` (another worker holds
    the row), ``missing``, or ``failed:<code>``. The work runs inside ``gateway.background()``:
    it is upkeep.
    ``force_due`` treats a connection whose session is fine as due for a keep-alive.
    """
    try:
        with undecryptable.failing_closed(connection_id=connection_id), gateway.background():
            return _refresh_locked(connection_id, force_due=force_due)
    except DecryptionFailed as exc:
        # Set aside (needs_relink until a key reads it again); the sweep goes on with the rest.
        return f"failed:{exc.code}"


def budget_pressures(connection: BillConnection, at: datetime) -> tuple[float, float]:
    """How short the connection's developer key runs now, as :func:`warmth.decide` weighs it:
    :func:`pressures_of` its rolling hour's counts (``limits.calls_last_hour``)."""
    return pressures_of(limits.calls_last_hour(connection.dev_key_fingerprint, at=at))


def pressures_of(hour: limits.HourOfCalls) -> tuple[float, float]:
    """``(calls, logins)`` pressures (each 0..1) of one hour's counts of a developer key.

    Calls: the upkeep share's, or BILL's whole hourly limit when callers' own calls fill it
    (their peak hours leave less room for keep-alives). Logins: the hourly login budget's
    (short logins make keep-alives the cheaper way). A pure function of the counts, so the
    fleet benchmark's model (``bench/fleet_model.py``) weighs its simulated hours the same way.
    """
    calls = max(
        warmth.pressure_from(hour.upkeep, limits.upkeep_limit()),
        warmth.pressure_from(hour.total, MAX_CALLS_PER_HOUR, start=CALLS_PRESSURE_FROM),
    )
    logins = warmth.pressure_from(
        hour.logins, bill_settings.LOGIN_BUDGET_PER_HOUR, start=LOGINS_PRESSURE_FROM
    )
    return calls, logins


def _refresh_locked(connection_id: int, *, force_due: bool) -> str:
    effects = Effects()
    with transaction.atomic():
        connection = lock(connection_id, skip_locked=True)
        if connection is None:
            exists = BillConnection.objects.filter(pk=connection_id).exists()
            return BUSY if exists else MISSING
        moment = now()
        calls = logins = 0.0
        if session_work(connection, moment) is not None:  # work to weigh: read the budget
            try:
                calls, logins = budget_pressures(connection, moment)
            except LimiterUnavailable:
                pass  # advisory only: the call to BILL below meets the outage as it always did
        action = due_action(connection, moment, pressure=calls, login_pressure=logins)
        if action is None and force_due and connection.status in SWEPT_STATUSES:
            action = None if backing_off(connection, moment) else KEEP_ALIVE
        if action is None:
            _store_next_due(connection, moment)
            return NOT_DUE
        started = time.monotonic()
        try:
            if action == LOGIN and session_is_alive(connection, moment):
                # Only MAX_SESSION_AGE passed: a refused renewal falls back to a keep-alive.
                outcome = lifecycle.renew_or_keep_alive(connection, effects, moment)
            elif action == LOGIN:
                lifecycle.login(connection, effects, reason="sweep")
                outcome = lifecycle.LOGGED_IN
            else:
                outcome = lifecycle.keep_alive(connection, effects)
        except ConflictError as exc:
            lifecycle.conflicted(connection, exc, action=action, started=started)
            return f"failed:{exc.code}"
        except UpkeepShareExhausted as exc:
            # No room for upkeep now: skip, not a failure (a caller who needs it logs in).
            outcome = lifecycle.deferred(connection, exc, action=action, started=started)
        except BillIntegrationError as exc:
            lifecycle.record_failure(connection, exc, effects, action=action, started=started)
            outcome = f"failed:{connection.last_error_code}"
    effects.send()
    return outcome


def _store_next_due(connection: BillConnection, moment: datetime) -> None:
    """A row picked but not due (used by a caller since, or a duplicate task): store when it
    is, so the next sweeps skip it. Only ``next_due_at`` (and under the row lock)."""
    due_at = next_due_at(connection, moment)
    if due_at != connection.next_due_at:
        BillConnection.objects.filter(pk=connection.pk).update(next_due_at=due_at)
        connection.next_due_at = due_at
