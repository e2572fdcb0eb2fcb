"""The sweep sends due ids in batches (``SWEEP_BATCH_SIZE``) to ``refresh_sessions``."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta

import pytest

from bill_integration import tasks
from bill_integration.services import refresh_due, sweep
from bill_integration.services.lifecycle import KEPT_ALIVE
from bill_integration.services.sweep import E016_SWEEP_BATCH_SIZE, NOT_DUE, due_connection_ids
from tests.session_support import counters, stored

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("classic_cadence")]


def test_the_sweep_hands_over_due_ids_in_batches_in_due_order(
    make_connection, bill_app, bill_settings, monkeypatch
):
    bill_settings(SWEEP_BATCH_SIZE=3)
    monkeypatch.setattr(sweep, "MIN_MESSAGES", 2)
    for minutes in [21, 25, 40, 22, 33, 27, 30]:
        make_connection(login=False, idle=minutes * 60)
    make_connection(login=False, idle=60)  # not due
    order = due_connection_ids()
    batches: list[list[int]] = []
    assert refresh_due(dispatch_batch=batches.append) == order
    assert batches == [order[0:3], order[3:6], order[6:7]]


@pytest.mark.parametrize(
    ("due", "size"),
    [(30_000, 100), (6_400, 100), (6_399, 99), (1_000, 15), (127, 1), (64, 1), (1, 1)],
)
def test_small_sweeps_are_spread_over_at_least_64_messages(bill_settings, due, size):
    """A batch is one thread's work: 1,000 due in 10 batches would idle most worker threads."""
    assert sweep.batch_size(due) == size
    assert -(-due // size) >= min(due, sweep.MIN_MESSAGES)


def test_the_beat_task_sends_one_refresh_sessions_message_per_batch(
    make_connection, bill_app, bill_settings, monkeypatch
):
    monkeypatch.setattr(sweep, "MIN_MESSAGES", 2)
    bill_settings(SWEEP_BATCH_SIZE=2, TASK_QUEUE="sessions", TASK_EXPIRES=timedelta(minutes=4))
    made = [make_connection(login=False, idle=25 * 60) for _ in range(5)]
    sent: list[tuple] = []
    monkeypatch.setattr(
        tasks.refresh_sessions, "apply_async", lambda args, **options: sent.append((args, options))
    )
    single: list = []
    monkeypatch.setattr(tasks.refresh_session, "apply_async", lambda *a, **k: single.append(a))
    assert tasks.refresh_due_sessions() == 5
    assert single == []
    assert [len(args[0]) for args, _ in sent] == [2, 2, 1]
    assert sorted(pk for args, _ in sent for pk in args[0]) == sorted(c.pk for c in made)
    assert all(options == {"queue": "sessions", "expires": 240.0} for _, options in sent)


def test_refresh_sessions_refreshes_each_due_connection_in_one_limiter_batch(
    make_connection, bill_emulator, bill_app, monkeypatch
):
    due = [make_connection(idle=25 * 60) for _ in range(3)]
    fresh = make_connection(idle=60)
    entered: list[int] = []
    real_batch = sweep.gateway.batch

    @contextmanager
    def counting_batch():
        entered.append(1)
        with real_batch():
            yield

    monkeypatch.setattr(sweep.gateway, "batch", counting_batch)
    ids = [c.pk for c in due] + [fresh.pk]
    assert tasks.refresh_sessions(ids) == {KEPT_ALIVE: 3, NOT_DUE: 1}
    assert entered == [1]
    for connection in due:
        assert counters(bill_emulator, connection)["calls"] >= 1
        assert stored(connection).session_last_used_at > connection.session_last_used_at
    # A redelivered message costs no BILL call: every id is re-checked under its lock.
    assert tasks.refresh_sessions(ids) == {NOT_DUE: 4}
    # The single-id task is still there (public API).
    assert tasks.refresh_session(due[0].pk) == NOT_DUE


def test_refresh_sessions_is_registered_with_the_options_of_refresh_session():
    from project.celery import app

    app.loader.import_default_modules()
    batch = app.tasks[tasks.REFRESH_SESSIONS]
    assert batch.acks_late and batch.reject_on_worker_lost and batch.ignore_result


@pytest.mark.parametrize("value", [0, -1, 1001, "100", 2.5, True, None])
def test_a_bad_batch_size_is_named_by_a_system_check(bill_settings, value):
    from bill_integration.checks import check_batch_size

    bill_settings(SWEEP_BATCH_SIZE=value)
    errors = check_batch_size()
    assert [e.id for e in errors] == [E016_SWEEP_BATCH_SIZE]
    assert "SWEEP_BATCH_SIZE" in errors[0].msg


def test_the_default_batch_size_passes_the_check():
    from bill_integration.checks import check_batch_size

    assert check_batch_size() == []
