"""Benchmark 3, through a real Celery worker: beat's task on the Redis broker, a worker process
in the recommended layout (``celery -A project worker --pool threads --concurrency 16``,
``docs/how-to/celery.md``), the emulator in its own process over HTTP with 100 ms per call.

Set-up as the in-process part: every tenant logged in at the emulator (its login limit lifted
meanwhile), rows inserted in bulk with ``session_last_used_at`` 31 minutes ago (due for a
keep-alive), 1,000 tenants per developer key (BILL's limits are per key). Then, in one run:

1. **batched**: ``bill_integration.refresh_due_sessions`` is sent to the worker, as beat
   sends it; it selects the due ids and sends them in lists of ``SWEEP_BATCH_SIZE`` to
   ``bill_integration.refresh_sessions``;
2. **one message per id** (baseline, the dispatch before this change): the tenants made due
   again (harness: plain columns), ``bench.refresh_due_sessions_one_per_id`` (the old beat
   task body, :mod:`bench.sweep_old_dispatch`) sends one ``refresh_session`` per id.

Wall time: from sending the beat message until the database holds a keep-alive for every
tenant (polled every 0.2 s). Ideal, as for the in-process figure: BILL calls made × latency /
worker threads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from . import common

LATENCY = 0.1
TENANTS_PER_KEY = 1_000
THREADS = common.WORKER_THREADS


def _start_worker(emulator_url: str, queue: str, log: Path) -> subprocess.Popen[bytes]:
    from django.db import connection

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.worker_settings",
        "BILL_BENCH_DB": connection.settings_dict["NAME"],
        "BILL_BENCH_EMULATOR_URL": emulator_url,
        "BILL_BENCH_QUEUE": queue,
        "PYTHONPATH": str(common.ROOT),
    }
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "project",
        "worker",
        "--pool",
        "threads",
        "--concurrency",
        str(THREADS),
        "-Q",
        queue,
        "-n",
        f"{queue}@%h",
        "-I",
        "bench.sweep_old_dispatch",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-l",
        "WARNING",
    ]
    handle = log.open("ab")
    process = subprocess.Popen(command, cwd=common.ROOT, env=env, stdout=handle, stderr=handle)
    deadline = time.monotonic() + 90
    # -l WARNING hides "ready."; the worker is ready once a ping answers.
    from project.celery import app

    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(log.read_text()[-3000:])
        replies = app.control.ping(timeout=1)
        if any(name.startswith(f"{queue}@") for reply in replies for name in reply):
            return process
    process.kill()
    raise RuntimeError("the Celery worker did not start:\n" + log.read_text()[-3000:])


def _wait_until_kept_alive(since: Any, tenants: int, timeout: float) -> float:
    from bill_integration.models import BillConnection

    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if BillConnection.objects.filter(session_last_used_at__gte=since).count() >= tenants:
            return time.perf_counter()
        time.sleep(0.2)
    raise RuntimeError(f"not every tenant was kept alive within {timeout:.0f} s")


def run(*, tenants: int, quiet: bool = False) -> dict[str, Any]:
    from bill_integration.client import get_client
    from bill_integration.emulator import EmulatorControl, ids
    from bill_integration.emulator.state import DEFAULT_LIMITS
    from bill_integration.tasks import refresh_due_sessions
    from project.celery import app

    from .sweep_old_dispatch import OLD_REFRESH_DUE_SESSIONS
    from .sweep_tables import _empty

    _empty()  # the in-process part's rows belong to an emulator that is gone
    common.clock_beside_remote_emulator()
    keys = [ids.dev_key() for _ in range(max(1, tenants // TENANTS_PER_KEY))]
    accounts = common.make_credentials(tenants, keys, "celery")
    queue = f"bench-sweep-{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="bench-celery-"))
    emulator = common.EmulatorProcess(accounts, workdir).start()
    worker = None
    try:
        control = EmulatorControl(emulator.url, timeout=60)
        common.configure(emulator.url, TASK_QUEUE=queue)
        common.reset_app_state()
        control.set_limits(logins_per_hour=10**9)
        pool = common.ThreadWorkers(THREADS)

        def login(a: common.Credentials) -> str:
            client = get_client("emulator", "v3")
            return client.login(
                username=a.username,
                password=a.password,
                organization_id=a.organization_id,
                dev_key=a.dev_key,
            ).session_id

        if not quiet:
            print(f"  Celery: logging {tenants:,} tenants in (set-up) ...", flush=True)
        session_ids = pool.run_all(login, accounts)
        pool.close()
        control.set_limits(logins_per_hour=DEFAULT_LIMITS["logins_per_hour"])
        now = common.clock()
        common.create_connections(
            accounts,
            session_ids=session_ids,
            obtained_at=[now - timedelta(hours=1)] * tenants,
            last_used_at=[now - timedelta(minutes=31)] * tenants,
            prefix="celery",
        )
        control.set_fault("latency", seconds=LATENCY)
        worker = _start_worker(emulator.url, queue, workdir / "worker.log")
        runs = []
        for name, send in (
            ("batched", lambda: refresh_due_sessions.apply_async(queue=queue)),
            ("one message per id", lambda: app.send_task(OLD_REFRESH_DUE_SESSIONS, queue=queue)),
        ):
            if runs:  # due again
                # A new hour's budget for the second run: the first spent up to the upkeep
                # share of each key's rolling hour (UPKEEP_SHARE), which would defer it.
                from bill_integration import limits

                limits.get_limiter().reset()
                common.make_all_due_again()
            if not quiet:
                print(f"  Celery: sweeping {tenants:,} due tenants, {name} ...", flush=True)
            calls_before = control.counters()["calls"]
            since = common.clock()
            started = time.perf_counter()
            send()
            finished = _wait_until_kept_alive(since, tenants, timeout=tenants * LATENCY * 2)
            calls = control.counters()["calls"] - calls_before
            runs.append(
                {
                    "dispatch": name,
                    "seconds": finished - started,
                    "calls": calls,
                    "ideal_seconds": calls * LATENCY / THREADS,
                }
            )
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        emulator.stop()
        common.clock_beside_remote_emulator()
        _forget_queue(queue)
    return {"tenants": tenants, "threads": THREADS, "keys": len(keys), "runs": runs}


def _forget_queue(queue: str) -> None:
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
