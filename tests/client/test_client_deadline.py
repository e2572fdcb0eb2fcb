"""A total deadline per BILL call, and a cap on the size of an answer.

``READ_TIMEOUT`` bounds each socket read only: an answer dripped a byte at a time never trips
it. These tests drip answers from the emulator (fault "drip") and prove the call stops at
``CALL_DEADLINE`` with wide margins (a 1 s deadline against a 10 s drip); they never assert
a tight duration.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.core.checks import Error

from bill_integration.client import BillClient, SpendClient, get_client, get_spend_client
from bill_integration.client.checks import E010_CALL_DEADLINE, check_call_deadline
from bill_integration.exceptions import (
    ConfigurationError,
    TransientError,
    UnexpectedResponse,
)
from tests.canned_http import CannedServer

#: A drip far longer than the deadline: a call that waited for it would take 10 s.
DRIP = {"interval": 0.3, "seconds": 10}
#: Well under the 10 s drip, well over the 1 s deadline (plus a loaded machine's slack).
STOPPED_WELL_BEFORE_THE_DRIP_ENDS = 6.0


@pytest.fixture
def one_second_deadline(bill_environment, bill_settings):
    bill_settings(CALL_DEADLINE=timedelta(seconds=1))
    return bill_environment


def credentials(account):
    return {
        "username": account.username,
        "password": account.password,
        "organization_id": account.organization_id,
        "dev_key": account.dev_key,
    }


def _login(api, env, account):
    return get_client(env, api).login(**credentials(account))


def _session_info(api, env, account):
    client = get_client(env, api)
    result = client.login(**credentials(account))
    return lambda: client.session_info(session_id=result.session_id, dev_key=account.dev_key)


CALLS = {
    # name: (setup before the fault -> the call to make)
    "v3 login": lambda env, account: lambda: _login("v3", env, account),
    "v2 login": lambda env, account: lambda: _login("v2", env, account),
    "v3 session info": lambda env, account: _session_info("v3", env, account),
    "v2 session info": lambda env, account: _session_info("v2", env, account),
    "v3 caller request": lambda env, account: (
        lambda client, result: (
            lambda: client.request(
                "GET", "/v3/vendors", session_id=result.session_id, dev_key=account.dev_key
            )
        )
    )(get_client(env, "v3"), _login("v3", env, account)),
    "v2 logout": lambda env, account: (
        lambda client, result: (
            lambda: client.logout(session_id=result.session_id, dev_key=account.dev_key)
        )
    )(get_client(env, "v2"), _login("v2", env, account)),
    "spend token check": lambda env, account: (
        lambda: get_spend_client(env).current_user(api_token=account.api_token)
    ),
}


DRIPPED = [pytest.param(name, False, id=f"{name}, body drips") for name in sorted(CALLS)] + [
    pytest.param(name, True, id=f"{name}, headers drip")
    for name in ("v2 login", "v3 session info", "spend token check")
]


@pytest.mark.parametrize("name, headers", DRIPPED)
def test_a_dripping_answer_stops_at_the_call_deadline(
    one_second_deadline, bill_account, bill_emulator, name, headers
):
    call = CALLS[name](one_second_deadline, bill_account)
    bill_emulator.state.set_fault("drip", dev_key=bill_account.dev_key, headers=headers, **DRIP)

    started = time.monotonic()
    with pytest.raises(TransientError) as caught:
        call()
    elapsed = time.monotonic() - started

    assert elapsed < STOPPED_WELL_BEFORE_THE_DRIP_ENDS
    assert "did not finish answering" in str(caught.value)
    assert "within 1 s" in str(caught.value)
    for secret in (bill_account.password, bill_account.dev_key, bill_account.api_token):
        assert secret not in str(caught.value) and secret not in repr(caught.value)
    # The same (pooled, per-thread) client works again once BILL answers normally.
    bill_emulator.state.clear_faults()
    api = name.split()[0]
    if api == "spend":
        call()
    else:
        assert _login(api, one_second_deadline, bill_account).user_id == bill_account.user_id


def test_the_deadline_is_not_the_read_timeout(one_second_deadline, bill_account, bill_emulator):
    client = get_client(one_second_deadline, "v3")
    assert client.timeout[1] == 30.0  # each read may wait 30 s; the drip never makes it wait
    assert client.call_deadline == 1.0


def test_a_slow_answer_within_the_deadline_is_read_whole(
    bill_environment, bill_account, bill_emulator
):
    bill_emulator.state.set_fault(
        "drip", dev_key=bill_account.dev_key, interval=0.002, seconds=0.2, headers=True
    )
    result = get_client(bill_environment, "v3").login(**credentials(bill_account))
    assert result.organization_id == bill_account.organization_id


def test_a_finished_call_never_cuts_a_later_one_short(
    bill_environment, bill_account, bill_emulator, bill_settings
):
    # Call A finishes at once; its deadline (3 s) passes while call B, on the same pooled
    # connection, waits 2 s for its answer (B's own deadline is 1.5 s + 3 s).
    bill_settings(CALL_DEADLINE=timedelta(seconds=3))
    client = get_client(bill_environment, "v3")
    result = client.login(**credentials(bill_account))
    time.sleep(1.5)
    bill_emulator.state.set_fault("latency", dev_key=bill_account.dev_key, seconds=2, count=1)
    info = client.session_info(session_id=result.session_id, dev_key=bill_account.dev_key)
    assert info.organization_id == bill_account.organization_id


# --- size cap -----------------------------------------------------------------------------


def test_an_answer_declared_larger_than_the_cap_is_refused(bill_emulator, bill_account):
    client = BillClient(bill_emulator.v3_base, "v3", connect_timeout=5, read_timeout=5)
    client.max_response_bytes = 64  # a login answer is about 150 bytes
    with pytest.raises(UnexpectedResponse, match="larger than 64 bytes"):
        client.login(**credentials(bill_account))
    client.max_response_bytes = 10 * 1024 * 1024
    assert client.login(**credentials(bill_account)).user_id == bill_account.user_id


def test_an_endless_body_is_cut_off_at_the_cap():
    def endless(handler):
        # No Content-Length, no chunking: the body ends when the connection closes (never).
        handler.protocol_version = "HTTP/1.0"
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.end_headers()
        while not server.stop_event.is_set():
            handler.wfile.write(b" " * 65536)

    with CannedServer(endless) as server:
        client = SpendClient(server.url + "/connect", connect_timeout=5, read_timeout=5)
        client.max_response_bytes = 1024 * 1024
        with pytest.raises(UnexpectedResponse, match="larger than 1048576 bytes"):
            client.current_user(api_token="token")


def test_the_default_cap_is_ten_megabytes():
    assert (
        BillClient(
            "http://bill.invalid/connect", connect_timeout=1, read_timeout=1
        ).max_response_bytes
        == 10 * 1024 * 1024
    )


# --- settings -------------------------------------------------------------------------------


def test_timeouts_may_be_timedeltas_or_seconds(bill_environment, bill_account, bill_settings):
    bill_settings(CONNECT_TIMEOUT=timedelta(seconds=4), READ_TIMEOUT=timedelta(seconds=20))
    client = get_client(bill_environment, "v3")
    assert client.timeout == (4.0, 20.0)
    assert client.call_deadline == 24.0  # derived: CONNECT_TIMEOUT + READ_TIMEOUT
    assert client.login(**credentials(bill_account)).user_id == bill_account.user_id
    assert get_spend_client(bill_environment).timeout == (4.0, 20.0)

    bill_settings(CONNECT_TIMEOUT=2, READ_TIMEOUT=7.5, CALL_DEADLINE=timedelta(seconds=9))
    client = get_client(bill_environment, "v2")
    assert (client.timeout, client.call_deadline) == ((2.0, 7.5), 9.0)


def test_the_default_deadline_is_connect_plus_read_timeout(bill_settings):
    bill_settings.remove("CONNECT_TIMEOUT", "READ_TIMEOUT", "CALL_DEADLINE")
    assert BillClient("http://bill.invalid/connect", "v3").call_deadline == 35.0


@pytest.mark.parametrize("value", ["35", 0, -1, True, timedelta(0)])
def test_a_bad_timing_value_is_a_configuration_error(bill_settings, value):
    bill_settings(CALL_DEADLINE=value)
    with pytest.raises(ConfigurationError, match="CALL_DEADLINE"):
        BillClient("http://bill.invalid/connect", "v3")
    with pytest.raises(ConfigurationError, match="READ_TIMEOUT"):
        BillClient("http://bill.invalid/connect", "v3", connect_timeout=1, read_timeout=value)


# --- system check -----------------------------------------------------------------------------


def test_check_accepts_the_defaults(bill_settings):
    bill_settings.remove("CONNECT_TIMEOUT", "READ_TIMEOUT", "CALL_DEADLINE", "CONCURRENCY_LEASE")
    assert check_call_deadline() == []


@pytest.mark.parametrize(
    "changes, says",
    [
        ({"CALL_DEADLINE": timedelta(seconds=60)}, "given: 60 s"),
        ({"CALL_DEADLINE": timedelta(seconds=90)}, "given: 90 s"),
        (
            {"CONNECT_TIMEOUT": timedelta(seconds=5), "READ_TIMEOUT": timedelta(seconds=55)},
            "CONNECT_TIMEOUT + READ_TIMEOUT: 60 s",
        ),
        (
            {"CALL_DEADLINE": timedelta(seconds=20), "CONCURRENCY_LEASE": timedelta(seconds=15)},
            "given: 20 s",
        ),
    ],
)
def test_check_refuses_a_deadline_the_lease_does_not_outlive(bill_settings, changes, says):
    bill_settings.update({"CONCURRENCY_LEASE": timedelta(seconds=60), **changes})
    (error,) = check_call_deadline()
    assert isinstance(error, Error) and error.id == E010_CALL_DEADLINE
    assert says in error.msg and "CONCURRENCY_LEASE" in error.msg


def test_check_reports_a_value_of_the_wrong_type(bill_settings):
    bill_settings(CALL_DEADLINE="35 seconds")
    (error,) = check_call_deadline()
    assert error.id == E010_CALL_DEADLINE and "timedelta" in error.msg
