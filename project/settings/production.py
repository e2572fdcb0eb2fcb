"""Production: everything secret or site-specific comes from environment variables.

Required (the process refuses to start without them, naming the variable):

``SECRET_KEY``             Django's signing key (50+ random characters).
``FIELD_ENCRYPTION_KEY``   Fernet key(s) for the BILL secrets, comma-separated, newest first
                           (see the README, "Rotating the encryption key").
``DATABASE_URL``           e.g. ``postgres://bill:password@postgres:5432/bill``.
``ALLOWED_HOSTS``          comma-separated host names, e.g. ``bill.example.com``.

Optional: ``CELERY_BROKER_URL`` (else ``REDIS_URL``, else ``redis://redis:6379/0``),
``REDIS_URL`` (also used for the app's shared limiters and locks), ``CSRF_TRUSTED_ORIGINS``
(comma-separated ``https://`` origins), ``SECURE_SSL_REDIRECT`` (``0`` when a proxy in front
redirects already), ``SECURE_COOKIES`` (``0`` only to try it over plain http://localhost),
``SECURE_HSTS_SECONDS``, ``LOG_LEVEL``, ``BILL_LOG_LEVEL``, ``DATABASE_CONN_MAX_AGE``,
``BILL_DEFAULT_ENVIRONMENT``, ``BILL_ENABLE_EMULATOR`` and ``BILL_EMULATOR_URL``.

A missing or malformed ``FIELD_ENCRYPTION_KEY`` stops every process that loads these settings
(web, worker, beat, ``manage.py``) before it touches the database: fail closed.
"""

from __future__ import annotations

import os

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from .base import *
from .base import BILL_INTEGRATION, LOGGING, MIDDLEWARE


def _required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ImproperlyConfigured(
            f"The environment variable {name} is required by project.settings.production "
            "(see docker/.env.example)."
        )
    return value


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _flag(name: str, default: bool) -> bool:
    return os.environ.get(name, "1" if default else "0").strip().lower() in ("1", "true", "yes")


def _encryption_keys() -> list[str]:
    """The Fernet key list, validated here so web, worker and beat all fail closed."""
    from cryptography.fernet import Fernet

    keys = _csv(_required("FIELD_ENCRYPTION_KEY"))
    for position, key in enumerate(keys):
        try:
            Fernet(key)
        except (TypeError, ValueError):  # never echo the value
            raise ImproperlyConfigured(
                f"FIELD_ENCRYPTION_KEY entry {position} is not a valid Fernet key (32 url-safe "
                'base64-encoded bytes). Generate one with: python -c "from cryptography.fernet '
                'import Fernet; print(Fernet.generate_key().decode())"'
            ) from None
    return keys


DEBUG = False
SECRET_KEY = _required("SECRET_KEY")
FIELD_ENCRYPTION_KEY = _encryption_keys()
ALLOWED_HOSTS = _csv(_required("ALLOWED_HOSTS"))
CSRF_TRUSTED_ORIGINS = _csv(os.environ.get("CSRF_TRUSTED_ORIGINS", ""))

DATABASES = {
    "default": dj_database_url.parse(
        _required("DATABASE_URL"),
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}

REDIS_URL = os.environ.get("REDIS_URL", "").strip() or None
CELERY_BROKER_URL = (
    os.environ.get("CELERY_BROKER_URL", "").strip() or REDIS_URL or "redis://redis:6379/0"
)
# Task results are never needed (tasks return ids and outcomes); keeping none means no
# result ever sits in the broker.
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# One cache for every web process: the link throttles count attempts in it, and a per-process
# cache would multiply the allowed BILL password guesses by the number of gunicorn workers.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": os.environ.get("CACHE_URL", "").strip() or REDIS_URL or CELERY_BROKER_URL,
    }
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Keep LOGGING below (and its redacting filter) in the worker: Celery would replace the root
# handlers with its own, unfiltered ones.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

BILL_INTEGRATION = {
    **BILL_INTEGRATION,
    "DEFAULT_ENVIRONMENT": os.environ.get("BILL_DEFAULT_ENVIRONMENT", "sandbox"),
    "REDIS_URL": REDIS_URL,
}
if not _flag("BILL_ENABLE_EMULATOR", False):
    # The emulator environment points at 127.0.0.1; production offers BILL's own only.
    BILL_INTEGRATION["ENVIRONMENTS"] = {
        name: urls for name, urls in BILL_INTEGRATION["ENVIRONMENTS"].items() if name != "emulator"
    }
else:
    _emulator_url = os.environ.get("BILL_EMULATOR_URL", "http://emulator:8111").rstrip("/")
    BILL_INTEGRATION["ENVIRONMENTS"] = {
        **BILL_INTEGRATION["ENVIRONMENTS"],
        "emulator": {"v3": f"{_emulator_url}/connect", "v2": f"{_emulator_url}/api/v2"},
    }

# HTTPS everywhere (manage.py check --deploy passes with zero warnings).
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = _flag("SECURE_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", str(60 * 60 * 24 * 365)))
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# Cookies only over HTTPS. SECURE_COOKIES=0 exists solely to try the stack over
# http://localhost (check --deploy then warns, as it should).
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = _flag("SECURE_COOKIES", True)
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# gunicorn serves the static files itself through WhiteNoise (compressed, cache-busting
# names), so the container needs no separate file server.
STATIC_ROOT = os.environ.get("STATIC_ROOT", "/app/staticfiles")
_after_security = MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1
MIDDLEWARE = [  # right after SecurityMiddleware, as WhiteNoise's docs require
    *MIDDLEWARE[:_after_security],
    "whitenoise.middleware.WhiteNoiseMiddleware",
    *MIDDLEWARE[_after_security:],
]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# Logs go to stdout (the container's log driver collects them), every handler redacts.
LOGGING = {
    **LOGGING,
    "filters": {"redact_secrets": {"()": "bill_integration.log_redaction.RedactSecretsFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["redact_secrets"],
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "bill_integration": {"level": os.environ.get("BILL_LOG_LEVEL", "INFO")},
        "django.request": {"level": "ERROR"},
    },
}
