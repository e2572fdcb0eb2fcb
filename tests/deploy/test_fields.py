"""Secrets are ciphertext at rest, fail closed under a wrong key, and never leak through repr()."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.db import connection as db
from django.db import transaction
from django.db.models import F, Value

from bill_integration.exceptions import DecryptionFailed
from bill_integration.models import SECRET_FIELDS, BillConnection

CANARIES = {
    "password": "canary-pw-7Qx!",
    "dev_key": "01CANARYDEVKEY000001",
    "api_token": "canary-api-token-9f2",
    "session_id": "!acanarysession0000000000000000000000000000000",
    "mfa_remember_id": "canary-remember-me-id-0000000000000000000000000000000000000000",
    "console_token": "canary-console-token-0000000000000000",
    "oauth_client_secret": "canary-oauth-client-secret-000000000000",
}


@pytest.fixture
def stored(tenant):
    return BillConnection.objects.create(
        tenant=tenant,
        environment="sandbox",
        username="ap@acme.test",
        organization_id="00801ACMEORGANIZA1bcd",
        **CANARIES,
    )


def raw_row(pk: int) -> dict[str, str]:
    with db.cursor() as cursor:
        cursor.execute(
            f"SELECT {', '.join(SECRET_FIELDS)} FROM bill_integration_billconnection WHERE id = %s",
            [pk],
        )
        return dict(zip(SECRET_FIELDS, cursor.fetchone()))


def test_raw_columns_hold_ciphertext_that_decrypts_to_the_secret(stored, settings):
    raw = raw_row(stored.pk)
    fernet = Fernet(settings.FIELD_ENCRYPTION_KEY)
    for field, secret in CANARIES.items():
        assert secret not in raw[field]
        assert raw[field].startswith("gAAAAA")  # a Fernet token, version byte 0x80
        assert fernet.decrypt(raw[field].encode()).decode() == secret
    reloaded = BillConnection.objects.get(pk=stored.pk)
    assert {f: getattr(reloaded, f) for f in SECRET_FIELDS} == CANARIES


def test_a_row_written_under_key_a_and_read_with_only_key_b_raises(stored, settings):
    settings.FIELD_ENCRYPTION_KEY = Fernet.generate_key().decode()
    with pytest.raises(DecryptionFailed) as caught:
        BillConnection.objects.get(pk=stored.pk)
    message = str(caught.value)
    assert "BillConnection." in message and "FIELD_ENCRYPTION_KEY" in message
    assert not any(
        secret in message or secret in repr(caught.value) for secret in CANARIES.values()
    )
    # Plain columns stay readable, so status pages still work.
    row = BillConnection.objects.without_secrets().get(pk=stored.pk)
    assert row.organization_id == "00801ACMEORGANIZA1bcd"


def test_key_rotation_list_reads_old_rows_and_writes_with_the_first_key(stored, settings):
    old_key = settings.FIELD_ENCRYPTION_KEY
    new_key = Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEY = [new_key, old_key]
    row = BillConnection.objects.get(pk=stored.pk)
    assert row.password == CANARIES["password"]
    row.password = "rotated-pw"
    row.save(update_fields=["password"])
    assert Fernet(new_key).decrypt(raw_row(stored.pk)["password"].encode()) == b"rotated-pw"


def test_expressions_are_refused_instead_of_being_encrypted_as_text(stored):
    # Each attempt in its own savepoint: update() marks the transaction for rollback on error.
    with pytest.raises(TypeError, match="never through update"), transaction.atomic():
        BillConnection.objects.filter(pk=stored.pk).update(password=Value("x"))
    with pytest.raises(TypeError), transaction.atomic():
        BillConnection.objects.filter(pk=stored.pk).update(dev_key=F("username"))
    assert BillConnection.objects.get(pk=stored.pk).password == CANARIES["password"]


def test_empty_secret_is_stored_as_null(tenant):
    row = BillConnection.objects.create(
        tenant=tenant,
        environment="sandbox",
        username="a@b.test",
        organization_id="00801X",
        password="p",
        dev_key="d",
        api_token="",
    )
    assert raw_row(row.pk)["api_token"] is None
    assert BillConnection.objects.get(pk=row.pk).api_token is None


def test_repr_and_str_show_no_secret(stored):
    for text in (repr(stored), str(stored)):
        assert not any(secret in text for secret in CANARIES.values())
    assert "00801ACMEORGANIZA1bcd" in repr(stored)
