"""RedactSecretsFilter: no secret reaches a handler, whatever form the caller logged it in."""

from __future__ import annotations

import io
import json
import logging

import pytest
from cryptography.fernet import Fernet

from bill_integration import log_redaction as bill_logging
from bill_integration.log_redaction import REDACTED, RedactSecretsFilter, is_secret_name, redact

PASSWORD = "canary-pw-3f9a1c"
DEV_KEY = "canary-devkey-77aa21"
TOKEN = "canary-apitoken-90b2"
SESSION = "!aCanarySessionX9d8f7e6d5c4b3a2Z1y0x9w8v7u6t5s4"


@pytest.fixture
def captured():
    """A handler on a fresh logger under bill_integration, with the filter as the docs say."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s %(extra_blob)s"))
    handler.addFilter(RedactSecretsFilter())
    logger = logging.getLogger("bill_integration.tests.redaction")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    bill_logging.forget_secrets()
    yield logger, stream
    logger.removeHandler(handler)
    bill_logging.forget_secrets()


def log(logger, *args, **kwargs):
    kwargs.setdefault("extra", {}).setdefault("extra_blob", "")
    logger.debug(*args, **kwargs)


@pytest.mark.parametrize(
    "name,secret",
    [
        ("password", True),
        ("new_password", True),
        ("devKey", True),
        ("dev_key", True),
        ("apiToken", True),
        ("api_token", True),
        ("sessionId", True),
        ("session_id", True),
        ("X-Session-Id", True),
        ("SECRET_KEY", True),
        ("csrfmiddlewaretoken", True),
        ("token", True),
        ("dev_key_fingerprint", False),
        ("username", False),
        ("organization_id", False),
        ("session_last_used_at", False),
        ("connection_id", False),
    ],
)
def test_secret_names(name, secret):
    assert is_secret_name(name) is secret


def test_keyed_values_in_message_args_are_redacted(captured):
    logger, stream = captured
    log(logger, "login password=%s devKey=%s", PASSWORD, DEV_KEY)
    log(
        logger,
        "body %s",
        json.dumps(
            {"userName": "a@b.c", "password": PASSWORD, "devKey": DEV_KEY, "orgId": "00801ABC"}
        ),
    )
    log(logger, "form devKey=%s&sessionId=%s&data={}", DEV_KEY, SESSION)
    log(logger, "headers {'sessionId': '%s', 'apiToken': '%s'}", SESSION, TOKEN)
    out = stream.getvalue()
    for canary in (PASSWORD, DEV_KEY, TOKEN, SESSION):
        assert canary not in out
    assert "a@b.c" in out and "00801ABC" in out  # non-secrets survive
    assert out.count(REDACTED) >= 8


def test_dict_args_and_extra_fields_are_redacted_by_name(captured):
    logger, stream = captured
    logger.debug(
        "%(who)s sent %(payload)s",
        {"who": "tenant 5", "payload": {"password": PASSWORD, "nested": [{"api_token": TOKEN}]}},
        extra={"extra_blob": {"dev_key": DEV_KEY, "organization_id": "0080X"}},
    )
    logger.debug("x", extra={"extra_blob": "", "session_id": SESSION, "apiToken": TOKEN})
    out = stream.getvalue()
    for canary in (PASSWORD, DEV_KEY, TOKEN, SESSION):
        assert canary not in out
    assert "tenant 5" in out and "0080X" in out


def test_session_id_and_fernet_shapes_are_redacted_without_a_name(captured):
    logger, stream = captured
    ciphertext = Fernet(Fernet.generate_key()).encrypt(b"anything").decode()
    log(logger, "got %s then stored %s", SESSION, ciphertext)
    out = stream.getvalue()
    assert SESSION not in out and ciphertext not in out
    assert "got [REDACTED] then stored [REDACTED]" in out


def test_registered_values_are_redacted_anywhere(captured):
    logger, stream = captured
    bill_logging.register_secret(PASSWORD)
    bill_logging.register_secret("abc")  # too short to register: would garble every log
    log(logger, "the user typed %s into the wrong box; abc", PASSWORD)
    out = stream.getvalue()
    assert PASSWORD not in out and "wrong box; abc" in out


def test_registry_is_bounded(monkeypatch):
    monkeypatch.setattr(bill_logging, "REGISTRY_SIZE", 3)
    bill_logging.forget_secrets()
    for n in range(5):
        bill_logging.register_secret(f"secret-value-{n}")
    assert list(bill_logging._registry) == [f"secret-value-{n}" for n in (2, 3, 4)]
    bill_logging.forget_secrets()


def test_tracebacks_and_exception_text_are_redacted(captured):
    logger, stream = captured
    try:
        raise ValueError(f"BILL said no to password={PASSWORD} with {SESSION}")
    except ValueError:
        logger.exception("link failed", extra={"extra_blob": ""})
    out = stream.getvalue()
    assert "ValueError" in out and "Traceback" in out
    assert PASSWORD not in out and SESSION not in out


def test_the_app_installs_the_filter_on_each_of_its_loggers():
    # Logger filters survive a project reconfiguring logging (a second django.setup(), e.g.
    # get_wsgi_application() in a test), which replaces handlers and their filters.
    for name in bill_logging.APP_LOGGERS:
        logger = logging.getLogger(name)
        assert sum(isinstance(f, RedactSecretsFilter) for f in logger.filters) == 1, name


@pytest.mark.parametrize("name", ["bill_integration", "bill_integration.sessions"])
def test_app_records_reach_an_unfiltered_handler_redacted(name):
    stream = io.StringIO()
    plain = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(plain)
    logger = logging.getLogger(name)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        logger.debug("login devKey=%s", DEV_KEY)
    finally:
        root.removeHandler(plain)
        logger.setLevel(old_level)
    assert "login devKey=[REDACTED]" in stream.getvalue() and DEV_KEY not in stream.getvalue()


def test_install_covers_existing_child_loggers():
    child = logging.getLogger("bill_integration.tests.child_before_install")
    bill_logging.install()
    assert sum(isinstance(f, RedactSecretsFilter) for f in child.filters) == 1
    stream = io.StringIO()
    plain = logging.StreamHandler(stream)  # no filter of its own
    child.addHandler(plain)
    child.propagate = False
    child.setLevel(logging.DEBUG)
    try:
        child.debug("apiToken=%s", TOKEN)
    finally:
        child.removeHandler(plain)
    assert TOKEN not in stream.getvalue() and "apiToken=[REDACTED]" in stream.getvalue()


def test_install_root_adds_the_filter_to_root_handlers_once():
    root = logging.getLogger()
    handler = logging.StreamHandler(io.StringIO())
    root.addHandler(handler)
    try:
        bill_logging.install(root=True)
        bill_logging.install(root=True)
        assert sum(isinstance(f, RedactSecretsFilter) for f in handler.filters) == 1
    finally:
        root.removeHandler(handler)


def test_redact_keeps_non_secret_structure():
    assert redact({"status": "active", "count": 3, "password": PASSWORD}) == {
        "status": "active",
        "count": 3,
        "password": REDACTED,
    }
    assert redact([1, None, {"token": ""}]) == [1, None, {"token": ""}]


def test_a_record_that_cannot_be_formatted_is_still_logged_redacted(captured):
    logger, stream = captured
    log(logger, "broken %s %s password=" + PASSWORD, "only one arg")
    out = stream.getvalue()
    assert "broken" in out and PASSWORD not in out
