"""Every sign-in method against the emulator over HTTP: link, use, 24 hours of sweeps, unlink."""

from __future__ import annotations

import pytest

from bill_integration import services
from bill_integration.auth_methods import METHODS, AuthMethod
from bill_integration.models import BillConnection
from bill_integration.services.sweep import refresh_due

pytestmark = pytest.mark.django_db

KIND = {
    AuthMethod.USER_PASSWORD: "user",
    AuthMethod.SYNC_TOKEN: "sync_token",
    AuthMethod.CONSOLE_TOKEN: "console",
    AuthMethod.SPEND_TOKEN: "spend",
    AuthMethod.OAUTH_CLIENT: "oauth",
}
#: A call each method's session can make.
PROBE = {AuthMethod.SPEND_TOKEN: "/v3/spend/budgets"}


def service_credentials(method: str, account) -> dict:
    """``services.link`` keyword arguments for an emulator account of ``method``'s kind."""
    login = {"organization_id": account.organization_id, "dev_key": account.dev_key}
    return {
        AuthMethod.USER_PASSWORD: {
            "username": account.username,
            "password": account.password,
            **login,
        },
        AuthMethod.SYNC_TOKEN: {
            "username": account.username,
            "password": account.password,
            **login,
        },
        AuthMethod.CONSOLE_TOKEN: {
            "username": account.username,
            "console_token": account.console_token,
            **login,
        },
        AuthMethod.SPEND_TOKEN: {"api_token": account.api_token},
        AuthMethod.OAUTH_CLIENT: {
            "oauth_client_id": account.client_id,
            "oauth_client_secret": account.client_secret,
        },
    }[method]


@pytest.fixture
def make_account(bill_emulator):
    def make(method: str):
        extra = {"api_token": ""} if method != AuthMethod.SPEND_TOKEN else {}
        return bill_emulator.state.add_account(kind=KIND[method], **extra)

    return make


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_links_is_used_and_swept_for_24_hours_then_unlinks(
    method, tenant, make_account, bill_emulator, bill_app, bill_clock
):
    account = make_account(method)
    connection = services.link(
        tenant, auth_method=method, environment="emulator", **service_credentials(method, account)
    )
    assert connection.auth_method == method
    path = PROBE.get(method, "/v3/vendors")
    assert services.get_session(tenant).request("GET", path) is not None

    state = bill_emulator.state
    for _ in range(24 * 15):  # 24 emulated hours, a sweep every 4 minutes
        bill_clock.advance(4 * 60)
        refresh_due()
    assert services.get_session(tenant).request("GET", path) is not None
    counters = state.counters()
    assert counters.get("expired_tokens_used", 0) == 0
    assert counters.get("login_failures", 0) == 0

    services.unlink(tenant)
    assert not BillConnection.objects.filter(tenant=tenant).exists()


def test_sync_token_name_that_is_no_email_links_and_is_kept_alive_rarely(
    tenant, make_account, bill_emulator, bill_app, bill_clock
):
    account = make_account(AuthMethod.SYNC_TOKEN)
    assert "@" not in account.username
    services.link(
        tenant,
        auth_method=AuthMethod.SYNC_TOKEN,
        environment="emulator",
        **service_credentials(AuthMethod.SYNC_TOKEN, account),
    )
    for _ in range(24 * 15):
        bill_clock.advance(4 * 60)
        refresh_due()
    counters = bill_emulator.state.counters()
    assert counters["logins"] == 1  # 48 idle hours: no new login in a day
    assert counters.get("session_info", 0) <= 2  # kept alive after 12 idle hours, not every 30 min


def test_console_token_link_sends_no_password(tenant, make_account, bill_emulator, bill_app):
    account = make_account(AuthMethod.CONSOLE_TOKEN)
    services.link(
        tenant,
        auth_method=AuthMethod.CONSOLE_TOKEN,
        environment="emulator",
        **service_credentials(AuthMethod.CONSOLE_TOKEN, account),
    )
    # The emulator refuses a console login that carries a password field at all.
    assert bill_emulator.state.counters()["console_logins"] == 1
    stored = BillConnection.objects.get(tenant=tenant)
    assert stored.password is None and stored.console_token == account.console_token


def test_spend_only_connection_makes_no_ap_ar_login(tenant, make_account, bill_emulator, bill_app):
    account = make_account(AuthMethod.SPEND_TOKEN)
    services.link(
        tenant,
        auth_method=AuthMethod.SPEND_TOKEN,
        environment="emulator",
        api_token=account.api_token,
    )
    session = services.get_session(tenant)
    assert session.request("GET", "/v3/spend/budgets") == {
        "results": [],
        "nextPage": None,
        "prevPage": None,
    }
    assert session.headers() == {"apiToken": account.api_token}
    counters = bill_emulator.state.counters()
    assert counters.get("logins", 0) == 0 and counters.get("login_failures", 0) == 0
    assert "api_token" not in repr(session) and account.api_token not in repr(session)


def test_oauth_connection_never_logs_in_and_renews_before_expiry(
    tenant, make_account, bill_emulator, bill_app, bill_clock
):
    account = make_account(AuthMethod.OAUTH_CLIENT)
    connection = services.link(
        tenant,
        auth_method=AuthMethod.OAUTH_CLIENT,
        environment="emulator",
        **service_credentials(AuthMethod.OAUTH_CLIENT, account),
    )
    assert connection.organization_id == account.organization_id
    assert connection.password is None and connection.dev_key is None
    first = services.get_session(tenant)
    assert first.headers() == {"Authorization": f"Bearer {first.session_id}"}
    for _ in range(24 * 15):
        bill_clock.advance(4 * 60)
        refresh_due()
        services.get_session(tenant).request("GET", "/v3/vendors")
    counters = bill_emulator.state.counters()
    assert counters.get("logins", 0) == 0  # never a /v3/login (no password, no devKey)
    assert counters.get("expired_tokens_used", 0) == 0
    assert counters["oauth_tokens"] >= 24  # an hour-long token renewed before each end
    assert services.get_session(tenant).session_id != first.session_id


def test_an_oauth_renewal_is_one_call_the_token_request(
    tenant, make_account, bill_emulator, bill_app, bill_clock
):
    """The organization is learnt at the link; renewing the token asks BILL nothing else."""
    account = make_account(AuthMethod.OAUTH_CLIENT)
    services.link(
        tenant,
        auth_method=AuthMethod.OAUTH_CLIENT,
        environment="emulator",
        **service_credentials(AuthMethod.OAUTH_CLIENT, account),
    )
    before = bill_emulator.state.counters()
    for _ in range(24 * 15):  # 24 idle hours, a sweep every 4 minutes
        bill_clock.advance(4 * 60)
        refresh_due()
    after = bill_emulator.state.counters()
    assert after["oauth_tokens"] - before["oauth_tokens"] >= 24
    assert after["calls"] == before["calls"]  # no session check, no keep-alive
    stored = BillConnection.objects.get(tenant=tenant)
    assert stored.organization_id == account.organization_id and stored.user_id


def test_the_emulator_refuses_a_console_login_that_sends_a_password(make_account, bill_emulator):
    """What makes the console test above prove that no password is sent."""
    import requests

    account = make_account(AuthMethod.CONSOLE_TOKEN)
    body = {
        "username": account.username,
        "consoleApiToken": account.console_token,
        "organizationId": account.organization_id,
        "devKey": account.dev_key,
    }
    url = bill_emulator.v3_base + "/v3/login"
    assert requests.post(url, json=body, timeout=5).status_code == 200
    refused = requests.post(url, json={**body, "password": ""}, timeout=5)
    assert refused.status_code == 400 and "password" in refused.text
