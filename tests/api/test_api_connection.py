"""The REST API: every endpoint with good and bad input, against the emulator and PostgreSQL."""

from __future__ import annotations

import json
import threading

import pytest
from django.db import connections

from bill_integration.models import AuditEvent, BillConnection, ConnectionStatus
from tests.linking_support import CONNECTION_URL, REFRESH_URL, api_as, credentials

pytestmark = pytest.mark.django_db

SECRET_NAMES = ("password", "dev_key", "api_token", "session_id")
REQUIRED = ("username", "password", "organization_id", "dev_key")


def put(client, data, **extra):
    return client.put(
        CONNECTION_URL, data=json.dumps(data), content_type="application/json", **extra
    )


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    return body


# --- GET ------------------------------------------------------------------------------------


def test_get_not_linked(owner_api):
    response = owner_api.get(CONNECTION_URL)
    assert response.status_code == 200
    body = response.json()
    assert body["linked"] is False and body["status"] == "not_linked"
    assert body["can_change"] is True
    assert body["organization_id"] is None


def test_get_linked_shows_status_and_never_a_secret(owner_api, linked, bill_account):
    response = owner_api.get(CONNECTION_URL)
    assert response.status_code == 200
    body = response.json()
    assert body["linked"] is True and body["status"] == "active"
    assert body["organization_id"] == bill_account.organization_id
    assert body["username"] == bill_account.username
    assert body["user_id"] == bill_account.user_id
    assert body["environment"] == "emulator" and body["api_version"] == "v3"
    assert body["session_obtained_at"] and body["session_age_seconds"] >= 0
    assert body["last_error"] is None and body["has_api_token"] is False
    for name in SECRET_NAMES:
        assert name not in body
    stored = BillConnection.objects.get(pk=linked.pk)
    for secret in (stored.password, stored.dev_key, stored.session_id):
        assert secret not in response.content.decode()


def test_get_shows_last_error_in_words(owner_api, linked):
    BillConnection.objects.filter(pk=linked.pk).update(
        status=ConnectionStatus.NEEDS_RELINK,
        last_error_code="invalid_credentials",
        last_error_message="BILL did not accept [BDC_1101]",
    )
    body = owner_api.get(CONNECTION_URL).json()
    assert body["status"] == "needs_relink"
    assert body["last_error"]["code"] == "invalid_credentials"
    assert "sandbox" in body["last_error"]["message"]


# --- PUT: good input --------------------------------------------------------------------------


def test_put_links_then_relinks(owner_api, tenant, bill_emulator, bill_account, bill_environment):
    response = put(owner_api, credentials(bill_account))
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["linked"] is True and body["organization_id"] == bill_account.organization_id
    for name in SECRET_NAMES:
        assert name not in body

    other = bill_emulator.state.add_account(username="second@example.com", password="p2")
    response = put(owner_api, credentials(other, api_token=other.api_token))
    assert response.status_code == 200
    assert response.json()["organization_id"] == other.organization_id
    assert response.json()["has_api_token"] is True
    assert BillConnection.objects.get(tenant=tenant).username == other.username


def test_put_with_unicode_password_links(owner_api, tenant, bill_emulator, bill_environment):
    account = bill_emulator.state.add_account(username="zoë@exämple.com", password="pässwörd ✓ ")
    response = put(owner_api, credentials(account))
    assert response.status_code == 201, response.content
    # Not trimmed: a trailing space is part of the password.
    assert BillConnection.objects.get(tenant=tenant).password == "pässwörd ✓ "


def test_put_environment_defaults_to_the_configured_default(
    owner_api, bill_account, bill_environment
):
    data = credentials(bill_account)
    del data["environment"], data["api_version"]
    response = put(owner_api, data)
    assert response.status_code == 201
    assert response.json()["environment"] == "emulator"
    assert response.json()["api_version"] == "v3"


def test_put_v2(owner_api, bill_account, bill_environment):
    response = put(owner_api, credentials(bill_account, api_version="v2"))
    assert response.status_code == 201, response.content
    assert response.json()["api_version"] == "v2"


def test_put_empty_api_token_means_none(owner_api, tenant, bill_account, bill_environment):
    for empty in ("", None):
        response = put(owner_api, credentials(bill_account, api_token=empty))
        assert response.status_code in (200, 201), response.content
        assert BillConnection.objects.get(tenant=tenant).api_token is None


def test_put_form_encoded_works_too(owner_api, bill_account, bill_environment):
    response = owner_api.put(CONNECTION_URL, data=credentials(bill_account), format="multipart")
    assert response.status_code == 201, response.content


# --- PUT: bad input -----------------------------------------------------------------------------


def test_put_empty_body_names_every_required_field(owner_api, bill_environment):
    body = assert_error(put(owner_api, {}), 400, "validation_error")
    assert set(REQUIRED) <= set(body["fields"])
    assert all(messages for messages in body["fields"].values())


@pytest.mark.parametrize("missing", REQUIRED)
def test_put_missing_field(owner_api, bill_account, bill_environment, missing):
    data = credentials(bill_account)
    del data[missing]
    body = assert_error(put(owner_api, data), 400, "validation_error")
    assert list(body["fields"]) == [missing]


@pytest.mark.parametrize("field", [*REQUIRED, "api_token"])
def test_put_10kb_string_is_refused_with_a_clear_message(
    owner_api, bill_account, bill_environment, field
):
    huge = "A" * 10_240
    body = assert_error(
        put(owner_api, credentials(bill_account, **{field: huge})), 400, "validation_error"
    )
    assert "no more than" in " ".join(body["fields"][field])
    assert huge not in json.dumps(body)
    assert bill_account.password not in json.dumps(body)


@pytest.mark.parametrize("field", [*REQUIRED, "api_token"])
@pytest.mark.parametrize("bad", ["abc\x00def", "line\nbreak", "bell\x07"])
def test_put_control_characters_are_refused(owner_api, bill_account, bill_environment, field, bad):
    body = assert_error(
        put(owner_api, credentials(bill_account, **{field: bad})), 400, "validation_error"
    )
    assert field in body["fields"]


@pytest.mark.parametrize("field", [*REQUIRED, "api_token"])
@pytest.mark.parametrize("bad", [12345, 1.5, True, ["a"], {"a": "b"}])
def test_put_wrong_types_are_refused(owner_api, bill_account, bill_environment, field, bad):
    body = assert_error(
        put(owner_api, credentials(bill_account, **{field: bad})), 400, "validation_error"
    )
    assert field in body["fields"]


@pytest.mark.parametrize("field", REQUIRED)
def test_put_null_and_empty_required_fields_are_refused(
    owner_api, bill_account, bill_environment, field
):
    for bad in (None, ""):
        body = assert_error(
            put(owner_api, credentials(bill_account, **{field: bad})), 400, "validation_error"
        )
        assert field in body["fields"]


@pytest.mark.parametrize("environment", ["staging", "", "SANDBOX", "x" * 10_240, 3])
def test_put_unknown_environment(owner_api, bill_account, bill_environment, environment):
    body = assert_error(
        put(owner_api, credentials(bill_account, environment=environment)), 400, "validation_error"
    )
    assert "environment" in body["fields"]
    if isinstance(environment, str) and len(environment) > 100:
        assert environment not in json.dumps(body)


@pytest.mark.parametrize("api_version", ["v4", "", "V3", 3])
def test_put_unknown_api_version(owner_api, bill_account, bill_environment, api_version):
    body = assert_error(
        put(owner_api, credentials(bill_account, api_version=api_version)), 400, "validation_error"
    )
    assert "api_version" in body["fields"]


@pytest.mark.parametrize("organization_id", ["12345", "009ABC", "008", "008 ABC", "008ABC!"])
def test_put_organization_id_must_look_like_bills(
    owner_api, bill_account, bill_environment, organization_id
):
    body = assert_error(
        put(owner_api, credentials(bill_account, organization_id=organization_id)),
        400,
        "validation_error",
    )
    assert "008" in " ".join(body["fields"]["organization_id"])


@pytest.mark.parametrize("username", ["not-an-email", "a b@example.com", "@example.com"])
def test_put_username_must_be_an_email(owner_api, bill_account, bill_environment, username):
    body = assert_error(
        put(owner_api, credentials(bill_account, username=username)), 400, "validation_error"
    )
    assert "username" in body["fields"]


def test_put_malformed_json(owner_api, bill_environment):
    response = owner_api.put(CONNECTION_URL, data=b'{"username": ', content_type="application/json")
    assert_error(response, 400, "malformed_request")


def test_put_json_list_body(owner_api, bill_environment):
    body = assert_error(put(owner_api, ["a", "b"]), 400, "validation_error")
    assert "non_field_errors" in body["fields"]


def test_put_unsupported_media_type(owner_api, bill_environment):
    response = owner_api.put(CONNECTION_URL, data=b"<xml/>", content_type="application/xml")
    assert_error(response, 415, "unsupported_media_type")


def test_bad_input_changes_nothing_stored(owner_api, linked, tenant, bill_account):
    before = BillConnection.objects.get(tenant=tenant)
    put(owner_api, credentials(bill_account, password="\x00" * 10))
    put(owner_api, {})
    after = BillConnection.objects.get(tenant=tenant)
    assert (after.version, after.password, after.session_id) == (
        before.version,
        before.password,
        before.session_id,
    )


# --- PUT: what BILL says -------------------------------------------------------------------------


def test_put_wrong_password_is_invalid_credentials_in_customer_words(
    owner_api, tenant, bill_account, bill_environment
):
    body = assert_error(
        put(owner_api, credentials(bill_account, password="wrong")), 400, "invalid_credentials"
    )
    assert "sandbox" in body["message"] and "production" in body["message"]
    assert "wrong" not in body["message"].replace("wrong environment", "")
    assert not BillConnection.objects.filter(tenant=tenant).exists()


def test_put_wrong_dev_key_is_invalid_dev_key(owner_api, bill_account, bill_environment):
    body = assert_error(
        put(owner_api, credentials(bill_account, dev_key="01NOTAKEYNOTAKEY000")),
        400,
        "invalid_dev_key",
    )
    assert "production" in body["message"]


def test_put_wrong_api_token(owner_api, bill_account, bill_environment):
    assert_error(
        put(owner_api, credentials(bill_account, api_token="nope")), 400, "invalid_api_token"
    )


def test_put_bill_unavailable_is_503(owner_api, bill_emulator, bill_account, bill_environment):
    bill_emulator.state.set_fault("status", status=503)
    assert_error(put(owner_api, credentials(bill_account)), 503, "bill_unavailable")


def test_put_bill_rate_limit_is_429_with_retry_after(
    owner_api, bill_emulator, bill_account, bill_environment
):
    bill_emulator.state.set_fault("error", code="BDC_1144")
    response = put(owner_api, credentials(bill_account))
    assert_error(response, 429, "rate_limited")
    assert int(response["Retry-After"]) >= 1


def test_put_unexpected_bill_answer_is_502(
    owner_api, bill_emulator, bill_account, bill_environment
):
    bill_emulator.state.set_fault("status", status=418)
    assert_error(put(owner_api, credentials(bill_account)), 502, "bill_unexpected_response")


@pytest.mark.postgresql(reason="row locks and concurrent writers: SQLite locks the whole database")
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_relinks_one_gets_409(
    tenant, make_user, bill_emulator, bill_account, bill_environment
):
    owner = make_user(tenant, "owner")
    admin = make_user(tenant, "admin")
    assert put(api_as(owner), credentials(bill_account)).status_code == 201
    first = bill_emulator.state.add_account(username="first@example.com", password="pw-1")
    second = bill_emulator.state.add_account(username="second@example.com", password="pw-2")
    bill_emulator.state.set_fault("latency", seconds=1.0, path="login")
    barrier = threading.Barrier(2)
    responses: list = [None, None]

    def run(index, user, account):
        try:
            client = api_as(user)
            barrier.wait(timeout=10)
            responses[index] = put(client, credentials(account))
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=run, args=(0, owner, first)),
        threading.Thread(target=run, args=(1, admin, second)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 409], [r.content for r in responses]
    loser = next(r for r in responses if r.status_code == 409)
    assert loser.json()["code"] == "conflict"


# --- DELETE ------------------------------------------------------------------------------------


def test_delete_unlinks(owner_api, linked, tenant, bill_emulator, bill_account):
    response = owner_api.delete(CONNECTION_URL)
    assert response.status_code == 204
    assert not BillConnection.objects.filter(tenant=tenant).exists()
    assert (
        bill_emulator.state.counters(organization_id=bill_account.organization_id)["logouts"] == 1
    )
    assert owner_api.get(CONNECTION_URL).json()["status"] == "not_linked"
    assert_error(owner_api.delete(CONNECTION_URL), 404, "not_linked")


def test_delete_ignores_a_body(owner_api, linked, tenant):
    response = owner_api.delete(
        CONNECTION_URL, data=json.dumps({"tenant": 999}), content_type="application/json"
    )
    assert response.status_code == 204


# --- POST refresh ------------------------------------------------------------------------------


def test_refresh_gets_a_new_session(owner_api, linked, tenant, bill_emulator, bill_account):
    old_session = BillConnection.objects.get(tenant=tenant).session_id
    response = owner_api.post(REFRESH_URL)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "active"
    new_session = BillConnection.objects.get(tenant=tenant).session_id
    assert new_session != old_session
    assert old_session not in response.content.decode()
    assert new_session not in response.content.decode()


def test_refresh_not_linked(owner_api):
    assert_error(owner_api.post(REFRESH_URL), 404, "not_linked")


def test_refresh_when_bill_refuses_stored_credentials(
    owner_api, linked, tenant, bill_emulator, bill_account
):
    bill_emulator.state.change_password(bill_account.username, "changed")
    response = owner_api.post(REFRESH_URL)
    assert response.status_code in (400, 409), response.content
    assert response.json()["code"] in ("invalid_credentials", "needs_relink")
    body = owner_api.get(CONNECTION_URL).json()
    assert body["status"] == "needs_relink"
    assert body["last_error"]["message"]


def test_refresh_when_bill_is_down(owner_api, linked, bill_emulator):
    bill_emulator.state.set_fault("status", status=503)
    response = owner_api.post(REFRESH_URL)
    assert response.status_code == 503, response.content
    assert response.json()["code"] in ("bill_unavailable", "session_unavailable")


def test_unknown_methods_answer_405_in_the_error_shape(owner_api):
    assert_error(owner_api.post(CONNECTION_URL), 405, "method_not_allowed")
    assert_error(owner_api.get(REFRESH_URL), 405, "method_not_allowed")


def test_every_link_attempt_is_audited(owner_api, bill_account, bill_environment):
    put(owner_api, credentials(bill_account, password="bad"))
    put(owner_api, credentials(bill_account))
    kinds = list(AuditEvent.objects.order_by("id").values_list("kind", flat=True))
    assert kinds == ["link_failed", "linked"]


def test_status_costs_four_queries_and_no_extra_role_or_token_lookup(
    client, tenant, owner, linked, bill_account
):
    """Session + user (authentication), membership with tenant (resolver, reused by the access
    policy), and the connection's change marker; on a cache miss also the connection with
    has_api_token annotated (status_cache.py): nothing else."""
    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    client.force_login(owner)
    for expected, connection_reads in ((5, 2), (4, 1)):  # cold cache, then warm
        with CaptureQueriesContext(db) as queries:
            response = client.get(CONNECTION_URL)
        assert response.status_code == 200 and response.json()["can_change"] is True
        assert response.json()["has_api_token"] is False
        sql = [q["sql"] for q in queries]
        assert len(sql) == expected, sql
        assert sum('FROM "tenants_membership"' in s for s in sql) == 1
        assert sum('FROM "bill_integration_billconnection"' in s for s in sql) == connection_reads


def test_has_api_token_comes_from_the_status_query(owner_api, linked, bill_settings):
    # This test writes api_token alone (no updated_at, unlike every write of the app), so it
    # turns the status cache off: it is about the query, not the cache.
    bill_settings(STATUS_CACHE_SECONDS=0)
    BillConnection.objects.filter(pk=linked.pk).update(api_token=None)
    assert owner_api.get(CONNECTION_URL).json()["has_api_token"] is False
    row = BillConnection.objects.get(pk=linked.pk)
    row.api_token = "canary-token-7d3e"
    row.save(update_fields=["api_token"])
    response = owner_api.get(CONNECTION_URL)
    assert response.json()["has_api_token"] is True
    assert "canary-token-7d3e" not in response.content.decode()
