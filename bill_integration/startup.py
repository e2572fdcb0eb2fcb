"""Fail closed at start-up: Celery workers and beat refuse to run without the data's key.

``manage.py check``, ``runserver`` and every management command run Django's system checks,
so ``bill_integration.E001``/``E002`` stop them; ``check --deploy``, ``check --database`` and
``migrate`` also run ``E009`` (a valid key that decrypts none of the stored secrets). A Celery
worker or beat runs the checks too (Celery's Django fix-up) but ignores what they report, so a
worker with a missing, malformed or wrong ``FIELD_ENCRYPTION_KEY`` would start, fail on every
task, and with a wrong key mark every connection ``needs_relink``. :func:`connect` (called
from ``BillIntegrationConfig.ready()``) hooks :func:`refuse_to_start_without_key` to Celery's
``worker_init`` and ``beat_init`` signals, which stops them before they take any work.

When the database cannot be read at start-up the key cannot be compared with the data: the
process starts and logs a warning (E001/E002 still stop it).

(Celery logs and swallows exceptions raised by signal receivers; ``SystemExit`` is the one
it lets through.)
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("bill_integration.startup")


def key_errors() -> list[str]:
    """``"id: message hint"`` for each encryption-key problem the system checks find.

    E001/E002 (missing or malformed key), else E009 (the key decrypts none of the stored
    secrets sampled in the database ``BillConnection`` is read from).
    """
    from django.db import connections, router

    from .checks import check_encryption_key, wrong_key_errors
    from .models import BillConnection

    errors = check_encryption_key()
    if not errors:
        using = router.db_for_read(BillConnection)
        errors = wrong_key_errors([using], log_level=logging.WARNING)
        connection = connections[using]
        if not connection.in_atomic_block:
            connection.close()  # never hand an open connection to forked pool processes
    return [f"{error.id}: {error.msg} {error.hint or ''}".strip() for error in errors]


def refuse_to_start_without_key(sender: Any = None, **kwargs: Any) -> None:
    """Stop the process (``SystemExit``) when ``FIELD_ENCRYPTION_KEY`` is missing, malformed,
    or not the key the stored secrets were encrypted with."""
    errors = key_errors()
    if errors:
        for error in errors:
            logger.critical("refusing to start: %s", error)
        raise SystemExit("bill_integration refuses to start: " + " | ".join(errors))


def connect() -> None:
    """Guard Celery worker and beat start-up (no-op when Celery is not installed)."""
    try:
        from celery.signals import beat_init, worker_init
    except ImportError:  # pragma: no cover - celery is a dependency, but stay importable
        return
    worker_init.connect(
        refuse_to_start_without_key, weak=False, dispatch_uid="bill_integration.refuse_worker"
    )
    beat_init.connect(
        refuse_to_start_without_key, weak=False, dispatch_uid="bill_integration.refuse_beat"
    )
