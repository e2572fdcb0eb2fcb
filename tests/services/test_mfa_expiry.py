"""The sweep notices MFA trust ending before it bites: expiring once, expired once; bill_status."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection as db

from bill_integration.conf import now
from bill_integration.constants import MFA_TRUST_LIFETIME
from bill_integration.models import AuditEvent, BillConnection
from bill_integration.services import refresh_due
from bill_integration.services.trust import describe_trust, notify_expiry

pytestmark = pytest.mark.django_db

DAY = 24 * 3600


@pytest.fixture
def trusted(make_connection):
    """A connection trusted for payments just now (stored as services.mfa.validate leaves it)."""
    connection = make_connection()
    moment = now()
    connection.mfa_remember_id = "remember-me-canary-0123456789012345678901234567890123456789"
    connection.mfa_device = "Acme (bill_integration)"
    connection.mfa_trusted_at = moment
    connection.mfa_trust_expires_at = moment + MFA_TRUST_LIFETIME
    connection.session_trusted = True
    connection.save()
    return connection


def raw_remember_me(pk: int):
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT mfa_remember_id FROM bill_integration_billconnection WHERE id = %s", [pk]
        )
        return cursor.fetchone()[0]


def test_expiring_once_then_expired_once_and_the_id_is_dropped(trusted, bill_app, mfa_sent):
    bill_app.advance(25 * DAY - 60)
    assert notify_expiry() == (0, 0)
    bill_app.advance(60)
    assert notify_expiry() == (1, 0)
    assert notify_expiry() == (0, 0)  # once
    assert mfa_sent["connection_mfa_expiring"] == 1
    kwargs = mfa_sent.calls[-1][1]
    assert kwargs["expires_at"] == trusted.mfa_trust_expires_at
    assert kwargs["connection"].pk == trusted.pk and kwargs["tenant"] == trusted.tenant
    assert describe_trust(BillConnection.objects.get(pk=trusted.pk))["state"] == "expiring"
    assert raw_remember_me(trusted.pk) is not None

    bill_app.advance(5 * DAY)
    assert notify_expiry() == (0, 1)
    assert notify_expiry() == (0, 0)
    assert mfa_sent == {"connection_mfa_expiring": 1, "connection_mfa_expired": 1}
    stored = BillConnection.objects.get(pk=trusted.pk)
    assert raw_remember_me(trusted.pk) is None and stored.session_trusted is False
    assert describe_trust(stored)["state"] == "expired"
    assert list(
        AuditEvent.objects.filter(connection_id=trusted.pk, kind__startswith="mfa_")
        .order_by("id")
        .values_list("kind", flat=True)
    ) == ["mfa_expiring", "mfa_expired"]


def test_the_warning_follows_mfa_expiry_warning(trusted, bill_app, bill_settings, mfa_sent):
    bill_settings(MFA_EXPIRY_WARNING=timedelta(days=2))
    bill_app.advance(27 * DAY)
    assert notify_expiry() == (0, 0)
    bill_app.advance(DAY + 60)
    assert notify_expiry() == (1, 0)


def test_a_trust_already_over_gets_only_the_expired_notice(trusted, bill_app, mfa_sent):
    bill_app.advance(31 * DAY)
    assert notify_expiry() == (0, 1)
    assert mfa_sent == {"connection_mfa_expired": 1}


def test_the_sweep_sends_the_notices_and_needs_no_key_to_do_so(
    trusted, bill_app, settings, mfa_sent
):
    bill_app.advance(26 * DAY)
    settings.FIELD_ENCRYPTION_KEY = Fernet.generate_key().decode()  # nothing decrypts now
    refresh_due(dispatch=lambda connection_id: None)
    assert mfa_sent["connection_mfa_expiring"] == 1


def test_bill_status_lists_expiring_and_expired_trust(trusted, make_connection, bill_app):
    other = make_connection()
    other.mfa_trust_expires_at = now() + timedelta(days=2)
    other.mfa_remember_id = "another-remember-me-id-000000000000000000000000000000000"
    other.save()
    bill_app.advance(29 * DAY)  # trusted: 1 day left; other: ended a day ago
    out = StringIO()
    call_command("bill_status", "--json", stdout=out)
    rows = {row["connection_id"]: row["trust"] for row in json.loads(out.getvalue())["mfa_trust"]}
    assert rows == {trusted.pk: "expiring", other.pk: "expired"}
    tables = StringIO()
    call_command("bill_status", stdout=tables)
    assert "Trust for payments" in tables.getvalue() and "expiring" in tables.getvalue()
    for secret in (trusted.mfa_remember_id, other.mfa_remember_id):
        assert secret not in out.getvalue() + tables.getvalue()
