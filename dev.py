#!/usr/bin/env python3
"""One entry point for a fresh clone: ``python3 dev.py demo`` and ``python3 dev.py test``.

Needs only Python 3.11+. Both commands create ``.venv`` and install the pinned requirements
into it (again only when a requirements file changed), then:

* ``demo``: migrates a SQLite database in the demo's state folder, creates a demo admin,
  tenant and BILL emulator account (and prints them), and starts the Django server, the BILL
  emulator, and a Celery worker with an embedded beat on a file-system broker, all under
  honcho (Ctrl-C stops everything). Nothing else needs to be running. Environment variables:

  ``BILL_DEMO_STATE_DIR``          the state folder: database, broker, logins (``.demo``)
  ``BILL_DEMO_PORT``               the Django server's port (8000)
  ``BILL_EMULATOR_PORT``           the BILL emulator's port (8111)
  ``BILL_DEMO_SWEEP_SECONDS``      how often the beat sweeps (30)
  ``BILL_DEMO_KEEPALIVE_SECONDS``  idle seconds before a session is kept alive (60)

* ``test``: makes sure PostgreSQL and Redis answer on localhost (starting them with the
  commands in ``SERVICES`` below when they do not), then runs the whole pytest suite. Extra
  arguments go to pytest, e.g. ``python3 dev.py test -k emulator -x``.

* ``matrix``: the same services, then ``nox -t matrix`` (``noxfile.py``): the quick layers on
  Django 5.2 and 6.0, each Python they support and both databases, every combination but the
  one ``test`` runs. Needs those Pythons (python3.11, 3.12, 3.13; pyenv's are found too).
  Extra arguments go to nox, e.g. ``python3 dev.py matrix -s "tests(py3.13-django6.0-sqlite)"``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"


def say(message: str) -> None:
    print(f"[dev.py] {message}", flush=True)


def run(*args: str | Path, **kwargs) -> None:
    subprocess.run([str(a) for a in args], check=True, cwd=ROOT, **kwargs)


def ensure_venv(requirements: str) -> None:
    """Create .venv and install ``requirements`` plus this package, once per change."""
    if sys.version_info < (3, 11):  # noqa: UP036  (dev.py may be run by an older python3)
        sys.exit(f"Python 3.11 or newer is needed; this is {sys.version.split()[0]}.")
    if not PYTHON.exists():
        say("creating .venv")
        try:
            run(sys.executable, "-m", "venv", VENV)
        except subprocess.CalledProcessError:
            shutil.rmtree(VENV, ignore_errors=True)
            sys.exit(
                "Could not create .venv: this Python has no venv support. On Debian or "
                "Ubuntu: sudo apt-get install python3-venv, then run this again."
            )
    digest = hashlib.sha256()
    for path in sorted((ROOT / "requirements").glob("*.txt")) + [ROOT / "pyproject.toml"]:
        digest.update(path.read_bytes())
    stamp = VENV / f".installed-{requirements}"
    if stamp.exists() and stamp.read_text() == digest.hexdigest():
        return
    say(f"installing requirements/{requirements}.txt into .venv (first run takes a minute)")
    run(PYTHON, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--upgrade", "pip")
    run(
        PYTHON,
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        "-r",
        ROOT / "requirements" / f"{requirements}.txt",
    )
    run(
        PYTHON, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", "-e", ROOT
    )
    stamp.write_text(digest.hexdigest())


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def ensure_service(name: str, port: int, start: str) -> None:
    if port_open(port):
        return
    say(f"{name} is not answering on 127.0.0.1:{port}; starting it: {start}")
    subprocess.run(start, shell=True, check=False)
    for _ in range(60):
        if port_open(port):
            return
        time.sleep(0.5)
    sys.exit(f"{name} did not start on 127.0.0.1:{port}; start it yourself and run again.")


#: What the tests need on localhost: (name, port, the command that starts it on Debian).
SERVICES = (
    (
        "PostgreSQL",
        5432,
        "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    ),
    (
        "Redis",
        6379,
        "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' "
        "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log",
    ),
)


def cmd_test(args: list[str]) -> int:
    ensure_venv("test")
    for name, port, start in SERVICES:
        ensure_service(name, port, start)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([str(PYTHON), "-m", "pytest", *args], cwd=ROOT, env=env).returncode


def cmd_matrix(args: list[str]) -> int:
    ensure_venv("test")
    for name, port, start in SERVICES:
        ensure_service(name, port, start)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    nox = [str(PYTHON), "-m", "nox", "-f", str(ROOT / "noxfile.py")]
    return subprocess.run([*nox, *(args or ["-t", "matrix"])], cwd=ROOT, env=env).returncode


def demo_state_dir(env: dict[str, str]) -> Path:
    """The demo's state folder: ``BILL_DEMO_STATE_DIR``, else ``.demo``, from the checkout.

    The rule of ``project/settings/dev.py`` and the ``Procfile``, which run in the checkout.
    """
    return ROOT / (env.get("BILL_DEMO_STATE_DIR") or ".demo")


def cmd_demo(args: list[str]) -> int:
    ensure_venv("dev")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings.dev",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
    }
    demo_state_dir(env).mkdir(parents=True, exist_ok=True)
    run(PYTHON, "manage.py", "migrate", "--no-input", "-v", "0", env=env)
    run(PYTHON, "manage.py", "bill_demo_setup", env=env)
    honcho = shutil.which("honcho", path=str(BIN)) or str(BIN / "honcho")
    say("starting web, BILL emulator, Celery worker and beat (Ctrl-C stops them all)")
    return subprocess.run([honcho, "-f", "Procfile", "start", *args], cwd=ROOT, env=env).returncode


def main() -> int:
    commands = {"demo": cmd_demo, "test": cmd_test, "matrix": cmd_matrix}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__)
        return 2
    try:
        return commands[sys.argv[1]](sys.argv[2:])
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
