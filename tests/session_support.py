"""Fixtures and helpers of the session-keeping tests: the emulator on a shared clock, another
worker's row lock, the cadence the older scenarios are spaced for.

Loaded as a plugin by ``tests/conftest.py``; the helpers (``counters``, ``stored``,
``row_locked_elsewhere``) are imported. Linked connections come from the emulator plugin's
``bill_connection`` factory (``make_connection`` is the same factory on ``bill_app``): made the
way ``services.link`` leaves one, written directly so tests can make hundreds of them quickly,
including ones sharing one developer key, without spending that key's logins.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from django.db import connections as db_connections
from django.db import transaction

from bill_integration import limits
from bill_integration.models import BillConnection

REDIS_URL = os.environ.get("BILL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

_numbers = itertools.count(1)


def idle_limit_seconds() -> float:
    return 35 * 60


@pytest.fixture
def bill_app(bill_environment: str, bill_clock: Any) -> Any:
    """The emulator environment and the shared clock, with the limits forgotten."""
    limits.get_limiter().reset()
    return bill_clock


def make_tenant(name: str | None = None) -> Any:
    from project.tenants.models import Tenant

    n = next(_numbers)
    return Tenant.objects.create(name=name or f"Tenant {n}", slug=f"tenant-{n}-{os.getpid()}")


@pytest.fixture
def make_connection(bill_app: Any, bill_connection: Any) -> Any:
    """The plugin's ``bill_connection`` factory, on the clock and limits of ``bill_app``."""
    return bill_connection


@contextmanager
def row_locked_elsewhere(
    connection: BillConnection, *, then: Callable[[], Any] | None = None
) -> Iterator[None]:
    """While the block runs, another worker holds the connection's row lock.

    A thread of its own (its own database connection) takes ``SELECT ... FOR UPDATE`` on the
    row, as a worker in the middle of a login or keep-alive does, runs ``then()`` inside that
    transaction if given (to write what such a worker writes), and keeps the lock until the
    block ends; then it commits. Needs ``django_db(transaction=True)``.
    """
    held, release = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def hold() -> None:
        try:
            with transaction.atomic():
                BillConnection.objects.select_for_update().get(pk=connection.pk)
                if then is not None:
                    then()
                held.set()
                release.wait(30)
        except BaseException as exc:  # reported to the test below
            failure.append(exc)
        finally:
            held.set()
            db_connections.close_all()

    holder = threading.Thread(target=hold, name=f"row-lock-{connection.pk}")
    holder.start()
    try:
        assert held.wait(10), "the other worker never took the row lock"
        if failure:
            raise failure[0]
        yield
    finally:
        release.set()
        holder.join(30)
    if failure:
        raise failure[0]


def counters(emulator: Any, connection: BillConnection) -> dict[str, int]:
    """The emulator's counters for one connection's developer key and organization."""
    return emulator.state.counters(
        organization_id=connection.organization_id, dev_key=connection.account.dev_key
    )


def stored(connection: BillConnection) -> BillConnection:
    return BillConnection.objects.get(pk=connection.pk)


#: A keep-alive after 20 idle minutes, a 5-minute margin, a sweep every 5 minutes: the cadence
#: the older scenario tests are spaced for (idle 25 minutes = due). The defaults are covered by
#: test_refresh.py::test_sweep_with_the_default_cadence... and test_checks.py.
CLASSIC_CADENCE = {
    "KEEPALIVE_AFTER_IDLE": timedelta(minutes=20),
    "SESSION_SAFETY_MARGIN": timedelta(minutes=5),
    "SWEEP_INTERVAL": timedelta(minutes=5),
}


@pytest.fixture
def classic_cadence(bill_settings: Any) -> None:
    bill_settings.update(CLASSIC_CADENCE)
