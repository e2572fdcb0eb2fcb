"""What every benchmark shares: Django set-up on a database of its own, the clock, counting,
the emulator (in-process or in its own process), bulk tenants, machine facts, the report file.

Nothing here is a test: benchmarks print figures and write them to ``docs/benchmarks.md``;
each compares against a baseline measured in the same run.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bill_integration.emulator.clock import EmulatorClock

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
SETTINGS_MODULE = "bench.settings"

# --- the app's clock ------------------------------------------------------------------------


def _wall_clock() -> datetime:
    return datetime.now(UTC)


_clock_source: Callable[[], datetime] = _wall_clock


def clock() -> datetime:
    """The app's clock in the benchmarks (``conf.set_clock`` in ``bench/settings.py``): whatever
    the harness points it at."""
    return _clock_source()


def set_clock(source: Callable[[], datetime]) -> None:
    global _clock_source
    _clock_source = source


def set_sim_time(state: Any, moment: datetime) -> datetime:
    """Put the emulator's clock at ``moment`` (not "advance by": wall time spent simulating
    must not leak into simulated time, or sweeps would drift against the sessions they keep)."""
    state.set_offset((moment - datetime.now(UTC)).total_seconds())
    return state.now()


def clock_beside_remote_emulator() -> EmulatorClock:
    """A clock of the emulator's own kind made the app's clock, at real time, for an emulator
    in another process: advance it together with the emulator (its control API)."""
    own = EmulatorClock()
    set_clock(own.now)
    return own


# --- Django ---------------------------------------------------------------------------------


def database_name() -> str:
    return os.environ.get("BILL_BENCH_DB", "bench_bill_integration")


def _admin_sql(*statements: str) -> None:
    import psycopg

    with psycopg.connect(
        host=os.environ.get("BILL_TEST_DB_HOST", "127.0.0.1"),
        port=os.environ.get("BILL_TEST_DB_PORT", "5432"),
        user=os.environ.get("BILL_TEST_DB_USER", "postgres"),
        password=os.environ.get("BILL_TEST_DB_PASSWORD", ""),
        dbname="postgres",
        autocommit=True,
    ) as admin:
        for statement in statements:
            admin.execute(statement)


def setup_django() -> None:
    """Configure Django with ``bench.settings`` (no database work)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    import django

    django.setup()


def fresh_database() -> None:
    """Drop and create the benchmark database, migrate it, forget the shared limits."""
    from django.core.management import call_command
    from django.db import connections

    connections.close_all()
    name = database_name()
    _admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
    call_command("migrate", verbosity=0, interactive=False)
    reset_app_state()


def drop_database() -> None:
    from django.db import connections

    connections.close_all()
    _admin_sql(f'DROP DATABASE IF EXISTS "{database_name()}" WITH (FORCE)')


def reset_app_state() -> None:
    """Forget limiter counts (Redis db of the benchmarks), cached clients, last-use cache."""
    from bill_integration import limits
    from bill_integration.client import cache
    from bill_integration.services import session as sessions

    limits.get_limiter().reset()
    cache.clear()
    sessions._last_recorded.clear()
    COUNTS.clear()
    LOGIN_HOURS.clear()


def configure(emulator_url: str, **bill_options: Any) -> None:
    """Point environment "emulator" at ``emulator_url`` and override BILL_INTEGRATION keys."""
    from django.conf import settings

    from bill_integration.client import cache
    from bill_integration.conf import bill_settings

    current = dict(settings.BILL_INTEGRATION)
    environments = dict(current["ENVIRONMENTS"])
    environments["emulator"] = {
        "v3": emulator_url + "/connect",
        "v2": emulator_url + "/api/v2",
        "oauth": emulator_url,  # POST /authx/token
    }
    current.update(ENVIRONMENTS=environments, DEFAULT_ENVIRONMENT="emulator", **bill_options)
    settings.BILL_INTEGRATION = current
    bill_settings.reload()
    cache.clear()


# --- counting calls (a CLIENT_CLASS subclass) -----------------------------------------------

COUNTS: Counter[str] = Counter()
#: (dev_key, clock hour) -> successful logins, from the app's side.
LOGIN_HOURS: Counter[tuple[str, datetime]] = Counter()
_counts_lock = threading.Lock()


def _count(name: str) -> None:
    with _counts_lock:
        COUNTS[name] += 1


def _load_client_class() -> type:
    from bill_integration.client import BillClient
    from bill_integration.exceptions import SessionInvalid

    class _Counting(BillClient):
        """Counts each call by method and outcome; a SessionInvalid from ``request`` means the
        session handed out by ``get_session`` was already dead at BILL."""

        def login(self, **kwargs: Any) -> Any:
            _count("login_attempts")
            result = super().login(**kwargs)
            moment = clock().replace(minute=0, second=0, microsecond=0)
            with _counts_lock:
                COUNTS["logins"] += 1
                LOGIN_HOURS[(kwargs["dev_key"], moment)] += 1
            return result

        def session_info(self, **kwargs: Any) -> Any:
            _count("session_info")
            try:
                return super().session_info(**kwargs)
            except SessionInvalid:
                _count("session_info_dead")
                raise

        def request(self, method: str, path: str, **kwargs: Any) -> Any:
            _count("requests")
            try:
                return super().request(method, path, **kwargs)
            except SessionInvalid:
                _count("requests_dead")
                raise

    return _Counting


class _LazyClientClass:
    """Resolved on first use so importing this module does not need Django set up."""

    _cls: type | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._cls is None:
            self._cls = _load_client_class()
        return self._cls(*args, **kwargs)


CountingBillClient = _LazyClientClass()


# --- the emulator ---------------------------------------------------------------------------


@dataclass
class Credentials:
    username: str
    password: str
    organization_id: str
    dev_key: str
    user_id: str = ""


def make_credentials(count: int, dev_keys: list[str], prefix: str) -> list[Credentials]:
    """``count`` accounts spread round-robin over ``dev_keys`` (distinct organizations)."""
    from bill_integration.emulator import ids

    return [
        Credentials(
            username=f"{prefix}-{n}@example.com",
            password=f"pw-{prefix}-{n}",
            organization_id=ids.organization_id(),
            dev_key=dev_keys[n % len(dev_keys)],
            user_id=ids.user_id(),
        )
        for n in range(count)
    ]


def add_accounts(state: Any, accounts: Iterable[Credentials]) -> None:
    for a in accounts:
        state.add_account(
            username=a.username,
            password=a.password,
            organization_id=a.organization_id,
            dev_key=a.dev_key,
            api_token="",
            user_id=a.user_id,
        )


class EmulatorProcess:
    """The emulator in a process of its own (BILL is remote: it must not share our GIL)."""

    def __init__(self, accounts: list[Credentials], workdir: Path) -> None:
        self.accounts_file = workdir / "bench-accounts.json"
        self.accounts_file.write_text(
            json.dumps(
                {
                    "accounts": [
                        {
                            "username": a.username,
                            "password": a.password,
                            "organization_id": a.organization_id,
                            "dev_key": a.dev_key,
                            "api_token": None,
                            "user_id": a.user_id,
                        }
                        for a in accounts
                    ]
                }
            )
        )
        self.process: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> EmulatorProcess:
        code = (
            "import json, sys\n"
            "from bill_integration.emulator import EmulatorServer, load_accounts_file\n"
            "server = EmulatorServer(port=0)\n"
            "server.bind()\n"
            "accounts = load_accounts_file(sys.argv[1])\n"
            "for a in accounts:\n"
            "    a['api_token'] = a.get('api_token') or ''\n"
            "server.state.load_accounts(accounts)\n"
            "print(server.url, flush=True)\n"
            "server.serve_forever()\n"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, str(self.accounts_file)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(ROOT),
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        if not self.url.startswith("http"):
            raise RuntimeError("The emulator process did not start.")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
        self.accounts_file.unlink(missing_ok=True)


# --- tenants and connections in bulk --------------------------------------------------------


def create_connections(
    accounts: list[Credentials],
    *,
    session_ids: list[str | None],
    obtained_at: list[datetime | None],
    last_used_at: list[datetime | None],
    prefix: str,
) -> list[int]:
    """One Tenant and one BillConnection per account, inserted in bulk; returns tenant ids.

    Rows are built by the test fixtures' builder (``emulator.testing.build_connection``, as the
    linking service would leave them; encrypted fields encrypt as usual); bulk inserts are
    harness set-up only, never how the app writes credentials.
    """
    from bill_integration.emulator.testing import build_connection
    from bill_integration.models import BillConnection
    from bill_integration.services.common import dev_key_fingerprint
    from project.tenants.models import Tenant

    tenants = Tenant.objects.bulk_create(
        [Tenant(name=f"{prefix} {n}", slug=f"{prefix}-{n}") for n in range(len(accounts))],
        batch_size=1000,
    )
    fingerprints = {key: dev_key_fingerprint(key) for key in {a.dev_key for a in accounts}}
    rows = [
        build_connection(
            a,
            tenant=tenant,
            session_id=session_id,
            obtained_at=obtained,
            last_used_at=last_used,
            dev_key_fingerprint=fingerprints[a.dev_key],
        )
        for tenant, a, session_id, obtained, last_used in zip(
            tenants, accounts, session_ids, obtained_at, last_used_at, strict=True
        )
    ]
    BillConnection.objects.bulk_create(rows, batch_size=1000)
    return [t.pk for t in tenants]


# --- figures --------------------------------------------------------------------------------


def just_due_idle() -> timedelta:
    """How long a session has been idle when its keep-alive has just fallen due
    (``keepalive_after_idle()``, 30.5 minutes with the defaults).

    The sweep benchmarks make every row due at once with this idle, not more: the app judges a
    session surely gone at BILL once it has been idle 35 minutes plus
    ``LAST_USED_WRITE_INTERVAL`` and logs in instead of keeping it alive, so a run whose rows
    start idler leaves the sweep less time before its last rows turn into logins.
    """
    from bill_integration.conf import keepalive_after_idle

    return keepalive_after_idle()


def make_all_due_again() -> None:
    """Every connection due for a keep-alive now (harness only: plain columns, no secret):
    idle :func:`just_due_idle`, ``next_due_at`` a minute ago, as the sweep benchmarks need
    between two sweeps of the same rows."""
    from bill_integration.models import BillConnection

    moment = clock()
    BillConnection.objects.update(
        session_last_used_at=moment - just_due_idle(),
        next_due_at=moment - timedelta(minutes=1),
    )


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


@contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    result: dict[str, float] = {}
    started = time.perf_counter()
    try:
        yield result
    finally:
        result["seconds"] = time.perf_counter() - started


def _command_output(*command: str) -> str:
    try:
        return subprocess.run(
            command, capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


#: The code a benchmark measures, named in each report by a digest of its bytes (a test checks
#: that docs/benchmarks.md names the current ones).
MEASURED_CODE = ("services", "limits", "client/base.py")


def code_digests() -> dict[str, str]:
    """``{name: first 10 hex digits of the sha256 of its .py files}`` for :data:`MEASURED_CODE`."""
    import hashlib

    digests = {}
    for name in MEASURED_CODE:
        path = ROOT / "bill_integration" / name
        if not path.exists():
            continue
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        digests[name] = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:10]
    return digests


def machine_facts() -> dict[str, str]:
    """Machine, versions and date of this run (for the report)."""
    import django
    import redis as redis_lib
    import requests
    from django.db import connection

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    try:
        from django.conf import settings

        redis_version = redis_lib.Redis.from_url(settings.REDIS_URL).info("server")["redis_version"]
    except Exception:  # noqa: BLE001 - a fact for the report, never fatal
        redis_version = "unknown"
    head = _command_output("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD")
    code = ", ".join(f"{name} {digest}" for name, digest in code_digests().items())
    return {
        "code": f"git {head} + working tree (sha256: {code})",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu}, {os.cpu_count()} cores (nproc {_command_output('nproc')})",
        "memory": memory,
        "os": platform.platform(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "postgresql": postgres,
        "redis": f"{redis_version} (redis-py {redis_lib.__version__})",
        "requests": requests.__version__,
    }


def facts_block(command: str, facts: dict[str, str], seconds: float) -> str:
    return (
        f"- Command: `{command}` (ran {seconds:.0f} s)\n"
        f"- Date: {facts['date']}\n"
        f"- Machine: {facts['cpu']}, {facts['memory']} RAM, {facts['os']}\n"
        f"- Versions: Python {facts['python']}, Django {facts['django']}, PostgreSQL "
        f"{facts['postgresql']}, Redis {facts['redis']}, requests {facts['requests']}\n"
        f"- Code measured: {facts['code']}\n"
    )


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


DOC_INTRO = """# Benchmarks

Measured by the scripts in [`bench/`](../bench/README.md), on the machine named in each
section. Every figure is compared with a baseline measured **in the same run**, so the ratios
hold on a noisy machine; absolute times are for orientation only. Nothing here is a timed test.
Each section is rewritten in place by its own command; run everything with
`.venv/bin/python bench/run.py all`.

"""

ORDER = ("efficiency", "capacity", "sweep", "hotpath", "stampede", "limiter", "fleet", "methods")


def _summary(sections: dict[str, str]) -> str:
    """One table of every target row found in the sections (rebuilt on each write)."""
    rows = []
    for name in ORDER:
        text = sections.get(name)
        if not text:
            continue
        title = next((line[3:] for line in text.splitlines() if line.startswith("## ")), name)
        date = next(
            (line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("- Date: ")),
            "",
        )
        lines = text.splitlines()
        for index, line in enumerate(lines):
            if line.startswith("| target | measured | result |"):
                for row in lines[index + 2 :]:
                    if not row.startswith("|"):
                        break
                    rows.append(
                        f"| {title} | " + row.strip("| ").replace(" | ", " | ") + f" | {date} |"
                    )
    if not rows:
        return ""
    return (
        "## Summary\n\n| benchmark | target | measured | result | run |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )


def write_section(name: str, body: str) -> None:
    """Replace (or add) the section of benchmark ``name`` in ``docs/benchmarks.md``."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else DOC_INTRO
    sections: dict[str, str] = {}
    for other in ORDER:
        s, e = f"<!-- bench:{other}:start -->", f"<!-- bench:{other}:end -->"
        if s in text and e in text:
            sections[other] = text[text.index(s) : text.index(e) + len(e)]
    sections[name] = f"{start}\n{body.rstrip()}\n{end}"
    intro = text.split("<!-- bench:", 1)[0] if "<!-- bench:" in text else text
    intro = intro.split("## Summary", 1)[0]
    out = (
        intro.rstrip()
        + "\n\n"
        + _summary(sections)
        + "\n"
        + "\n\n".join(sections[n] for n in ORDER if n in sections)
        + "\n"
    )
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(out, encoding="utf-8")


def verdict(met: bool) -> str:
    return "**met**" if met else "**missed**"


# --- a thread pool standing in for a Celery worker (--pool threads) -------------------------

#: The worker threads the benchmarks use for the refresh tasks: the work is I/O-bound (BILL,
#: PostgreSQL, Redis), so a thread pool (``--pool threads``), 16 threads in all.
WORKER_THREADS = 16
#: The layout docs/how-to/celery.md recommends: one worker process per core, the threads shared
#: out among them (``celery -A project worker --pool threads --concurrency 8`` twice on this
#: 2-core machine class). A connection's refresh holds the interpreter lock for a few
#: milliseconds (locking, the fenced write, the limiter's Redis round trips), so one process
#: uses one core at most; 1 on a one-core machine.
WORKER_PROCESSES = max(1, min(os.cpu_count() or 1, WORKER_THREADS))


class ThreadWorkers:
    """Run task bodies on ``size`` threads, each with its own database connection."""

    def __init__(self, size: int = WORKER_THREADS) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.size = size
        self.pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="bench-worker")

    def run_all(self, function: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        """``function(item)`` for every item, in parallel; the results in order."""
        return list(self.pool.map(function, items))

    def close(self) -> None:
        """Close every thread's database connection, then stop the threads."""
        from django.db import connections

        barrier = threading.Barrier(self.size)

        def close_here(_: int) -> None:
            connections.close_all()
            barrier.wait(timeout=30)  # so each thread runs exactly one of these

        list(self.pool.map(close_here, range(self.size)))
        self.pool.shutdown(wait=True)


def duration(value: Any) -> str:
    """``timedelta(minutes=5)`` -> ``5 min``; ``None`` -> ``none`` (for the report)."""
    if value is None:
        return "none"
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    if seconds >= 60 and seconds % 30 == 0:
        return f"{seconds / 60:g} min"  # the derived keep-alive, 30.5 min
    return f"{seconds} s"
