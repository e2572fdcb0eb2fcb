"""Spend & Expense-only connections: S&E's own rate limit across workers, every HTTP method."""

from __future__ import annotations

import threading
from datetime import timedelta
from types import SimpleNamespace

import pytest

from bill_integration import services
from bill_integration.auth_methods import SPEND_CALLS_PER_MINUTE, AuthMethod
from bill_integration.exceptions import RateLimited
from bill_integration.services import gateway
from tests.canned_http import CannedServer, reply

pytestmark = pytest.mark.django_db


@pytest.mark.postgresql(reason="row locks and concurrent writers: SQLite locks the whole database")
def test_the_spend_limit_is_shared_by_workers_and_kept_before_bill_refuses(
    tenant, bill_emulator, bill_app, bill_clock, bill_settings
):
    bill_settings(CONCURRENCY_WAIT=timedelta(milliseconds=200))
    account = bill_emulator.state.add_account(kind="spend")
    services.link(
        tenant,
        auth_method=AuthMethod.SPEND_TOKEN,
        environment="emulator",
        api_token=account.api_token,
    )
    session = services.get_session(tenant)
    state = bill_emulator.state
    before = state.counters()["spend"]
    # The link checked the token once: that call is in the same minute's window.
    room = SPEND_CALLS_PER_MINUTE - 1
    done: list[int] = []
    refused: list[Exception] = []

    def worker(calls: int) -> None:
        for _ in range(calls):
            try:
                gateway.request(session, "GET", "/v3/spend/budgets")
                done.append(1)
            except RateLimited as exc:
                refused.append(exc)

    # Two workers, each with its own connection to the shared limiter, ask for more than BILL
    # allows in a minute between them.
    threads = [threading.Thread(target=worker, args=(room // 2 + 5,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(done) == room
    assert refused and all(exc.scope == "spend" for exc in refused)
    assert state.counters()["spend"] - before == room
    assert state.counters().get("spend_rejected", 0) == 0  # BILL never had to refuse

    bill_clock.advance(61)  # the window slides: calls go through again
    assert gateway.request(session, "GET", "/v3/spend/budgets") is not None


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_a_spend_connection_sends_every_http_method(method, bill_settings, bill_app):
    def created(handler):
        reply(handler, 201, {"id": "rmb_1"})

    with CannedServer(created) as server:
        bill_settings(
            ENVIRONMENTS={"emulator": {"v3": server.url + "/connect", "v2": server.url + "/api/v2"}}
        )
        holder = SimpleNamespace(
            auth_method=AuthMethod.SPEND_TOKEN,
            environment="emulator",
            api_token="a-spend-token",
            dev_key_fingerprint="spend:" + "0" * 58,
        )
        answer = gateway.request(holder, method, "/v3/spend/reimbursements", json={"amount": 1})
    assert answer == {"id": "rmb_1"}
    assert server.requests == [(method, "/connect/v3/spend/reimbursements")]
