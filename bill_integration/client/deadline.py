"""A total deadline per BILL call, enforced by one watchdog thread per process.

``READ_TIMEOUT`` bounds each socket read, not a call: an answer dripped one byte every 2.5 s
never trips a 3 s read timeout and can keep a call open for minutes, past the concurrency
slot's lease (``CONCURRENCY_LEASE``), so a fourth request would reach an organization for
which BILL allows three (https://developer.bill.com/docs/api-rate-limits). So every call
gets a :class:`Deadline` (``CALL_DEADLINE``; by default ``CONNECT_TIMEOUT + READ_TIMEOUT``):

* the connections a call uses register with its deadline (:class:`DeadlineAdapter` gives
  ``requests`` connection classes that do so when they connect and when they send);
* when the deadline passes, the watchdog shuts those sockets down (``shutdown(SHUT_RDWR)``
  wakes a thread blocked in ``recv``, in the status line, the headers or the body alike), and
  the call raises :class:`~bill_integration.exceptions.TransientError`;
* ``HttpClient.send`` also checks the deadline between the chunks of the body it reads, and
  caps each connect timeout at what is left of the deadline.

A deadline is finished under the same lock the watchdog fires it with, and a finished
deadline never fires: a connection handed back to the pool is never shut down by the call
that used it before. Name resolution (DNS) cannot be interrupted; it is the one part of a
call the deadline does not bound.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from ..exceptions import ConfigurationError

#: The deadline of the call this thread (or task) is making, seen by the connection classes.
_current: ContextVar[Deadline | None] = ContextVar("bill_call_deadline", default=None)


def as_seconds(value: object, name: str) -> float:
    """``value`` (a ``timedelta`` or a number of seconds) as positive, finite seconds."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ConfigurationError(
            f"BILL_INTEGRATION[{name!r}] must be a datetime.timedelta or a number of seconds, "
            f"not {type(value).__name__}."
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigurationError(f"BILL_INTEGRATION[{name!r}] must be positive, not {value!r}.")
    return seconds


def configured_timeouts() -> tuple[float, float]:
    """``(CONNECT_TIMEOUT, READ_TIMEOUT)`` in seconds (each a number or a ``timedelta``)."""
    from ..conf import bill_settings

    return (
        as_seconds(bill_settings.CONNECT_TIMEOUT, "CONNECT_TIMEOUT"),
        as_seconds(bill_settings.READ_TIMEOUT, "READ_TIMEOUT"),
    )


def configured_call_deadline(connect_timeout: float, read_timeout: float) -> float:
    """``CALL_DEADLINE`` in seconds; unset or ``None``: ``connect_timeout + read_timeout``.

    Read from the user's settings with a default, so it works before ``conf.DEFAULTS`` lists
    it (and without Django settings at all, for the client used from plain Python).
    """
    from django.conf import settings

    if settings.configured:
        from ..conf import DEFAULTS, bill_settings

        value = bill_settings.user_settings.get("CALL_DEADLINE", DEFAULTS.get("CALL_DEADLINE"))
        if value is not None:
            return as_seconds(value, "CALL_DEADLINE")
    return connect_timeout + read_timeout


class Deadline:
    """The time one call may take, from its start to the last byte of BILL's answer."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expires_at = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._watched: list[Any] = []
        self.fired = False
        self.finished = False

    def __repr__(self) -> str:
        return f"Deadline({self.seconds:g} s, fired={self.fired}, finished={self.finished})"

    def remaining(self) -> float:
        return max(0.0, self.expires_at - time.monotonic())

    @property
    def passed(self) -> bool:
        return self.fired or time.monotonic() >= self.expires_at

    def watch(self, target: Any) -> None:
        """Shut ``target`` (a socket, or a connection's ``sock``) down when the deadline fires."""
        with self._lock:
            if self.finished:
                return
            if self.fired:
                _shut_down(target)
            else:
                self._watched.append(target)

    def fire(self) -> None:
        """Called by the watchdog: stop the call by shutting its sockets down."""
        with self._lock:
            if self.finished or self.fired:
                return
            self.fired = True
            targets, self._watched = self._watched, []
        for target in targets:
            _shut_down(target)

    def finish(self) -> None:
        """The call is over: never fire (its connection may go back to the pool)."""
        with self._lock:
            self.finished = True
            self._watched = []


def _shut_down(target: Any) -> None:
    sock = target if isinstance(target, socket.socket) else getattr(target, "sock", None)
    if sock is None:
        return
    try:
        # socket.socket's own shutdown, also for an SSLSocket (whose override would drop its
        # SSL object under the reading thread's feet); the reader then sees end-of-file.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, ValueError):
        pass  # already closed


class _Watchdog:
    """One daemon thread firing deadlines in time order; restarted lazily after a fork."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, deadline: Deadline) -> None:
        with self._cond:
            heapq.heappush(self._heap, (deadline.expires_at, next(self._order), deadline))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="bill-call-deadlines", daemon=True
                )
                self._thread.start()
            if self._heap[0][2] is deadline:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                due = self._take_due()
                while not due:
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(wait)
                    due = self._take_due()
            for deadline in due:
                deadline.fire()

    def _take_due(self) -> list[Deadline]:
        now = time.monotonic()
        due = []
        while self._heap and (self._heap[0][0] <= now or self._heap[0][2].finished):
            deadline = heapq.heappop(self._heap)[2]
            if not deadline.finished:
                due.append(deadline)
        return due


_watchdog = _Watchdog()
if hasattr(os, "register_at_fork"):  # a forked worker (Celery prefork) gets its own thread
    os.register_at_fork(after_in_child=_watchdog._reset)


@contextlib.contextmanager
def enforced(deadline: Deadline) -> Iterator[Deadline]:
    """Within the block, this call's connections are shut down when ``deadline`` passes."""
    token = _current.set(deadline)
    _watchdog.add(deadline)
    try:
        yield deadline
    finally:
        deadline.finish()
        _current.reset(token)


class _WatchedConnectionMixin:
    """Registers the connection's socket with the current call's deadline."""

    sock: Any

    def _new_conn(self) -> Any:
        sock = super()._new_conn()  # type: ignore[misc]
        deadline = _current.get()
        if deadline is not None:
            deadline.watch(sock)  # the raw socket: covers a TLS handshake too
        return sock

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        deadline = _current.get()
        if deadline is not None:
            deadline.watch(self)

    def request(self, *args: Any, **kwargs: Any) -> Any:
        deadline = _current.get()
        if deadline is not None and self.sock is not None:
            deadline.watch(self)  # a kept-alive connection from the pool
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_WatchedConnectionMixin, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedConnectionMixin, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_STOCK_POOLS = {"http": HTTPConnectionPool, "https": HTTPSConnectionPool}


def _use_watched_pools(manager: Any) -> None:
    # Only a manager with urllib3's stock pools (a SOCKS proxy brings its own; its calls are
    # then bounded by the checks between body chunks only).
    if getattr(manager, "pool_classes_by_scheme", None) == _STOCK_POOLS:
        manager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """A ``requests`` adapter whose connections obey the current call's :class:`Deadline`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _use_watched_pools(self.poolmanager)

    def proxy_manager_for(self, proxy: Any, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        _use_watched_pools(manager)
        return manager
