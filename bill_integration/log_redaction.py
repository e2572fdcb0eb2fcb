"""A logging filter that keeps BILL secrets out of log output, whatever a caller passed.

The app never logs a secret on purpose (services log ids, codes and durations). This filter is
the second line: it rewrites a record before any handler formats it, so a secret that slipped
into a message, its arguments, ``extra`` fields or a traceback prints as ``[REDACTED]``.

What it redacts:

* the value of any **secret-named key**: ``password``, ``dev_key``/``devKey``,
  ``api_token``/``apiToken``, ``session_id``/``sessionId``, ``secret``, ``token``,
  ``rememberMeId``/``mfa_remember_id``, ``mfaId`` (any case,
  ``_``/``-`` ignored), in dict arguments, ``extra`` fields, nested dicts and lists, and in
  text such as ``password=…``, ``"devKey": "…"`` or ``sessionId: …`` (JSON, form bodies,
  query strings, headers);
* **shapes** that are always secret: BILL session ids (``!a`` + 30 or more url-safe
  characters) and Fernet tokens (``gAAAAA…``, our ciphertext);
* **known live values**: the services call :func:`register_secret` with each secret they
  handle; the last :data:`REGISTRY_SIZE` values are redacted wherever they appear.

Installed by ``BillIntegrationConfig.ready()`` on the app's loggers (:data:`APP_LOGGERS`: every
record the app logs passes it, whatever handlers a project configures) and on the handlers
attached to the ``bill_integration`` logger at that moment. Logger filters do not see records
of other loggers (``django.request``, ``celery``, ``urllib3``), so in production add it to every
handler as well::

    LOGGING = {
        ...
        "filters": {"redact_secrets": {"()": "bill_integration.log_redaction.RedactSecretsFilter"}},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "filters": ["redact_secrets"]},
        },
    }

or call :func:`install` with ``root=True`` (adds it to every handler of the root logger).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

REDACTED = "[REDACTED]"

#: How many live secret values :func:`register_secret` remembers (least recently used go first).
REGISTRY_SIZE = 2048
#: Shorter values are not registered: redacting "abc" everywhere would garble logs.
MIN_SECRET_LENGTH = 6

_SECRET_WORDS = (
    "password",
    "passwd",
    "devkey",
    "apitoken",
    "sessionid",
    "secret",
    "token",
    "remember",  # BILL's MFA rememberMeId / our mfa_remember_id
    "mfaid",
)
_NOT_SECRET_SUFFIXES = ("fingerprint", "expires", "expiresat", "type", "count", "name", "url")

# key=value / "key": "value" / key: value, for the secret names above (and their prefixed
# variants such as X-Session-Id, new_password, csrftoken).
_KEYED_VALUE = re.compile(
    r"""(?P<key>[A-Za-z0-9_\-]*(?:pass(?:word|wd)|dev[_\-]?key|api[_\-]?token|session[_\-]?id
                                |secret|token|remember(?:[_\-]?me)?[_\-]?id|mfa[_\-]?id)
                                [A-Za-z0-9_\-]*)
        (?P<sep>["']?\s*[:=]\s*(?:b?["'])?)
        (?P<value>[^\s"'&,;}\]\)<>]+)""",
    re.IGNORECASE | re.VERBOSE,
)
_SHAPES = (
    re.compile(r"(?<![A-Za-z0-9_\-!])![A-Za-z][A-Za-z0-9_\-]{29,}"),  # BILL session/MFA ids
    re.compile(r"gAAAAA[A-Za-z0-9_\-]{40,}={0,2}"),  # Fernet tokens (our ciphertext)
)

_registry: OrderedDict[str, None] = OrderedDict()
_registry_lock = threading.Lock()
_registry_pattern: re.Pattern[str] | None = None


def is_secret_name(name: str) -> bool:
    """Whether a field or key name denotes a secret (``devKey``, ``session_id``, ``X-Api-Token``)."""
    flat = re.sub(r"[^a-z0-9]", "", str(name).lower())
    if not flat or flat.endswith(_NOT_SECRET_SUFFIXES):
        return False
    return any(word in flat for word in _SECRET_WORDS)


def register_secret(value: str | None) -> None:
    """Remember a live secret value so it is redacted wherever it shows up in a log record."""
    global _registry_pattern
    if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
        return
    with _registry_lock:
        if value in _registry:
            _registry.move_to_end(value)
            return
        _registry[value] = None
        while len(_registry) > REGISTRY_SIZE:
            _registry.popitem(last=False)
        _registry_pattern = None


def forget_secrets() -> None:
    """Empty the registry (tests)."""
    global _registry_pattern
    with _registry_lock:
        _registry.clear()
        _registry_pattern = None


def _registered_pattern() -> re.Pattern[str] | None:
    global _registry_pattern
    with _registry_lock:
        if _registry_pattern is None and _registry:
            # Longest first, so a secret containing another is redacted whole.
            values = sorted(_registry, key=len, reverse=True)
            _registry_pattern = re.compile("|".join(map(re.escape, values)))
        return _registry_pattern


def redact_text(text: str) -> str:
    """``text`` with secret-named values, secret shapes and registered secrets replaced."""
    pattern = _registered_pattern()
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    text = _KEYED_VALUE.sub(
        lambda m: (
            m.group(0)
            if m.group("value") == REDACTED
            else f"{m.group('key')}{m.group('sep')}{REDACTED}"
        ),
        text,
    )
    for shape in _SHAPES:
        text = shape.sub(REDACTED, text)
    return text


def redact(value: Any, *, _depth: int = 0) -> Any:
    """A copy of ``value`` with secrets redacted: dict values by key name, text by content."""
    if _depth > 8:
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bytes):
        return redact_text(value.decode("utf-8", errors="replace"))
    if isinstance(value, dict):
        return {
            key: REDACTED
            if is_secret_name(key) and item not in (None, "")
            else redact(item, _depth=_depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [redact(item, _depth=_depth + 1) for item in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    # Anything else is formatted with %s/%r later: redact what that would print.
    text = str(value)
    cleaned = redact_text(text)
    return value if cleaned == text else cleaned


#: Attributes every LogRecord has; anything else came from ``extra=``.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


class RedactSecretsFilter(logging.Filter):
    """Rewrites each record so no secret reaches a handler; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            self._redact_record(record)
        except Exception:  # noqa: BLE001  (a broken record must still be logged, never crash the caller)
            record.msg, record.args = redact_text(str(record.msg)), ()
        return True

    def _redact_record(self, record: logging.LogRecord) -> None:
        if getattr(record, "_bill_redacted", False):
            return
        # Render first, then redact: "password=%s" only shows its secret once formatted.
        # (Handlers then see the final text and no args; grouping by template is lost.)
        record.msg = redact_text(record.getMessage())
        record.args = ()
        for name in set(vars(record)) - _STANDARD_ATTRS:
            if name.startswith("_bill"):
                continue
            value = getattr(record, name)
            if is_secret_name(name) and value not in (None, ""):
                setattr(record, name, REDACTED)
            elif name == "request":
                continue  # django.request's HttpRequest: formatted by the reporter, not here
            else:
                setattr(record, name, redact(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        record._bill_redacted = True


def _add_once(target: logging.Logger | logging.Handler, flt: logging.Filter) -> None:
    if not any(isinstance(existing, RedactSecretsFilter) for existing in target.filters):
        target.addFilter(flt)


#: The app's loggers. Filters set on a logger stay when a project (re)configures logging
#: (``dictConfig`` replaces handlers, never logger filters), so these are covered for good.
APP_LOGGERS = (
    "bill_integration",
    "bill_integration.sessions",
    "bill_integration.limits",
    "bill_integration.key_rotation",
    "bill_integration.startup",
    "bill_integration.client",
    "bill_integration.emulator",
)


def install(*, logger_names: Iterable[str] = APP_LOGGERS, root: bool = False) -> None:
    """Add the filter to the named loggers, their existing children and their handlers (and
    to the root logger's handlers, if ``root``)."""
    flt = RedactSecretsFilter()
    names = list(logger_names)
    # A logger's filters see only records created on that logger, not its children's: add it
    # to the child loggers that exist already too (bill_integration.sessions, ...).
    existing = [
        name
        for name, item in logging.Logger.manager.loggerDict.items()
        if isinstance(item, logging.Logger) and any(name.startswith(f"{n}.") for n in names)
    ]
    for name in [*names, *existing]:
        logger = logging.getLogger(name)
        _add_once(logger, flt)
        for handler in logger.handlers:
            _add_once(handler, flt)
    if root:
        for handler in logging.getLogger().handlers:
            _add_once(handler, flt)
