"""Hostile and accidental input to the REST API: refused in the API's error shape, before BILL.

* Credentials whose characters BILL cannot receive (an API token with a zero-width space, a
  developer key with a curly quote) are a ``validation_error`` naming the field and the
  character: nothing stored, no call to BILL (they used to be a 500 after BILL's login).
* Bodies that break parsers (JSON nested 100,000 deep, bodies over Django's size limit, too
  many form fields, JSON that is not an object) get ``{"code", "message"}``, never a 500 or
  Django's HTML 400 page.
* An unexpected error inside a view makes an error report (the admins' mail, with HTML, and
  the debug page) that shows no request body, no POST value and no secret.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.utils.log import AdminEmailHandler
from rest_framework.settings import api_settings

from bill_integration import services, validators
from bill_integration.api.parsers import MAX_JSON_DEPTH, BillJSONParser, json_depth_exceeds
from bill_integration.api.serializers import LinkSerializer
from bill_integration.api.views import ConnectionRefreshView, ConnectionView
from bill_integration.models import BillConnection
from tests.linking_support import CONNECTION_URL, REFRESH_URL, api_as, credentials

pytestmark = pytest.mark.django_db

CREDENTIAL_FIELDS = ("username", "password", "organization_id", "dev_key", "api_token")
FIELD_WORDS = {
    "username": "user name",
    "password": "password",
    "organization_id": "organization ID",
    "dev_key": "developer key",
    "api_token": "API token",
}
INVISIBLE = {
    "\u200b": "U+200B",  # zero-width space
    "\ufeff": "U+FEFF",  # byte order mark
    "\u202e": "U+202E",  # right-to-left override
    "\u2060": "U+2060",  # word joiner
    "\u00ad": "U+00AD",  # soft hyphen
    "\u3164": "U+3164",  # Hangul filler
    "\u2028": "U+2028",  # line separator
}


def put(client: Any, body: Any, **extra: Any) -> Any:
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.put(CONNECTION_URL, data=data, content_type="application/json", **extra)


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    return body


def with_char(account: Any, field: str, char: str) -> dict[str, Any]:
    """The account's good credentials, ``char`` put in the middle of ``field``."""
    data = credentials(account, api_token=account.api_token)
    value = data[field]
    data[field] = value[:3] + char + value[3:]
    return data


def assert_bill_never_called(emulator: Any) -> None:
    counters = emulator.state.counters()
    assert counters["calls"] == 0 and counters["logins"] == 0, counters


# --- 1. Credential characters, checked before any BILL call ------------------------------------


@pytest.mark.parametrize("field", CREDENTIAL_FIELDS)
@pytest.mark.parametrize("char", list(INVISIBLE))
def test_invisible_characters_are_refused_naming_field_and_character(
    owner_api, tenant, bill_emulator, bill_account, bill_environment, field, char
):
    body = assert_error(
        put(owner_api, with_char(bill_account, field, char)), 400, "validation_error"
    )
    assert list(body["fields"]) == [field]
    message = " ".join(body["fields"][field])
    assert "invisible character" in message and INVISIBLE[char] in message
    assert f"The {FIELD_WORDS[field]} " in message
    assert "copied by accident" in message
    assert not BillConnection.objects.filter(tenant=tenant).exists()
    assert_bill_never_called(bill_emulator)


def test_api_token_with_zero_width_space_no_longer_logs_in_then_fails(
    owner_api, tenant, bill_emulator, bill_account, bill_environment
):
    """The review's case: it was HTTP 500 after BILL had already logged in (a session left)."""
    data = credentials(bill_account, api_token=bill_account.api_token + "\u200b")
    body = assert_error(put(owner_api, data), 400, "validation_error")
    assert body["fields"]["api_token"] == [
        "The API token contains an invisible character (U+200B); it was probably copied by "
        "accident. Paste or type it again."
    ]
    assert_bill_never_called(bill_emulator)
    assert bill_emulator.state.active_sessions() == 0


@pytest.mark.parametrize("field", ["dev_key", "api_token"])
@pytest.mark.parametrize(
    ("char", "named"),
    [
        ("\u2019", "U+2019 RIGHT SINGLE QUOTATION MARK"),  # a quote made curly
        ("\u00e9", "U+00E9 LATIN SMALL LETTER E WITH ACUTE"),  # Latin-1, still never in a key
        ("\U0001f600", "U+1F600 GRINNING FACE"),  # not Latin-1: requests could not send it
    ],
)
def test_header_credentials_must_be_visible_ascii(
    owner_api, tenant, bill_emulator, bill_account, bill_environment, field, char, named
):
    body = assert_error(
        put(owner_api, with_char(bill_account, field, char)), 400, "validation_error"
    )
    message = " ".join(body["fields"][field])
    assert f"The {FIELD_WORDS[field]} contains the character {named}," in message
    assert char not in message  # named by code point, never echoed
    assert not BillConnection.objects.filter(tenant=tenant).exists()
    assert_bill_never_called(bill_emulator)


@pytest.mark.parametrize("field", ["dev_key", "api_token"])
@pytest.mark.parametrize("where", ["start", "middle", "end"])
@pytest.mark.parametrize("space", [" ", "\u00a0", "\u3000"])
def test_header_credentials_hold_no_space(
    owner_api, bill_emulator, bill_account, bill_environment, field, where, space
):
    data = credentials(bill_account, api_token=bill_account.api_token)
    value = data[field]
    data[field] = {"start": space + value, "middle": value[:4] + space + value[4:]}.get(
        where, value + space
    )
    body = assert_error(put(owner_api, data), 400, "validation_error")
    message = " ".join(body["fields"][field])
    assert "contains a space" in message and f"U+{ord(space):04X}" in message
    assert_bill_never_called(bill_emulator)


def test_lone_surrogate_is_refused_not_a_database_error(
    owner_api, tenant, bill_emulator, bill_account, bill_environment
):
    raw = json.dumps(credentials(bill_account)).replace(
        json.dumps(bill_account.password), '"pw\\ud800x"'
    )
    body = assert_error(put(owner_api, raw), 400, "validation_error")
    assert "U+D800" in " ".join(body["fields"]["password"])
    assert_bill_never_called(bill_emulator)


@pytest.mark.parametrize(
    "password",
    [
        "pässwörd ’quoted’ ✓",  # curly quotes and accents: only header fields must be ASCII
        "family \U0001f468\u200d\U0001f469\u200d\U0001f467 pw",  # joiners inside an emoji
        "heart \u2764\ufe0f\u200d\U0001f525 pw",  # variation selector, joiner, emoji
        "emoji \U0001f600 pw",
    ],
)
def test_unicode_passwords_still_link(owner_api, tenant, bill_emulator, bill_environment, password):
    account = bill_emulator.state.add_account(username="unicode@example.com", password=password)
    response = put(owner_api, credentials(account))
    assert response.status_code == 201, response.content
    assert BillConnection.objects.get(tenant=tenant).password == password


def test_a_refused_relink_keeps_the_stored_credentials(
    owner_api, tenant, linked, bill_emulator, bill_account
):
    before = BillConnection.objects.get(tenant=tenant)
    logins = bill_emulator.state.counters()["logins"]
    data = credentials(bill_account, dev_key=bill_account.dev_key + "\u200b")
    assert_error(put(owner_api, data), 400, "validation_error")
    after = BillConnection.objects.get(tenant=tenant)
    assert (after.version, after.dev_key, after.password, after.session_id) == (
        before.version,
        before.dev_key,
        before.password,
        before.session_id,
    )
    assert bill_emulator.state.counters()["logins"] == logins


def test_messages_never_contain_the_value():
    canary = "canary-token-Q7mW2-do-not-leak"
    messages: list[str] = []
    for field in CREDENTIAL_FIELDS:
        for bad in ("\u200b", "\x00", "\ud800", "\u2019", " "):
            validator = validators.CredentialCharactersValidator(field)
            try:
                validator(canary + bad)
            except ValidationError as exc:
                messages.extend(exc.messages)
    assert len(messages) == 19  # all but "’" and " " in user name and password, " " in the ID
    assert all(canary not in message for message in messages)


def test_validator_is_per_credential_field():
    with pytest.raises(ValueError, match="environment"):
        validators.CredentialCharactersValidator("environment")
    assert validators.CredentialCharactersValidator("dev_key") == (
        validators.CredentialCharactersValidator("dev_key")
    )
    username_checks = validators.credential_validators("username")
    assert validators.username_validator in username_checks
    assert validators.CredentialCharactersValidator("username") in username_checks


# --- 2. Hostile bodies get the API's JSON error shape -------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,
        b'{"password": ' + b"[" * 100_000,
        b'{"a": ' * 100_000,
        b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1),
    ],
    ids=["arrays", "inside-an-object", "objects", "one-level-too-deep"],
)
def test_too_deep_json_is_malformed_request(owner_api, bill_emulator, bill_environment, body):
    body_json = assert_error(put(owner_api, body), 400, "malformed_request")
    assert "too deeply" in body_json["message"]
    assert_bill_never_called(bill_emulator)


def test_json_at_the_depth_limit_is_parsed(owner_api, bill_account, bill_environment):
    nested: Any = "x"
    for _ in range(MAX_JSON_DEPTH - 1):  # the body object is the outermost level
        nested = [nested]
    body = assert_error(
        put(owner_api, credentials(bill_account, username=nested)), 400, "validation_error"
    )
    assert list(body["fields"]) == ["username"]


def test_depth_check_is_iterative():
    deep: Any = []
    for _ in range(50_000):  # far past the recursion limit
        deep = [deep, {"k": 1}]
    assert json_depth_exceeds(deep, MAX_JSON_DEPTH)
    assert not json_depth_exceeds({"a": [1, {"b": [2]}]}, 4)  # object, array, object, array
    assert json_depth_exceeds({"a": [1, {"b": [2]}]}, 3)
    assert not json_depth_exceeds("scalar", 0)


def test_body_over_the_size_limit_is_413_in_the_error_shape(
    owner_api, bill_emulator, bill_environment, settings
):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    canary = "canary-pw-Z1xQ9-do-not-leak"
    body = json.dumps({"password": canary, "padding": "x" * 5000})
    response = put(owner_api, body)
    answer = assert_error(response, 413, "request_too_large")
    assert "4096" in answer["message"]
    assert canary not in response.content.decode()
    assert_bill_never_called(bill_emulator)


def test_default_size_limit_applies(owner_api, bill_environment):
    body = b'{"password": "' + b"x" * (3 * 1024 * 1024) + b'"}'
    assert_error(put(owner_api, body), 413, "request_too_large")


def test_too_many_form_fields_is_413(owner_api, bill_environment, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 50
    body = "&".join(f"field{i}=x" for i in range(60))
    response = owner_api.put(
        CONNECTION_URL, data=body, content_type="application/x-www-form-urlencoded"
    )
    assert_error(response, 413, "request_too_large")


@pytest.mark.parametrize(
    ("body", "got"),
    [
        ('["a", "b"]', "an array"),
        ('"username"', "a string"),
        ("42", "a number"),
        ("true", "true or false"),
        ("null", "null"),
    ],
)
def test_json_that_is_not_an_object_is_a_clear_400(
    owner_api, bill_emulator, bill_environment, body, got
):
    answer = assert_error(put(owner_api, body), 400, "validation_error")
    (message,) = answer["fields"]["non_field_errors"]
    assert "must be a JSON object" in message and message.endswith(f"not {got}.")
    assert "username" in message and "dev_key" in message
    assert_bill_never_called(bill_emulator)


def test_the_parser_is_the_apps_own_not_the_projects():
    for view in (ConnectionView, ConnectionRefreshView):
        assert view.parser_classes[0] is BillJSONParser
    assert BillJSONParser not in api_settings.DEFAULT_PARSER_CLASSES


# --- 3. Error reports: no body, no POST value, no secret ----------------------------------------

CANARY_PASSWORD = "canary-pw-Z1xQ9-do-not-leak"
CANARY_DEV_KEY = "01CANARYDEVKEYZZ9Q01"
CANARY_TOKEN = "canary-token-Q7mW2-do-not-leak"
CANARY_EXTRA = "canary-extra-P3vL8-do-not-leak"  # a field the view does not know, same fate
CANARIES = (CANARY_PASSWORD, CANARY_DEV_KEY, CANARY_TOKEN, CANARY_EXTRA)


class Crash(RuntimeError):
    """The unexpected error of these tests (not one of the app's own)."""


@pytest.fixture
def error_mails(settings) -> Iterator[list[Any]]:
    """Mail the admins on every django.request error, with the HTML report attached.

    Django's default ``mail_admins`` handler (text only) mails each error too: every mail in
    the outbox is scanned, and each test counts the HTML ones (one per error).
    """
    settings.ADMINS = [("Ops", "ops@example.com")]
    settings.DEBUG = False
    handler = AdminEmailHandler(include_html=True)
    handler.setLevel(logging.ERROR)
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    mail.outbox.clear()
    try:
        yield mail.outbox
    finally:
        logger.removeHandler(handler)


def canary_body(account: Any) -> dict[str, Any]:
    return {
        "username": account.username,
        "password": CANARY_PASSWORD,
        "organization_id": account.organization_id,
        "dev_key": CANARY_DEV_KEY,
        "api_token": CANARY_TOKEN,
        "Password": CANARY_EXTRA,
        "environment": "emulator",
    }


def reports(outbox: list[Any], expected: int) -> list[tuple[str, str]]:
    """Each error mail's text (subject and body) and HTML report ("" for a text-only mail).

    ``expected`` is the number of errors: that many mails carry the HTML report.
    """
    found = []
    for message in outbox:
        html = [content for content, mimetype in message.alternatives if mimetype == "text/html"]
        found.append((message.subject + "\n" + message.body, html[0] if html else ""))
    assert sum(bool(html) for _text, html in found) == expected, "one HTML report per error"
    return found


def assert_no_canary(where: str, text: str) -> None:
    for canary in CANARIES:
        assert canary not in text, f"a canary leaked into {where}"


def crashing_client(user: Any) -> Any:
    client = api_as(user)
    client.raise_request_exception = False
    return client


def test_a_crash_in_the_link_service_mails_no_secret(
    owner, tenant, bill_account, bill_environment, error_mails, monkeypatch
):
    def crash(tenant: Any, **credentials: Any) -> Any:
        # Its own locals hold every secret, as a real service's frames would.
        raise Crash("unexpected failure in link")

    monkeypatch.setattr(services, "link", crash)
    client = crashing_client(owner)
    body = canary_body(bill_account)
    responses = [
        client.put(CONNECTION_URL, data=json.dumps(body), content_type="application/json"),
        client.put(CONNECTION_URL, data=body, format="multipart"),
        client.put(CONNECTION_URL, data=body, format="json"),
    ]
    assert [response.status_code for response in responses] == [500, 500, 500]
    for number, (text, html) in enumerate(reports(error_mails, 3)):
        # The reports are real: they name the error and show the frame that raised it.
        assert "Crash" in text and "unexpected failure in link" in text
        if html:  # the frame that raised, and its local variable (hidden)
            assert "in crash" in html and "<td>credentials</td>" in html
        assert_no_canary(f"error mail {number} (text)", text)
        assert_no_canary(f"error mail {number} (html)", html)


def test_a_crash_while_validating_mails_no_secret(
    owner, bill_account, bill_environment, error_mails, monkeypatch
):
    """A frame whose ``self`` is the serializer: its repr would print the submitted data."""

    def crash(self: LinkSerializer, attrs: dict[str, Any]) -> Any:
        raise Crash("unexpected failure in validation")

    monkeypatch.setattr(LinkSerializer, "validate", crash)
    response = crashing_client(owner).put(
        CONNECTION_URL, data=json.dumps(canary_body(bill_account)), content_type="application/json"
    )
    assert response.status_code == 500
    for text, html in reports(error_mails, 1):
        assert "unexpected failure in validation" in text
        if html:  # the frame whose ``self`` is the serializer, with its variables hidden
            assert "<td>self</td>" in html and "<td>attrs</td>" in html
        assert_no_canary("error mail (text)", text)
        assert_no_canary("error mail (html)", html)


def test_a_crash_in_refresh_mails_no_body(owner, linked, error_mails, monkeypatch):
    def crash(tenant: Any, **options: Any) -> Any:
        raise Crash("unexpected failure in refresh")

    monkeypatch.setattr(services, "refresh", crash)
    client = crashing_client(owner)
    response = client.post(
        REFRESH_URL, data=json.dumps({"password": CANARY_PASSWORD}), content_type="application/json"
    )
    assert response.status_code == 500
    response = client.post(REFRESH_URL, data={"dev_key": CANARY_DEV_KEY}, format="multipart")
    assert response.status_code == 500
    for text, html in reports(error_mails, 2):
        assert "unexpected failure in refresh" in text
        assert_no_canary("refresh error mail (text)", text)
        assert_no_canary("refresh error mail (html)", html)


def test_the_debug_page_shows_no_secret_either(
    owner, bill_account, bill_environment, settings, monkeypatch
):
    """With DEBUG on, Django's own filter is off; the API's stays on (staging servers)."""

    def crash(tenant: Any, **credentials: Any) -> Any:
        raise Crash("unexpected failure in link")

    settings.DEBUG = True
    monkeypatch.setattr(services, "link", crash)
    client = crashing_client(owner)
    body = canary_body(bill_account)
    for response in (
        client.put(CONNECTION_URL, data=json.dumps(body), content_type="application/json"),
        client.put(CONNECTION_URL, data=body, format="multipart"),
    ):
        assert response.status_code == 500
        page = response.content.decode()
        assert "unexpected failure in link" in page  # the technical 500 page, rendered
        assert_no_canary("debug page", page)
