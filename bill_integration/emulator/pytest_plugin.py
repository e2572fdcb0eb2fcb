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
* ``bill_clock`` — moves the emulator's clock and the app's clock (``conf.now()``) together:
  ``bill_clock.advance(seconds)`` (through ``conf.override_clock``, for the test's length).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from .control import EmulatorControl
from .server import EmulatorServer
from .state import Account, EmulatorState

_usernames = itertools.count(1)


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


@pytest.fixture
def bill_environment(bill_emulator: EmulatorServer, settings: Any) -> str:
    """Environment ``"emulator"`` pointed at the running emulator; returns its name."""
    from ..conf import BILL_ENVIRONMENTS

    current = _current_settings(settings)
    environments = {
        **current.get("ENVIRONMENTS", BILL_ENVIRONMENTS),
        "emulator": {
            "v3": bill_emulator.v3_base,
            "v2": bill_emulator.v2_base,
            "oauth": bill_emulator.url,  # POST /authx/token
        },
    }
    settings.BILL_INTEGRATION = {
        **current,
        "ENVIRONMENTS": environments,
        "DEFAULT_ENVIRONMENT": "emulator",
    }
    return "emulator"


class BillClock:
    """Shifts the emulator's clock and the app's clock (``conf.now()``) by the same amount."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.offset = timedelta(0)

    def now(self) -> datetime:
        from django.utils import timezone

        return timezone.now() + self.offset

    def advance(self, seconds: float) -> datetime:
        self.offset += timedelta(seconds=seconds)
        self.state.advance(seconds)
        return self.now()

    def __call__(self) -> datetime:
        return self.now()


@pytest.fixture
def bill_clock(bill_emulator: EmulatorServer) -> Iterator[BillClock]:
    """``bill_clock.advance(seconds)`` ages sessions in BILL and in the app alike."""
    from ..conf import override_clock

    clock = BillClock(bill_emulator.state)
    with override_clock(clock.now):
        yield clock
