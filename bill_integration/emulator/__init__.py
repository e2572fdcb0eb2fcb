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

The accounts file
-----------------

One format for ``bill_emulator --accounts FILE``, for ``POST /_emulator/accounts`` (which also
takes a single account object) and for :func:`write_accounts_file`; the package ships an
example, ``bill_integration/emulator/accounts.example.json``::

    {"accounts": [
        {"username": "ap.clerk@example.com", "password": "emulator-demo-password",
         "organization_id": "00801DEMOORGANIZa1b2", "dev_key": "01DEMODEVKEY00000001",
         "api_token": "emulator-demo-spend-token-0001", "organization_name": "Demo Co"}
    ]}

A bare JSON list of the same objects works too. Each object is one fake BILL user in one
organization, with the fields of :class:`Account`; any field left out is generated (give at
least ``username`` and ``password``, or read them back with ``GET /_emulator/accounts``):

* ``username``, ``password``: what the user signs in with (BILL's "User Name" is an email).
* ``organization_id`` (BILL's start with ``008``), ``dev_key``: several accounts may share a
  developer key, as an app partner's tenants do.
* ``api_token``: the Spend & Expense token; ``""`` for an account without one.
* ``user_id``, ``organization_name``, ``first_name``, ``last_name``, ``spend_role``,
  ``spend_user_id``, ``spend_uuid``: what BILL's answers about the user carry.

Any other field is refused with the emulator's explanation (HTTP 400, or the command's
error), so a misspelled field never goes unnoticed.
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
