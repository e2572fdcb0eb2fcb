"""The test suite on SQLite: the nox matrix's SQLite sessions (``noxfile.py``) select it.

Everything as in ``test.py`` (Redis on localhost included) but the database: a SQLite file
that Django's test runner makes in memory. Tests that need PostgreSQL's row locks or
concurrent writers are marked ``postgresql`` and skipped here (``tests/conftest.py``).
"""

from __future__ import annotations

from .test import *  # noqa: F403

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "test-bill-integration.sqlite3",  # noqa: F405
        "TEST": {"NAME": ""},  # in memory
    }
}
