"""Spend & Expense-only connections: no login, no session; the API token is the credential.

The sweep never finds them due (``freshness.due_action``); a keep-alive someone asks for
(``refresh_now``, the refresh button) checks the token with ``GET /v3/spend/users/current``
through the gateway, within the token's 60 calls a minute.
"""

from __future__ import annotations

import time

from ..conf import now
from ..models import STATUS_FIELDS, BillConnection
from . import gateway
from .common import log_outcome
from .locking import fenced_write


def check_token(connection: BillConnection, started: float) -> str:
    """Check the stored token (one S&E call) and mark the connection healthy; ``kept_alive``."""
    from .lifecycle import KEPT_ALIVE, mark_healthy

    gateway.check_api_token(
        connection.environment, connection.api_token or "", key=connection.dev_key_fingerprint
    )
    mark_healthy(connection, now())
    fenced_write(connection, connection.version, list(STATUS_FIELDS), bump=False)
    log_outcome("keep_alive", connection, KEPT_ALIVE, duration=time.monotonic() - started)
    return KEPT_ALIVE
