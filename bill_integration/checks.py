"""System checks: refuse to start with a configuration that would lose or leak secrets.

Ids are stable (tests and users silence them by id). Messages and hints live in constants
that the tests reuse (the django-axes habit).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections, router, transaction
from django.utils.module_loading import import_string

from .client.checks import E010_CALL_DEADLINE, check_call_deadline
from .conf import (
    DEFAULTS,
    DEPRECATED_SETTINGS,
    IMPORT_STRINGS,
    SETTINGS_NAME,
    TENANT_MODEL_SETTING,
    deprecated_settings_in_use,
    get_tenant_model,
    merge_environments,
)
from .limits.checks import check_database_limiter, check_limit_settings
from .services.sweep import E016_SWEEP_BATCH_SIZE, check_batch_size
from .services.warmth_checks import E015_WARMTH, check_warmth

logger = logging.getLogger("bill_integration.checks")

E001_KEY_MISSING = "bill_integration.E001"
E002_KEY_MALFORMED = "bill_integration.E002"
E003_TENANT_MODEL = "bill_integration.E003"
E004_ENVIRONMENTS = "bill_integration.E004"
E005_DEFAULT_ENVIRONMENT = "bill_integration.E005"
E006_IMPORT_STRING = "bill_integration.E006"
E007_SETTINGS_TYPE = "bill_integration.E007"
E008_KEEPALIVE_NO_ROOM = "bill_integration.E008"
E009_KEY_DECRYPTS_NOTHING = "bill_integration.E009"
E011_REDIS_NOT_INSTALLED = "bill_integration.E011"
E012_DEVELOPER_KEYS = "bill_integration.E012"
W001_UNKNOWN_SETTING = "bill_integration.W001"
W002_DEPRECATED_SETTING = "bill_integration.W002"
W003_NO_BILL_ENVIRONMENT = "bill_integration.W003"

REDIS_HINT = (
    'Install the redis extra: pip install "django-bill-integration[redis]" (or pip install '
    "redis), or remove BILL_INTEGRATION['REDIS_URL'] to keep limits and locks in the database."
)

TENANT_MODEL_HINT = (
    f"Set {TENANT_MODEL_SETTING} to 'app_label.ModelName' of your tenant model (e.g. "
    "'accounts.Organization'), check its spelling, and list its app in INSTALLED_APPS. Until "
    "then the admin has no BILL connections page."
)

KEY_HINT = (
    "Set FIELD_ENCRYPTION_KEY to a Fernet key (or a list of them, newest first). Generate one "
    'with: python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
)


@register(Tags.security)
def check_encryption_key(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    from cryptography.fernet import Fernet

    keys = getattr(settings, "FIELD_ENCRYPTION_KEY", None)
    if keys is None or keys == "" or keys == [] or keys == ():
        return [
            Error(
                "FIELD_ENCRYPTION_KEY is not set: BILL credentials cannot be stored encrypted.",
                hint=KEY_HINT,
                id=E001_KEY_MISSING,
            )
        ]
    key_list = list(keys) if isinstance(keys, (list, tuple)) else [keys]
    errors = []
    for position, key in enumerate(key_list):
        try:
            Fernet(key)
        except Exception:  # the key's value is never echoed
            errors.append(
                Error(
                    f"FIELD_ENCRYPTION_KEY entry {position} is not a valid Fernet key "
                    "(32 url-safe base64-encoded bytes).",
                    hint=KEY_HINT,
                    id=E002_KEY_MALFORMED,
                )
            )
    return errors


@register()
def check_tenant_model(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    try:
        get_tenant_model()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), hint=TENANT_MODEL_HINT, id=E003_TENANT_MODEL)]
    return []


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Error | Warning]:
    user = getattr(settings, SETTINGS_NAME, {}) or {}
    if not isinstance(user, dict):
        return [Error(f"{SETTINGS_NAME} must be a dict.", id=E007_SETTINGS_TYPE)]
    messages: list[Error | Warning] = []
    for key in sorted(set(user) - set(DEFAULTS) - set(DEPRECATED_SETTINGS)):
        messages.append(
            Warning(
                f"{SETTINGS_NAME}[{key!r}] is not a known setting and is ignored.",
                hint="Known settings: " + ", ".join(sorted(DEFAULTS)),
                id=W001_UNKNOWN_SETTING,
            )
        )
    environments = merge_environments(user.get("ENVIRONMENTS", DEFAULTS["ENVIRONMENTS"]))
    valid_envs = (
        isinstance(environments, dict)
        and environments
        and all(
            isinstance(urls, dict)
            and isinstance(urls.get("v3"), str)
            and isinstance(urls.get("v2"), str)
            for urls in environments.values()
        )
    )
    if not valid_envs:
        messages.append(
            Error(
                f"{SETTINGS_NAME}['ENVIRONMENTS'] must map each environment name to "
                "{'v3': <base URL>, 'v2': <base URL>}.",
                id=E004_ENVIRONMENTS,
            )
        )
    else:
        if not {"sandbox", "production"} & set(environments):
            messages.append(
                Warning(
                    f"{SETTINGS_NAME}['ENVIRONMENTS'] offers neither BILL's sandbox nor its "
                    f"production: only {', '.join(sorted(environments))}.",
                    hint="A project's ENVIRONMENTS is merged over BILL's own; remove the "
                    "entries that set 'sandbox' or 'production' to None unless no customer "
                    "may link a real BILL account.",
                    id=W003_NO_BILL_ENVIRONMENT,
                )
            )
        default = user.get("DEFAULT_ENVIRONMENT", DEFAULTS["DEFAULT_ENVIRONMENT"])
        if default not in environments:
            messages.append(
                Error(
                    f"{SETTINGS_NAME}['DEFAULT_ENVIRONMENT'] is {default!r}, which is not one of "
                    f"the configured environments: {', '.join(environments)}.",
                    id=E005_DEFAULT_ENVIRONMENT,
                )
            )
    # A deprecated CLOCK is still imported and called (bill_settings.CLOCK), so check it too.
    for key in (*IMPORT_STRINGS, *(("CLOCK",) if "CLOCK" in user else ())):
        value = user.get(key, DEFAULTS.get(key))
        if isinstance(value, str):
            try:
                imported = import_string(value)
            except Exception as exc:  # noqa: BLE001  (ImportError, or whatever the module raises)
                messages.append(
                    Error(
                        f"{SETTINGS_NAME}[{key!r}] = {value!r} cannot be imported: {exc}",
                        hint="Give the dotted path of a callable, e.g. 'myproject.tenancy.resolve'.",
                        id=E006_IMPORT_STRING,
                    )
                )
                continue
            if not callable(imported):
                messages.append(
                    Error(
                        f"{SETTINGS_NAME}[{key!r}] = {value!r} is not callable.",
                        id=E006_IMPORT_STRING,
                    )
                )
    messages.extend(_developer_key_errors(user.get("DEVELOPER_KEYS", {})))
    return messages


def _developer_key_errors(keys: Any) -> list[Error]:
    """E012: ``DEVELOPER_KEYS`` maps environment names to non-empty keys (never shown)."""
    hint = (
        "Give {environment name: developer key}, each key as BILL issued it: a string of at "
        "most 64 visible ASCII characters (letters, digits, punctuation; no spaces)."
    )
    if not isinstance(keys, dict):
        return [
            Error(
                f"{SETTINGS_NAME}['DEVELOPER_KEYS'] must be a dict.",
                hint=hint,
                id=E012_DEVELOPER_KEYS,
            )
        ]
    return [
        Error(
            f"{SETTINGS_NAME}['DEVELOPER_KEYS'][{name!r}] is not a well-formed developer key "
            "(the value is not shown).",
            hint=hint,
            id=E012_DEVELOPER_KEYS,
        )
        for name, key in keys.items()
        if not isinstance(name, str)
        or not isinstance(key, str)
        or not 0 < len(key) <= 64
        or not all(33 <= ord(char) <= 126 for char in key)
    ]


@register()
def check_redis_installed(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """E011: ``REDIS_URL`` is set but the ``redis`` package is not installed.

    Without this, ``check`` passes and the first BILL call fails with ``ModuleNotFoundError``.
    """
    user = getattr(settings, SETTINGS_NAME, {}) or {}
    if not isinstance(user, dict) or not user.get("REDIS_URL"):
        return []
    try:
        import redis  # noqa: F401
    except ImportError:
        return [
            Error(
                f"{SETTINGS_NAME}['REDIS_URL'] is set, but the redis package is not installed.",
                hint=REDIS_HINT,
                id=E011_REDIS_NOT_INSTALLED,
            )
        ]
    return []


@register()
def check_deprecated_settings(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """W002: each deprecated key (or number-of-seconds timeout) the project still sets.

    They still work for one release; the warning says what to use instead.
    """
    user = getattr(settings, SETTINGS_NAME, {}) or {}
    if not isinstance(user, dict):
        return []  # E007 already says so
    return [
        Warning(
            f"{SETTINGS_NAME}[{key!r}] is deprecated and stops working in the next release.",
            hint=instead,
            id=W002_DEPRECATED_SETTING,
        )
        for key, instead in deprecated_settings_in_use(user)
    ]


KEEPALIVE_HINT = (
    "Keep-alives must land before get_session() stops trusting a session: lower "
    "KEEPALIVE_AFTER_IDLE (or leave it unset, None, to derive it from the other settings), run "
    "the sweep more often (SWEEP_INTERVAL and your beat entry), or lower SESSION_SAFETY_MARGIN."
)


@register()
def check_keepalive_timing(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """E008: the sweep must find an idle session and keep it alive while it is still trusted.

    A session idle ``KEEPALIVE_AFTER_IDLE`` is seen by the next sweep up to ``SWEEP_INTERVAL``
    later; by then it must still be inside BILL's idle timeout ``- SESSION_SAFETY_MARGIN``.
    """
    from datetime import timedelta

    from .conf import bill_settings, keepalive_after_idle

    user = getattr(settings, SETTINGS_NAME, {}) or {}
    if not isinstance(user, dict):
        return []  # E007 already says so
    try:
        keepalive = keepalive_after_idle()
        sweep = bill_settings.SWEEP_INTERVAL
        trusted = bill_settings.SESSION_IDLE_TIMEOUT - bill_settings.SESSION_SAFETY_MARGIN
        values = (keepalive, sweep, trusted)
        if not all(isinstance(value, timedelta) for value in values):
            raise TypeError
    except (TypeError, AttributeError):
        return [
            Error(
                f"{SETTINGS_NAME}: SESSION_SAFETY_MARGIN, SWEEP_INTERVAL and KEEPALIVE_AFTER_IDLE "
                "must be datetime.timedelta values (KEEPALIVE_AFTER_IDLE may be None).",
                id=E008_KEEPALIVE_NO_ROOM,
            )
        ]
    if keepalive + sweep < trusted and keepalive > timedelta(0):
        return []
    source = "given" if user.get("KEEPALIVE_AFTER_IDLE") is not None else "derived"
    return [
        Error(
            f"{SETTINGS_NAME}: KEEPALIVE_AFTER_IDLE ({source}: {keepalive}) + SWEEP_INTERVAL "
            f"({sweep}) must be shorter than BILL's idle timeout - SESSION_SAFETY_MARGIN "
            f"({trusted}), and KEEPALIVE_AFTER_IDLE must be positive: otherwise sessions go "
            "stale between sweeps and every caller has to log in again.",
            hint=KEEPALIVE_HINT,
            id=E008_KEEPALIVE_NO_ROOM,
        )
    ]


# --- E009: the configured key must be the data's key ---------------------------------------------

#: How many connections E009 samples (the most recently written first), and which of their
#: ciphertexts: the credentials every connection has.
KEY_SAMPLE_ROWS = 20
KEY_SAMPLE_FIELDS = ("dev_key", "password")

WRONG_KEY_HINT = (
    "Put the data's key back in FIELD_ENCRYPTION_KEY: first, or after a new key (the first key "
    "encrypts, every key in the list decrypts), then run `manage.py bill_rotate_keys` to "
    "re-encrypt everything with the first key. Only if the data's key is lost for good: delete "
    "the stored connections and have every customer link their BILL account again."
)


@dataclass(frozen=True)
class KeySample:
    """What E009 found in one database: secrets sampled, and how many the keys decrypt."""

    database: str
    sampled: int
    decrypted: int


def sample_stored_secrets(using: str, *, log_level: int = logging.INFO) -> KeySample | None:
    """Try the configured keys on up to :data:`KEY_SAMPLE_ROWS` rows' stored secrets.

    The ciphertext is read raw (``key_rotation._raw_rows``: a cast to text, so the field never
    decrypts it). ``None`` when the table does not exist yet (before ``migrate``) or the
    database cannot be read (logged at ``log_level``): then nothing can be said about the key.
    Read in a savepoint, so a failure never breaks a caller's transaction.
    """
    from cryptography.fernet import InvalidToken

    from .fields import get_crypter
    from .key_rotation import _raw_rows, _tokens
    from .models import BillConnection

    crypter = get_crypter()
    connection = connections[using]
    try:
        with transaction.atomic(using=using):
            if BillConnection._meta.db_table not in connection.introspection.table_names():
                return None
            rows = list(
                _raw_rows(BillConnection.objects.using(using).order_by("-updated_at", "-pk"))[
                    :KEY_SAMPLE_ROWS
                ]
            )
    except DatabaseError as exc:
        logger.log(
            log_level,
            "cannot read the stored secrets of database %r to verify "
            "FIELD_ENCRYPTION_KEY against them: %s",
            using,
            type(exc).__name__,
        )
        return None
    tokens = [
        token
        for row in rows
        for name, token in _tokens(row).items()
        if name in KEY_SAMPLE_FIELDS and token
    ]
    decrypted = 0
    for token in tokens:
        try:
            crypter.decrypt(token.encode("ascii", errors="replace"))
        except InvalidToken:
            continue
        decrypted += 1
    return KeySample(database=using, sampled=len(tokens), decrypted=decrypted)


def wrong_key_errors(databases: Iterable[str], *, log_level: int = logging.INFO) -> list[Error]:
    """E009 for each of ``databases`` whose sampled secrets no configured key decrypts.

    Silent when the key itself is missing or malformed (E001/E002 say so), for databases that
    do not hold BillConnection, and when there is nothing to sample.
    """
    from .models import BillConnection

    if check_encryption_key():
        return []
    errors = []
    for using in databases:
        if not router.allow_migrate_model(using, BillConnection):
            continue
        sample = sample_stored_secrets(using, log_level=log_level)
        if sample is None or sample.sampled == 0 or sample.decrypted:
            continue
        errors.append(
            Error(
                f"FIELD_ENCRYPTION_KEY decrypts none of the {sample.sampled} sampled stored "
                f"secrets (database {using!r}): this is not the key the data was encrypted "
                "with, and every BILL connection would be marked as needing a relink.",
                hint=WRONG_KEY_HINT,
                id=E009_KEY_DECRYPTS_NOTHING,
            )
        )
    return errors


def _concerns_this_app(app_configs: Any) -> bool:
    return app_configs is None or any(c.label == "bill_integration" for c in app_configs)


@register(Tags.security, Tags.database)
def check_key_decrypts_stored_secrets(
    app_configs: Any = None, databases: Iterable[str] | None = None, **kwargs: Any
) -> list[Error]:
    """E009 on ``check --database <alias>`` and ``migrate``: the key must be the data's key.

    A valid Fernet key that is not the one the data was encrypted with passes E001/E002, and
    the first sweep would then mark every connection ``needs_relink``. Like every
    database-tagged check, it runs only when Django names the databases to check.
    """
    if not databases or not _concerns_this_app(app_configs):
        return []
    return wrong_key_errors(databases)


@register(Tags.security, deploy=True)
def check_key_decrypts_stored_secrets_on_deploy(
    app_configs: Any = None, databases: Iterable[str] | None = None, **kwargs: Any
) -> list[Error]:
    """E009 on ``check --deploy`` without ``--database``: the database connections are read from.

    (With ``--database`` the database-tagged check above runs instead, once.)
    """
    if databases is not None or not _concerns_this_app(app_configs):
        return []
    from .models import BillConnection

    return wrong_key_errors([router.db_for_read(BillConnection)])


# Checks beside what they check: E010 client, E013/W004 limits, E015 warmth, E016 sweep, E014 below.
register()(check_call_deadline)
register()(check_limit_settings)
register(deploy=True)(check_database_limiter)
register()(check_warmth)
register()(check_batch_size)
__all__ = ["E010_CALL_DEADLINE", "E015_WARMTH", "E016_SWEEP_BATCH_SIZE"]


@register()
def check_status_cache(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """E014, beside the cache it bounds (imported late: it needs DRF and the models)."""
    from .api.status_cache import check_status_cache_seconds as check

    return list(check(app_configs, **kwargs))
