"""Failures and recovery: backoff, statuses, one signal per transition, credentials untouched."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection as db

from bill_integration import signals
from bill_integration.client.errors import start_of_next_hour
from bill_integration.conf import now
from bill_integration.exceptions import (
    ConnectionNeedsRelink,
    RateLimited,
    SessionUnavailable,
    TransientError,
)
from bill_integration.models import AuditEvent, BillConnection, ConnectionStatus
from bill_integration.services import get_session
from bill_integration.services.lifecycle import KEPT_ALIVE, LOGGED_IN, backoff_delay
from bill_integration.services.sweep import NOT_DUE, refresh_connection
from tests.session_support import counters, stored

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("classic_cadence")]

SIGNALS = {
    "session_refreshed": signals.connection_session_refreshed,
    "connection_degraded": signals.connection_degraded,
    "connection_recovered": signals.connection_recovered,
    "connection_needs_relink": signals.connection_needs_relink,
}


@pytest.fixture
def sent():
    """Counter of signal names sent, with the kwargs of the last one."""
    seen: Counter[str] = Counter()
    handlers = {}
    for name, signal in SIGNALS.items():

        def handler(sender, _name=name, **kwargs):
            seen[_name] += 1
            assert kwargs["connection"].pk and kwargs["tenant"].pk

        handlers[name] = handler
        signal.connect(handler, sender=BillConnection, weak=False)
    yield seen
    for name, signal in SIGNALS.items():
        signal.disconnect(handlers[name], sender=BillConnection)


def raw_secrets(connection: BillConnection) -> tuple:
    """The stored ciphertexts: a failed refresh must leave them byte-identical."""
    with db.cursor() as cursor:
        cursor.execute(
            f"SELECT username, organization_id, password, dev_key, api_token, session_id, "
            f"dev_key_fingerprint FROM {BillConnection._meta.db_table} WHERE id = %s",
            [connection.pk],
        )
        return cursor.fetchone()


def sweep_until_next_attempt(bill_app, connection: BillConnection) -> str:
    row = stored(connection)
    if row.next_attempt_at is not None and row.next_attempt_at > now():
        bill_app.advance((row.next_attempt_at - now()).total_seconds() + 1)
    return refresh_connection(connection.pk)


@pytest.fixture
def fast_timeouts(bill_settings, bill_app):
    bill_settings(READ_TIMEOUT=timedelta(seconds=0.5), CONNECT_TIMEOUT=timedelta(seconds=0.5))


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "status", "status": 503},
        {"kind": "latency", "seconds": 2},
        {"kind": "hang", "seconds": 2},
        {"kind": "reset"},
        {"kind": "error", "code": "BDC_1001"},
    ],
    ids=["5xx", "latency", "hang", "reset", "bdc_1001"],
)
def test_transient_faults_back_off_then_recover_with_credentials_unchanged(
    make_connection, bill_emulator, bill_app, fast_timeouts, sent, fault
):
    connection = make_connection()
    before = raw_secrets(connection)
    bill_app.advance(25 * 60)
    params = {k: v for k, v in fault.items() if k != "kind"}
    bill_emulator.state.set_fault(
        fault["kind"], organization_id=connection.organization_id, **params
    )

    assert refresh_connection(connection.pk).startswith("failed:")
    row = stored(connection)
    assert row.status == ConnectionStatus.DEGRADED
    assert row.consecutive_failures == 1
    assert row.next_attempt_at >= now() + timedelta(seconds=29)
    assert refresh_connection(connection.pk) == NOT_DUE  # backing off: no call to BILL
    assert refresh_connection(connection.pk) == NOT_DUE
    calls = counters(bill_emulator, connection)["calls"]

    assert sweep_until_next_attempt(bill_app, connection).startswith("failed:")
    assert stored(connection).consecutive_failures == 2
    assert counters(bill_emulator, connection)["calls"] == calls + 1
    assert sent["connection_degraded"] == 1  # once per transition, not per retry
    assert raw_secrets(connection) == before

    bill_emulator.state.clear_faults()
    assert sweep_until_next_attempt(bill_app, connection) == KEPT_ALIVE
    row = stored(connection)
    assert row.status == ConnectionStatus.ACTIVE and row.consecutive_failures == 0
    assert row.last_error_code == "" and row.next_attempt_at is None
    assert sent == Counter(connection_degraded=1, connection_recovered=1)
    assert raw_secrets(connection) == before  # the same session kept alive, nothing rewritten
    assert counters(bill_emulator, connection)["logins"] == 1


def test_backoff_grows_exponentially_with_jitter_and_a_cap(bill_settings):
    bill_settings(BACKOFF_BASE=timedelta(seconds=30), BACKOFF_MAX=timedelta(minutes=10))
    for failures, cap in [(1, 30), (2, 60), (3, 120), (5, 480), (12, 600)]:
        delays = {backoff_delay(failures).total_seconds() for _ in range(50)}
        assert all(30 <= d <= cap for d in delays)
        if cap > 30:
            assert len(delays) > 1  # jittered


def test_transient_login_failure_makes_get_session_wait_not_hammer(
    make_connection, bill_emulator, bill_app, sent
):
    connection = make_connection()
    bill_app.advance(36 * 60)
    bill_emulator.state.set_fault("status", organization_id=connection.organization_id, status=502)
    with pytest.raises(TransientError):
        get_session(connection.tenant)
    assert stored(connection).status == ConnectionStatus.DEGRADED
    calls = counters(bill_emulator, connection)["calls"]
    for _ in range(5):  # callers inside the backoff window get a clear error, BILL gets nothing
        with pytest.raises(SessionUnavailable):
            get_session(connection.tenant)
    assert counters(bill_emulator, connection)["calls"] == calls
    bill_emulator.state.clear_faults()
    bill_app.advance(31)
    assert get_session(connection.tenant).session_id == stored(connection).session_id
    assert sent == Counter(connection_degraded=1, connection_recovered=1, session_refreshed=1)


@pytest.mark.parametrize("code", ["BDC_1101", "BDC_1102"])
def test_refused_credentials_mean_needs_relink_and_no_more_logins(
    make_connection, bill_emulator, bill_app, sent, code
):
    connection = make_connection()
    before = raw_secrets(connection)
    if code == "BDC_1101":
        bill_emulator.state.change_password(connection.username, "changed-at-bill")
    else:
        bill_emulator.state.set_fault(
            "error", organization_id=connection.organization_id, code=code, path="/login"
        )
    bill_app.advance(40 * 60)
    assert refresh_connection(connection.pk) == f"failed:{code}"
    row = stored(connection)
    assert row.status == ConnectionStatus.NEEDS_RELINK and row.last_error_code == code
    assert sent == Counter(connection_needs_relink=1)
    attempts = counters(bill_emulator, connection)["calls"]
    for _ in range(6):  # six hours of sweeps: zero logins for this tenant
        bill_app.advance(3600)
        assert refresh_connection(connection.pk) == NOT_DUE
        with pytest.raises(ConnectionNeedsRelink):
            get_session(connection.tenant)
    assert counters(bill_emulator, connection)["calls"] == attempts
    assert sent == Counter(connection_needs_relink=1)
    assert raw_secrets(connection) == before
    assert AuditEvent.objects.filter(connection=connection, kind="status_changed").count() == 1


def test_bdc_1144_pauses_the_dev_key_for_every_tenant_until_the_next_hour(
    make_connection, bill_emulator, bill_app, sent
):
    first = make_connection()
    second = make_connection(dev_key=first.account.dev_key)
    before = raw_secrets(first)
    bill_app.advance(25 * 60)
    bill_emulator.state.set_fault("error", dev_key=first.account.dev_key, code="BDC_1144")
    assert refresh_connection(first.pk) == "failed:BDC_1144"
    row = stored(first)
    next_hour = start_of_next_hour(now() - timedelta(seconds=1))
    assert row.status == ConnectionStatus.RATE_LIMITED
    assert row.next_attempt_at == next_hour
    calls = bill_emulator.state.counters(dev_key=first.account.dev_key)["calls"]
    # The other tenant of the same developer key makes no call to BILL either.
    assert refresh_connection(second.pk) == "failed:BDC_1144"
    with pytest.raises(RateLimited):
        get_session(second.tenant).request("GET", "/v3/vendors")
    assert stored(second).status == ConnectionStatus.RATE_LIMITED
    assert bill_emulator.state.counters(dev_key=first.account.dev_key)["calls"] == calls
    assert sent == Counter(connection_degraded=2)

    bill_emulator.state.clear_faults()
    bill_app.advance((next_hour - now()).total_seconds() + 1)
    assert refresh_connection(first.pk) in (KEPT_ALIVE, LOGGED_IN)
    assert refresh_connection(second.pk) in (KEPT_ALIVE, LOGGED_IN)
    assert {stored(c).status for c in (first, second)} == {ConnectionStatus.ACTIVE}
    # (Waiting for the hour may have outlived the sessions: then a login, never a loop.)
    assert sent["connection_degraded"] == 2 and sent["connection_recovered"] == 2
    assert bill_emulator.state.counters(dev_key=first.account.dev_key)["logins"] <= 4
    assert raw_secrets(first)[:5] == before[:5]  # credentials never change


def test_bdc_1322_is_rate_limited_with_backoff_then_recovers(
    make_connection, bill_emulator, bill_app, sent
):
    connection = make_connection()
    bill_app.advance(25 * 60)
    bill_emulator.state.set_fault(
        "error", organization_id=connection.organization_id, code="BDC_1322", count=2
    )
    assert refresh_connection(connection.pk) == "failed:BDC_1322"
    row = stored(connection)
    assert row.status == ConnectionStatus.RATE_LIMITED
    assert row.next_attempt_at > now()
    assert sweep_until_next_attempt(bill_app, connection) == "failed:BDC_1322"
    assert sweep_until_next_attempt(bill_app, connection) == KEPT_ALIVE
    assert stored(connection).status == ConnectionStatus.ACTIVE
    assert sent == Counter(connection_degraded=1, connection_recovered=1)


def test_session_refreshed_signal_once_per_login(make_connection, bill_emulator, bill_app, sent):
    connection = make_connection()
    bill_app.advance(40 * 60)
    assert refresh_connection(connection.pk) == LOGGED_IN
    assert refresh_connection(connection.pk) == NOT_DUE
    assert sent == Counter(session_refreshed=1)


def test_logs_audit_and_outcomes_carry_no_secret(
    make_connection, bill_emulator, bill_app, fast_timeouts, caplog
):
    import logging

    connection = make_connection()
    canaries = [connection.account.password, connection.account.dev_key]
    outcomes = []
    with caplog.at_level(logging.DEBUG):
        bill_app.advance(40 * 60)
        outcomes.append(refresh_connection(connection.pk))  # login
        canaries.append(stored(connection).session_id)
        bill_app.advance(25 * 60)
        bill_emulator.state.set_fault("status", organization_id=connection.organization_id)
        outcomes.append(refresh_connection(connection.pk))  # failed keep-alive
        bill_emulator.state.clear_faults()
        bill_app.advance(3600)
        bill_emulator.state.change_password(connection.username, "rotated-at-bill")
        bill_emulator.state.invalidate_sessions(organization_id=connection.organization_id)
        outcomes.append(refresh_connection(connection.pk))  # keep-alive → login → BDC_1101
    assert outcomes[0] == LOGGED_IN and outcomes[2] == "failed:BDC_1101"
    text = "\n".join(
        [r.getMessage() + repr(r.__dict__) for r in caplog.records]
        + outcomes
        + [repr(e.detail) for e in AuditEvent.objects.filter(connection=connection)]
        + [stored(connection).last_error_message]
    )
    for canary in canaries:
        assert canary not in text


# --- BDC_1361: BILL demands MFA ------------------------------------------------------------


@pytest.mark.parametrize("path", ["/login/session", "/login"])
def test_mfa_demanded_means_needs_relink_and_never_a_login_loop(
    make_connection, bill_emulator, bill_app, sent, path
):
    """BDC_1361 on the keep-alive (or on both it and the login): reported once, never retried."""
    connection = make_connection()
    bill_emulator.state.set_fault(
        "error", organization_id=connection.organization_id, code="BDC_1361", path=path
    )
    bill_app.advance(31 * 60)  # the keep-alive is due
    assert refresh_connection(connection.pk) == "failed:mfa_required"
    row = stored(connection)
    assert row.status == ConnectionStatus.NEEDS_RELINK
    assert row.last_error_code == "mfa_required" and row.next_attempt_at is None
    assert sent == Counter(connection_needs_relink=1)
    calls = counters(bill_emulator, connection)
    for _ in range(6):  # six hours of sweeps and callers: zero logins, zero calls
        bill_app.advance(3600)
        assert refresh_connection(connection.pk) == NOT_DUE
        with pytest.raises(ConnectionNeedsRelink):
            get_session(connection.tenant)
    after = counters(bill_emulator, connection)
    assert (after["logins"], after["calls"]) == (calls["logins"], calls["calls"])
    assert sent == Counter(connection_needs_relink=1)


def test_mfa_demanded_on_a_call_is_raised_to_the_caller_without_a_login(
    make_connection, bill_emulator, bill_app
):
    from bill_integration.exceptions import UntrustedSession

    connection = make_connection()
    session = get_session(connection.tenant)
    bill_emulator.state.set_fault(
        "error", organization_id=connection.organization_id, code="BDC_1361", path="/payments"
    )
    logins = counters(bill_emulator, connection)["logins"]
    with pytest.raises(UntrustedSession):
        session.request("POST", "/v3/payments", json={})
    assert counters(bill_emulator, connection)["logins"] == logins
    assert stored(connection).status == ConnectionStatus.ACTIVE  # the session itself is fine


def test_a_bill_outage_shows_degraded_even_when_the_failed_logins_spent_the_budget(
    make_connection, bill_emulator, bill_app, bill_settings, sent
):
    """During an outage the failing logins are what spent the budget: say "degraded"."""
    bill_settings(LOGIN_BUDGET_PER_HOUR=1)
    connection = make_connection()
    bill_app.advance(40 * 60)  # the session is surely gone: the sweep must log in
    bill_emulator.state.set_fault("status", status=503, organization_id=connection.organization_id)
    assert refresh_connection(connection.pk) == "failed:bill_unavailable"  # spends the 1 login
    assert stored(connection).status == ConnectionStatus.DEGRADED
    outcome = sweep_until_next_attempt(bill_app, connection)  # the budget refuses this login
    row = stored(connection)
    assert outcome == "failed:bill_unavailable"
    assert (row.status, row.last_error_code) == (ConnectionStatus.DEGRADED, "bill_unavailable")
    assert row.next_attempt_at is not None and row.next_attempt_at > now()
    assert sent["connection_degraded"] == 1  # one transition, one signal


def test_every_signal_is_named_connection_event_and_the_old_names_still_work():
    import warnings

    from django.dispatch import Signal

    names = [name for name, value in vars(signals).items() if isinstance(value, Signal)]
    assert names and all(name.startswith("connection_") for name in names), names
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert signals.link_failed is signals.connection_link_failed
        assert signals.session_refreshed is signals.connection_session_refreshed
    assert len(caught) == 2 and all(w.category is DeprecationWarning for w in caught)
