"""Fail closed at start-up: Celery workers and beat refuse to run without a valid key.

``manage.py check``, ``runserver`` and every management command run Django's system checks,
so ``bill_integration.E001``/``E002`` stop them. A Celery worker or beat runs the checks too
(Celery's Django fix-up) but ignores what they report, so a worker with a missing or malformed
``FIELD_ENCRYPTION_KEY`` would start and fail on every task. :func:`connect` (called from
``BillIntegrationConfig.ready()``) hooks :func:`refuse_to_start_without_key` to Celery's
``worker_init`` and ``beat_init`` signals, which stops them before they take any work.

(Celery logs and swallows exceptions raised by signal receivers; ``SystemExit`` is the one
it lets through.)
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("bill_integration.startup")


def key_errors() -> list[str]:
    """``"id: message"`` for each encryption-key problem the system check finds."""
    from .checks import check_encryption_key

    return [f"{error.id}: {error.msg} {error.hint or ''}".strip() for error in check_encryption_key()]


def refuse_to_start_without_key(sender: Any = None, **kwargs: Any) -> None:
    """Stop the process (``SystemExit``) when ``FIELD_ENCRYPTION_KEY`` is missing or malformed."""
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
    worker_init.connect(refuse_to_start_without_key, weak=False,
                        dispatch_uid="bill_integration.refuse_worker")
    beat_init.connect(refuse_to_start_without_key, weak=False,
                      dispatch_uid="bill_integration.refuse_beat")
