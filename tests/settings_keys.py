"""Test settings for subprocesses that need a key list: ``BILL_TEST_FIELD_KEYS="new,old"``.

The rotation and fail-closed tests run ``manage.py`` in a child process against the test
database; the child reads its ``FIELD_ENCRYPTION_KEY`` list from this variable (newest first),
the way ``project.settings.production`` reads a comma-separated list.
"""

from __future__ import annotations

import os

from project.settings.test import *

FIELD_ENCRYPTION_KEY = [
    k.strip() for k in os.environ["BILL_TEST_FIELD_KEYS"].split(",") if k.strip()
]
