"""Settings for processes the session tests start (Celery workers, get_session children).

``project.settings.test`` plus what a second process needs to share the test's world:

* ``BILL_TEST_DB_NAME``: the test database pytest-django created (so rows are shared);
* ``BILL_EMULATOR_URL``/``BILL_EMULATOR_PORT``: the test's emulator, and its clock as the app
  clock (``remote_clock``), so moving the emulator's clock moves this process's too;
* ``BILL_SESSIONS_QUEUE``: the Celery queue of this test's workers (they never take another
  suite's tasks); ``BILL_LIMITS_REDIS_URL``: the Redis limiter, when the test uses it;
* ``BILL_VISIBILITY_TIMEOUT``: seconds before Redis redelivers an unacknowledged task.
"""

from __future__ import annotations

import os
from datetime import timedelta

from bill_integration.conf import set_clock
from project.settings.test import *
from project.settings.test import BILL_INTEGRATION

# The app's clock in this process is the emulator's (imported on first use).
set_clock("bill_integration.emulator.clock.remote_clock")

BILL_INTEGRATION = {
    **BILL_INTEGRATION,
    "TASK_QUEUE": os.environ.get("BILL_SESSIONS_QUEUE") or None,
    "REDIS_URL": os.environ.get("BILL_LIMITS_REDIS_URL") or None,
    # The cadence the worker tests are spaced for (tests/session_support.py CLASSIC_CADENCE).
    "KEEPALIVE_AFTER_IDLE": timedelta(minutes=20),
    "SESSION_SAFETY_MARGIN": timedelta(minutes=5),
    "SWEEP_INTERVAL": timedelta(minutes=5),
}
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": int(os.environ.get("BILL_VISIBILITY_TIMEOUT", "3600")),
    # Look for messages a killed worker left unacknowledged every second (tests only).
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
}
