"""Settings for bill_integration: one ``BILL_INTEGRATION`` dict, read lazily.

Follows Django REST framework's settings object (``rest_framework/settings.py``): every key has
a documented default in :data:`DEFAULTS`, unknown keys raise ``AttributeError``, dotted paths in
:data:`IMPORT_STRINGS` are imported on first use, and the cache is dropped whenever a test or a
project changes the setting (``setting_changed``). Nothing here is read at import time, so
``override_settings`` works and a shell without settings can still import the app.

Only what a project really tunes is a setting. BILL's own limits (the 35-minute idle timeout,
3 concurrent requests per organization, 200 logins and 20,000 calls an hour per developer key)
are constants in :mod:`bill_integration.constants`. Every duration is a ``timedelta``.

The app's clock is not a setting either: tests move it with :func:`override_clock` (or
:func:`set_clock` for a whole process), and the app reads it through :func:`now`.

Deprecated for one release (system check ``bill_integration.W002`` names each one a project
sets): the keys in :data:`DEPRECATED_SETTINGS`, which still work, and ``CONNECT_TIMEOUT`` /
``READ_TIMEOUT`` given as numbers of seconds, which are converted.

The tenant model is a flat, top-level setting, ``BILL_INTEGRATION_TENANT_MODEL``, like
``AUTH_USER_MODEL``: migrations must name it, and it can never change after the first migrate.

Usage::

    from bill_integration.conf import bill_settings, now
    bill_settings.SESSION_SAFETY_MARGIN
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils import timezone
from django.utils.module_loading import import_string

from . import constants

SETTINGS_NAME = "BILL_INTEGRATION"
TENANT_MODEL_SETTING = "BILL_INTEGRATION_TENANT_MODEL"
TENANT_MODEL_DEPENDENCY_SETTING = "BILL_INTEGRATION_TENANT_MODEL_MIGRATION_DEPENDENCY"

#: BILL's published base URLs. Spend & Expense lives under the v3 base at ``/v3/spend/...``.
#: https://developer.bill.com/docs/development-environments
#: https://developer.bill.com/v2/changelog/2024-07-08-new-test-environment-for-the-bill-v2-api
#: A project's ``BILL_INTEGRATION["ENVIRONMENTS"]`` is merged over these (see
#: :func:`merge_environments`): it adds environments of its own (the example project adds
#: ``"emulator"``), replaces one by giving its name, or removes one by mapping it to ``None``.
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
    # Where BILL lives: {environment name: {"v3": base URL, "v2": base URL}}; a project's
    # mapping is merged over BILL's sandbox and production (None removes one).
    "ENVIRONMENTS": BILL_ENVIRONMENTS,
    # Environment offered first to a customer linking an account.
    "DEFAULT_ENVIRONMENT": "sandbox",
    # callable(request) -> tenant | None; the REST API and linking page use it.
    "TENANT_RESOLVER": "bill_integration.tenancy.user_is_tenant",
    # Who may read or change a tenant's connection: callable(user, tenant) -> "write"|"read"|None.
    "ACCESS_POLICY": "bill_integration.tenancy.staff_or_self_access",
    # HTTP client used to talk to BILL (swap it to add logging, proxies, a fake ...).
    "CLIENT_CLASS": "bill_integration.client.BillClient",
    # How long to wait for BILL to accept a connection.
    "CONNECT_TIMEOUT": timedelta(seconds=5),
    # How long to wait for BILL's answer once connected.
    "READ_TIMEOUT": timedelta(seconds=30),
    # Longest a whole BILL call may take, from connecting to the answer's last byte
    # (READ_TIMEOUT bounds each read only). None: CONNECT_TIMEOUT + READ_TIMEOUT (35 s).
    # Must stay below CONCURRENCY_LEASE (check bill_integration.E010).
    "CALL_DEADLINE": None,
    # get_session() treats a session as gone this long before BILL's 35-minute idle limit.
    "SESSION_SAFETY_MARGIN": timedelta(minutes=3),
    # The sweep keeps alive sessions idle this long; None derives it (keepalive_after_idle()).
    "KEEPALIVE_AFTER_IDLE": None,
    # Log in again once a session is this old, even if BILL still accepts it (None: never).
    "MAX_SESSION_AGE": timedelta(days=7),
    # How often beat runs the sweep (set the beat entry to the same value).
    "SWEEP_INTERVAL": timedelta(minutes=1),
    # Record session_last_used_at at most this often per connection (not a write per call).
    "LAST_USED_WRITE_INTERVAL": timedelta(seconds=60),
    # Logins per developer key per rolling hour, for all tenants sharing it (BILL allows 200).
    "LOGIN_BUDGET_PER_HOUR": 150,
    # Share of that budget only renewals of linked connections may use (link attempts, forced
    # refreshes and verifications stop short of it), so other tenants cannot starve them.
    "LOGIN_RESERVE_FOR_RENEWALS": 0.3,
    # Link attempts, forced refreshes and verifications one tenant may make per rolling hour.
    "LOGIN_ATTEMPTS_PER_TENANT": 20,
    # Share of the login budget that background logins (the sweep's renewals) leave to callers
    # waiting in get_session() and people linking: those are served first when logins run short.
    "LOGIN_RESERVE_FOR_CALLERS": 0.2,
    # Background logins per developer key per minute (None: unpaced). 3 spreads the sweep's
    # renewals over the hour (120 an hour fit at 2 a minute) and leaves 2 of BILL's possible
    # 5-a-minute login rule to callers.
    "LOGINS_PER_MINUTE": 3,
    # Share of BILL's 20,000 calls an hour (per developer key, rolling) that keep-alives and
    # background logins may use; callers' own requests keep the rest. 0.6 keeps ~6,000 sessions
    # warm (12,000 upkeep calls at ~2 per tenant-hour) and leaves 8,000 calls an hour, a 40%
    # margin, to callers, so upkeep can never be what pushes the key into BDC_1144.
    "UPKEEP_SHARE": 0.6,
    # Redis URL for the shared limiters and locks; None uses the database.
    "REDIS_URL": None,
    # First retry delay after a transient failure (doubles per failure, full jitter).
    "BACKOFF_BASE": timedelta(seconds=30),
    # Longest retry delay after transient failures.
    "BACKOFF_MAX": timedelta(hours=1),
    # How long get_session() waits for another worker's login before giving up.
    "SINGLE_FLIGHT_WAIT": timedelta(seconds=30),
    # How long a call waits for one of BILL's 3 concurrent slots, then RateLimited.
    "CONCURRENCY_WAIT": timedelta(seconds=30),
    # A slot a killed worker never released frees itself after this (must exceed CALL_DEADLINE).
    "CONCURRENCY_LEASE": timedelta(seconds=60),
    # Link attempts (PUT /connection/) allowed per tenant and per user.
    "LINK_THROTTLE_RATES": {"tenant": "10/hour", "user": "20/hour"},
    # Forced refreshes (each a login from the key's shared budget) per tenant and per user.
    "REFRESH_THROTTLE_RATES": {"tenant": "6/hour", "user": "12/hour"},
    # Connection ids per refresh_sessions task the sweep sends (refreshed in one limiter batch).
    "SWEEP_BATCH_SIZE": 100,
    # How long a queued refresh task stays worth running (Celery ``expires``).
    "TASK_EXPIRES": timedelta(minutes=10),
    # Celery queue of the refresh tasks (None: the default queue).
    "TASK_QUEUE": None,
    # Warn (signal connection_mfa_expiring) this long before BILL's 30-day MFA trust ends.
    "MFA_EXPIRY_WARNING": timedelta(days=5),
    # Device name BILL's MFA trust is given to (None: derived from the site's domain).
    "MFA_DEVICE_NAME": None,
    # MFA phone lists, codes asked for and codes entered, per tenant and per user.
    "MFA_THROTTLE_RATES": {"tenant": "20/hour", "user": "20/hour"},
    # Which sessions the sweep keeps warm: "predicted" (tenants likely to call BILL before the
    # session would lapse, from each tenant's own history; services/warmth.py) or "always"
    # (every linked tenant around the clock: ~2 calls per tenant-hour, ~10,000 tenants a key).
    "WARMTH": "predicted",
    # Tenant ids whose sessions are always kept warm, whatever their history says.
    "ALWAYS_WARM": (),
    # The SaaS's own developer keys: {environment: key}; tenants linking there give none.
    "DEVELOPER_KEYS": {},
    # Whether a tenant may still send its own developer key where DEVELOPER_KEYS has one.
    "ALLOW_TENANT_DEVELOPER_KEY": False,
    # Seconds GET /connection/ may reuse a status document whose row is unchanged (0: off).
    "STATUS_CACHE_SECONDS": 5,
}

IMPORT_STRINGS = ("TENANT_RESOLVER", "ACCESS_POLICY", "CLIENT_CLASS")

#: Keys that are no longer settings, and what to use instead. They keep working for one
#: release (``bill_settings.<KEY>`` returns the project's value, else the constant) and
#: system check ``bill_integration.W002`` names each one a project still sets.
DEPRECATED_SETTINGS: dict[str, str] = {
    "SESSION_IDLE_TIMEOUT": (
        "BILL's idle limit is not a setting: remove the key "
        "(the app uses bill_integration.constants.SESSION_IDLE_TIMEOUT, 35 minutes)."
    ),
    "MAX_CONCURRENT_PER_ORGANIZATION": (
        "BILL's concurrency limit is not a setting: remove the key "
        "(the app uses bill_integration.constants.MAX_CONCURRENT_PER_ORGANIZATION, 3)."
    ),
    "CLOCK": (
        "The clock is not a setting: remove the key; tests move the app's clock with "
        "bill_integration.conf.override_clock(callable) (or set_clock() for a whole process)."
    ),
}
_DEPRECATED_DEFAULTS: dict[str, Any] = {
    "SESSION_IDLE_TIMEOUT": constants.SESSION_IDLE_TIMEOUT,
    "MAX_CONCURRENT_PER_ORGANIZATION": constants.MAX_CONCURRENT_PER_ORGANIZATION,
}

#: Durations that were numbers of seconds. A number still works for one release (converted;
#: system check ``bill_integration.W002`` asks for a ``timedelta``).
SECONDS_SETTINGS = ("CONNECT_TIMEOUT", "READ_TIMEOUT")

Clock = Callable[[], datetime]


class HttpTimeout(timedelta):
    """A ``timedelta`` that ``float()`` turns into seconds.

    ``bill_settings.CONNECT_TIMEOUT`` and ``READ_TIMEOUT`` return one, so code written when
    they were floats (``float(bill_settings.READ_TIMEOUT)``) keeps working for a release. New
    code reads :meth:`BillIntegrationSettings.connect_timeout_seconds` and
    :meth:`~BillIntegrationSettings.read_timeout_seconds`.
    """

    def __float__(self) -> float:
        return self.total_seconds()


def _as_http_timeout(name: str, value: Any) -> HttpTimeout:
    """``value`` (a ``timedelta``, or a deprecated number of seconds) as an :class:`HttpTimeout`."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = timedelta(seconds=value)
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise ImproperlyConfigured(
            f"{SETTINGS_NAME}[{name!r}] must be a positive datetime.timedelta, not {value!r}."
        )
    return HttpTimeout(days=value.days, seconds=value.seconds, microseconds=value.microseconds)


def merge_environments(project: Any) -> Any:
    """BILL's environments with the project's ``ENVIRONMENTS`` merged over them.

    A project's entry adds an environment or replaces BILL's entry of that name; an entry
    mapped to ``None`` removes it (``{"sandbox": None}`` offers production only). Anything but
    a dict is returned as given, for system check ``bill_integration.E004`` to refuse.
    """
    if not isinstance(project, dict):
        return project
    merged = {**BILL_ENVIRONMENTS, **project}
    return {name: urls for name, urls in merged.items() if urls is not None}


def deprecated_settings_in_use(user: dict[str, Any]) -> list[tuple[str, str]]:
    """``(key, what to do instead)`` for each deprecated key or form in the project's dict."""
    found = [(key, DEPRECATED_SETTINGS[key]) for key in DEPRECATED_SETTINGS if key in user]
    for key in SECONDS_SETTINGS:
        value = user.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            found.append(
                (
                    key,
                    f"Durations are datetime.timedelta values: give timedelta(seconds={value!r}) "
                    "(a number of seconds is still read, until the next release).",
                )
            )
    return found


class BillIntegrationSettings:
    """Attribute access to ``settings.BILL_INTEGRATION`` merged over :data:`DEFAULTS`."""

    def __init__(self) -> None:
        self._cached: dict[str, Any] = {}

    @property
    def user_settings(self) -> dict[str, Any]:
        value = getattr(settings, SETTINGS_NAME, {}) or {}
        if not isinstance(value, dict):
            raise ImproperlyConfigured(
                f"{SETTINGS_NAME} must be a dict, not {type(value).__name__}."
            )
        return value

    def __getattr__(self, name: str) -> Any:
        if name == "CLOCK":  # deprecated: the clock now() uses, hook included (never cached)
            return get_clock()
        if name.startswith("_") or (name not in DEFAULTS and name not in _DEPRECATED_DEFAULTS):
            raise AttributeError(f"Invalid {SETTINGS_NAME} setting: {name!r}")
        if name in self._cached:
            return self._cached[name]
        default = DEFAULTS[name] if name in DEFAULTS else _DEPRECATED_DEFAULTS[name]
        value = self.user_settings.get(name, default)
        if name == "ENVIRONMENTS":
            value = merge_environments(value)
        if name in SECONDS_SETTINGS:
            value = _as_http_timeout(name, value)
        if name in IMPORT_STRINGS and isinstance(value, str):
            value = self._import(name, value)
        self._cached[name] = value
        return value

    def _import(self, name: str, path: str) -> Any:
        try:
            return import_string(path)
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"{SETTINGS_NAME}[{name!r}] = {path!r} could not be imported: {exc}"
            ) from exc

    def _configured_clock(self) -> Clock:
        """The project's deprecated ``CLOCK`` (imported), else ``django.utils.timezone.now``."""
        clock = self._cached.get("_clock")
        if clock is None:
            value = self.user_settings.get("CLOCK", timezone.now)
            clock = self._import("CLOCK", value) if isinstance(value, str) else value
            self._cached["_clock"] = clock
        return clock

    def reload(self) -> None:
        self._cached.clear()

    def connect_timeout_seconds(self) -> float:
        """``CONNECT_TIMEOUT`` in seconds, for ``requests``' ``timeout=(connect, read)``."""
        return float(self.CONNECT_TIMEOUT.total_seconds())

    def read_timeout_seconds(self) -> float:
        """``READ_TIMEOUT`` in seconds, for ``requests``' ``timeout=(connect, read)``."""
        return float(self.READ_TIMEOUT.total_seconds())

    def environment_names(self) -> list[str]:
        return list(self.ENVIRONMENTS)

    def host_developer_key(self, environment: str | None) -> str | None:
        """The SaaS's own developer key for ``environment`` (``DEVELOPER_KEYS``), if any."""
        key = (self.DEVELOPER_KEYS or {}).get(environment or self.DEFAULT_ENVIRONMENT)
        return key if isinstance(key, str) and key else None

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

    Derived: BILL's idle timeout (35 minutes) ``- SESSION_SAFETY_MARGIN - SWEEP_INTERVAL - 30 s``
    (30.5 minutes with the defaults). A session idle that long is found by the next sweep at
    most ``SWEEP_INTERVAL`` later, and its keep-alive still has 30 seconds before
    ``get_session()`` would stop trusting it. (The idle timeout is read through
    ``bill_settings`` so a project's deprecated ``SESSION_IDLE_TIMEOUT`` still counts.)
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


# --- the app's clock: a test hook, not a setting ------------------------------------------------

_clock_hook: Clock | str | None = None


def set_clock(clock: Clock | str | None) -> None:
    """Make :func:`now` read ``clock`` in this process (``None``: real time again).

    For tests and for test processes (a Celery worker started by a test, a benchmark): a
    callable returning an aware ``datetime``, or its dotted path (imported on first use, so a
    settings module can call this without importing the clock's module). Prefer
    :func:`override_clock` in a test: it puts the previous clock back.
    """
    global _clock_hook
    _clock_hook = clock


def get_clock() -> Clock:
    """The clock :func:`now` reads: :func:`set_clock`'s, else ``django.utils.timezone.now``."""
    global _clock_hook
    hook = _clock_hook
    if isinstance(hook, str):
        hook = _clock_hook = import_string(hook)
    if hook is not None:
        return hook
    return bill_settings._configured_clock()


@contextmanager
def override_clock(clock: Clock | str) -> Iterator[None]:
    """``with override_clock(lambda: moment):`` the app sees ``moment`` as now, then real time."""
    previous = _clock_hook
    set_clock(clock)
    try:
        yield
    finally:
        set_clock(previous)


def now() -> datetime:
    """The current time as the app sees it (real time unless a test moved the clock)."""
    return get_clock()()
