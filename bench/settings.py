"""Settings for the benchmarks: the test settings, a database and a Redis db of their own.

The harness (``bench/common.py``) creates the PostgreSQL database ``bench_bill_integration``
(``BILL_BENCH_DB``) before a run and drops it afterwards; the shared limits live in Redis
db 5 (``BILL_BENCH_REDIS_URL``), as a production deployment would run them (``REDIS_URL``).
The app's clock is :func:`bench.common.clock`, which the harness ties to the emulator's clock.
"""

from __future__ import annotations

import copy
import os

from bill_integration.conf import set_clock
from project.settings.test import *
from project.settings.test import BILL_INTEGRATION, DATABASES

# The app's clock: bench.common.clock, which the harness ties to the emulator's.
set_clock("bench.common.clock")

DATABASES = copy.deepcopy(DATABASES)
DATABASES["default"]["NAME"] = os.environ.get("BILL_BENCH_DB", "bench_bill_integration")
DATABASES["default"]["TEST"] = {"NAME": DATABASES["default"]["NAME"]}

REDIS_URL = os.environ.get("BILL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/5")
CELERY_BROKER_URL = REDIS_URL

ROOT_URLCONF = "bench.urls"
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]

BILL_INTEGRATION = {
    **BILL_INTEGRATION,
    "REDIS_URL": REDIS_URL,
    # Counts calls by outcome (a CLIENT_CLASS subclass, the documented extension point).
    "CLIENT_CLASS": "bench.common.CountingBillClient",
}

# One log line per keep-alive is right in production and noise in a 24-hour simulation.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "bill_integration": {"handlers": ["console"], "level": "ERROR", "propagate": False}
    },
}
