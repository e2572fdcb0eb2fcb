"""The limiter's Redis killed in the middle of a sweep on a real worker, then restarted empty.

The worker runs ``bill_integration.refresh_session`` for 30 tenants whose sessions BILL
ended; the limits live in a Redis server this test starts on a port of its own (the Celery
broker stays on the suite's Redis, as it would in a deployment with a separate cache). Partway
through the logins the limiter's Redis is killed (SIGKILL, no persistence), and started again
empty a moment later. The app must:

* never lose a session BILL gave it (every login BILL saw is a session the app stored: BILL
  sees exactly one login per tenant, and each tenant ends with one open session);
* turn the outage into typed errors and back-off (connections degrade, then recover), never a
  raw driver error, and never spend past BILL's limits (0 answers refused by BILL);
* end with every connection active.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from bill_integration.models import BillConnection, ConnectionStatus
from tests.deploy.test_tasks_worker import (
    Worker,
    advance_everywhere,
    queue_drained,
    send_sweep,
    sweep_until,
    wait_for,
)
from tests.deploy.test_tasks_worker import worker_queue as worker_queue_fixture
from tests.session_support import stored

pytestmark = [pytest.mark.usefixtures("classic_cadence")]
worker_queue = worker_queue_fixture


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A throwaway redis-server without persistence, on its own port."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port, self.workdir = port, workdir
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is needed (it runs the suite's broker too)"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()


@pytest.fixture
def limiter_redis(tmp_path):
    server = RedisServer(_free_port(), tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.mark.worker
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_redis_kill_mid_sweep_loses_no_session_and_no_budget(
    make_connection, bill_emulator, bill_app, worker_queue, limiter_redis, bill_settings, tmp_path
):
    import os

    from django.db import connection as db_connection

    from tests.session_support import REDIS_URL

    bill_settings(REDIS_URL=limiter_redis.url)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.session_worker_settings",
        "BILL_TEST_DB_NAME": db_connection.settings_dict["NAME"],
        "BILL_TEST_REDIS_URL": REDIS_URL,
        "BILL_LIMITS_REDIS_URL": limiter_redis.url,
        "BILL_EMULATOR_URL": bill_emulator.url,
        "BILL_EMULATOR_PORT": bill_emulator.url.rsplit(":", 1)[1],
        "BILL_SESSIONS_QUEUE": worker_queue,
        "BILL_VISIBILITY_TIMEOUT": "5",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    worker = Worker(env, worker_queue, tmp_path / "worker.log")
    worker.start()
    try:
        # 30 tenants whose sessions BILL no longer knows: each needs one login.
        connections = [make_connection(login=False, idle=40 * 60) for _ in range(30)]
        bill_emulator.state.set_fault("latency", seconds=0.15, path="login")
        send_sweep(worker_queue)
        wait_for(lambda: bill_emulator.state.counters()["logins"] >= 5, what="the first logins")
        limiter_redis.kill()  # mid-sweep: some logins done, some running, most to come
        time.sleep(1.5)
        limiter_redis.start()  # back, empty: no persistence
        bill_emulator.state.clear_faults()
        # The failed ones back off; move time past any backoff, and let the beat sweep on.
        advance_everywhere(bill_app, 5 * 60)  # past any backoff, well before a keep-alive
        sweep_until(
            worker_queue,
            lambda: (
                BillConnection.objects.filter(
                    pk__in=[c.pk for c in connections],
                    status=ConnectionStatus.ACTIVE,
                    version__gt=0,
                ).count()
                == 30
            ),
            timeout=120,
            what="30 active connections with sessions",
        )
        wait_for(lambda: queue_drained(worker_queue), what="the queue to drain")
    finally:
        worker.stop()

    totals = bill_emulator.state.counters()
    assert totals["rejected"] == 0  # BILL never refused a call: no BDC_1144, no BDC_1322
    assert totals["logins"] == 30, totals  # one per tenant: no session discarded, none twice
    for connection in connections:
        row = stored(connection)
        assert row.status == ConnectionStatus.ACTIVE
        assert bill_emulator.state.peek_session(row.session_id) is not None
        assert bill_emulator.state.active_sessions(organization_id=row.organization_id) == 1
    assert "redis.exceptions" not in (tmp_path / "worker.log").read_text()
