"""One client per thread per (class, base URL, API version, timeouts), dropped on settings change.

``requests.Session`` is not safe to share between threads, and creating one per call would
throw away its connection pool; so each thread keeps its own clients. Changing
``BILL_INTEGRATION`` (``override_settings``, pytest-django's ``settings``) bumps a generation
number and every thread rebuilds its clients on next use, so tests may repoint environments.
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.signals import setting_changed

from ..conf import SETTINGS_NAME

_local = threading.local()
_generation = 0


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    global _generation
    if setting == SETTINGS_NAME:
        _generation += 1


setting_changed.connect(_on_setting_changed)


def cached(key: tuple[Any, ...], build: Any) -> Any:
    """The thread's client for ``key``, built with ``build()`` when missing or stale."""
    clients: dict[tuple[Any, ...], Any] | None = getattr(_local, "clients", None)
    if clients is None or getattr(_local, "generation", None) != _generation:
        for client in (clients or {}).values():
            close = getattr(client, "close", None)
            if callable(close):
                close()
        clients = _local.clients = {}
        _local.generation = _generation
    client = clients.get(key)
    if client is None:
        client = clients[key] = build()
    return client


def clear() -> None:
    """Forget every thread's clients (they are rebuilt on next use)."""
    global _generation
    _generation += 1
