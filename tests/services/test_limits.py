"""BILL's limits across workers: login budget, concurrency slots, devKey pause (Redis and DB)."""

from __future__ import annotations

import logging
import socket
import threading
from datetime import timedelta

import pytest
import redis
from django.db import connections

from bill_integration import limits
from bill_integration.client.errors import start_of_next_hour
from bill_integration.conf import now
from bill_integration.exceptions import LoginBudgetExhausted, RateLimited, TransientError
from bill_integration.models import BillConnection, ConnectionStatus
from bill_integration.services import get_session, refresh_due
from bill_integration.services.freshness import BUDGET_EXHAUSTED
from bill_integration.services.sweep import due_connection_ids
from tests.session_support import REDIS_URL

#: The sweeps here are spaced for a keep-alive after 20 idle minutes (5-minute margin).
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("classic_cadence")]


@pytest.fixture
def budget(bill_settings, limiter_backend):
    def set_budget(n: int) -> None:
        bill_settings(LOGIN_BUDGET_PER_HOUR=n)

    return set_budget


def test_login_budget_is_a_rolling_hour(budget, bill_app):
    budget(5)
    fingerprint = "fp-budget-" + bill_app.now().isoformat()
    for _ in range(3):
        limits.take_login(fingerprint)
    bill_app.advance(30 * 60)
    for _ in range(2):
        limits.take_login(fingerprint)
    with pytest.raises(RateLimited) as refused:
        limits.take_login(fingerprint)
    assert refused.value.scope == "login_budget"
    # The first three leave the window an hour after they were spent, not at the clock hour.
    assert abs((refused.value.retry_at - (now() + timedelta(minutes=30))).total_seconds()) < 5
    assert limits.status(fingerprint).logins_used == 5
    bill_app.advance(30 * 60 + 1)
    for _ in range(3):
        limits.take_login(fingerprint)
    with pytest.raises(RateLimited):
        limits.take_login(fingerprint)
    assert limits.take_login("another-fingerprint") is None  # budgets are per developer key


@pytest.mark.postgresql(reason="row locks and concurrent writers: SQLite locks the whole database")
@pytest.mark.django_db(transaction=True)
def test_login_budget_holds_under_concurrency(budget, bill_app):
    budget(20)
    fingerprint = "fp-concurrent"
    granted, refused = [], []

    def spend() -> None:
        for _ in range(10):
            try:
                limits.take_login(fingerprint)
                granted.append(1)
            except RateLimited:
                refused.append(1)
        connections.close_all()

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(granted) == 20 and len(refused) == 60


def test_pause_stops_calls_until_it_ends(limiter_backend, bill_app):
    fingerprint = "fp-pause"
    until = limits.pause_dev_key(fingerprint)
    assert until == start_of_next_hour(now())
    assert limits.paused_until(fingerprint) == until
    org = "0080000000000000001"
    with pytest.raises(RateLimited) as paused, limits.request_slot(fingerprint, org):
        pass
    assert paused.value.scope == "hourly" and paused.value.retry_at == until
    with pytest.raises(RateLimited):
        limits.take_login(fingerprint)
    bill_app.advance((until - now()).total_seconds() + 1)
    assert limits.paused_until(fingerprint) is None
    with limits.request_slot(fingerprint, "0080000000000000001"):
        pass
    assert limits.status(fingerprint).paused_until is None


@pytest.mark.django_db(transaction=True)
def test_slots_cap_concurrency_per_organization(limiter_backend, bill_app, bill_settings):
    bill_settings(CONCURRENCY_WAIT=timedelta(seconds=0.3))
    fingerprint, org = "fp-slots", "00801000000000000001"
    held = [limits.request_slot(fingerprint, org) for _ in range(3)]
    for slot in held:
        slot.__enter__()
    with pytest.raises(RateLimited) as busy, limits.request_slot(fingerprint, org):
        pass
    assert busy.value.scope == "concurrency"
    with limits.request_slot(fingerprint, "00801000000000000002"):  # another organization
        pass
    held.pop().__exit__(None, None, None)
    with limits.request_slot(fingerprint, org):
        pass
    # A slot a crashed worker never released frees itself when its lease ends.
    bill_app.advance(61)
    with limits.request_slot(fingerprint, org), limits.request_slot(fingerprint, org):
        pass
    for slot in held:
        slot.__exit__(None, None, None)


@pytest.mark.postgresql(reason="row locks and concurrent writers: SQLite locks the whole database")
@pytest.mark.django_db(transaction=True)
def test_many_threads_calling_one_organization_never_get_bdc_1322(
    limiter_backend, make_connection, bill_emulator, bill_app
):
    connection = make_connection()
    bill_emulator.state.set_fault(
        "latency", organization_id=connection.organization_id, seconds=0.1, path="/v3/vendors"
    )
    errors: list[str] = []

    def work() -> None:
        try:
            for _ in range(3):
                get_session(connection.tenant_id).request("GET", "/v3/vendors")
        except Exception as exc:  # noqa: BLE001 - asserted below
            errors.append(repr(exc))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    totals = bill_emulator.state.counters(organization_id=connection.organization_id)
    assert totals["rejected"] == 0
    assert totals["calls"] == 1 + 30


@pytest.mark.slow
def test_500_tenants_on_one_dev_key_stay_within_the_budget_every_hour(
    make_connection, bill_emulator, bill_app, budget, limiter_backend, caplog, bill_settings
):
    tenants, per_hour = 500, 150
    budget(per_hour)
    # The whole budget to the sweep (no callers' reserve, unpaced): its shortfalls are tested.
    bill_settings(LOGIN_RESERVE_FOR_CALLERS=0, LOGINS_PER_MINUTE=None)
    shared = bill_emulator.state.add_account(username="partner-root@example.com", password="x")
    dev_key = shared.dev_key
    made = [make_connection(dev_key=dev_key, login=False, idle=40 * 60 + i) for i in range(tenants)]
    fingerprint = made[0].dev_key_fingerprint
    order = due_connection_ids()
    assert order == [c.pk for c in made]  # most recently used (least idle) first

    logged_in: set[int] = set()
    hours = 0
    with caplog.at_level(logging.WARNING, logger="bill_integration.sessions"):
        while len(logged_in) < tenants:
            hours += 1
            assert hours <= 5
            before = bill_emulator.state.counters(dev_key=dev_key)["logins"]
            refresh_due()
            refresh_due()  # a second beat in the same hour adds no login
            this_hour = bill_emulator.state.counters(dev_key=dev_key)["logins"] - before
            assert this_hour <= per_hour
            fresh = set(
                BillConnection.objects.filter(
                    dev_key_fingerprint=fingerprint, status=ConnectionStatus.ACTIVE
                ).values_list("pk", flat=True)
            )
            newly = fresh - logged_in
            # The budget went to the most recently used tenants still waiting.
            waiting = [pk for pk in order if pk not in logged_in]
            assert newly == set(waiting[: len(newly)])
            logged_in = fresh
            if len(logged_in) < tenants:
                assert this_hour == per_hour
                short = BillConnection.objects.filter(
                    dev_key_fingerprint=fingerprint, last_error_code=BUDGET_EXHAUSTED
                )
                assert short.count() == tenants - len(logged_in)
                assert set(short.values_list("status", flat=True)) == {
                    ConnectionStatus.RATE_LIMITED
                }
                # Keep the logged-in ones alive through the hour, as beat would.
                for minutes in (20, 20, 15):
                    bill_app.advance(minutes * 60)
                    refresh_due()
                bill_app.advance(6 * 60)  # past the hour since this batch logged in
    totals = bill_emulator.state.counters(dev_key=dev_key)
    assert totals["rejected"] == 0  # never a BDC_1144
    assert totals["logins"] == tenants
    assert hours == 4
    assert limits.status(fingerprint).budget_shortfalls > 0
    assert any("login budget exhausted" in r.getMessage() for r in caplog.records)


def test_redis_keys_expire_on_their_own(bill_settings, bill_app):
    bill_settings(REDIS_URL=REDIS_URL)
    fingerprint = "fp-ttl"
    limits.get_limiter().reset()
    limits.take_login(fingerprint)
    limits.pause_dev_key(fingerprint)
    with limits.request_slot("fp-ttl-other", "00801000000000000009"):
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=limits.REDIS_PREFIX + "*"))
        assert len(keys) == 3
        assert all(0 < client.ttl(key) <= 3660 + 60 for key in keys)
    limits.get_limiter().reset()


def test_a_spent_budget_raises_login_budget_exhausted(budget, bill_app):
    budget(1)
    limits.take_login("fp-exhausted")
    with pytest.raises(LoginBudgetExhausted) as refused:
        limits.take_login("fp-exhausted")
    assert isinstance(refused.value, RateLimited) and refused.value.scope == "login_budget"
    assert refused.value.code == "login_budget_exhausted"


# --- Redis trouble ----------------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed again)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def use_redis(bill_settings, url: str = REDIS_URL, **more) -> None:
    bill_settings(REDIS_URL=url, **more)


def forget_redis_keys() -> None:
    """What a Redis restart without persistence (or a FLUSHDB) does to the limiter's keys.

    Only the limiter's keys are deleted, not the whole database: the test Redis database is
    also the Celery broker of the worker tests.
    """
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=limits.REDIS_PREFIX + "*"):
        client.delete(key)


def test_unreachable_redis_raises_transient_error_without_the_password(bill_settings, bill_app):
    use_redis(bill_settings, f"redis://:hunter2-limiter@127.0.0.1:{closed_port()}/1")
    calls = {
        "take_login": lambda: limits.take_login("fp-down"),
        "request_slot": lambda: limits.request_slot("fp-down", "00801000000000000001").__enter__(),
        "pause_dev_key": lambda: limits.pause_dev_key("fp-down"),
        "paused_until": lambda: limits.paused_until("fp-down"),
        "record_shortfall": lambda: limits.record_shortfall("fp-down"),
        "status": lambda: limits.status("fp-down"),
        "reset": limits.reset,
    }
    for name, call in calls.items():
        with pytest.raises(TransientError) as down:
            call()
        text = f"{down.value} {down.value!r}"
        assert "Redis" in text and "unreachable" in text, name
        assert "hunter2" not in text and "redis://" not in text, name  # the host, not the URL
        assert "127.0.0.1" in text, name


def test_a_failed_slot_release_keeps_the_callers_result(
    bill_settings, bill_app, monkeypatch, caplog
):
    use_redis(bill_settings)
    limiter = limits.get_limiter()
    gone = redis.Redis.from_url(f"redis://127.0.0.1:{closed_port()}/1")
    answers = []
    with caplog.at_level(logging.WARNING, logger="bill_integration.limits"):
        with limits.request_slot("fp-release", "00801000000000000001"):
            monkeypatch.setattr(limiter, "redis", gone)  # Redis goes away while BILL answers
            answers.append("BILL answered")
        monkeypatch.undo()
        with (
            pytest.raises(ValueError, match="the body's own error"),
            limits.request_slot("fp-release", "00801000000000000001"),
        ):
            monkeypatch.setattr(limiter, "redis", gone)
            raise ValueError("the body's own error")
    monkeypatch.undo()
    assert answers == ["BILL answered"]
    warnings = [r.getMessage() for r in caplog.records if "not released" in r.getMessage()]
    assert len(warnings) == 2 and all("LimiterUnavailable" in w for w in warnings)
    limits.reset()


def test_the_login_budget_survives_redis_losing_its_keys(bill_settings, bill_app):
    use_redis(bill_settings, LOGIN_BUDGET_PER_HOUR=5)
    limits.reset()
    fingerprint = "fp-restart"
    for _ in range(3):
        limits.take_login(fingerprint)
    bill_app.advance(10 * 60)
    forget_redis_keys()
    assert limits.status(fingerprint).logins_used == 3
    forget_redis_keys()
    limits.take_login(fingerprint)
    limits.take_login(fingerprint)
    with pytest.raises(LoginBudgetExhausted) as refused:
        limits.take_login(fingerprint)
    # The rebuilt window keeps each login's time: the first three free up an hour after them.
    assert abs((refused.value.retry_at - (now() + timedelta(minutes=50))).total_seconds()) < 5
    limits.reset()  # forgets the database's record of logins too
    forget_redis_keys()
    assert limits.status(fingerprint).logins_used == 0


@pytest.mark.postgresql(reason="row locks and concurrent writers: SQLite locks the whole database")
@pytest.mark.django_db(transaction=True)
def test_workers_racing_after_redis_lost_its_keys_stay_within_the_budget(bill_settings, bill_app):
    use_redis(bill_settings, LOGIN_BUDGET_PER_HOUR=20)
    limits.reset()
    fingerprint = "fp-restart-race"
    for _ in range(8):
        limits.take_login(fingerprint)
    forget_redis_keys()
    granted, refused = [], []

    def spend() -> None:
        for _ in range(5):
            try:
                limits.take_login(fingerprint)
                granted.append(1)
            except LoginBudgetExhausted:
                refused.append(1)
        connections.close_all()

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(granted) == 12 and len(refused) == 28
    limits.reset()


def test_tenants_failing_to_link_cannot_starve_the_healthy_ones(
    limiter_backend, make_connection, bill_emulator, bill_app, bill_settings
):
    """20 tenants keep linking with wrong passwords on the key 3 healthy tenants share.

    Every attempt is a BILL login. Each hostile tenant may spend only its own allowance, and
    all attempts together stop short of the share kept for renewals: the healthy tenants'
    sessions are renewed every time they need it, never refused.
    """
    from bill_integration import services
    from bill_integration.exceptions import InvalidCredentials
    from tests.session_support import make_tenant

    bill_settings(
        LOGIN_BUDGET_PER_HOUR=40,
        LOGIN_RESERVE_FOR_RENEWALS=0.5,
        LOGIN_ATTEMPTS_PER_TENANT=5,
    )
    first = make_connection()  # set up with a direct login, outside the budget
    dev_key = first.account.dev_key
    healthy = [first, *(make_connection(dev_key=dev_key) for _ in range(2))]
    victims = [bill_emulator.state.add_account(dev_key=dev_key) for _ in range(20)]
    hostile = [make_tenant() for _ in victims]

    refused_attempts = 0
    for _round in range(6):  # every 10 minutes for an hour
        for tenant, account in zip(hostile, victims):
            try:
                services.link(
                    tenant,
                    username=account.username,
                    password="wrong-password",
                    organization_id=account.organization_id,
                    dev_key=dev_key,
                    environment="emulator",
                )
            except InvalidCredentials:
                pass
            except RateLimited as exc:
                assert exc.scope == "login_budget"
                refused_attempts += 1
        # BILL ended the healthy sessions (say a deploy at BILL): each needs a new login now.
        for connection in healthy:
            bill_emulator.state.invalidate_sessions(organization_id=connection.organization_id)
            stored = BillConnection.objects.get(pk=connection.pk)
            get_session(stored.tenant).request("GET", "/v3/login/session")  # never refused
        bill_app.advance(10 * 60)

    logins = bill_emulator.state.counters(dev_key=dev_key)["logins"] - 3  # less the set-up
    assert refused_attempts > 0  # the hostile tenants were stopped ...
    assert logins <= 40  # ... within the key's budget, the 18 healthy renewals included
    for connection in healthy:
        row = BillConnection.objects.get(pk=connection.pk)
        assert row.status == ConnectionStatus.ACTIVE, row.last_error_code
