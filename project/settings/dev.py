"""The demo and local development: SQLite, an embedded (file-system) Celery broker, the emulator."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from .base import *  # noqa: F403
from .base import BASE_DIR, BILL_INTEGRATION, CELERY_BEAT_SCHEDULE

DEBUG = True
STATE_DIR = Path(os.environ.get("BILL_DEMO_STATE_DIR", BASE_DIR / ".demo"))
DEMO_PORT = int(os.environ.get("BILL_DEMO_PORT", "8000"))

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": STATE_DIR / "db.sqlite3",
        "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
    }
}

# Kombu's file-system transport: a broker made of two folders, no server to run.
_BROKER_DIR = STATE_DIR / "broker"
for _folder in ("queue", "processed", "control"):
    (_BROKER_DIR / _folder).mkdir(parents=True, exist_ok=True)
CELERY_BROKER_URL = "filesystem://"
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "data_folder_in": str(_BROKER_DIR / "queue"),
    "data_folder_out": str(_BROKER_DIR / "queue"),
    "processed_folder": str(_BROKER_DIR / "processed"),
    "control_folder": str(_BROKER_DIR / "control"),
    "store_processed": False,
}
CELERY_TASK_IGNORE_RESULT = True

# A short beat in the demo, so sessions visibly stay alive while you watch.
_DEMO_SWEEP = timedelta(seconds=int(os.environ.get("BILL_DEMO_SWEEP_SECONDS", "30")))
CELERY_BEAT_SCHEDULE = {
    **CELERY_BEAT_SCHEDULE,
    "bill-refresh-due-sessions": {
        "task": "bill_integration.refresh_due_sessions",
        "schedule": _DEMO_SWEEP,
    },
}
BILL_INTEGRATION = {
    **BILL_INTEGRATION,
    "SWEEP_INTERVAL": _DEMO_SWEEP,
    # Keep sessions alive after a minute of idleness (30.5 minutes by default), so the admin
    # and the linking page show the worker at work within a minute.
    "KEEPALIVE_AFTER_IDLE": timedelta(
        seconds=int(os.environ.get("BILL_DEMO_KEEPALIVE_SECONDS", "60"))
    ),
}
