"""A BILL that drips its answers: never more than 3 requests in flight, no call past its deadline.

Eight workers call BILL at once for one organization while BILL sends each answer one byte at
a time for 10 seconds. Every call is cut at ``CALL_DEADLINE`` (1 s here), and the
organization's concurrency slots (3, BILL's limit) keep the others waiting; a cut call's slot
is given back only a moment later, because BILL may still count that request as running. BILL
must never see a fourth concurrent request (it would answer BDC_1322).
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connections

from bill_integration.exceptions import CallDeadlineExceeded
from bill_integration.services import get_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CALLERS = 8
DRIP_SECONDS = 10


def test_a_dripping_bill_never_sees_more_than_three_requests_of_one_organization(
    make_connection, bill_emulator, bill_settings
):
    bill_settings(
        CALL_DEADLINE=timedelta(seconds=1),
        CONCURRENCY_LEASE=timedelta(seconds=20),
        CONCURRENCY_WAIT=timedelta(seconds=60),
    )
    connection = make_connection()
    tenant = connection.tenant
    bill_emulator.state.set_fault(
        "drip", organization_id=connection.organization_id, interval=0.3, seconds=DRIP_SECONDS
    )
    barrier = threading.Barrier(CALLERS)
    outcomes: list[tuple[str, float]] = []

    def call() -> None:
        try:
            session = get_session(tenant)
            barrier.wait(timeout=10)
            started = time.monotonic()
            try:
                session.request("GET", "/v3/login/session")
                outcomes.append(("answered", time.monotonic() - started))
            except CallDeadlineExceeded:
                outcomes.append(("cut", time.monotonic() - started))
            except Exception as exc:  # noqa: BLE001 - the test reports it
                outcomes.append((type(exc).__name__, time.monotonic() - started))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=call) for _ in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert [kind for kind, _ in outcomes] == ["cut"] * CALLERS, outcomes
    counters = bill_emulator.state.counters(organization_id=connection.organization_id)
    assert counters["rejected"] == 0  # BILL never saw a 4th request at once (no BDC_1322)
    # Each call was cut at its deadline, never left to run to the drip's end; the waits
    # behind the three slots come on top, but no caller waited for a whole drip.
    assert all(seconds < DRIP_SECONDS for _, seconds in outcomes), outcomes
