"""The status document's cache (``api/status_cache.py``): what it saves, what it never serves.

A cached document must never outlive a write of its row (version or change marker), never be
served to another tenant, and never carry the first requester's rights, time or language.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone, translation

from bill_integration.api import serializers as status_serializers
from bill_integration.api import status_cache
from bill_integration.checks import check_status_cache
from bill_integration.models import BillConnection, ConnectionStatus
from bill_integration.services import locking
from tests.linking_support import CONNECTION_URL, api_as

pytestmark = pytest.mark.django_db


@pytest.fixture
def builds(monkeypatch):
    """How many times a status document was built from a row (a cache miss)."""
    calls = []
    real = status_serializers.connection_status

    def counting(connection, **kwargs):
        if connection is not None:
            calls.append(connection.pk)
        return real(connection, **kwargs)

    monkeypatch.setattr(status_cache, "connection_status", counting)
    return calls


def test_an_unchanged_row_is_built_once_then_read_from_the_cache(owner_api, linked, builds):
    first = owner_api.get(CONNECTION_URL).json()
    with CaptureQueriesContext(db_connection) as captured:
        second = owner_api.get(CONNECTION_URL).json()
    assert builds == [linked.pk]
    assert first["status"] == second["status"] == "active"
    table = BillConnection._meta.db_table
    reads = [q["sql"] for q in captured.captured_queries if table in q["sql"]]
    assert len(reads) == 1 and "organization_id" not in reads[0]  # the marker only


def test_cache_off_builds_every_time(owner_api, linked, builds, bill_settings):
    bill_settings(STATUS_CACHE_SECONDS=0)
    owner_api.get(CONNECTION_URL)
    owner_api.get(CONNECTION_URL)
    assert builds == [linked.pk, linked.pk]


def test_a_write_that_keeps_the_version_still_shows_at_once(owner_api, linked, builds):
    owner_api.get(CONNECTION_URL)
    row = BillConnection.objects.get(pk=linked.pk)
    row.last_error_code, row.last_error_message = "transient", "BILL was unreachable"
    # A failure's status write: fenced on the version, not bumping it (only updated_at moves).
    locking.fenced_write(row, row.version, ["last_error_code", "last_error_message"], bump=False)
    body = owner_api.get(CONNECTION_URL).json()
    assert body["last_error"]["code"] == "transient"
    assert len(builds) == 2


def test_a_status_change_shows_at_once(owner_api, linked):
    owner_api.get(CONNECTION_URL)
    BillConnection.objects.filter(pk=linked.pk).update(status=ConnectionStatus.DEGRADED)
    assert owner_api.get(CONNECTION_URL).json()["status"] == "degraded"


def test_a_write_of_the_last_use_alone_shows_at_once(owner_api, linked):
    owner_api.get(CONNECTION_URL)
    later = timezone.now() + timedelta(minutes=3)
    # What session._note_used writes: this column only, no updated_at, no version.
    BillConnection.objects.filter(pk=linked.pk).update(session_last_used_at=later)
    body = owner_api.get(CONNECTION_URL).json()
    assert body["session_last_used_at"] == later.isoformat().replace("+00:00", "Z")


def test_a_new_session_shows_at_once(owner_api, linked, builds):
    before = owner_api.get(CONNECTION_URL).json()
    row = BillConnection.objects.get(pk=linked.pk)
    row.session_obtained_at = row.session_obtained_at + timedelta(minutes=1)
    locking.fenced_write(row, row.version, ["session_obtained_at"], bump=True)
    after = owner_api.get(CONNECTION_URL).json()
    assert after["session_obtained_at"] != before["session_obtained_at"]
    assert len(builds) == 2


def test_unlinking_shows_at_once(owner_api, linked):
    assert owner_api.get(CONNECTION_URL).json()["linked"] is True
    assert owner_api.delete(CONNECTION_URL).status_code == 204
    assert owner_api.get(CONNECTION_URL).json()["linked"] is False


def test_rights_and_time_are_the_requesters_own(owner_api, linked, make_user, bill_clock):
    first = owner_api.get(CONNECTION_URL).json()
    assert first["can_change"] is True
    bill_clock.advance(90)
    member = api_as(make_user(linked.tenant, "member"))
    second = member.get(CONNECTION_URL).json()
    assert second["can_change"] is False  # the cached entry was made for an owner
    assert second["session_age_seconds"] >= first["session_age_seconds"] + 90
    assert second["server_time"] > first["server_time"]


def test_another_tenant_never_gets_the_cached_document(
    owner_api, linked, make_user, bill_connection
):
    from project.tenants.models import Tenant

    assert owner_api.get(CONNECTION_URL).json()["linked"] is True
    other = Tenant.objects.create(name="Other", slug="other")
    other_api = api_as(make_user(other, "owner"))
    assert other_api.get(CONNECTION_URL).json()["linked"] is False
    theirs = bill_connection(tenant=other, link=True)
    body = other_api.get(CONNECTION_URL).json()
    assert body["organization_id"] == theirs.organization_id != linked.organization_id
    stranger = api_as(make_user(None, None))
    assert stranger.get(CONNECTION_URL).status_code == 404  # access checked on a warm cache


def test_each_language_and_time_zone_gets_its_own_entry(owner_api, linked, builds):
    owner_api.get(CONNECTION_URL, HTTP_ACCEPT_LANGUAGE="en")
    owner_api.get(CONNECTION_URL, HTTP_ACCEPT_LANGUAGE="es")  # its words are not the same
    owner_api.get(CONNECTION_URL, HTTP_ACCEPT_LANGUAGE="en")
    assert builds == [linked.pk, linked.pk]
    marker = status_cache.read_marker(linked.tenant)
    with translation.override("en"), timezone.override("UTC"):
        utc = status_cache.cache_key(marker)
    with translation.override("en"), timezone.override("Europe/Madrid"):
        assert status_cache.cache_key(marker) != utc  # the trust's dates are local


def test_entries_live_status_cache_seconds(owner_api, linked, bill_settings, monkeypatch):
    bill_settings(STATUS_CACHE_SECONDS=7)
    timeouts = []
    real = status_cache.documents.set
    monkeypatch.setattr(
        status_cache.documents,
        "set",
        lambda key, value, timeout: timeouts.append(timeout) or real(key, value, timeout),
    )
    owner_api.get(CONNECTION_URL)
    assert timeouts == [7]


@pytest.mark.parametrize("value", [-1, 61, 2.5, "5", True, None])
def test_e013_refuses_a_bad_value(settings, value):
    settings.BILL_INTEGRATION = {**settings.BILL_INTEGRATION, "STATUS_CACHE_SECONDS": value}
    errors = check_status_cache()
    assert [e.id for e in errors] == ["bill_integration.E014"]
    assert "STATUS_CACHE_SECONDS" in errors[0].msg


@pytest.mark.parametrize("value", [0, 5, 60])
def test_e013_accepts_0_to_60(settings, value):
    settings.BILL_INTEGRATION = {**settings.BILL_INTEGRATION, "STATUS_CACHE_SECONDS": value}
    assert check_status_cache() == []
    call_command("check")
