"""The Celery tasks on a real worker process, the Redis broker and the emulator over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.db import connection as db_connection

from bill_integration import tasks
from bill_integration.models import BillConnection
from tests.session_support import REDIS_URL, stored

ROOT = Path(__file__).resolve().parents[2]
WORKER_CONCURRENCY = 4


#: The sweeps here are spaced for a keep-alive after 20 idle minutes (the workers get the same
#: cadence from tests/session_worker_settings.py).
pytestmark = pytest.mark.usefixtures("classic_cadence")


def test_documented_task_names_are_registered_with_safe_options():
    from django.conf import settings

    from project.celery import app

    app.loader.import_default_modules()
    assert {tasks.REFRESH_DUE_SESSIONS, tasks.REFRESH_SESSION} <= set(app.tasks)
    refresh = app.tasks[tasks.REFRESH_SESSION]
    assert refresh.acks_late and refresh.reject_on_worker_lost and refresh.ignore_result
    # The example project's beat entry (the one tasks.py documents) names the sweep.
    entries = [e["task"] for e in settings.CELERY_BEAT_SCHEDULE.values()]
    assert tasks.REFRESH_DUE_SESSIONS in entries
    assert tasks.REFRESH_DUE_SESSIONS in tasks.__doc__ and "CELERY_BEAT_SCHEDULE" in tasks.__doc__
    assert "django_celery_beat" in tasks.__doc__


class Worker:
    """A ``celery -A project worker`` subprocess on this test's own queue."""

    def __init__(self, env: dict[str, str], queue: str, log: Path) -> None:
        self.env, self.queue, self.log = env, queue, log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        log = self.log.open("a")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "project",
                "worker",
                "-P",
                "threads",
                "-c",
                str(WORKER_CONCURRENCY),
                "-Q",
                self.queue,
                "-n",
                f"{self.queue}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-l",
                "INFO",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if "ready." in self.log.read_text():
                return
            if self.process.poll() is not None:
                raise AssertionError(self.log.read_text()[-3000:])
            time.sleep(0.2)
        raise AssertionError("worker did not start:\n" + self.log.read_text()[-3000:])

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.log.write_text(self.log.read_text() + "\n--- SIGKILL ---\n")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture
def worker_queue(bill_settings, bill_app):
    """A queue of this test's own, the Redis limiter, and the settings a producer needs."""
    queue = f"bill-sessions-test-{uuid.uuid4().hex[:8]}"
    bill_settings(TASK_QUEUE=queue, REDIS_URL=REDIS_URL)
    yield queue
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")


@pytest.fixture
def worker(worker_queue, bill_emulator, tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.session_worker_settings",
        "BILL_TEST_DB_NAME": db_connection.settings_dict["NAME"],
        "BILL_TEST_REDIS_URL": REDIS_URL,
        "BILL_LIMITS_REDIS_URL": REDIS_URL,
        "BILL_EMULATOR_URL": bill_emulator.url,
        "BILL_EMULATOR_PORT": bill_emulator.url.rsplit(":", 1)[1],
        "BILL_SESSIONS_QUEUE": worker_queue,
        "BILL_VISIBILITY_TIMEOUT": "5",
        "PYTHONPATH": str(ROOT),
    }
    process = Worker(env, worker_queue, tmp_path / "worker.log")
    process.start()
    yield process
    process.stop()


def advance_everywhere(bill_app, seconds: float) -> None:
    bill_app.advance(seconds)
    time.sleep(1.2)  # the worker's remote_clock caches the emulator's offset for a second


def send_sweep(queue: str) -> None:
    tasks.refresh_due_sessions.apply_async(queue=queue)


#: How often sweep_until sends another beat while it waits.
RESWEEP_SECONDS = 3.0


def sweep_until(queue: str, predicate, timeout: float = 60, what: str = "condition") -> None:
    """Send a sweep now and again every few seconds (as beat would) until ``predicate`` holds.

    One sweep is not enough on a loaded machine: the worker's clock follows the emulator's
    through remote_clock, and a sweep that runs before it has seen the last ``advance()``
    finds nothing due. Extra beats are free by design (the refresh re-checks under the row
    lock that its work is still due), which the assertions on BILL's counters prove.
    """
    deadline = time.monotonic() + timeout
    next_sweep = time.monotonic()
    while time.monotonic() < deadline:
        if predicate():
            return
        if time.monotonic() >= next_sweep:
            send_sweep(queue)
            next_sweep = time.monotonic() + RESWEEP_SECONDS
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def queue_drained(queue: str) -> bool:
    client = redis.Redis.from_url(REDIS_URL)
    return client.llen(queue) == 0 and client.hlen("unacked") == 0


def wait_for(predicate, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def kept_alive_since(connections: list[BillConnection], moment) -> int:
    return BillConnection.objects.filter(
        pk__in=[c.pk for c in connections], session_last_used_at__gte=moment
    ).count()


def alive_at_bill(emulator, connection: BillConnection) -> bool:
    session = emulator.state.peek_session(stored(connection).session_id)
    return session is not None and emulator.state.now() - session.last_used < timedelta(minutes=35)


@pytest.mark.worker
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_worker_sweep_keeps_sessions_alive_and_a_second_beat_costs_nothing(
    make_connection, bill_emulator, bill_app, worker
):
    connections = [make_connection() for _ in range(30)]
    advance_everywhere(bill_app, 25 * 60)
    swept_at = bill_app.now() - timedelta(seconds=1)
    send_sweep(worker.queue)  # two beats at once (sweep_until sends the second, and more)
    sweep_until(
        worker.queue, lambda: kept_alive_since(connections, swept_at) == 30, what="30 keep-alives"
    )
    wait_for(lambda: queue_drained(worker.queue), what="the queue to drain")
    time.sleep(1)
    totals = bill_emulator.state.counters()
    assert totals["logins"] == 30  # the fixture's logins only
    assert totals["session_info"] == 30  # one keep-alive per tenant despite two sweeps
    assert all(alive_at_bill(bill_emulator, c) for c in connections)

    # Sessions BILL ended are renewed by login through the worker.
    advance_everywhere(bill_app, 40 * 60)
    sweep_until(
        worker.queue,
        lambda: BillConnection.objects.filter(version=2).count() == 30,
        what="30 new sessions",
    )
    wait_for(lambda: queue_drained(worker.queue), what="the queue to drain")
    assert bill_emulator.state.counters()["logins"] == 60
    assert all(alive_at_bill(bill_emulator, c) for c in connections)


@pytest.mark.worker
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_worker_killed_mid_sweep_loses_no_tenant_and_logs_in_none_twice(
    make_connection, bill_emulator, bill_app, worker
):
    connections = [make_connection() for _ in range(60)]
    advance_everywhere(bill_app, 25 * 60)
    swept_at = bill_app.now() - timedelta(seconds=1)
    # Slow keep-alives, so the kill lands mid-sweep.
    bill_emulator.state.set_fault("latency", seconds=0.15, path="/login/session")
    sweep_until(
        worker.queue,
        lambda: kept_alive_since(connections, swept_at) >= 12,
        what="part of the sweep",
    )
    worker.kill()
    done_before_restart = kept_alive_since(connections, swept_at)
    assert done_before_restart < 60, "the sweep finished before the kill; nothing was tested"

    worker.start()
    sweep_until(  # the next beats
        worker.queue,
        lambda: kept_alive_since(connections, swept_at) == 60,
        timeout=90,
        what="every tenant refreshed after the restart",
    )
    wait_for(lambda: queue_drained(worker.queue), timeout=30, what="the queue to drain")
    time.sleep(1)
    assert all(alive_at_bill(bill_emulator, c) for c in connections)
    assert bill_emulator.state.counters()["logins"] == 60  # nobody logged in again, let alone twice
    for connection in connections:
        per_tenant = bill_emulator.state.counters(organization_id=connection.organization_id)
        # At most the keep-alive the kill interrupted, repeated once: never more.
        assert 1 <= per_tenant["session_info"] <= 2


@pytest.mark.worker
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_worker_killed_during_logins_loses_no_tenant(
    make_connection, bill_emulator, bill_app, worker
):
    """Every expired session is renewed after a SIGKILL mid-sweep. A login BILL had already
    received from the killed worker cannot be saved (its answer died with the worker), so only
    the logins in flight at the kill (at most the worker's concurrency) may repeat."""
    connections = [make_connection() for _ in range(40)]
    advance_everywhere(bill_app, 40 * 60)
    swept_at = bill_app.now() - timedelta(seconds=1)
    bill_emulator.state.set_fault("latency", seconds=0.15, path="/v3/login")

    def renewed() -> int:
        return BillConnection.objects.filter(
            pk__in=[c.pk for c in connections], session_obtained_at__gte=swept_at
        ).count()

    sweep_until(worker.queue, lambda: renewed() >= 8, what="part of the sweep")
    worker.kill()
    assert renewed() < 40, "the sweep finished before the kill; nothing was tested"
    bill_emulator.state.clear_faults()

    worker.start()
    sweep_until(
        worker.queue,
        lambda: renewed() == 40,
        timeout=90,
        what="every tenant renewed after the restart",
    )
    wait_for(lambda: queue_drained(worker.queue), timeout=30, what="the queue to drain")
    time.sleep(1)
    assert all(alive_at_bill(bill_emulator, c) for c in connections)
    logins = [
        bill_emulator.state.counters(organization_id=c.organization_id)["logins"] - 1
        for c in connections
    ]
    assert min(logins) == 1
    assert max(logins) <= 2
    assert sum(1 for n in logins if n == 2) <= WORKER_CONCURRENCY
