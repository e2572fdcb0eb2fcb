"""services.link / unlink / verify against the emulator over HTTP and real PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from django.db import connection as db_connection
from django.db import connections

from bill_integration import services, signals
from bill_integration.exceptions import (
    ConflictError,
    ConnectionNotLinked,
    InvalidApiToken,
    InvalidCredentials,
    InvalidDevKey,
    TransientError,
)
from bill_integration.models import AuditEvent, BillConnection, ConnectionStatus
from bill_integration.services import verify
from bill_integration.services.common import dev_key_fingerprint
from tests.linking_support import credentials

pytestmark = pytest.mark.django_db


def raw_row(tenant) -> tuple:
    """The stored bytes (ciphertext included) of the tenant's connection row."""
    with db_connection.cursor() as cursor:
        cursor.execute(
            "SELECT username, password, organization_id, dev_key, api_token, session_id, "
            "environment, api_version, user_id, dev_key_fingerprint, status, version "
            "FROM bill_integration_billconnection WHERE tenant_id = %s",
            [tenant.pk],
        )
        return cursor.fetchone()


class SignalSpy:
    def __init__(self, signal):
        self.calls: list[dict] = []
        self.signal = signal
        signal.connect(self.receive)

    def receive(self, sender, **kwargs):
        self.calls.append({"sender": sender, **kwargs})

    def close(self):
        self.signal.disconnect(self.receive)


@pytest.fixture
def spy():
    spies: list[SignalSpy] = []

    def make(signal):
        s = SignalSpy(signal)
        spies.append(s)
        return s

    yield make
    for s in spies:
        s.close()


def test_link_stores_credentials_and_session_after_bill_accepts(
    tenant, owner, bill_emulator, bill_account, bill_environment, spy
):
    linked_spy = spy(signals.connection_linked)
    connection = services.link(tenant, actor=owner, **credentials(bill_account))

    stored = BillConnection.objects.get(tenant=tenant)
    assert stored.pk == connection.pk
    assert stored.username == bill_account.username
    assert stored.password == bill_account.password
    assert stored.dev_key == bill_account.dev_key
    assert stored.api_token is None
    assert stored.organization_id == bill_account.organization_id
    assert stored.user_id == bill_account.user_id
    assert stored.environment == "emulator" and stored.api_version == "v3"
    assert stored.status == ConnectionStatus.ACTIVE
    assert stored.dev_key_fingerprint == dev_key_fingerprint(bill_account.dev_key)
    assert stored.session_obtained_at is not None and stored.session_id
    # The stored session is one BILL knows.
    assert bill_emulator.state.peek_session(stored.session_id) is not None
    # Encrypted at rest: the column holds no plaintext.
    row = raw_row(tenant)
    assert bill_account.password not in row[1] and bill_account.dev_key not in row[3]

    event = AuditEvent.objects.get(kind=AuditEvent.Kind.LINKED)
    assert event.connection_id == connection.pk and event.actor == owner
    assert event.detail["organization_id"] == bill_account.organization_id
    assert len(linked_spy.calls) == 1
    call = linked_spy.calls[0]
    assert call["tenant"] == tenant and call["connection"].pk == connection.pk
    assert call["actor"] == owner


def test_link_with_api_token_checks_it_with_spend(
    tenant, bill_emulator, bill_account, bill_environment
):
    services.link(tenant, **credentials(bill_account, api_token=bill_account.api_token))
    assert BillConnection.objects.get(tenant=tenant).api_token == bill_account.api_token
    assert bill_emulator.state.counters(organization_id=None, dev_key=None)["spend"] >= 1


def test_link_environment_defaults_to_default_environment(tenant, bill_account, bill_environment):
    data = credentials(bill_account)
    del data["environment"]
    connection = services.link(tenant, **data)
    assert connection.environment == "emulator"


def test_refused_link_stores_nothing_and_says_why(
    tenant, owner, bill_account, bill_environment, spy
):
    failed_spy = spy(signals.connection_link_failed)
    with pytest.raises(InvalidCredentials) as info:
        services.link(tenant, actor=owner, **credentials(bill_account, password="wrong-password"))
    assert info.value.bill_code == "BDC_1101"
    assert not BillConnection.objects.filter(tenant=tenant).exists()

    event = AuditEvent.objects.get(kind=AuditEvent.Kind.LINK_FAILED)
    assert event.detail["code"] == "invalid_credentials"
    assert event.detail["bill_code"] == "BDC_1101"
    assert event.tenant_id == str(tenant.pk) and event.actor == owner
    assert "wrong-password" not in str(event.detail)
    assert bill_account.username not in str(event.detail)
    assert len(failed_spy.calls) == 1
    assert isinstance(failed_spy.calls[0]["error"], InvalidCredentials)
    assert failed_spy.calls[0]["tenant"] == tenant


def test_wrong_dev_key_is_invalid_dev_key(tenant, bill_account, bill_environment):
    with pytest.raises(InvalidDevKey):
        services.link(tenant, **credentials(bill_account, dev_key="01WRONGKEYWRONGKEY00"))
    assert not BillConnection.objects.filter(tenant=tenant).exists()


def test_wrong_api_token_stores_nothing_and_logs_the_session_out(
    tenant, bill_emulator, bill_account, bill_environment
):
    with pytest.raises(InvalidApiToken):
        services.link(tenant, **credentials(bill_account, api_token="not-the-token"))
    assert not BillConnection.objects.filter(tenant=tenant).exists()
    counters = bill_emulator.state.counters(organization_id=bill_account.organization_id)
    assert counters["logins"] == 1 and counters["logouts"] == 1
    assert bill_emulator.state.active_sessions(organization_id=bill_account.organization_id) == 0
    assert AuditEvent.objects.get(kind="link_failed").detail["code"] == "invalid_api_token"


def test_bill_down_is_transient_and_stores_nothing(
    tenant, bill_emulator, bill_account, bill_environment
):
    bill_emulator.state.set_fault("status", status=503)
    with pytest.raises(TransientError):
        services.link(tenant, **credentials(bill_account))
    assert not BillConnection.objects.filter(tenant=tenant).exists()
    assert AuditEvent.objects.get(kind="link_failed").detail["code"] == "bill_unavailable"


def test_refused_relink_leaves_previous_credentials_byte_identical(
    tenant, linked, bill_emulator, bill_account, bill_environment, spy
):
    relinked_spy = spy(signals.connection_relinked)
    other = bill_emulator.state.add_account(username="other@example.com", password="other-pw")
    before = raw_row(tenant)
    for bad in (
        credentials(other, password="nope"),
        credentials(bill_account, dev_key="01WRONGKEYWRONGKEY00"),
        credentials(other, api_token="bad-token"),
    ):
        with pytest.raises(InvalidCredentials):
            services.link(tenant, **bad)
        assert raw_row(tenant) == before
    bill_emulator.state.set_fault("status", status=503)
    with pytest.raises(TransientError):
        services.link(tenant, **credentials(other))
    assert raw_row(tenant) == before
    # ... and they still work.
    bill_emulator.state.clear_faults()
    verify(tenant)
    assert relinked_spy.calls == []
    failed = AuditEvent.objects.filter(kind="link_failed")
    assert failed.count() == 4
    assert all(event.connection_id == linked.pk and event.detail["relink"] for event in failed)


def test_relink_replaces_credentials_and_bumps_version(
    tenant, owner, linked, bill_emulator, bill_environment, spy
):
    relinked_spy = spy(signals.connection_relinked)
    other = bill_emulator.state.add_account(
        username="other@example.com", password="other-pw", api_token=None
    )
    connection = services.link(tenant, actor=owner, **credentials(other))
    stored = BillConnection.objects.get(tenant=tenant)
    assert stored.pk == linked.pk
    assert stored.version == linked.version + 1
    assert (stored.username, stored.password, stored.dev_key, stored.organization_id) == (
        other.username,
        other.password,
        other.dev_key,
        other.organization_id,
    )
    assert stored.dev_key_fingerprint == dev_key_fingerprint(other.dev_key)
    assert AuditEvent.objects.filter(kind="relinked", connection=connection).count() == 1
    assert len(relinked_spy.calls) == 1 and relinked_spy.calls[0]["actor"] == owner


def test_relink_resets_needs_relink_status(tenant, linked, bill_account, bill_environment):
    BillConnection.objects.filter(pk=linked.pk).update(
        status=ConnectionStatus.NEEDS_RELINK,
        last_error_code="invalid_credentials",
        consecutive_failures=3,
    )
    services.link(tenant, **credentials(bill_account))
    stored = BillConnection.objects.get(pk=linked.pk)
    assert stored.status == ConnectionStatus.ACTIVE
    assert stored.last_error_code == "" and stored.consecutive_failures == 0


def test_unlink_logs_out_deletes_and_audits(
    tenant, owner, linked, bill_emulator, bill_account, spy
):
    unlinked_spy = spy(signals.connection_unlinked)
    session_id = BillConnection.objects.get(pk=linked.pk).session_id
    services.unlink(tenant, actor=owner)
    assert not BillConnection.objects.filter(tenant=tenant).exists()
    assert bill_emulator.state.peek_session(session_id) is None
    assert (
        bill_emulator.state.counters(organization_id=bill_account.organization_id)["logouts"] == 1
    )
    event = AuditEvent.objects.get(kind="unlinked")
    assert event.detail["organization_id"] == bill_account.organization_id
    assert event.actor == owner
    # The trail outlives the connection.
    assert AuditEvent.objects.filter(kind="linked", tenant_id=str(tenant.pk)).exists()
    assert unlinked_spy.calls[0]["organization_id"] == bill_account.organization_id
    assert unlinked_spy.calls[0]["tenant"] == tenant


def test_unlink_when_bill_is_down_still_deletes(tenant, linked, bill_emulator):
    bill_emulator.state.set_fault("status", status=503)
    services.unlink(tenant)
    assert not BillConnection.objects.filter(tenant=tenant).exists()


def test_unlink_without_connection_raises(tenant):
    with pytest.raises(ConnectionNotLinked):
        services.unlink(tenant)
    assert not AuditEvent.objects.exists()


def test_verify_checks_stored_credentials_without_touching_the_session(
    tenant, linked, bill_emulator, bill_account
):
    before = raw_row(tenant)
    verify(tenant)
    assert raw_row(tenant) == before
    counters = bill_emulator.state.counters(organization_id=bill_account.organization_id)
    assert counters["logins"] == 2 and counters["logouts"] == 1
    bill_emulator.state.change_password(bill_account.username, "changed-at-bill")
    with pytest.raises(InvalidCredentials):
        verify(tenant)
    assert raw_row(tenant) == before


def test_verify_without_connection(tenant):
    with pytest.raises(ConnectionNotLinked):
        verify(tenant)


# --- concurrency: real threads, real PostgreSQL, BILL slow enough for the attempts to overlap ---


def _race(tenant, attempts: list[dict]) -> list[object]:
    """Run the link attempts at once; none stores before every one has read what it replaces.

    Each attempt reads the stored credentials (its fence) before it logs in, so holding every
    attempt after its login until all have logged in makes the race real whatever the load
    (on a busy machine one thread could otherwise finish before the other even started, and
    the second would be a plain relink, not a concurrent one).
    """
    from bill_integration.services import linking

    barrier = threading.Barrier(len(attempts))
    logged_in = threading.Barrier(len(attempts))
    results: list[object] = [None] * len(attempts)
    real_login = linking.gateway.login

    def login_then_wait(account, **kwargs):
        result = real_login(account, **kwargs)
        logged_in.wait(timeout=30)
        return result

    def run(index: int, data: dict) -> None:
        try:
            barrier.wait(timeout=10)
            results[index] = services.link(tenant, **data)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[index] = exc
        finally:
            connections.close_all()

    linking.gateway.login = login_then_wait  # type: ignore[assignment]
    try:
        threads = [threading.Thread(target=run, args=(i, d)) for i, d in enumerate(attempts)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        linking.gateway.login = real_login  # type: ignore[assignment]
    return results


@pytest.mark.postgresql(reason="row locks and concurrent writers: SQLite locks the whole database")
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_relinks_exactly_one_wins(
    tenant, bill_emulator, bill_account, bill_environment
):
    services.link(tenant, **credentials(bill_account))
    first = bill_emulator.state.add_account(username="first@example.com", password="pw-first")
    second = bill_emulator.state.add_account(username="second@example.com", password="pw-second")
    bill_emulator.state.set_fault("latency", seconds=1.0, path="login")

    results = _race(tenant, [credentials(first), credentials(second)])

    wins = [r for r in results if isinstance(r, BillConnection)]
    conflicts = [r for r in results if isinstance(r, ConflictError)]
    assert len(wins) == 1 and len(conflicts) == 1, results
    stored = BillConnection.objects.get(tenant=tenant)
    winner = first if stored.username == first.username else second
    # Never a mix of the two attempts' credentials.
    assert (stored.password, stored.dev_key, stored.organization_id) == (
        winner.password,
        winner.dev_key,
        winner.organization_id,
    )
    assert stored.version == 2
    assert bill_emulator.state.peek_session(stored.session_id) is not None
    loser = second if winner is first else first
    assert bill_emulator.state.active_sessions(organization_id=loser.organization_id) == 0
    assert AuditEvent.objects.filter(kind="relinked").count() == 1
    assert AuditEvent.objects.get(kind="link_failed").detail["code"] == "conflict"


@pytest.mark.postgresql(reason="row locks and concurrent writers: SQLite locks the whole database")
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_first_links_exactly_one_wins(tenant, bill_emulator, bill_environment):
    first = bill_emulator.state.add_account(username="first@example.com", password="pw-first")
    second = bill_emulator.state.add_account(username="second@example.com", password="pw-second")
    bill_emulator.state.set_fault("latency", seconds=1.0, path="login")

    results = _race(tenant, [credentials(first), credentials(second)])

    assert sum(isinstance(r, BillConnection) for r in results) == 1, results
    assert sum(isinstance(r, ConflictError) for r in results) == 1, results
    assert BillConnection.objects.filter(tenant=tenant).count() == 1
    assert AuditEvent.objects.filter(kind="linked").count() == 1


def test_bdc_1144_at_link_pauses_the_developer_key(
    tenant, bill_emulator, bill_account, bill_environment
):
    from bill_integration.exceptions import RateLimited

    bill_emulator.state.set_fault("error", code="BDC_1144", count=1)
    with pytest.raises(RateLimited):
        services.link(tenant, **credentials(bill_account))
    logins = bill_emulator.state.counters()["logins"]
    # Until the next hour BILL is not asked again with this key.
    with pytest.raises(RateLimited) as info:
        services.link(tenant, **credentials(bill_account))
    assert info.value.retry_at is not None
    assert bill_emulator.state.counters()["logins"] == logins
    assert not BillConnection.objects.filter(tenant=tenant).exists()


def test_link_spends_the_login_budget(
    tenant, bill_settings, bill_emulator, bill_account, bill_environment
):
    from bill_integration.exceptions import RateLimited

    bill_settings(LOGIN_BUDGET_PER_HOUR=2, LOGIN_RESERVE_FOR_RENEWALS=0)
    services.link(tenant, **credentials(bill_account))
    services.link(tenant, **credentials(bill_account))
    with pytest.raises(RateLimited) as info:
        services.link(tenant, **credentials(bill_account))
    assert info.value.scope == "login_budget"
    assert bill_emulator.state.counters()["logins"] == 2


def test_unknown_environment_or_version_is_refused_before_bill(
    tenant, bill_emulator, bill_account, bill_environment
):
    from bill_integration.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError):
        services.link(tenant, **credentials(bill_account, environment="staging"))
    with pytest.raises(ConfigurationError):
        services.link(tenant, **credentials(bill_account, api_version="v4"))
    assert bill_emulator.state.counters()["logins"] == 0


def test_any_failure_after_bill_logged_in_logs_out_audits_and_signals(
    tenant, bill_emulator, bill_account, bill_environment, spy, monkeypatch
):
    """Not only BILL's refusals: whatever breaks after the login closes the session at BILL."""
    from bill_integration.services import linking

    failed = spy(signals.connection_link_failed)

    def broken_store(*args, **kwargs):
        raise UnicodeEncodeError("latin-1", "\u200b", 0, 1, "cannot be encoded")

    monkeypatch.setattr(linking, "_store", broken_store)
    with pytest.raises(UnicodeEncodeError):
        services.link(tenant, **credentials(bill_account))
    assert not BillConnection.objects.filter(tenant=tenant).exists()
    counters = bill_emulator.state.counters(organization_id=bill_account.organization_id)
    assert counters["logins"] == 1 and counters["logouts"] == 1
    assert bill_emulator.state.active_sessions(organization_id=bill_account.organization_id) == 0
    assert AuditEvent.objects.get(kind="link_failed").detail["code"] == "bill_error"
    assert len(failed.calls) == 1


@pytest.mark.django_db(transaction=True)
def test_a_background_login_during_a_relink_never_makes_the_relink_fail(
    tenant, bill_emulator, bill_account, bill_environment, monkeypatch
):
    """The relink fence is on credentials: a session refreshed meanwhile is not a conflict."""
    from bill_integration.services import gateway, linking

    services.link(tenant, **credentials(bill_account))
    other = bill_emulator.state.add_account(username="new@example.com", password="pw-new")
    real_login = gateway.login
    refreshed: list[int] = []

    def login_while_the_sweep_refreshes(account, **kwargs):
        result = real_login(account, **kwargs)
        if account.username == other.username and not refreshed:
            # The sweep logs in for the stored credentials while our relink is at BILL.
            refreshed.append(services.refresh(tenant, force=True).version)
        return result

    monkeypatch.setattr(linking.gateway, "login", login_while_the_sweep_refreshes)
    connection = services.link(tenant, **credentials(other))
    assert refreshed == [2]  # the background login did move the version on
    stored = BillConnection.objects.get(tenant=tenant)
    assert stored.username == other.username and stored.password == other.password
    assert stored.version == 3 and connection.version == 3
    assert not AuditEvent.objects.filter(kind="link_failed").exists()
