"""bill_integration: link each tenant's BILL (Bill.com) account and keep its session fresh.

Public entry points: :mod:`bill_integration.services` (link, unlink, get_session, refresh),
the ``BillConnection`` model, the REST API under :mod:`bill_integration.api`, the Celery tasks
``bill_integration.refresh_due_sessions`` / ``bill_integration.refresh_session``, and the BILL
emulator with its pytest fixtures under :mod:`bill_integration.emulator`.
"""

__version__ = "0.1.0"
