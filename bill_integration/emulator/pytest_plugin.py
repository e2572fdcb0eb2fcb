"""pytest fixtures for testing code that talks to BILL, against the emulator over real HTTP.

Enable in a ``conftest.py``::

    pytest_plugins = ["bill_integration.emulator.pytest_plugin"]

Fixtures:

* ``bill_emulator`` — the running :class:`EmulatorServer` (one per test session), its state
  reset before and after each test. ``bill_emulator.state`` controls it in-process.
* ``bill_emulator_control`` — an :class:`EmulatorControl` for the same server (over HTTP).
* ``bill_account`` — a fresh fake BILL account on it (realistic ids, a Spend token).
* ``bill_environment`` — points ``BILL_INTEGRATION`` at the emulator as environment
  ``"emulator"`` (and makes it the default); returns ``"emulator"``. Needs pytest-django.
* ``bill_clock`` — the emulator's clock made the app's clock too (``conf.now()``, through
  ``conf.override_clock`` for the test's length): ``bill_clock.advance(seconds)`` ages
  sessions in BILL and in the app alike. One clock, so the two never drift apart.
* ``bill_settings`` — overrides keys of ``settings.BILL_INTEGRATION`` for the test:
  ``bill_settings(LOGIN_BUDGET_PER_HOUR=2)``, ``bill_settings.update({...})``,
  ``bill_settings.remove("KEY")``. Needs pytest-django.
* ``bill_connection`` — a factory of linked connections on the emulator:
  ``bill_connection()``, ``bill_connection(tenant=t, account=bill_account, link=True)``,
  ``bill_connection(dev_key=shared, idle=25 * 60)``; see :class:`.testing.ConnectionFactory`.
  Needs the database.
* ``bill_tenant_factory`` — what ``bill_connection`` makes a tenant with (a callable of no
  arguments); override it in your ``conftest.py`` if your tenant model needs more than text.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from .control import EmulatorControl
from .server import EmulatorServer
from .state import Account, EmulatorState
from .testing import ConnectionFactory, create_tenant

_usernames = itertools.count(1)


@pytest.fixture(autouse=True)
def _bill_limiter_connections() -> Iterator[None]:
    """Close the limiter's pooled database connections after each test that used them.

    The PostgreSQL limiter keeps a small pool of connections per process; left open, they
    would stop pytest-django (or Django's runner) from dropping the test database.
    """
    yield
    limits = sys.modules.get("bill_integration.limits")
    if limits is not None:
        limits.close_connections()


@pytest.fixture(scope="session")
def bill_emulator_server() -> Iterator[EmulatorServer]:
    """The emulator for the whole test session (use ``bill_emulator`` in tests)."""
    server = EmulatorServer(host="127.0.0.1", port=0).start()
    yield server
    server.stop()


@pytest.fixture
def bill_emulator(bill_emulator_server: EmulatorServer) -> Iterator[EmulatorServer]:
    """The running emulator, with no accounts, sessions, faults or clock offset."""
    bill_emulator_server.state.reset()
    yield bill_emulator_server
    # Also wakes requests a latency or hang fault still holds.
    bill_emulator_server.state.reset()


@pytest.fixture
def bill_emulator_control(bill_emulator: EmulatorServer) -> EmulatorControl:
    return EmulatorControl(bill_emulator.url)


@pytest.fixture
def bill_account(bill_emulator: EmulatorServer) -> Account:
    """A new fake BILL user with its own organization, developer key and Spend token."""
    n = next(_usernames)
    return bill_emulator.state.add_account(
        username=f"ap-clerk-{n}@example.com", password=f"emulator-password-{n}"
    )


def _current_settings(settings: Any) -> dict[str, Any]:
    return dict(getattr(settings, "BILL_INTEGRATION", None) or {})


class BillSettings:
    """Keys of ``settings.BILL_INTEGRATION`` overridden for one test (pytest-django's
    ``settings`` puts the whole dict back afterwards, and the app reloads its settings)."""

    def __init__(self, settings: Any) -> None:
        self._settings = settings

    def current(self) -> dict[str, Any]:
        """A copy of the ``BILL_INTEGRATION`` dict in force."""
        return _current_settings(self._settings)

    def update(self, values: dict[str, Any] | None = None, /, **more: Any) -> dict[str, Any]:
        """Set these keys, keep the others; returns the new dict."""
        merged = {**self.current(), **(values or {}), **more}
        self._settings.BILL_INTEGRATION = merged
        return merged

    __call__ = update

    def remove(self, *keys: str) -> dict[str, Any]:
        """Drop these keys (the app's defaults apply again); returns the new dict."""
        remaining = {k: v for k, v in self.current().items() if k not in keys}
        self._settings.BILL_INTEGRATION = remaining
        return remaining

    def __getitem__(self, key: str) -> Any:
        return self.current()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.current()


@pytest.fixture
def bill_settings(settings: Any) -> BillSettings:
    """``bill_settings(LOGIN_BUDGET_PER_HOUR=2)`` for this test only."""
    return BillSettings(settings)


@pytest.fixture
def bill_environment(bill_emulator: EmulatorServer, bill_settings: BillSettings) -> str:
    """Environment ``"emulator"`` pointed at the running emulator; returns its name."""
    from ..conf import BILL_ENVIRONMENTS

    environments = {
        **bill_settings.current().get("ENVIRONMENTS", BILL_ENVIRONMENTS),
        "emulator": {
            "v3": bill_emulator.v3_base,
            "v2": bill_emulator.v2_base,
            "oauth": bill_emulator.url,  # POST /authx/token
        },
    }
    bill_settings(ENVIRONMENTS=environments, DEFAULT_ENVIRONMENT="emulator")
    return "emulator"


class BillClock:
    """The emulator's clock (:class:`~.clock.EmulatorClock`), made the app's clock as well."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    @property
    def offset(self) -> timedelta:
        """How far both clocks are ahead of real time."""
        return timedelta(seconds=self.state.clock.offset)

    def now(self) -> datetime:
        return self.state.now()

    def advance(self, seconds: float) -> datetime:
        return self.state.advance(seconds)

    def set_offset(self, seconds: float) -> datetime:
        return self.state.set_offset(seconds)

    def __call__(self) -> datetime:
        return self.now()


@pytest.fixture
def bill_clock(bill_emulator: EmulatorServer) -> Iterator[BillClock]:
    """``bill_clock.advance(seconds)`` ages sessions in BILL and in the app alike."""
    from ..conf import override_clock

    clock = BillClock(bill_emulator.state)
    with override_clock(clock.now):
        yield clock


@pytest.fixture
def bill_tenant_factory() -> Callable[[], Any]:
    """Makes the tenant of a ``bill_connection()`` called without one; override it if needed."""
    return create_tenant


@pytest.fixture
def bill_connection(
    db: None,
    bill_emulator: EmulatorServer,
    bill_environment: str,
    bill_tenant_factory: Callable[[], Any],
) -> ConnectionFactory:
    """``bill_connection(**options)`` -> a linked ``BillConnection`` (see ``ConnectionFactory``)."""
    return ConnectionFactory(
        bill_emulator.state, environment=bill_environment, make_tenant=bill_tenant_factory
    )
