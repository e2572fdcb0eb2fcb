"""The Celery sweep benchmark reports what each run did, and its target needs every tenant kept
alive.

Not timed. A run whose rows turned into refused logins (the app judged their sessions gone by
the time their task ran) must say so in its outcomes and end once nothing moves, not wait out
its timeout; and a batched run that did not keep every tenant alive cannot meet the target.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from bench import sweep_celery, sweep_report
from bill_integration.conf import now
from bill_integration.models import BillConnection, ConnectionStatus


@pytest.fixture
def swept_rows(make_connection):
    """Four rows as a sweep leaves them: kept alive, logged in, refused, not reached."""
    since = now()
    later = since + timedelta(seconds=5)
    rows = [make_connection() for _ in range(4)]
    kept, logged_in, refused, untouched = rows
    BillConnection.objects.filter(pk=kept.pk).update(
        session_obtained_at=since - timedelta(hours=1), last_refresh_at=later
    )
    BillConnection.objects.filter(pk=logged_in.pk).update(
        session_obtained_at=later, last_refresh_at=later
    )
    BillConnection.objects.filter(pk=refused.pk).update(
        status=ConnectionStatus.RATE_LIMITED, last_refresh_at=later
    )
    BillConnection.objects.filter(pk=untouched.pk).update(
        last_refresh_at=since - timedelta(minutes=1)
    )
    return since


@pytest.mark.django_db
def test_each_row_is_counted_by_what_its_sweep_did(swept_rows):
    assert sweep_celery._outcomes(swept_rows) == {
        "kept_alive": 1,
        "logged_in": 1,
        "rate_limited": 1,
        "not handled": 1,
    }


@pytest.mark.django_db
def test_a_run_with_rows_left_unhandled_ends_when_nothing_moves(swept_rows, monkeypatch):
    monkeypatch.setattr(sweep_celery, "STALL_SECONDS", 0.5)
    monkeypatch.setattr(sweep_celery.time, "sleep", lambda seconds: None)

    _, handled = sweep_celery._wait_until_handled(swept_rows, tenants=4, timeout=600)

    assert handled == 3


def report_of(batched_outcomes: dict[str, int]) -> list[list[str]]:
    run = {"seconds": 200.0, "ideal_seconds": 187.5, "calls": 30_000}
    celery = {
        "tenants": 30_000,
        "threads": 16,
        "keys": 30,
        "runs": [
            {**run, "dispatch": "batched", "outcomes": batched_outcomes},
            {**run, "dispatch": "one message per id", "outcomes": {"kept_alive": 30_000}},
        ],
    }
    text, targets = sweep_report._celery(celery)
    return targets


def test_the_target_is_met_only_when_every_tenant_was_kept_alive():
    assert report_of({"kept_alive": 30_000})[0][2] == "**met**"
    missed = report_of({"kept_alive": 29_000, "logged_in": 200, "rate_limited": 800})
    assert missed[0][2] == "**missed**"
