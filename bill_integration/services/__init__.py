"""The service layer: the only code that changes a BILL connection's state.

Views, admin actions, Celery tasks and management commands call these functions; they never
talk to the BILL client or write connection fields themselves. Each function writes an
:class:`~bill_integration.models.AuditEvent` and sends the matching signal.

DESIGN.md names one ``services.py``; it is a package so linking and session keeping live in
modules of their own (see DESIGN-NOTES.md). The import path ``bill_integration.services`` and
the names below are the public interface.
"""

from .linking import link, unlink, verify
from .sessions import BillSession, get_session, keep_alive, refresh, refresh_due

__all__ = [
    "BillSession",
    "get_session",
    "keep_alive",
    "link",
    "refresh",
    "refresh_due",
    "unlink",
    "verify",
]
