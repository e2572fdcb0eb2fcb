"""The emulator's clock (real time plus a settable offset), and the same clock for other processes.

Inside the emulator: :class:`EmulatorClock`. Tests move it with ``advance()``, and every rule
that depends on time (35-minute idle expiry, hourly limits) reads it.

In another process (a Celery worker, the demo's web server) the app's clock must move with
the emulator's. Make :func:`remote_clock` that process's clock (in its settings module, say)
and set the environment variable ``BILL_EMULATOR_URL`` (e.g. ``http://127.0.0.1:8111``)::

    from bill_integration.conf import set_clock
    set_clock("bill_integration.emulator.clock.remote_clock")

It asks ``GET /_emulator/clock`` for the offset at most once a second (cached per process,
counted from when the fetch started) and returns ``now + offset``. If the emulator does not
answer it keeps the last offset known (zero at first) and asks again on the next call: a clock
must never raise.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta

#: How long remote_clock trusts an offset it fetched.
REMOTE_CACHE_SECONDS = 1.0
#: Environment variable naming the emulator's base URL for remote_clock.
URL_ENV = "BILL_EMULATOR_URL"


class EmulatorClock:
    """Real time plus ``offset`` seconds; thread-safe."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    @property
    def offset(self) -> float:
        return self._offset

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self._offset)

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._offset += float(seconds)
        return self.now()

    def set_offset(self, seconds: float) -> datetime:
        with self._lock:
            self._offset = float(seconds)
        return self.now()


_remote_lock = threading.Lock()
_remote = {"offset": 0.0, "fetched": float("-inf")}


def fetch_offset(url: str, timeout: float = 2.0) -> float:
    """The offset (seconds) of the emulator at ``url``, read from ``GET /_emulator/clock``."""
    with urllib.request.urlopen(url.rstrip("/") + "/_emulator/clock", timeout=timeout) as answer:
        return float(json.load(answer)["offset"])


def remote_clock() -> datetime:
    """The emulator's time as seen from another process (a clock for ``conf.set_clock``).

    The cached offset is stamped with the moment its fetch *started*: the answer cannot
    include an ``advance()`` made after that moment, so "at most one second old" is counted
    from there, however long the fetch took. A failed fetch keeps the last known offset for
    this call but does not refresh the stamp, so the next call asks again.
    """
    url = os.environ.get(URL_ENV)
    if not url:
        return datetime.now(UTC)
    started = time.monotonic()
    with _remote_lock:
        stale = started - _remote["fetched"] > REMOTE_CACHE_SECONDS
    if stale:
        try:
            offset = fetch_offset(url)
        except (OSError, ValueError, KeyError):
            pass  # keep the last offset, and its old stamp: retry on the next call
        else:
            with _remote_lock:
                # Threads may race; never replace a newer answer with an older one.
                if started > _remote["fetched"]:
                    _remote["offset"], _remote["fetched"] = offset, started
    return datetime.now(UTC) + timedelta(seconds=_remote["offset"])
