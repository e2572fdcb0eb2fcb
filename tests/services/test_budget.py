"""Every call counted per developer key and kind; upkeep bounded by its share (both backends)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bill_integration import limits
from bill_integration.conf import now
from bill_integration.constants import MAX_CALLS_PER_HOUR
from bill_integration.exceptions import RateLimited, UpkeepShareExhausted
from bill_integration.limits import counting
from bill_integration.services import gateway, get_session

pytestmark = [pytest.mark.django_db]


def test_the_rolling_hour_is_the_last_60_minutes_by_kind(limiter_backend, bill_app):
    fp = "fp-rolling"
    limits.count_call(fp, limits.CALLER, n=5)
    limits.count_call(fp, limits.KEEP_ALIVE, n=2)
    limits.count_call(fp, limits.BACKGROUND_LOGIN)
    limits.count_call(fp, limits.CALLER_LOGIN)
    limits.count_call(fp, limits.OTHER, n=3)
    limits.count_call("fp-someone-else", limits.CALLER, n=100)
    hour = limits.calls_last_hour(fp)
    assert (hour.caller, hour.keep_alive, hour.background_login) == (5, 2, 1)
    assert (hour.caller_login, hour.other) == (1, 3)
    assert (hour.upkeep, hour.logins, hour.total) == (3, 2, 12)

    bill_app.advance(30 * 60)
    limits.count_call(fp, limits.CALLER, n=7)
    assert limits.calls_last_hour(fp).caller == 12
    bill_app.advance(30 * 60)  # the first counts' minute is now 60 minutes back: out
    hour = limits.calls_last_hour(fp)
    assert (hour.caller, hour.upkeep, hour.total) == (7, 0, 7)
    assert limits.calls_last_hour(fp, at=now() - timedelta(minutes=31)).caller == 5


def test_calls_by_hour_gives_clock_hours_oldest_first(limiter_backend, bill_app):
    fp = "fp-by-hour"
    start = now()
    limits.count_call(fp, limits.KEEP_ALIVE, n=4)
    bill_app.advance(2 * 3600)
    limits.count_call(fp, limits.CALLER, n=9)
    hours = limits.calls_by_hour(fp, hours=24)
    assert len(hours) == 24
    assert hours[-1].start == now().replace(minute=0, second=0, microsecond=0)
    assert [h.start for h in hours] == sorted(h.start for h in hours)
    assert hours[-1].caller == 9 and hours[-1].keep_alive == 0
    assert hours[-3].start == start.replace(minute=0, second=0, microsecond=0)
    assert hours[-3].keep_alive == 4
    assert sum(h.total for h in hours) == 13
    assert len(limits.calls_by_hour(fp, hours=3)) == 3


def test_counted_fingerprints_lists_the_keys_with_calls(limiter_backend, bill_app):
    limits.count_call("fp-b", limits.CALLER)
    limits.count_call("fp-a", limits.OTHER)
    assert limits.counted_fingerprints() == ["fp-a", "fp-b"]
    bill_app.advance(3 * 3600)
    limits.count_call("fp-c", limits.CALLER)
    assert limits.counted_fingerprints(hours=1) == ["fp-c"]
    assert limits.counted_fingerprints(hours=24) == ["fp-a", "fp-b", "fp-c"]


def test_counts_are_stored_not_kept_by_the_process(limiter_backend, bill_app):
    """A new limiter object (what a restarted worker builds) reads the same counts."""
    limits.count_call("fp-stored", limits.CALLER, n=3)
    limits.close_connections()
    limits._backends.clear()
    assert limits.calls_last_hour("fp-stored").caller == 3


def test_upkeep_room_is_the_share_of_bills_hourly_limit(limiter_backend, bill_app, bill_settings):
    bill_settings(UPKEEP_SHARE=0.001)  # 20 upkeep calls an hour
    fp = "fp-room"
    assert limits.upkeep_limit() == 20 == round(0.001 * MAX_CALLS_PER_HOUR)
    limits.count_call(fp, limits.CALLER, n=50)  # callers' calls are not upkeep
    assert limits.upkeep_room(fp) == 20
    assert limits.take_upkeep(fp, limits.KEEP_ALIVE, n=15)
    assert limits.take_upkeep(fp, limits.BACKGROUND_LOGIN, n=5)
    assert limits.upkeep_room(fp) == 0
    assert not limits.take_upkeep(fp, limits.KEEP_ALIVE)  # refused, nothing counted
    assert limits.calls_last_hour(fp).upkeep == 20
    bill_app.advance(3600)
    assert limits.upkeep_room(fp) == 20


def test_upkeep_gives_way_to_callers_past_their_rest_of_the_hour(
    limiter_backend, bill_app, bill_settings
):
    """Upkeep never makes the call that takes the hour past BILL's limit, whatever its share."""
    bill_settings(UPKEEP_SHARE=0.6)  # 12,000 upkeep calls; callers' rest is 8,000
    fp = "fp-ceiling"
    limits.count_call(fp, limits.CALLER, n=MAX_CALLS_PER_HOUR - 110)  # callers past their rest
    limits.count_call(fp, limits.CALLER_LOGIN, n=5)
    limits.count_call(fp, limits.OTHER, n=5)  # every kind BILL counts, not just callers'
    assert limits.upkeep_room(fp) == 100  # not the share's 12,000
    assert limits.take_upkeep(fp, limits.KEEP_ALIVE, n=60)
    assert limits.take_upkeep(fp, limits.BACKGROUND_LOGIN, n=40)
    assert limits.upkeep_room(fp) == 0
    assert not limits.take_upkeep(fp, limits.KEEP_ALIVE)  # refused, nothing counted
    hour = limits.calls_last_hour(fp)
    assert (hour.total, hour.upkeep) == (MAX_CALLS_PER_HOUR, 100)
    limits.count_call(fp, counting.DEFERRED, n=50)  # turned-away upkeep is not a call
    assert limits.upkeep_room(fp) == 0
    bill_app.advance(3600)
    assert limits.upkeep_room(fp) == limits.upkeep_limit() == 12_000


def test_the_sweep_defers_a_keep_alive_when_callers_filled_the_hour(
    limiter_backend, make_connection, bill_app, bill_emulator
):
    connection = make_connection()
    fp = connection.dev_key_fingerprint
    limits.count_call(fp, limits.CALLER, n=MAX_CALLS_PER_HOUR)
    before = bill_emulator.state.counters(dev_key=connection.account.dev_key)["calls"]
    with gateway.background(), pytest.raises(UpkeepShareExhausted) as refused:
        gateway.session_info(connection)
    assert "BILL's hourly limit" in str(refused.value)
    hour = limits.calls_last_hour(fp)
    assert (hour.total, hour.keep_alive, hour.deferred) == (MAX_CALLS_PER_HOUR, 0, 1)
    after = bill_emulator.state.counters(dev_key=connection.account.dev_key)["calls"]
    assert after == before  # BILL never saw it


def test_unknown_kinds_are_refused(limiter_backend, bill_app):
    with pytest.raises(ValueError):
        limits.count_call("fp", "keepalive")
    with pytest.raises(ValueError):
        limits.take_upkeep("fp", limits.CALLER)


def test_the_gateway_counts_each_call_by_kind(limiter_backend, make_connection, bill_app):
    connection = make_connection()
    fp = connection.dev_key_fingerprint
    session = get_session(connection.tenant)
    session.request("GET", "/v3/login/session")
    session.request("GET", "/v3/login/session")
    gateway.session_info(connection)  # someone asked: a keep-alive, outside the share
    with gateway.background():
        gateway.session_info(connection)
    hour = limits.calls_last_hour(fp)
    assert (hour.caller, hour.keep_alive, hour.total) == (2, 2, 4)


def test_a_slot_counts_its_call_only_when_it_is_taken(limiter_backend, bill_app, bill_settings):
    bill_settings(CONCURRENCY_WAIT=timedelta(seconds=0.2))
    fp, org = "fp-slot-count", "0080100000000000009"
    with limits.request_slot(fp, org, count=limits.CALLER):
        pass
    with limits.request_slot(fp, org):  # a slot without a count (upkeep counted beforehand)
        pass
    assert (limits.calls_last_hour(fp).caller, limits.calls_last_hour(fp).total) == (1, 1)

    held = [limits.request_slot(fp, org) for _ in range(3)]
    for slot in held:
        slot.__enter__()
    with pytest.raises(RateLimited) as busy, limits.request_slot(fp, org, count=limits.CALLER):
        pass
    assert busy.value.scope == "concurrency"
    for slot in held:
        slot.__exit__(None, None, None)
    limits.pause_dev_key(fp)
    with pytest.raises(RateLimited) as paused, limits.request_slot(fp, org, count=limits.CALLER):
        pass
    assert paused.value.scope == "hourly"
    assert limits.calls_last_hour(fp).total == 1  # neither refused slot counted a call

    with pytest.raises(ValueError), limits.request_slot(fp, org, count="keepalive"):
        pass


def test_upkeep_inside_background_is_refused_past_the_share(
    limiter_backend, make_connection, bill_app, bill_settings, bill_emulator
):
    bill_settings(UPKEEP_SHARE=0.0001)  # 2 upkeep calls an hour
    connection = make_connection()
    fp = connection.dev_key_fingerprint
    before = bill_emulator.state.counters(dev_key=connection.account.dev_key)["calls"]
    with gateway.background():
        gateway.session_info(connection)
        gateway.session_info(connection)
        with pytest.raises(UpkeepShareExhausted) as refused:
            gateway.session_info(connection)
    assert refused.value.scope == "upkeep" and refused.value.code == "upkeep_share_exhausted"
    after = bill_emulator.state.counters(dev_key=connection.account.dev_key)["calls"]
    assert after - before == 2  # BILL never saw the refused one
    hour = limits.calls_last_hour(fp)
    assert (hour.keep_alive, hour.deferred) == (2, 1)
    gateway.session_info(connection)  # outside background: not upkeep, never refused
    get_session(connection.tenant).request("GET", "/v3/login/session")
    assert limits.calls_last_hour(fp).caller == 1


def test_minutes_are_utc_buckets():
    moment = now()
    assert counting.minute_of(moment).second == 0
    first, last = counting.window(moment)
    assert last - first == timedelta(minutes=59)


@pytest.mark.postgresql(reason="the PostgreSQL limiter's own connections")
def test_the_database_limiter_reuses_its_connections(bill_settings, bill_app, monkeypatch):
    from django.db import connection

    from bill_integration.limits.postgresql import PostgreSQLLimiter

    bill_settings(REDIS_URL=None)
    limiter = limits.get_limiter()
    assert isinstance(limiter, PostgreSQLLimiter)
    opened = []
    original = PostgreSQLLimiter._new_connection
    monkeypatch.setattr(
        PostgreSQLLimiter, "_new_connection", lambda self: opened.append(1) or original(self)
    )
    for _ in range(20):
        with limits.request_slot("fp-pool", "00801000000000000001"):
            limits.count_call("fp-pool", limits.CALLER)
    assert len(opened) <= 1  # was 3 new connections per call with CONN_MAX_AGE = 0
    assert limits.calls_last_hour("fp-pool").caller == 20

    # The server ends the pooled connection (a restart, an idle timeout): the next call
    # notices at once and opens a new one, without failing.
    pooled = limiter._pool.queue[-1]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pooled.connection.info.backend_pid])
    with limits.request_slot("fp-pool", "00801000000000000001"):
        pass
    limits.close_connections()


def test_checks_refuse_bad_limit_settings_and_recommend_redis(settings):
    from django.db import connection

    from bill_integration.limits.checks import (
        E013_LIMIT_SETTINGS,
        W004_DATABASE_LIMITER,
        check_database_limiter,
        check_limit_settings,
    )

    settings.BILL_INTEGRATION = {"UPKEEP_SHARE": 1.5, "LOGINS_PER_MINUTE": 0}
    found = check_limit_settings()
    assert [e.id for e in found] == [E013_LIMIT_SETTINGS] * 2
    assert "UPKEEP_SHARE" in found[0].msg and "LOGINS_PER_MINUTE" in found[1].msg
    settings.BILL_INTEGRATION = {"LOGINS_PER_MINUTE": None, "UPKEEP_SHARE": 0.5}
    assert check_limit_settings() == []
    # Recommended on PostgreSQL; SQLite's limiter is the demo's (one machine), so no warning.
    on_postgresql = connection.vendor == "postgresql"
    expected = [W004_DATABASE_LIMITER] if on_postgresql else []
    assert [w.id for w in check_database_limiter()] == expected
    settings.BILL_INTEGRATION = {"REDIS_URL": "redis://127.0.0.1:6379/13"}
    assert check_database_limiter() == []
