"""Logs that help: every link and refresh outcome is logged exactly once, with the connection
id, tenant id, outcome, BILL code and duration, and no secret (issue 5, item 6)."""

from __future__ import annotations

import logging
import re

import pytest

from bill_integration import services
from bill_integration.exceptions import InvalidCredentials, TransientError

ANY_ACTION = object()


@pytest.fixture
def outcomes(caplog):
    caplog.set_level(logging.DEBUG, logger="bill_integration")

    def take() -> list[logging.LogRecord]:
        records = [r for r in caplog.records if hasattr(r, "bill_outcome")]
        caplog.clear()
        return records

    return take


def credentials(account, environment, **overrides):
    return {
        "username": account.username,
        "password": account.password,
        "organization_id": account.organization_id,
        "dev_key": account.dev_key,
        "environment": environment,
        **overrides,
    }


def assert_one(records, *, action, outcome, connection_id, tenant_id, bill_code=None):
    assert len(records) == 1, [r.getMessage() for r in records]
    (record,) = records
    assert action is ANY_ACTION or record.bill_action == action
    assert record.bill_outcome == outcome
    assert record.connection_id == connection_id
    assert record.tenant_id == str(tenant_id)
    assert record.bill_code == bill_code
    message = record.getMessage()
    assert f"connection={connection_id}" in message and f"tenant={tenant_id}" in message
    duration = int(re.search(r"duration_ms=(\d+)", message).group(1))
    return record, duration


@pytest.fixture
def linked(tenant, bill_account, bill_connection, outcomes):
    connection = bill_connection(tenant=tenant, account=bill_account, link=True)
    records = outcomes()
    return connection, records


def no_secret_in(records, account):
    secrets = [account.password, account.dev_key, account.api_token]
    for record in records:
        text = record.getMessage() + repr(vars(record))
        assert not any(secret and secret in text for secret in secrets)


@pytest.mark.django_db
def test_a_link_is_logged_once(tenant, linked, bill_account):
    connection, records = linked
    assert_one(
        records, action="link", outcome="linked", connection_id=connection.pk, tenant_id=tenant.pk
    )
    no_secret_in(records, bill_account)


@pytest.mark.django_db
def test_a_refused_link_is_logged_once_with_bill_code(
    tenant, bill_account, bill_environment, bill_emulator, outcomes
):
    with pytest.raises(InvalidCredentials):
        services.link(
            tenant, **credentials(bill_account, bill_environment, password="wrong-password-123")
        )
    assert_one(
        outcomes(),
        action="link",
        outcome="failed:invalid_credentials",
        connection_id=None,
        tenant_id=tenant.pk,
        bill_code="BDC_1101",
    )


@pytest.mark.django_db
def test_a_refused_relink_names_the_connection(
    tenant, linked, bill_account, bill_environment, outcomes
):
    connection, _ = linked
    with pytest.raises(InvalidCredentials):
        services.link(
            tenant, **credentials(bill_account, bill_environment, password="wrong-password-123")
        )
    assert_one(
        outcomes(),
        action="link",
        outcome="failed:invalid_credentials",
        connection_id=connection.pk,
        tenant_id=tenant.pk,
        bill_code="BDC_1101",
    )


@pytest.mark.django_db
def test_a_refresh_is_logged_once(tenant, linked, bill_account, outcomes):
    connection, _ = linked
    services.refresh(tenant, force=True)
    records = outcomes()
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].bill_outcome == "logged_in"
    assert records[0].connection_id == connection.pk
    assert records[0].tenant_id == str(tenant.pk)
    no_secret_in(records, bill_account)


@pytest.mark.django_db
def test_a_failed_refresh_is_logged_once_with_its_real_duration(
    tenant, linked, bill_account, bill_emulator, outcomes
):
    connection, _ = linked
    # BILL holds the request 0.3 s, then drops the connection without an answer.
    bill_emulator.state.set_fault("hang", seconds=0.3)
    with pytest.raises(TransientError):
        services.refresh(tenant, force=True)
    bill_emulator.state.clear_faults()
    record, duration = assert_one(
        outcomes(),
        action=ANY_ACTION,
        outcome="failed:bill_unavailable",
        connection_id=connection.pk,
        tenant_id=tenant.pk,
    )
    assert duration >= 300  # the time BILL took, not 0
    no_secret_in([record], bill_account)
