"""The test suite: PostgreSQL and Redis on localhost (DESIGN.md, "Real parts")."""

from __future__ import annotations

import os
from typing import Any, cast

from .base import *  # noqa: F403
from .base import BILL_INTEGRATION

DEBUG = False
SECRET_KEY = "test-only-not-secret"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("BILL_TEST_DB_NAME", "test"),
        "HOST": os.environ.get("BILL_TEST_DB_HOST", "127.0.0.1"),
        "PORT": os.environ.get("BILL_TEST_DB_PORT", "5432"),
        "USER": os.environ.get("BILL_TEST_DB_USER", "postgres"),
        "PASSWORD": os.environ.get("BILL_TEST_DB_PASSWORD", ""),
        # Several suites may share one server (developers, CI): each names its own database.
        "TEST": {"NAME": os.environ.get("BILL_TEST_DB", "test_bill_integration")},
    }
}

REDIS_URL = os.environ.get("BILL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_IGNORE_RESULT = True

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

BILL_INTEGRATION = {
    **BILL_INTEGRATION,
    # The suite's sweeps log many tenants in within one simulated minute; the tests of the
    # pacing (tests/services/test_upkeep.py) set LOGINS_PER_MINUTE themselves.
    "LOGINS_PER_MINUTE": cast(Any, None),
}
