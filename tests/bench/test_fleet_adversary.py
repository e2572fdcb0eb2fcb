"""The fleet benchmark's dead-session counter can fail: BILL ends sessions the app trusts.

Not timed. A tenant whose visits come 31 minutes apart keeps a session the app trusts (it
assumes BILL's documented 35 minutes, less the 3-minute margin); when BILL really ends
sessions after 30 idle minutes and no sweep keeps them alive, the counter must read non-zero,
and each dead session must be replayed after one re-login.
"""

from __future__ import annotations

import pytest

from bench import fleet_model as fm
from bench import trace as tr


def tenant_with_gaps(minutes: int, visits: int = 12) -> tr.Tenant:
    tenant = tr.Tenant(index=0, kind="busy", offset=0)
    start = tr.DAY  # well inside the measured week
    for _ in range(visits):
        visit = tr.Visit(start, calls=3, spacing=10)
        tenant.visits.append(visit)
        start = visit.end + minutes * 60
    return tenant


@pytest.fixture(params=["always", "predicted"])
def warmth_policy(request, settings):
    settings.BILL_INTEGRATION = {**settings.BILL_INTEGRATION, "WARMTH": request.param}
    return request.param


def test_counter_reads_nonzero_when_the_sweep_is_disabled(warmth_policy):
    enemy = fm.Adversary(idle=30 * 60, sweep_disabled=True)
    out = fm.simulate_ours(tenant_with_gaps(31), enemy)
    assert out.dead_unannounced > 0
    assert out.dead_knowable == 0  # the app trusted nothing past BILL's documented limit
    assert out.replayed_after_one_login == out.dead_unannounced
    assert sum(out.replays.values()) == out.dead_unannounced


def test_no_dead_session_when_bill_keeps_its_documented_limit(warmth_policy):
    out = fm.simulate_ours(tenant_with_gaps(31), fm.Adversary(sweep_disabled=True))
    assert out.handed_out == 36
    assert out.dead_unannounced == out.dead_knowable == 0


def test_a_random_drop_is_counted_and_replayed():
    enemy = fm.Adversary(drop_per_hour=50.0)  # every session dropped within minutes
    out = fm.simulate_baseline("nango", tenant_with_gaps(5), enemy)
    assert out.dead_unannounced > 0
    assert out.replayed_after_one_login == out.dead_unannounced
