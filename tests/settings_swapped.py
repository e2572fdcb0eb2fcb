"""Settings with another tenant model and another DEFAULT_AUTO_FIELD (migration tests only).

SQLite in a file named by ``BILL_SWAPPED_DB`` so the tests can migrate from scratch in a
subprocess without touching the suite's PostgreSQL database.
"""

import os

from project.settings.base import *  # noqa: F403
from project.settings.base import INSTALLED_APPS

INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "project.tenants"] + [
    "tests.swapped_tenants"
]
BILL_INTEGRATION_TENANT_MODEL = "swapped_tenants.Organization"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("BILL_SWAPPED_DB", ":memory:"),
    }
}
BILL_INTEGRATION = {"DEFAULT_ENVIRONMENT": "sandbox"}
