"""Benchmark 3, through a real Celery worker: beat's task on the Redis broker, worker processes
in the recommended layout (one ``celery -A project worker --pool threads --concurrency 8`` per
core on this 2-core machine class, :data:`bench.common.WORKER_PROCESSES`;
``docs/how-to/celery.md``), the emulator in its own process over HTTP with 100 ms per call.

Set-up as the in-process part: every tenant logged in at the emulator (its login limit lifted
meanwhile), rows inserted in bulk with sessions idle just long enough to be due for a
keep-alive (``common.just_due_idle()``), 1,000 tenants per developer key (BILL's limits are
per key). Then, in one run:

1. **batched**: ``bill_integration.refresh_due_sessions`` is sent to the workers, as beat
   sends it; it selects the due ids and sends them in lists of ``SWEEP_BATCH_SIZE`` to
   ``bill_integration.refresh_sessions``;
2. **one message per id** (baseline, the dispatch before this change, same workers): the
   tenants made due again (harness: plain columns), ``bench.refresh_due_sessions_one_per_id``
   (the old beat task body, :mod:`bench.sweep_old_dispatch`) sends one ``refresh_session``
   per id;
3. **batched, one process**: the layout recommended before, the same 16 threads in one
   worker process (workers restarted; skipped on one core, where it is the first run's).

Wall time: from sending the beat message until the database holds the sweep's outcome for
every tenant (polled every 0.2 s). Each run's outcomes are counted: a row the app judges gone
by the time its task runs (idle 35 minutes plus ``LAST_USED_WRITE_INTERVAL``) is logged in,
not kept alive, and BILL's login limit refuses most such logins, since the set-up's logins fill
the emulator's hour. Ideal, as for the in-process figure: BILL calls made × latency / worker
threads.
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


def _start_workers(
    emulator_url: str, queue: str, log: Path, processes: int
) -> list[subprocess.Popen[bytes]]:
    """``processes`` worker processes of ``THREADS // processes`` threads each, on ``queue``;
    returned once every one answers a ping."""
    from django.db import connection

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.worker_settings",
        "BILL_BENCH_DB": connection.settings_dict["NAME"],
        "BILL_BENCH_EMULATOR_URL": emulator_url,
        "BILL_BENCH_QUEUE": queue,
        "PYTHONPATH": str(common.ROOT),
    }
    started = []
    handle = log.open("ab")
    for number in range(processes):
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
            str(THREADS // processes),
            "-Q",
            queue,
            "-n",
            f"{queue}-{number}@%h",
            "-I",
            "bench.sweep_old_dispatch",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "WARNING",
        ]
        started.append(
            subprocess.Popen(command, cwd=common.ROOT, env=env, stdout=handle, stderr=handle)
        )
    deadline = time.monotonic() + 90
    # -l WARNING hides "ready."; a worker is ready once a ping answers.
    from project.celery import app

    while time.monotonic() < deadline:
        if any(process.poll() is not None for process in started):
            _stop(started)
            raise RuntimeError(log.read_text()[-3000:])
        replies = app.control.ping(timeout=1)
        names = {name for reply in replies for name in reply if name.startswith(f"{queue}-")}
        if len(names) == processes:
            return started
    _stop(started)
    raise RuntimeError("the Celery workers did not start:\n" + log.read_text()[-3000:])


def _stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        worker.terminate()
    for worker in workers:
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()


#: A run ends when no row has been handled for this long (a row the limiter deferred writes
#: nothing and stays due for the next beat, which this run does not send).
STALL_SECONDS = 90.0


def _wait_until_handled(since: Any, tenants: int, timeout: float) -> tuple[float, int]:
    """Poll until every row has been handled since ``since`` (``last_refresh_at``: written by
    every keep-alive, login and failure); returns when the last one was, and how many were.

    Stops early when nothing moved for ``STALL_SECONDS``, so a run whose rows turned into
    refused logins reports them (:func:`_outcomes`) instead of waiting out ``timeout``.
    """
    from bill_integration.models import BillConnection

    started = last_progress = time.perf_counter()
    handled = 0
    while time.perf_counter() - started < timeout:
        count = BillConnection.objects.filter(last_refresh_at__gte=since).count()
        if count != handled:
            handled, last_progress = count, time.perf_counter()
        if handled >= tenants or time.perf_counter() - last_progress > STALL_SECONDS:
            break
        time.sleep(0.2)
    return last_progress, handled


def _outcomes(since: Any) -> dict[str, int]:
    """What each row's sweep did: kept alive, logged in (the app judged the session gone), an
    error status, or not handled (deferred by the limiter, or still queued)."""
    from django.db.models import Count, Q

    from bill_integration.models import BillConnection

    handled = Q(last_refresh_at__gte=since)
    rows = BillConnection.objects
    outcomes = {
        "kept_alive": rows.filter(handled, status="active", session_obtained_at__lt=since).count(),
        "logged_in": rows.filter(handled, status="active", session_obtained_at__gte=since).count(),
        "not handled": rows.exclude(handled).count(),
    }
    failed = rows.filter(handled).exclude(status="active").values("status").annotate(n=Count("pk"))
    outcomes.update({row["status"]: row["n"] for row in failed})
    return {name: n for name, n in outcomes.items() if n}


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
    workers: list[subprocess.Popen[bytes]] = []
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
            last_used_at=[now - common.just_due_idle()] * tenants,
            prefix="celery",
        )
        control.set_fault("latency", seconds=LATENCY)

        def batched() -> Any:
            return refresh_due_sessions.apply_async(queue=queue)

        def one_per_id() -> Any:
            return app.send_task(OLD_REFRESH_DUE_SESSIONS, queue=queue)

        # The recommended layout first (the target is its batched run's), then one process.
        per_core = common.WORKER_PROCESSES
        plan = [("batched", per_core, batched), ("one message per id", per_core, one_per_id)]
        if per_core > 1:
            plan.append(("batched", 1, batched))
        runs = []
        running = 0
        for name, processes, send in plan:
            if processes != running:
                _stop(workers)
                workers = _start_workers(emulator.url, queue, workdir / "worker.log", processes)
                running = processes
            if runs:  # due again
                # A new hour's budget for the next run: the last spent up to the upkeep
                # share of each key's rolling hour (UPKEEP_SHARE), which would defer it.
                from bill_integration import limits

                limits.get_limiter().reset()
                common.make_all_due_again()
            if not quiet:
                print(
                    f"  Celery: sweeping {tenants:,} due tenants, {name}, {processes} "
                    f"process(es) × {THREADS // processes} threads ...",
                    flush=True,
                )
            calls_before = control.counters()["calls"]
            since = common.clock()
            started = time.perf_counter()
            send()
            finished, handled = _wait_until_handled(since, tenants, timeout=tenants * LATENCY * 2)
            calls = control.counters()["calls"] - calls_before
            runs.append(
                {
                    "dispatch": name,
                    "processes": processes,
                    "threads": THREADS // processes,
                    "seconds": finished - started,
                    "calls": calls,
                    "ideal_seconds": calls * LATENCY / THREADS,
                    "handled": handled,
                    "outcomes": _outcomes(since),
                }
            )
    finally:
        _stop(workers)
        emulator.stop()
        common.clock_beside_remote_emulator()
        _forget_queue(queue)
    return {"tenants": tenants, "threads": THREADS, "keys": len(keys), "runs": runs}


def _forget_queue(queue: str) -> None:
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
