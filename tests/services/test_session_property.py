"""Property: over random interleavings of calls, clock moves, sweeps and faults, get_session
never hands out a session BILL has let go idle, and stored credentials never change."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from bill_integration.exceptions import RateLimited, SessionUnavailable, TransientError
from bill_integration.models import ConnectionStatus
from bill_integration.services import get_session, refresh_due
from tests.session_support import stored

IDLE = timedelta(minutes=35)
EXPECTED_FAILURES = (TransientError, SessionUnavailable, RateLimited)
#: Boundaries (the 20-minute keep-alive, the 30-minute safety line, BILL's 35 minutes) and
#: anything in between.
MOMENTS = st.one_of(
    st.sampled_from([60, 20 * 60, 29 * 60, 30 * 60, 31 * 60, 34 * 60, 36 * 60, 39 * 60]),
    st.integers(min_value=0, max_value=50 * 60),
)


@pytest.mark.slow
@pytest.mark.django_db
def test_no_session_is_handed_out_past_the_idle_limit(make_connection, bill_emulator, bill_app):
    state = bill_emulator.state

    class Sessions(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            state.clear_faults()
            self.connection = make_connection()
            first = stored(self.connection)
            self.credentials = (
                first.username,
                first.password,
                first.dev_key,
                first.organization_id,
            )
            self.version = first.version
            self.ended_by_bill: set[str] = set()
            self.handed_out = 0

        @rule(seconds=MOMENTS)
        def time_passes(self, seconds: int) -> None:
            bill_app.advance(seconds)

        @rule(seconds=MOMENTS, use=st.booleans())
        def caller_comes_back_later(self, seconds: int, use: bool) -> None:
            bill_app.advance(seconds)
            self.caller_asks_for_a_session(use)

        @rule(use=st.booleans())
        def caller_asks_for_a_session(self, use: bool) -> None:
            try:
                session = get_session(self.connection.tenant_id)
            except EXPECTED_FAILURES:
                return
            self.handed_out += 1
            if session.session_id not in self.ended_by_bill:
                at_bill = state.peek_session(session.session_id)
                assert at_bill is not None, "handed out a session BILL already dropped"
                assert state.now() - at_bill.last_used < IDLE, "handed out an idle session"
            if use:
                try:
                    session.request("GET", "/v3/vendors")
                except EXPECTED_FAILURES:
                    pass

        @rule()
        def beat_runs_the_sweep(self) -> None:
            refresh_due()

        @rule(kind=st.sampled_from(["status", "reset", "bdc_1001", "bdc_1322"]))
        def bill_fails_once(self, kind: str) -> None:
            params = {
                "status": {"status": 503},
                "reset": {},
                "bdc_1001": {"code": "BDC_1001"},
                "bdc_1322": {"code": "BDC_1322"},
            }[kind]
            state.set_fault(
                "error" if kind.startswith("bdc") else kind,
                organization_id=self.connection.organization_id,
                count=1,
                **params,
            )

        @rule()
        def bill_ends_the_session(self) -> None:
            self.ended_by_bill.add(stored(self.connection).session_id)
            state.invalidate_sessions(organization_id=self.connection.organization_id)

        @invariant()
        def fenced_and_credentials_untouched(self) -> None:
            row = stored(self.connection)
            assert row.version >= self.version
            self.version = row.version
            assert (
                row.username,
                row.password,
                row.dev_key,
                row.organization_id,
            ) == self.credentials
            assert row.status in (
                ConnectionStatus.ACTIVE,
                ConnectionStatus.DEGRADED,
                ConnectionStatus.RATE_LIMITED,
            )

        def teardown(self) -> None:
            state.clear_faults()

    run_state_machine_as_test(
        Sessions,
        settings=settings(
            max_examples=40,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
