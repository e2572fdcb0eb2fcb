"""Celery tasks: thin wrappers around ``bill_integration.services`` (ids in, outcome words out).

Five tasks, with stable names:

``bill_integration.refresh_due_sessions``
    The sweep, for beat. Finds connections whose session will soon go idle (one query on a
    partial index) and sends their ids, most recently used first, in lists of
    ``SWEEP_BATCH_SIZE`` (100) to ``bill_integration.refresh_sessions``: one message per 100
    due connections, not one each (a message costs the beat about a millisecond).
``bill_integration.refresh_sessions``
    Refreshes each connection of its list that is still due, one after another in one limiter
    batch (the limiter's connection is reused); the same options and guarantees as
    ``refresh_session``, per connection. Returns how many ended in each outcome.
``bill_integration.refresh_session``
    Refreshes one connection (keep-alive, or a login when BILL says the session is gone or
    ``MAX_SESSION_AGE`` passed). It re-checks under the row lock that the work is still due,
    so a duplicate (two beats, a redelivered message) makes no call to BILL. ``acks_late`` with
    ``reject_on_worker_lost``: a worker killed mid-task leaves the message to be redelivered;
    ``expires`` (``TASK_EXPIRES``) drops messages that waited too long, so a backlog after an
    outage does not run all at once (the next sweep sends fresh ones).
``bill_integration.force_refresh_session``
    The admin's "Refresh session now": ``services.refresh(tenant, force=True)`` for one id.
``bill_integration.verify_connection``
    The admin's "Verify credentials": ``services.verify(tenant)`` for one id.

Arguments are connection ids and results are outcome words (``"refreshed"``, ``"verified"``,
``"failed:<code>"``): never a secret. The two manual tasks each spend a login of the developer
key's hourly budget, so the admin queues them only within the refresh throttle
(``REFRESH_THROTTLE_RATES``), as the REST endpoint does.

Scheduling, paste-ready (``settings.py`` of a project whose Celery app reads ``CELERY_*``)::

    from datetime import timedelta

    CELERY_BEAT_SCHEDULE = {
        "bill-refresh-due-sessions": {
            "task": "bill_integration.refresh_due_sessions",
            "schedule": timedelta(seconds=60),  # keep equal to BILL_INTEGRATION["SWEEP_INTERVAL"]
        },
    }

With django-celery-beat (``celery -A proj beat -S django``), add the same task in the admin
(*Periodic tasks* → *Add*: task ``bill_integration.refresh_due_sessions``, an interval of 60
seconds), or in a data migration::

    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    every_minute, _ = IntervalSchedule.objects.get_or_create(
        every=60, period=IntervalSchedule.SECONDS
    )
    PeriodicTask.objects.update_or_create(
        name="bill-refresh-due-sessions",
        defaults={"task": "bill_integration.refresh_due_sessions", "interval": every_minute},
    )

A sweep every minute is one cheap query on plain columns; ``KEEPALIVE_AFTER_IDLE`` is derived
from ``SWEEP_INTERVAL`` (unless you set it), so a different interval stays safe as long as the
beat entry and ``SWEEP_INTERVAL`` agree.

Workers: the refresh tasks wait on BILL, PostgreSQL and Redis, not on the CPU, so run them on
threads; each refresh still holds the interpreter lock for a few milliseconds, so run one
worker process per core, e.g. ``celery -A proj worker --pool threads --concurrency 8`` twice
on two cores (the sweep benchmark in the repository's ``docs/benchmarks.md`` measures this
layout beside one process of 16 threads); prefork with a process per task needs far more
memory for the same throughput.

Run exactly one beat. A second one costs a query per due connection, never a BILL call.
``BILL_INTEGRATION["TASK_QUEUE"]`` sends the per-connection tasks to a queue of your choice;
route the sweep itself with the beat entry's ``"options": {"queue": "..."}`` (or
``CELERY_TASK_ROUTES``). Without Celery, ``manage.py bill_refresh_sessions`` from cron does the
same work.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from celery import shared_task

from .conf import bill_settings

REFRESH_DUE_SESSIONS = "bill_integration.refresh_due_sessions"
REFRESH_SESSION = "bill_integration.refresh_session"
REFRESH_SESSIONS = "bill_integration.refresh_sessions"
FORCE_REFRESH_SESSION = "bill_integration.force_refresh_session"
VERIFY_CONNECTION = "bill_integration.verify_connection"


def enqueue(task: Any, connection_id: int | list[int]) -> None:
    """Send ``task(connection_id)`` (an id, or a list of ids) with the app's queue and expiry
    (``TASK_QUEUE``, ``TASK_EXPIRES``): the only argument is ids, never a secret."""
    options: dict[str, Any] = {"expires": bill_settings.TASK_EXPIRES.total_seconds()}
    if bill_settings.TASK_QUEUE:
        options["queue"] = bill_settings.TASK_QUEUE
    if isinstance(connection_id, list):
        task.apply_async(([int(pk) for pk in connection_id],), **options)
    else:
        task.apply_async((int(connection_id),), **options)


def _send_refresh(connection_id: int) -> None:
    enqueue(refresh_session, connection_id)


def _send_refresh_batch(connection_ids: list[int]) -> None:
    enqueue(refresh_sessions, connection_ids)


@shared_task(name=REFRESH_DUE_SESSIONS, ignore_result=True)
def refresh_due_sessions() -> int:
    """The sweep: send the due ids in lists of ``SWEEP_BATCH_SIZE``; returns how many ids."""
    from .services import refresh_due

    return len(refresh_due(dispatch_batch=_send_refresh_batch))


@shared_task(
    name=REFRESH_SESSIONS,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def refresh_sessions(connection_ids: list[int]) -> dict[str, int]:
    """Refresh each connection still due (one limiter batch); outcome counts (no secret).

    Redelivered after a worker was lost, the ids already refreshed answer ``not_due``.
    """
    from .services import refresh_connections

    return dict(Counter(refresh_connections([int(pk) for pk in connection_ids])))


@shared_task(
    name=REFRESH_SESSION,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def refresh_session(connection_id: int) -> str:
    """Refresh one connection if it is still due; returns the outcome (no secret)."""
    from .services import refresh_connection

    return refresh_connection(int(connection_id))


def _for_connection(connection_id: int, operation: Callable[[Any], object], done: str) -> str:
    """Run ``operation(tenant)`` for a connection; ``done``, or ``"failed:<code>"`` (no secret)."""
    from .exceptions import BillIntegrationError, ConnectionNotLinked
    from .models import BillConnection

    try:
        connection = (
            BillConnection.objects.without_secrets()
            .select_related("tenant")
            .filter(pk=int(connection_id))
            .first()
        )
        if connection is None:  # unlinked after the task was queued
            raise ConnectionNotLinked()
        operation(connection.tenant)
    except BillIntegrationError as exc:
        return f"failed:{exc.code}"
    return done


@shared_task(name=FORCE_REFRESH_SESSION, ignore_result=True)
def force_refresh_session(connection_id: int) -> str:
    """Log in to BILL again now for one connection; returns the outcome (no secret)."""
    from . import services

    return _for_connection(
        connection_id, lambda tenant: services.refresh(tenant, force=True), "refreshed"
    )


@shared_task(name=VERIFY_CONNECTION, ignore_result=True)
def verify_connection(connection_id: int) -> str:
    """Check that BILL accepts one connection's stored credentials; returns the outcome."""
    from . import services

    return _for_connection(connection_id, services.verify, "verified")
