#!/usr/bin/env python3
"""Container health checks: ``healthcheck.py web|beat|emulator`` exits 0 when healthy.

web: the login page answers 200 over the same path a proxy uses (Host from ALLOWED_HOSTS,
X-Forwarded-Proto https, so SECURE_SSL_REDIRECT does not answer 301 instead).
beat: the process in the pid file is alive. emulator: its port accepts connections.
The worker's check is ``celery inspect ping`` (in compose.yml).
"""

import os
import socket
import sys
import urllib.request


def web() -> None:
    host = os.environ.get("ALLOWED_HOSTS", "localhost").split(",")[0].strip().lstrip(".")
    request = urllib.request.Request(
        f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/accounts/login/",
        headers={"Host": host or "localhost", "X-Forwarded-Proto": "https"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        if response.status != 200:
            sys.exit(f"web answered {response.status}")


def beat() -> None:
    with open("/tmp/celerybeat.pid") as pidfile:
        os.kill(int(pidfile.read().strip()), 0)


def emulator() -> None:
    port = int(os.environ.get("BILL_EMULATOR_PORT", "8111"))
    socket.create_connection(("127.0.0.1", port), timeout=5).close()


if __name__ == "__main__":
    {"web": web, "beat": beat, "emulator": emulator}[sys.argv[1]]()
