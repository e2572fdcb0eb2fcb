"""Fixtures for the session-keeping tests: linked connections on the emulator, limiter backends.

Loaded as a plugin by ``tests/conftest.py``; the helpers (``counters``, ``stored``) are imported.
A linked connection is made the way ``services.link`` leaves one (credentials, fingerprint, a
session BILL gave at login), written directly so tests can make hundreds of them quickly,
including ones sharing one developer key, without spending that key's logins.
"""

from __future__ import annotations

import itertools
import os
from datetime import timedelta
from typing import Any

import pytest

from bill_integration import limits
from bill_integration.client import get_client
from bill_integration.conf import now
from bill_integration.models import BillConnection
from bill_integration.services.common import dev_key_fingerprint

REDIS_URL = os.environ.get("BILL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

_numbers = itertools.count(1)


def idle_limit_seconds() -> float:
    return 35 * 60


@pytest.fixture
def bill_app(bill_environment: str, bill_clock: Any, settings: Any) -> Any:
    """The emulator environment and a shared clock, with the app's session settings."""
    settings.BILL_INTEGRATION = {**settings.BILL_INTEGRATION}
    limits.get_limiter().reset()
    return bill_clock


@pytest.fixture(params=["database", "redis"])
def limiter_backend(request: Any, settings: Any, bill_app: Any) -> str:
    """Run the test once with the database limiter and once with Redis."""
    if request.param == "redis":
        settings.BILL_INTEGRATION = {**settings.BILL_INTEGRATION, "REDIS_URL": REDIS_URL}
    else:
        settings.BILL_INTEGRATION = {**settings.BILL_INTEGRATION, "REDIS_URL": None}
    limits.get_limiter().reset()
    yield request.param
    limits.get_limiter().reset()


def make_tenant(name: str | None = None) -> Any:
    from project.tenants.models import Tenant

    n = next(_numbers)
    return Tenant.objects.create(name=name or f"Tenant {n}", slug=f"tenant-{n}-{os.getpid()}")


@pytest.fixture
def make_connection(bill_emulator: Any, bill_app: Any) -> Any:
    """make_connection(**options) -> a BillConnection for a new tenant and emulator account.

    Options: ``account`` (an emulator Account), ``dev_key`` (share a developer key),
    ``login`` (False: store an already-dead session id and no BILL call), ``idle`` (seconds
    since the session was last used, in the app's records), ``api_version``.
    """

    def make(
        *,
        account: Any = None,
        dev_key: str | None = None,
        login: bool = True,
        idle: float = 0,
        api_version: str = "v3",
        tenant: Any = None,
    ) -> BillConnection:
        n = next(_numbers)
        if account is None:
            account = bill_emulator.state.add_account(
                username=f"sessions-{n}-{os.getpid()}@example.com",
                password=f"pw-{n}-canary-password",
                dev_key=dev_key,
            )
        moment = now()
        if login:
            result = get_client("emulator", api_version).login(
                username=account.username,
                password=account.password,
                organization_id=account.organization_id,
                dev_key=account.dev_key,
            )
            session_id, user_id = result.session_id, result.user_id
        else:
            session_id, user_id = f"!dead-session-{n}", "00601000000000000000"
        connection = BillConnection(
            tenant=tenant or make_tenant(),
            environment="emulator",
            api_version=api_version,
            username=account.username,
            organization_id=account.organization_id,
            password=account.password,
            dev_key=account.dev_key,
            dev_key_fingerprint=dev_key_fingerprint(account.dev_key),
            session_id=session_id,
            user_id=user_id,
            session_obtained_at=moment - timedelta(seconds=idle),
            session_last_used_at=moment - timedelta(seconds=idle),
            last_refresh_at=moment,
        )
        connection.save(force_insert=True)
        connection.account = account  # type: ignore[attr-defined]  # for the test's own use
        return connection

    return make


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
def classic_cadence(settings: Any) -> None:
    settings.BILL_INTEGRATION = {**settings.BILL_INTEGRATION, **CLASSIC_CADENCE}
