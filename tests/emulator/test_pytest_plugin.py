"""The fixtures the emulator's pytest plugin gives a project's own tests: ``bill_settings``,
``bill_connection`` (and the tenants it makes), ``bill_clock`` as one clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bill_integration import conf
from bill_integration.emulator.testing import NO_LOGIN_USER_ID, create_tenant
from bill_integration.models import AuditEvent, BillConnection, ConnectionStatus
from bill_integration.signals import connection_linked

pytestmark = pytest.mark.django_db


# --- bill_settings ----------------------------------------------------------------------------


def test_bill_settings_overrides_keys_and_keeps_the_others(bill_settings, settings):
    before = dict(settings.BILL_INTEGRATION)
    bill_settings(LOGIN_BUDGET_PER_HOUR=2)
    bill_settings.update({"SINGLE_FLIGHT_WAIT": timedelta(seconds=1)}, BACKOFF_BASE=timedelta(1))
    assert conf.bill_settings.LOGIN_BUDGET_PER_HOUR == 2  # the app reloaded its settings
    assert conf.bill_settings.SINGLE_FLIGHT_WAIT == timedelta(seconds=1)
    assert bill_settings["BACKOFF_BASE"] == timedelta(days=1)
    assert {k: v for k, v in settings.BILL_INTEGRATION.items() if k in before} == before
    assert "LOGIN_BUDGET_PER_HOUR" in bill_settings


def test_bill_settings_remove_brings_the_default_back(bill_settings):
    bill_settings(LOGIN_BUDGET_PER_HOUR=2)
    remaining = bill_settings.remove("LOGIN_BUDGET_PER_HOUR")
    assert "LOGIN_BUDGET_PER_HOUR" not in remaining
    assert conf.bill_settings.LOGIN_BUDGET_PER_HOUR == conf.DEFAULTS["LOGIN_BUDGET_PER_HOUR"]


# --- bill_connection --------------------------------------------------------------------------


def test_bill_connection_is_linked_with_a_session_bill_accepts(bill_connection, bill_emulator):
    connection = bill_connection()
    stored = BillConnection.objects.get(pk=connection.pk)
    assert stored.status == ConnectionStatus.ACTIVE and stored.environment == "emulator"
    assert stored.password == connection.account.password
    assert stored.dev_key == connection.account.dev_key
    assert bill_emulator.state.peek_session(stored.session_id) is not None
    assert stored.tenant.name.startswith("Tenant ")  # tests/conftest.py's bill_tenant_factory
    assert not AuditEvent.objects.filter(connection=stored).exists()  # set-up, not a link


def test_bill_connection_options(bill_connection, bill_emulator, bill_account):
    dead = bill_connection(login=False)
    assert dead.session_id.startswith("!dead-session-") and dead.user_id == NO_LOGIN_USER_ID
    assert bill_emulator.state.counters(dev_key=dead.account.dev_key)["logins"] == 0

    idle = bill_connection(idle=25 * 60)
    assert conf.now() - idle.session_last_used_at >= timedelta(minutes=25)

    first = bill_connection()
    sibling = bill_connection(dev_key=first.account.dev_key, api_version="v2")
    assert sibling.dev_key_fingerprint == first.dev_key_fingerprint
    assert sibling.organization_id != first.organization_id and sibling.api_version == "v2"

    mine = bill_connection(account=bill_account)
    assert mine.account is bill_account and mine.username == bill_account.username


def test_bill_connection_link_goes_through_the_service(bill_connection, bill_account, tenant):
    sent = []

    def note(**kwargs):
        sent.append(kwargs)

    connection_linked.connect(note, dispatch_uid="test-plugin-link")
    try:
        connection = bill_connection(
            tenant=tenant, account=bill_account, link=True, api_token=bill_account.api_token
        )
    finally:
        connection_linked.disconnect(dispatch_uid="test-plugin-link")
    assert connection.tenant == tenant and connection.api_token == bill_account.api_token
    assert AuditEvent.objects.filter(connection=connection, kind="linked").count() == 1
    assert [kwargs["connection"].pk for kwargs in sent] == [connection.pk]


def test_bill_connection_refuses_options_that_contradict_each_other(bill_connection):
    with pytest.raises(TypeError, match="link=True"):
        bill_connection(link=True, login=False)
    with pytest.raises(TypeError, match="api_token"):
        bill_connection(api_token="not-stored-without-a-link")


def test_the_default_tenant_factory_fills_a_tenant_models_text_fields(settings):
    from project.tenants.models import Tenant

    tenant = create_tenant()
    assert isinstance(tenant, Tenant) and tenant.name and tenant.slug == tenant.name
    settings.BILL_INTEGRATION_TENANT_MODEL = settings.AUTH_USER_MODEL  # the app's default
    user = create_tenant()
    assert user.username.startswith("bill-tenant-") and not user.has_usable_password()


# --- bill_clock -------------------------------------------------------------------------------


def test_bill_clock_is_the_emulators_clock(bill_clock, bill_emulator):
    bill_emulator.state.advance(600)  # moved from the emulator's side: the app sees it too
    assert abs((conf.now() - bill_emulator.state.now()).total_seconds()) < 1
    assert bill_clock.offset == timedelta(seconds=600)
    bill_clock.set_offset(0)
    assert abs((conf.now() - datetime.now(UTC)).total_seconds()) < 1
