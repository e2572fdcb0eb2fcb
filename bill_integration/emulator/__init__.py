"""A faithful local BILL emulator: a real threaded HTTP server plus pytest fixtures.

Usage::

    from bill_integration.emulator import EmulatorServer, EmulatorControl
    server = EmulatorServer(host="127.0.0.1", port=0).start()
    account = server.state.add_account(username="ap@example.com", password="pw")
    # point BILL_INTEGRATION["ENVIRONMENTS"]["emulator"] at server.v3_base / server.v2_base
    EmulatorControl(server.url).advance(36 * 60)   # same methods over HTTP
    server.stop()

What it emulates and the choices made where BILL is UNCONFIRMED: ``server.py`` and
``state.py``. pytest fixtures: ``pytest_plugins = ["bill_integration.emulator.pytest_plugin"]``.
From the command line: ``python manage.py bill_emulator --port 8111 --accounts FILE``.
Nothing here imports Django.
"""

from __future__ import annotations

from .clock import EmulatorClock, remote_clock
from .control import EmulatorControl
from .server import EmulatorServer
from .state import Account, EmulatorState, load_accounts_file, write_accounts_file

__all__ = [
    "Account",
    "EmulatorClock",
    "EmulatorControl",
    "EmulatorServer",
    "EmulatorState",
    "load_accounts_file",
    "remote_clock",
    "write_accounts_file",
]
