"""The all-paths canary scan: secrets never leave the encrypted columns.

One scenario runs every path that handles a BILL secret with canary values (link, relink, a
refused relink, refresh, keep-alive, BILL failures of every kind, a relink after BILL refused
the stored password, the Celery sweep and refresh tasks on the real Redis broker, and
unexpected errors that make Django write error reports), against the emulator over real HTTP.
Then it scans, for every canary (the password, developer key and API token typed in, the
wrong password, and every session id the emulator issued):

* every column of every table in the database, except the four encrypted secret columns,
  and the decoded contents of Django's sessions;
* the DEBUG logs of every logger: both the records as emitted (before any redaction: the
  code must not log secrets at all) and the output of a handler configured as the README says
  (with ``RedactSecretsFilter``);
* Django's error reports (text and HTML, as ``AdminEmailHandler`` renders them) for unexpected
  errors inside link, refresh and the admin's link form;
* every API response body and header, and the admin's HTML pages;
* every key and value in the Redis databases of the Celery broker and of the limiters;
* ``repr()``/``str()`` of the connection (secrets loaded), the session handed to callers,
  the client's login result, and every exception raised on the way.

Each finding names the place and the canary, so a leak is fixed where it happens.
"""

from __future__ import annotations

import io
import itertools
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings as django_settings
from django.contrib.sessions.backends.db import SessionStore
from django.core.cache import cache
from django.db import connection as db
from django.test import Client
from django.views.debug import ExceptionReporter
from rest_framework.test import APIClient

from bill_integration import services, tasks
from bill_integration.client import get_client
from bill_integration.client import v2 as client_v2
from bill_integration.client import v3 as client_v3
from bill_integration.conf import keepalive_after_idle
from bill_integration.emulator import ids as emulator_ids
from bill_integration.exceptions import BillIntegrationError
from bill_integration.log_redaction import RedactSecretsFilter, forget_secrets
from bill_integration.models import SECRET_FIELDS, BillConnection

CONNECTION_URL = "/api/bill/connection/"
REFRESH_URL = "/api/bill/connection/refresh/"
ADMIN_ADD_URL = "/admin/bill_integration/billconnection/add/"

# Every canary carries this marker, so one search finds any of them, in any case.
MARKER = "cnry7"
PASSWORD = f"{MARKER}-Password-0aa1"
DEV_KEY = f"{MARKER}DEVKEY00000000001"
API_TOKEN = f"{MARKER}-apitoken-7Fq2xR9sLm4Tz8Wb1Yc6"
WRONG_PASSWORD = f"{MARKER}-WrongPassword-55e0"
NEW_PASSWORD = f"{MARKER}-NewPassword-9c3b"
ADMIN_PASSWORD = f"{MARKER}-AdminForm-41d7"


class Boom(RuntimeError):
    """An unexpected error deep inside the BILL client (a bug, not a BILL answer)."""


class Findings:
    """Where each canary was found; the test fails listing them all."""

    def __init__(self) -> None:
        self.found: list[str] = []
        self.scanned: dict[str, int] = {}

    def scan(self, place: str, text: Any) -> None:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        text = str(text)
        self.scanned[place] = self.scanned.get(place, 0) + len(text)
        lowered = text.lower()
        start = lowered.find(MARKER)
        while start != -1:
            snippet = text[max(0, start - 60) : start + 60].replace("\n", " ")
            self.found.append(f"{place}: …{snippet}…")
            start = lowered.find(MARKER, start + 1)


@pytest.fixture
def canary_session_ids(monkeypatch) -> list[str]:
    """The emulator issues session ids that carry the marker; the list collects them."""
    issued: list[str] = []
    counter = itertools.count(1)

    def session_id() -> str:
        value = f"!a{MARKER}Sess{next(counter):04d}" + "x" * 30
        issued.append(value)
        return value

    monkeypatch.setattr(emulator_ids, "session_id", session_id)
    return issued


@pytest.fixture
def logs() -> Iterator[dict[str, Any]]:
    """Everything logged at DEBUG: raw (as emitted) and through a documented handler."""
    raw_lines: list[str] = []
    records: list[logging.LogRecord] = []
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")

    class Raw(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)
            text = f"{record.name} {record.levelname} {record.getMessage()}"
            if record.exc_info:
                text += "\n" + formatter.formatException(record.exc_info)
            extras = {k: v for k, v in vars(record).items() if k not in STANDARD and k != "request"}
            raw_lines.append(f"{text} {extras!r}")

    STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "taskName"}
    filtered_stream = io.StringIO()
    filtered = logging.StreamHandler(filtered_stream)
    filtered.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s %(exc_text)s"))
    filtered.addFilter(RedactSecretsFilter())
    root = logging.getLogger()
    raw = Raw(level=logging.DEBUG)
    # Raw first: it must see each record before the filtered handler rewrites it.
    root.handlers.insert(0, raw)
    root.addHandler(filtered)
    names = ["", "bill_integration", "django", "django.request", "urllib3", "celery", "kombu"]
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    forget_secrets()
    try:
        yield {"raw": raw_lines, "records": records, "filtered": filtered_stream}
    finally:
        root.removeHandler(raw)
        root.removeHandler(filtered)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        forget_secrets()


def scan_response(findings: Findings, place: str, response: Any) -> None:
    findings.scan(f"{place} body", response.content)
    findings.scan(f"{place} headers", dict(response.items()))


def scan_database(findings: Findings) -> None:
    secret_columns = {BillConnection._meta.get_field(name).column for name in SECRET_FIELDS}
    with db.cursor() as cursor:
        for table in db.introspection.table_names(cursor):
            columns = [
                c.name
                for c in db.introspection.get_table_description(cursor, table)
                if not (table == BillConnection._meta.db_table and c.name in secret_columns)
            ]
            qn = db.ops.quote_name
            cursor.execute(
                f"SELECT {', '.join(qn(c) + '::text' for c in columns)} FROM {qn(table)}"
            )
            for row in cursor.fetchall():
                findings.scan(f"database {table}", row)
    for session_key in SessionStore.get_model_class().objects.values_list("session_key", flat=True):
        findings.scan("database django_session (decoded)", SessionStore(session_key).load())


def redis_dump(url: str) -> Iterator[tuple[str, Any]]:
    client = redis.Redis.from_url(url)
    for key in client.scan_iter(count=500):
        kind = client.type(key).decode()
        value: Any
        if kind == "string":
            value = client.get(key)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "set":
            value = client.smembers(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            value = client.xrange(key)
        else:
            value = kind
        yield key.decode(errors="replace"), value


def broker_queue_length(url: str) -> int:
    client = redis.Redis.from_url(url)
    return sum(client.llen(key) for key in client.scan_iter() if client.type(key) == b"list")


def error_reports(findings: Findings, logs: dict[str, Any], place: str) -> int:
    """Render every django.request error report (as AdminEmailHandler would) and scan it.

    Findings name the frame (module.function) and local variable, or the request part, that
    shows a canary: that is where ``sensitive_variables``/``sensitive_post_parameters`` is
    missing.
    """
    count = 0
    template_logger = logging.getLogger("django.template")
    old_level = template_logger.level
    template_logger.setLevel(logging.WARNING)  # the renderer's own DEBUG chatter is not a leak
    try:
        for record in logs["records"]:
            if record.name != "django.request" or not record.exc_info:
                continue
            if record.exc_info[0] is not Boom:
                continue
            request = getattr(record, "request", None)
            reporter = ExceptionReporter(request, *record.exc_info, is_email=True)
            data = reporter.get_traceback_data()
            before = len(findings.found)
            for frame in data["frames"]:
                where = (
                    f"{place} error report frame {frame['filename'].split('site-packages/')[-1]}"
                )
                for name, value in frame["vars"]:
                    findings.scan(f"{where} {frame['function']}() local {name!r}", value)
            for part in (
                "filtered_POST_items",
                "request_GET_items",
                "request_COOKIES_items",
                "request_FILES_items",
                "request_meta",
                "settings",
                "exception_value",
            ):
                findings.scan(f"{place} error report {part} ({request.path})", data.get(part))
            if len(findings.found) == before:
                findings.scan(f"{place} error report (text)", reporter.get_traceback_text())
                findings.scan(f"{place} error report (html)", reporter.get_traceback_html())
            count += 1
    finally:
        template_logger.setLevel(old_level)
    return count


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_no_canary_anywhere_after_every_path(
    tenant,
    make_user,
    bill_emulator,
    bill_environment,
    bill_clock,
    canary_session_ids,
    logs,
    monkeypatch,
    admin_user,
):
    findings = Findings()
    raised: list[BaseException] = []
    state = bill_emulator.state
    account = state.add_account(
        username="ap-canary@example.com",
        password=PASSWORD,
        dev_key=DEV_KEY,
        api_token=API_TOKEN,
    )
    owner = make_user(tenant, "owner")
    api = APIClient()
    api.force_login(owner)
    creds = {
        "username": account.username,
        "password": PASSWORD,
        "organization_id": account.organization_id,
        "dev_key": DEV_KEY,
        "api_token": API_TOKEN,
        "environment": bill_environment,
        "api_version": "v3",
    }
    broker_url = django_settings.CELERY_BROKER_URL
    redis.Redis.from_url(broker_url).delete("celery")
    cache.clear()  # link throttle counters of earlier tests

    # --- link, read, relink, refused relink, refresh, keep-alive -----------------------------
    response = api.put(CONNECTION_URL, creds, format="json")
    assert response.status_code == 201, response.content
    scan_response(findings, "PUT link", response)
    scan_response(findings, "GET status", api.get(CONNECTION_URL))
    response = api.put(CONNECTION_URL, creds, format="json")
    assert response.status_code == 200, response.content
    scan_response(findings, "PUT relink", response)
    response = api.put(CONNECTION_URL, {**creds, "password": WRONG_PASSWORD}, format="json")
    assert response.status_code == 400, response.content
    scan_response(findings, "PUT refused relink", response)
    response = api.post(REFRESH_URL)
    assert response.status_code == 200, response.content
    scan_response(findings, "POST refresh", response)

    session = services.get_session(tenant)
    info = session.request("GET", "/v3/login/session")
    findings.scan("session.request result", info)
    findings.scan("repr(BillSession)", repr(session) + str(session))
    services.keep_alive(tenant)
    connection = BillConnection.objects.get(tenant=tenant)  # secrets loaded and decrypted
    assert connection.password == PASSWORD  # (the canary really is stored)
    findings.scan("repr(BillConnection)", repr(connection) + str(connection))
    login_result = get_client(bill_environment, "v3").login(
        username=account.username,
        password=PASSWORD,
        organization_id=account.organization_id,
        dev_key=DEV_KEY,
    )
    findings.scan("repr(LoginResult)", repr(login_result) + str(login_result))

    # --- BILL failures: transient, rate limit, refused stored password, then relink ----------
    for fault, expected in (
        ({"kind": "status", "status": 503}, 503),
        ({"kind": "error", "code": "BDC_1144"}, 429),
    ):
        state.set_fault(**fault)
        try:
            services.refresh(tenant, force=True)
        except BillIntegrationError as exc:
            raised.append(exc)
        response = api.post(REFRESH_URL)
        assert response.status_code == expected, response.content
        scan_response(findings, f"POST refresh under fault {fault}", response)
        state.clear_faults()
    bill_clock.advance(3600)  # past the BDC_1144 pause of the developer key
    state.change_password(account.username, NEW_PASSWORD)
    response = api.post(REFRESH_URL)
    assert response.status_code in (400, 409), response.content
    scan_response(findings, "POST refresh refused (BDC_1101)", response)
    try:
        services.get_session(tenant)
    except BillIntegrationError as exc:
        raised.append(exc)
    response = api.put(CONNECTION_URL, {**creds, "password": NEW_PASSWORD}, format="json")
    assert response.status_code == 200, response.content
    scan_response(findings, "PUT relink after refusal", response)

    # --- Celery: the sweep and a refresh, on the real Redis broker -------------------------
    bill_clock.advance(keepalive_after_idle().total_seconds() + 30)  # due for a keep-alive
    due = BillConnection.objects.without_secrets().get(tenant=tenant)
    assert tasks.refresh_due_sessions.apply().get() >= 1, (
        due.status,
        due.last_error_code,
        due.next_attempt_at,
        due.session_last_used_at,
        due.session_obtained_at,
        bill_clock.now() if hasattr(bill_clock, "now") else None,
    )
    assert broker_queue_length(broker_url) >= 1  # the sweep's messages sit in Redis
    tasks.refresh_session.apply_async((connection.pk,))
    findings.scan("task result", tasks.refresh_session.apply(args=(connection.pk,)).get())
    for url in {broker_url, getattr(django_settings, "REDIS_URL", broker_url)}:
        for key, value in redis_dump(url):
            findings.scan(f"redis {url} key", key)
            findings.scan(f"redis {url} {key}", value)

    # --- unexpected errors: Django's error reports ------------------------------------------
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise Boom("unexpected failure while reading BILL's answer")

    crashing = Client(raise_request_exception=False)
    crashing.force_login(owner)
    admin = Client(raise_request_exception=False)
    admin.force_login(admin_user)
    from project.tenants.models import Tenant

    other = Tenant.objects.create(name="Other", slug="other")
    state.add_account(
        username="admin-canary@example.com", password=ADMIN_PASSWORD, dev_key=DEV_KEY, api_token=""
    )
    with monkeypatch.context() as patch:
        patch.setattr(client_v3, "raise_for_answer", boom)
        patch.setattr(client_v2, "raise_for_answer", boom)
        for version in ("v3", "v2"):
            response = crashing.put(
                CONNECTION_URL,
                {**creds, "password": NEW_PASSWORD, "api_version": version},
                content_type="application/json",
            )
            assert response.status_code == 500
            scan_response(findings, f"PUT link 500 ({version})", response)
        response = crashing.post(REFRESH_URL)
        assert response.status_code == 500
        scan_response(findings, "POST refresh 500", response)
        response = admin.post(
            ADMIN_ADD_URL,
            {
                "tenant": other.pk,
                "environment": bill_environment,
                "api_version": "v3",
                "username": "admin-canary@example.com",
                "organization_id": account.organization_id,
                "password": ADMIN_PASSWORD,
                "dev_key": DEV_KEY,
                "api_token": "",
            },
        )
        assert response.status_code == 500
    assert error_reports(findings, logs, "unexpected errors") == 4

    # --- admin pages -------------------------------------------------------------------------
    admin_ok = Client()
    admin_ok.force_login(admin_user)
    for url in (
        "/admin/bill_integration/billconnection/",
        f"/admin/bill_integration/billconnection/{connection.pk}/change/",
        "/admin/bill_integration/auditevent/",
        "/admin/",
    ):
        page = admin_ok.get(url)
        assert page.status_code == 200, url
        scan_response(findings, f"admin {url}", page)

    # --- exceptions, database, logs --------------------------------------------------------
    for exc in raised:
        findings.scan(f"exception {type(exc).__name__}", f"{exc!r} {exc!s} {exc.args!r}")
    scan_database(findings)
    for line in logs["raw"]:
        findings.scan("log record (as emitted)", line)
    findings.scan("log output (RedactSecretsFilter handler)", logs["filtered"].getvalue())

    # The scan saw what it claims to have seen.
    assert canary_session_ids, "the emulator issued no session"
    assert len(logs["raw"]) > 20
    assert findings.scanned["database bill_integration_auditevent"] > 0
    redis.Redis.from_url(broker_url).delete("celery")  # the messages no worker consumed
    assert findings.found == [], "\n".join(findings.found[:40])
