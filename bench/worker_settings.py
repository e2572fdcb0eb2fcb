"""Settings of the Celery worker process the sweep benchmark starts (``bench/sweep_celery.py``).

``bench.settings`` (the benchmark's database, Redis db, wall clock) plus the emulator process
the benchmark started (``BILL_BENCH_EMULATOR_URL``) and the benchmark's own queue
(``BILL_BENCH_QUEUE``), so the worker never takes another suite's tasks.
"""

from __future__ import annotations

import os

from bench.settings import *
from bench.settings import BILL_INTEGRATION

_URL = os.environ["BILL_BENCH_EMULATOR_URL"]

BILL_INTEGRATION = {
    **BILL_INTEGRATION,
    "ENVIRONMENTS": {
        **BILL_INTEGRATION["ENVIRONMENTS"],
        "emulator": {"v3": _URL + "/connect", "v2": _URL + "/api/v2"},
    },
    "DEFAULT_ENVIRONMENT": "emulator",
    "TASK_QUEUE": os.environ["BILL_BENCH_QUEUE"],
}
