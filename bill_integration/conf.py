"""Settings for bill_integration: one ``BILL_INTEGRATION`` dict, read lazily.

Follows Django REST framework's settings object (``rest_framework/settings.py``): every key has
a documented default in :data:`DEFAULTS`, unknown keys raise ``AttributeError``, dotted paths in
:data:`IMPORT_STRINGS` are imported on first use, and the cache is dropped whenever a test or a
project changes the setting (``setting_changed``). Nothing here is read at import time, so
``override_settings`` works and a shell without settings can still import the app.

The tenant model is a flat, top-level setting, ``BILL_INTEGRATION_TENANT_MODEL``, like
``AUTH_USER_MODEL``: migrations must name it, and it can never change after the first migrate.

Usage::

    from bill_integration.conf import bill_settings
    bill_settings.SESSION_IDLE_TIMEOUT
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

SETTINGS_NAME = "BILL_INTEGRATION"
TENANT_MODEL_SETTING = "BILL_INTEGRATION_TENANT_MODEL"
TENANT_MODEL_DEPENDENCY_SETTING = "BILL_INTEGRATION_TENANT_MODEL_MIGRATION_DEPENDENCY"

#: BILL's published base URLs (see shared/reference/bill-api.md §1.1, §2.1). Spend & Expense
#: lives under the v3 base at ``/v3/spend/...``. A project may add environments of its own
#: (the example project adds ``"emulator"``) by giving the whole mapping.
BILL_ENVIRONMENTS: dict[str, dict[str, str]] = {
    "sandbox": {
        "v3": "https://gateway.stage.bill.com/connect",
        "v2": "https://api-stage.bill.com/api/v2",
    },
    "production": {
        "v3": "https://gateway.prod.bill.com/connect",
        "v2": "https://api.bill.com/api/v2",
    },
}

DEFAULTS: dict[str, Any] = {
    # Where BILL lives, per environment name, per API version.
    "ENVIRONMENTS": BILL_ENVIRONMENTS,
    # Environment offered first to a customer linking an account.
    "DEFAULT_ENVIRONMENT": "sandbox",
    # callable(request) -> tenant | None; the REST API and linking page use it.
    "TENANT_RESOLVER": "bill_integration.tenancy.user_is_tenant",
    # Who may read or change a tenant's connection: callable(user, tenant) -> "write"|"read"|None.
    "ACCESS_POLICY": "bill_integration.tenancy.staff_or_self_access",
    # HTTP client used to talk to BILL (swap it to add logging, proxies, a fake ...).
    "CLIENT_CLASS": "bill_integration.client.BillClient",
    # Seconds to wait for BILL to accept a connection, and then for an answer.
    "CONNECT_TIMEOUT": 5.0,
    "READ_TIMEOUT": 30.0,
    # BILL ends a session after this long without a call (35 minutes, bill-api.md §3).
    "SESSION_IDLE_TIMEOUT": timedelta(minutes=35),
    # get_session() treats a session as gone this long before BILL would end it.
    "SESSION_SAFETY_MARGIN": timedelta(minutes=3),
    # The sweep keeps alive sessions idle at least this long. None (the default) derives it:
    # SESSION_IDLE_TIMEOUT - SESSION_SAFETY_MARGIN - SWEEP_INTERVAL - 30 s (30.5 min with the
    # defaults), so a keep-alive lands just before get_session() would stop trusting the
    # session, and a project that changes its beat interval stays safe. A value given here
    # wins; the system check bill_integration.E008 refuses one that leaves no room for a beat.
    "KEEPALIVE_AFTER_IDLE": None,
    # Log in again once a session is this old, even if it is alive (None: never). Weekly:
    # N/168 logins an hour, so 10,000 tenants need about 60 of a developer key's 150.
    "MAX_SESSION_AGE": timedelta(days=7),
    # How often beat runs the sweep (one cheap query; set the beat entry to the same value).
    "SWEEP_INTERVAL": timedelta(minutes=1),
    # Record session_last_used_at at most this often per connection (not a write per call).
    "LAST_USED_WRITE_INTERVAL": timedelta(seconds=60),
    # Logins allowed per developer key per rolling hour (BILL allows 200).
    "LOGIN_BUDGET_PER_HOUR": 150,
    # In-flight requests per developer key and organization (BILL allows 3).
    "MAX_CONCURRENT_PER_ORGANIZATION": 3,
    # Redis URL for the shared limiters and locks; None uses PostgreSQL (the database).
    "REDIS_URL": None,
    # Retry backoff for transient failures: base * 2**failures, capped, with full jitter.
    "BACKOFF_BASE": timedelta(seconds=30),
    "BACKOFF_MAX": timedelta(hours=1),
    # How long get_session() waits for another worker's login before giving up.
    "SINGLE_FLIGHT_WAIT": timedelta(seconds=30),
    # How long a call waits for one of the MAX_CONCURRENT_PER_ORGANIZATION slots (then it
    # fails with RateLimited(scope="concurrency") instead of making BILL answer BDC_1322).
    "CONCURRENCY_WAIT": timedelta(seconds=30),
    # A slot a crashed worker never released frees itself after this long (must exceed
    # CONNECT_TIMEOUT + READ_TIMEOUT, the longest a call can take).
    "CONCURRENCY_LEASE": timedelta(seconds=60),
    # Link attempts (PUT /connection/) allowed per tenant and per user.
    "LINK_THROTTLE_RATES": {"tenant": "10/hour", "user": "20/hour"},
    # Forced refreshes (POST /connection/refresh/) allowed per tenant and per user: each one
    # logs in, spending a login of the developer key's hourly budget that tenants share.
    "REFRESH_THROTTLE_RATES": {"tenant": "6/hour", "user": "12/hour"},
    # Celery options for the refresh tasks.
    "TASK_EXPIRES": timedelta(minutes=10),
    "TASK_QUEUE": None,
    # callable() -> aware datetime; tests and the emulator demo may shift time.
    "CLOCK": "django.utils.timezone.now",
}

IMPORT_STRINGS = ("TENANT_RESOLVER", "ACCESS_POLICY", "CLIENT_CLASS", "CLOCK")


class BillIntegrationSettings:
    """Attribute access to ``settings.BILL_INTEGRATION`` merged over :data:`DEFAULTS`."""

    def __init__(self) -> None:
        self._cached: dict[str, Any] = {}

    @property
    def user_settings(self) -> dict[str, Any]:
        value = getattr(settings, SETTINGS_NAME, {}) or {}
        if not isinstance(value, dict):
            raise ImproperlyConfigured(f"{SETTINGS_NAME} must be a dict, not {type(value).__name__}.")
        return value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in DEFAULTS:
            raise AttributeError(f"Invalid {SETTINGS_NAME} setting: {name!r}")
        if name in self._cached:
            return self._cached[name]
        value = self.user_settings.get(name, DEFAULTS[name])
        if name in IMPORT_STRINGS and isinstance(value, str):
            try:
                value = import_string(value)
            except ImportError as exc:
                raise ImproperlyConfigured(
                    f"{SETTINGS_NAME}[{name!r}] = {value!r} could not be imported: {exc}"
                ) from exc
        self._cached[name] = value
        return value

    def reload(self) -> None:
        self._cached.clear()

    def environment_names(self) -> list[str]:
        return list(self.ENVIRONMENTS)

    def base_url(self, environment: str, api_version: str) -> str:
        """The base URL of ``api_version`` ("v3" or "v2") in ``environment``."""
        try:
            return self.ENVIRONMENTS[environment][api_version].rstrip("/")
        except KeyError as exc:
            raise ImproperlyConfigured(
                f"{SETTINGS_NAME}['ENVIRONMENTS'] has no {api_version!r} URL for "
                f"environment {environment!r}."
            ) from exc


bill_settings = BillIntegrationSettings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting in (SETTINGS_NAME, TENANT_MODEL_SETTING):
        bill_settings.reload()


setting_changed.connect(_reload)


def get_tenant_model_string() -> str:
    """The ``app_label.ModelName`` of the tenant model (defaults to ``AUTH_USER_MODEL``)."""
    return getattr(settings, TENANT_MODEL_SETTING, settings.AUTH_USER_MODEL)


def get_tenant_model():  # type: ignore[no-untyped-def]
    """The tenant model class, with the two canonical errors of dj-stripe and waffle."""
    model_string = get_tenant_model_string()
    try:
        return apps.get_model(model_string, require_ready=False)
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"{TENANT_MODEL_SETTING} must be of the form 'app_label.model_name'."
        ) from exc
    except LookupError as exc:
        raise ImproperlyConfigured(
            f"{TENANT_MODEL_SETTING} refers to model {model_string!r} that has not been installed."
        ) from exc


#: The slack the derived KEEPALIVE_AFTER_IDLE leaves for a sweep's task to wait in the queue.
KEEPALIVE_QUEUE_SLACK = timedelta(seconds=30)


def keepalive_after_idle() -> timedelta:
    """``KEEPALIVE_AFTER_IDLE`` when given, else the value derived from the other settings.

    Derived: ``SESSION_IDLE_TIMEOUT - SESSION_SAFETY_MARGIN - SWEEP_INTERVAL - 30 s``. A session
    idle that long is found by the next sweep at most ``SWEEP_INTERVAL`` later, and its
    keep-alive still has 30 seconds before ``get_session()`` would stop trusting it.
    """
    explicit = bill_settings.KEEPALIVE_AFTER_IDLE
    if explicit is not None:
        return explicit
    return (
        bill_settings.SESSION_IDLE_TIMEOUT
        - bill_settings.SESSION_SAFETY_MARGIN
        - bill_settings.SWEEP_INTERVAL
        - KEEPALIVE_QUEUE_SLACK
    )


def now():  # type: ignore[no-untyped-def]
    """The current time as the app sees it (``BILL_INTEGRATION['CLOCK']``)."""
    return bill_settings.CLOCK()
