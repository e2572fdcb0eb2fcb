"""The BILL client's session lifecycle against the emulator over real HTTP, v3 and v2 alike.

Every test here runs once per API version (``api_version`` fixture); v3-only behaviour is at
the bottom, v2-only behaviour is in ``test_client_v2.py``.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import timedelta

import pytest

from bill_integration.client import BillClient, LoginResult, SessionInfo, get_client
from bill_integration.exceptions import (
    InvalidCredentials,
    InvalidDevKey,
    RateLimited,
    SessionInvalid,
    TransientError,
    UnexpectedResponse,
    UntrustedSession,
)

ORG_ID = re.compile(r"^00801[A-Z]{11}[a-z0-9]{4}$")
USER_ID = re.compile(r"^00601[A-Z]{11}[a-z0-9]{4}$")
SESSION_ID = re.compile(r"^!a[A-Za-z0-9_-]{43}$")


@pytest.fixture(params=["v3", "v2"])
def api_version(request):
    return request.param


@pytest.fixture
def client(bill_environment, api_version) -> BillClient:
    return get_client(bill_environment, api_version)


def login(client, account, **changes):
    credentials = {
        "username": account.username,
        "password": account.password,
        "organization_id": account.organization_id,
        "dev_key": account.dev_key,
        **changes,
    }
    return client.login(**credentials)


def probe(client, account, result):
    return client.session_info(session_id=result.session_id, dev_key=account.dev_key)


def test_login_returns_a_working_session(client, bill_account, bill_emulator):
    result = login(client, bill_account)

    assert isinstance(result, LoginResult)
    assert SESSION_ID.match(result.session_id)
    assert result.organization_id == bill_account.organization_id
    assert result.user_id == bill_account.user_id and USER_ID.match(result.user_id)
    assert result.trusted is False
    info = probe(client, bill_account, result)
    assert isinstance(info, SessionInfo)
    assert (info.organization_id, info.user_id) == (
        bill_account.organization_id,
        bill_account.user_id,
    )
    counters = bill_emulator.state.counters(organization_id=bill_account.organization_id)
    assert counters["logins"] == 1 and counters["session_info"] == 1


def test_login_v2_gives_api_endpoint_v3_does_not(client, bill_account, bill_emulator, api_version):
    result = login(client, bill_account)
    if api_version == "v2":
        assert result.api_endpoint == bill_emulator.v2_base
    else:
        assert result.api_endpoint is None


def test_wrong_password_is_invalid_credentials(client, bill_account):
    with pytest.raises(InvalidCredentials) as caught:
        login(client, bill_account, password="not-the-password")
    assert type(caught.value) is InvalidCredentials
    assert caught.value.bill_code == "BDC_1101"
    assert "do not match our records" in str(caught.value)


def test_unknown_user_is_invalid_credentials(client, bill_account):
    with pytest.raises(InvalidCredentials) as caught:
        login(client, bill_account, username="nobody@example.com")
    assert caught.value.bill_code == "BDC_1101"


def test_wrong_dev_key_is_invalid_dev_key(client, bill_account):
    with pytest.raises(InvalidDevKey) as caught:
        login(client, bill_account, dev_key="01WRONGWRONGWRONG000")
    assert caught.value.bill_code == "BDC_1102"


def test_wrong_organization_is_invalid_credentials(client, bill_account):
    with pytest.raises(InvalidCredentials) as caught:
        login(client, bill_account, organization_id="00801AAAAAAAAAAAzzzz")
    assert caught.value.bill_code == "BDC_1101"
    assert "orgId" in str(caught.value)


def test_session_expires_after_35_idle_minutes(client, bill_account, bill_clock, api_version):
    result = login(client, bill_account)
    bill_clock.advance(35 * 60)

    with pytest.raises(SessionInvalid) as caught:
        probe(client, bill_account, result)
    assert caught.value.bill_code == "BDC_1109"
    assert caught.value.http_status == (401 if api_version == "v3" else 200)


def test_a_call_at_34_minutes_extends_the_session(client, bill_account, bill_clock):
    result = login(client, bill_account)
    bill_clock.advance(34 * 60)
    probe(client, bill_account, result)
    bill_clock.advance(34 * 60)  # 68 minutes after login, 34 after the last call

    assert probe(client, bill_account, result).organization_id == bill_account.organization_id
    bill_clock.advance(35 * 60)
    with pytest.raises(SessionInvalid):
        probe(client, bill_account, result)


def test_logout_invalidates_the_session(client, bill_account, bill_emulator):
    result = login(client, bill_account)
    client.logout(session_id=result.session_id, dev_key=bill_account.dev_key)

    with pytest.raises(SessionInvalid):
        probe(client, bill_account, result)
    assert (
        bill_emulator.state.counters(organization_id=bill_account.organization_id)["logouts"] == 1
    )
    assert bill_emulator.state.active_sessions(organization_id=bill_account.organization_id) == 0


def test_session_only_works_with_its_own_dev_key(client, bill_account, bill_emulator):
    other = bill_emulator.state.add_account(username="other@example.com", password="pw-other")
    result = login(client, bill_account)

    with pytest.raises(SessionInvalid):
        client.session_info(session_id=result.session_id, dev_key=other.dev_key)


def test_unknown_session_is_session_invalid(client, bill_account):
    with pytest.raises(SessionInvalid):
        client.session_info(session_id="!a" + "x" * 43, dev_key=bill_account.dev_key)


def test_201st_login_in_an_hour_is_rate_limited(client, bill_account, bill_clock, bill_emulator):
    # Start just after the top of an emulator hour so the 201 logins share one clock hour.
    now = bill_clock.now()
    bill_clock.advance(
        (
            now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1, seconds=1) - now
        ).total_seconds()
    )
    for _ in range(200):
        login(client, bill_account)

    with pytest.raises(RateLimited) as caught:
        login(client, bill_account)
    error = caught.value
    assert error.bill_code == "BDC_1144" and error.scope == "hourly"
    expected = bill_clock.now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    assert error.retry_at == expected
    counters = bill_emulator.state.counters(dev_key=bill_account.dev_key)
    assert counters["logins"] == 200 and counters["rejected"] == 1

    bill_clock.advance((expected - bill_clock.now()).total_seconds() + 1)
    assert login(client, bill_account).organization_id == bill_account.organization_id


def test_fourth_concurrent_call_for_one_organization_is_rate_limited(
    bill_environment, api_version, bill_account, bill_emulator
):
    state = bill_emulator.state
    result = login(get_client(bill_environment, api_version), bill_account)
    state.set_fault("latency", organization_id=bill_account.organization_id, seconds=10, count=3)
    outcomes: list[object] = []

    def slow_probe() -> None:
        # get_client gives each thread its own pooled client.
        outcomes.append(probe(get_client(bill_environment, api_version), bill_account, result))

    threads = [threading.Thread(target=slow_probe) for _ in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while state.counters(organization_id=bill_account.organization_id)["faults"] < 3:
        assert time.monotonic() < deadline, "the three slow requests never reached the emulator"
        time.sleep(0.01)

    with pytest.raises(RateLimited) as caught:
        probe(get_client(bill_environment, api_version), bill_account, result)
    # Refused, not queued: the three are still held (10 s) when the 4th has its answer.
    assert all(thread.is_alive() for thread in threads)
    assert caught.value.bill_code == "BDC_1322" and caught.value.scope == "concurrency"
    assert caught.value.retry_at is None

    state.clear_faults()  # wakes the held requests
    for thread in threads:
        thread.join(timeout=10)
    assert len(outcomes) == 3 and all(isinstance(o, SessionInfo) for o in outcomes)
    # The slots are free again once the slow requests have answered.
    assert probe(get_client(bill_environment, api_version), bill_account, result)


def test_another_organization_is_not_limited_by_the_first(
    bill_environment, api_version, bill_emulator
):
    state = bill_emulator.state
    shared_key = "01SHAREDPARTNERKEY01"
    busy = state.add_account(username="busy@example.com", password="pw1", dev_key=shared_key)
    calm = state.add_account(username="calm@example.com", password="pw2", dev_key=shared_key)
    client = get_client(bill_environment, api_version)
    busy_session, calm_session = login(client, busy), login(client, calm)
    state.set_fault("latency", organization_id=busy.organization_id, seconds=10, count=3)
    threads = [
        threading.Thread(
            target=lambda: probe(get_client(bill_environment, api_version), busy, busy_session)
        )
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while state.counters(organization_id=busy.organization_id)["faults"] < 3:
        assert time.monotonic() < deadline
        time.sleep(0.01)

    assert probe(client, calm, calm_session).organization_id == calm.organization_id
    state.clear_faults()
    for thread in threads:
        thread.join(timeout=10)


@pytest.mark.parametrize("body", ["html", "json"])
def test_injected_5xx_is_transient(client, bill_account, bill_emulator, body):
    result = login(client, bill_account)
    bill_emulator.state.set_fault(
        "status", organization_id=bill_account.organization_id, status=503, body=body
    )

    with pytest.raises(TransientError) as caught:
        probe(client, bill_account, result)
    assert caught.value.http_status == 503


def test_hang_past_the_read_timeout_is_transient(
    bill_environment, api_version, bill_account, bill_emulator, bill_settings
):
    bill_settings(READ_TIMEOUT=timedelta(seconds=0.3))
    client = get_client(bill_environment, api_version)
    assert client.timeout[1] == 0.3
    result = login(client, bill_account)
    bill_emulator.state.set_fault("hang", dev_key=bill_account.dev_key, seconds=10)

    with pytest.raises(TransientError) as caught:
        probe(client, bill_account, result)
    # "in time": our read timeout fired, rather than the emulator closing after 10 s.
    assert "in time" in str(caught.value)


def test_connection_reset_is_transient(client, bill_account, bill_emulator):
    result = login(client, bill_account)
    bill_emulator.state.set_fault("reset", organization_id=bill_account.organization_id, count=1)

    with pytest.raises(TransientError):
        probe(client, bill_account, result)
    # The fault was used up; the next call (on a fresh connection) works.
    assert probe(client, bill_account, result).user_id == bill_account.user_id


def test_connection_closed_without_an_answer_is_transient(client, bill_account, bill_emulator):
    result = login(client, bill_account)
    bill_emulator.state.set_fault("drop", dev_key=bill_account.dev_key, count=1)

    with pytest.raises(TransientError):
        probe(client, bill_account, result)
    assert probe(client, bill_account, result).user_id == bill_account.user_id


def test_refused_connection_is_transient(api_version):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}" + ("/connect" if api_version == "v3" else "/api/v2")
    client = BillClient(base, api_version, connect_timeout=1, read_timeout=1)
    with pytest.raises(TransientError):
        client.session_info(session_id="!a" + "y" * 43, dev_key="01AAAAAAAAAAAAAAAAAA")


@pytest.mark.parametrize(
    ("code", "exception"),
    [
        ("BDC_1109", SessionInvalid),
        ("BDC_1144", RateLimited),
        ("BDC_1322", RateLimited),
        ("BDC_1361", UntrustedSession),
        ("BDC_1001", TransientError),
        ("BDC_1145", UnexpectedResponse),
    ],
)
def test_bill_error_codes_map_to_the_taxonomy(client, bill_account, bill_emulator, code, exception):
    result = login(client, bill_account)
    bill_emulator.state.set_fault("error", organization_id=bill_account.organization_id, code=code)

    with pytest.raises(exception) as caught:
        probe(client, bill_account, result)
    assert caught.value.bill_code == code


def test_request_makes_an_authenticated_call(client, bill_account, bill_emulator, api_version):
    result = login(client, bill_account)
    if api_version == "v3":
        answer = client.request(
            "GET", "/v3/vendors", session_id=result.session_id, dev_key=bill_account.dev_key
        )
        assert answer == {"results": [], "nextPage": None, "prevPage": None}
    else:
        answer = client.request(
            "POST",
            "/List/Vendor.json",
            session_id=result.session_id,
            dev_key=bill_account.dev_key,
            data={"start": 0, "max": 10},
        )
        assert answer == []
    assert bill_emulator.state.counters(organization_id=bill_account.organization_id)["calls"] == 2


def test_request_on_an_expired_session_is_session_invalid(
    client, bill_account, bill_clock, api_version
):
    result = login(client, bill_account)
    bill_clock.advance(36 * 60)
    method, path = ("GET", "/v3/vendors") if api_version == "v3" else ("POST", "/List/Vendor.json")
    with pytest.raises(SessionInvalid):
        client.request(method, path, session_id=result.session_id, dev_key=bill_account.dev_key)


def test_secrets_never_appear_in_errors_or_results(client, bill_emulator, api_version):
    password, dev_key = "canary-PASSWORD-7f3a9", "01CANARYDEVKEY7F3A9X"
    account = bill_emulator.state.add_account(
        username="canary@example.com", password=password, dev_key=dev_key
    )
    result = login(client, account)
    secrets = [password, dev_key, result.session_id]
    raised = []
    for attempt in (
        lambda: login(client, account, password=password + "-wrong"),
        lambda: login(client, account, dev_key="01CANARYWRONGKEY0000"),
    ):
        with pytest.raises(InvalidCredentials) as caught:
            attempt()
        raised.append(caught.value)
    for kind, params in (
        ("status", {"status": 502}),
        ("reset", {}),
        ("error", {"code": "BDC_1144"}),
    ):
        bill_emulator.state.set_fault(
            kind, organization_id=account.organization_id, count=1, **params
        )
        with pytest.raises(Exception) as caught:
            probe(client, account, result)
        raised.append(caught.value)
    client.logout(session_id=result.session_id, dev_key=dev_key)
    with pytest.raises(SessionInvalid) as caught:
        probe(client, account, result)
    raised.append(caught.value)

    texts = (
        [str(e) for e in raised]
        + [repr(e) for e in raised]
        + [repr(result), str(result), repr(client)]
    )
    for text in texts:
        for secret in secrets:
            assert secret not in text
    assert all(
        e.__cause__ is None or not any(s in str(e.__cause__) for s in secrets) for e in raised
    )


# --- v3 only ----------------------------------------------------------------------------------


def test_v3_untrusted_session_on_a_payment(bill_environment, bill_account):
    client = get_client(bill_environment, "v3")
    result = login(client, bill_account)
    with pytest.raises(UntrustedSession) as caught:
        client.request(
            "POST",
            "/v3/payments",
            session_id=result.session_id,
            dev_key=bill_account.dev_key,
            json={},
        )
    assert (caught.value.bill_code, caught.value.http_status) == ("BDC_1361", 403)


def test_v3_session_info_reports_mfa_status(bill_environment, bill_account, bill_emulator):
    client = get_client(bill_environment, "v3")
    info = probe(client, bill_account, login(client, bill_account))
    assert (info.mfa_status, info.mfa_bypass) == ("CHALLENGE", False)  # MFA on, not trusted
    off = bill_emulator.state.add_account(
        username="off@example.com", password="pw-off1", mfa_enabled=False
    )
    assert probe(client, off, login(client, off)).mfa_status == "DISABLED"


def test_v3_unknown_path_is_unexpected(bill_environment, bill_account):
    client = get_client(bill_environment, "v3")
    result = login(client, bill_account)
    with pytest.raises(UnexpectedResponse) as caught:
        client.request(
            "GET", "/v3/no-such-thing", session_id=result.session_id, dev_key=bill_account.dev_key
        )
    assert (caught.value.bill_code, caught.value.http_status) == ("BDC_1121", 404)


def test_get_client_is_cached_per_thread_and_dropped_on_settings_change(
    bill_environment, bill_emulator, bill_settings
):
    first = get_client(bill_environment, "v3")
    assert get_client(bill_environment, "v3") is first
    assert get_client(bill_environment, "v2") is not first
    elsewhere: list[BillClient] = []
    thread = threading.Thread(target=lambda: elsewhere.append(get_client(bill_environment, "v3")))
    thread.start()
    thread.join()
    assert elsewhere[0] is not first and elsewhere[0].base_url == first.base_url

    bill_settings(
        ENVIRONMENTS={
            **bill_settings["ENVIRONMENTS"],
            "emulator": {"v3": bill_emulator.url + "/elsewhere", "v2": bill_emulator.v2_base},
        },
    )
    moved = get_client(bill_environment, "v3")
    assert moved is not first and moved.base_url == bill_emulator.url + "/elsewhere"


def test_client_class_setting_is_used(bill_environment, bill_account, bill_settings):
    bill_settings(CLIENT_CLASS="tests.client.test_client_v3.CountingClient")
    client = get_client(bill_environment, "v3")
    assert isinstance(client, CountingClient)
    login(client, bill_account)
    assert client.sent == [("POST", "/v3/login")]


class CountingClient(BillClient):
    """A CLIENT_CLASS that records what it sends (how a project adds logging)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[str, str]] = []

    def send(self, method, path, **kwargs):
        self.sent.append((method, path))
        return super().send(method, path, **kwargs)


def test_error_reports_hide_the_client_frames_locals(client, bill_emulator, api_version):
    """Django's error reports (500 page, mail_admins) list frame locals; ours must be hidden."""
    import sys

    from django.views.debug import ExceptionReporter

    password, dev_key = "canary-report-PW-55e1", "01CANARYREPORTKEY551"
    account = bill_emulator.state.add_account(
        username="report@example.com", password=password, dev_key=dev_key
    )
    result = login(client, account)
    bill_emulator.state.set_fault("status", organization_id=account.organization_id, status=503)
    for call in (
        lambda: login(client, account, password=password + "-x"),
        lambda: probe(client, account, result),
    ):
        try:
            call()
        except (InvalidCredentials, TransientError):
            exc_type, exc, tb = sys.exc_info()
        frames = ExceptionReporter(None, exc_type, exc, tb).get_traceback_frames()
        ours = [f for f in frames if "bill_integration/client/" in f["filename"]]
        assert ours, "the traceback must go through the client"
        for frame in ours:
            for name, value in frame["vars"]:
                for secret in (password, dev_key, result.session_id):
                    assert secret not in str(value), (frame["function"], name)
