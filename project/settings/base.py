"""Settings shared by every environment of the example project."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from bill_integration import __version__

BASE_DIR = Path(__file__).resolve().parent.parent.parent

SECRET_KEY = os.environ.get("SECRET_KEY", "dev-only-not-secret-change-me")
DEBUG = False
ALLOWED_HOSTS: list[str] = ["localhost", "127.0.0.1", "[::1]", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served from here (no CDN)
    "django_celery_beat",
    "bill_integration",
    "project.tenants",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "project" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/connect/bill/"

# The tenant model bill_integration links BILL accounts to (like AUTH_USER_MODEL, fixed
# after the first migrate).
BILL_INTEGRATION_TENANT_MODEL = "tenants.Tenant"

# Fernet key(s) for the encrypted credential columns; newest first. Production reads it from
# the environment (production.py); this default is for the demo and tests only.
FIELD_ENCRYPTION_KEY = os.environ.get(
    "FIELD_ENCRYPTION_KEY", "hd5n3oT4Qp6dA8x0t5m0f7QyVv4g3Zk1p0Jb9Yc2WlE="
)

EMULATOR_PORT = int(os.environ.get("BILL_EMULATOR_PORT", "8111"))

BILL_INTEGRATION = {
    # Merged over BILL's own sandbox and production.
    "ENVIRONMENTS": {
        # The BILL emulator (python manage.py bill_emulator --port 8111).
        "emulator": {
            "v3": f"http://127.0.0.1:{EMULATOR_PORT}/connect",
            "v2": f"http://127.0.0.1:{EMULATOR_PORT}/api/v2",
        },
    },
    "DEFAULT_ENVIRONMENT": "emulator",
    "TENANT_RESOLVER": "project.tenants.access.resolve_tenant",
    "ACCESS_POLICY": "project.tenants.access.membership_access",
}

REST_FRAMEWORK = {
    # No DEFAULT_SCHEMA_CLASS: bill_integration's views bring drf-spectacular's own.
    # Session authentication only: HTTP Basic would let anyone guess Django passwords against
    # the API without the login form's protections.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
    ],
}

SPECTACULAR_SETTINGS = {
    "TITLE": "bill_integration API",
    "DESCRIPTION": "Link a tenant's BILL (Bill.com) account and watch its session.",
    "VERSION": __version__,
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and Redoc from the drf-spectacular-sidecar package: /api/docs/ works offline
    # and never loads a floating @latest from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BEAT_SCHEDULE = {
    "bill-refresh-due-sessions": {
        "task": "bill_integration.refresh_due_sessions",
        # Every 60 s: one cheap query; equal to BILL_INTEGRATION["SWEEP_INTERVAL"] (default).
        "schedule": timedelta(seconds=60),
    },
}

# One handler, on the root logger: the app's records propagate to it. (A handler on the
# bill_integration logger too would print each line twice in a Celery worker, whose own
# handler sits on the root.)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "filters": {"redact_secrets": {"()": "bill_integration.log_redaction.RedactSecretsFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["redact_secrets"],
        }
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {"bill_integration": {"level": "INFO"}},
}
