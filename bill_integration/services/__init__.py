"""The service layer: the only code that changes a BILL connection's state.

Views, admin actions, Celery tasks and management commands call these functions; they never
talk to the BILL client or write connection fields themselves. Every call to BILL goes
through :mod:`.gateway`. See DESIGN-NOTES.md ("Map of the code") for what each module owns.

The import path ``bill_integration.services`` and the names below are the public interface;
``bill_integration.services.mfa`` (``phones``, ``challenge``, ``validate``, ``forget``) is the
"trust this app for payments" flow BILL requires before it pays bills.
"""

from .linking import link, unlink, verify
from .on_demand import keep_alive, refresh
from .session import BillSession, get_session
from .sweep import (
    PlannedRefresh,
    due_connection_ids,
    plan_due,
    refresh_connection,
    refresh_connections,
    refresh_due,
    refresh_now,
)

__all__ = [
    "BillSession",
    "PlannedRefresh",
    "due_connection_ids",
    "get_session",
    "keep_alive",
    "link",
    "plan_due",
    "refresh",
    "refresh_connection",
    "refresh_connections",
    "refresh_due",
    "refresh_now",
    "unlink",
    "verify",
]
