"""Every call to BILL counted per developer key and kind, by the minute, shared by all workers.

BILL allows 20,000 calls an hour per developer key (``constants.MAX_CALLS_PER_HOUR``), all
endpoints and all tenants sharing the key together, and answers BDC_1144 past it: every tenant
of the key then waits for the next hour. So the gateway counts each call it makes, by kind:

* ``CALLER``: a caller's own request (``BillSession.request``);
* ``CALLER_LOGIN``: a login a caller waited for (``get_session``, a replay after BDC_1109);
* ``BACKGROUND_LOGIN``: a login of the sweep (a lapsed session, a ``MAX_SESSION_AGE`` renewal);
* ``KEEP_ALIVE``: BILL's cheapest authenticated call, to reset the idle timer;
* ``OTHER``: verification, link attempts, organization lists, MFA, logouts.

*Upkeep* is ``KEEP_ALIVE`` + ``BACKGROUND_LOGIN``: what the app spends to keep sessions warm.
It may use at most ``UPKEEP_SHARE`` of BILL's hourly limit (:func:`take_upkeep`, atomic across
workers), so callers' own requests always keep the rest; and where callers use more than the
rest, upkeep gives way to them call for call: it never takes a call that would bring the rolling
hour's calls of every kind past BILL's limit, so it is never upkeep that pushes a developer key
into BDC_1144 (callers alone still can: nothing the app does stops a caller's own request).

Counts are kept in one-minute buckets by the limiter backend (Redis hashes with a TTL, or the
``CallCount`` table), so they are shared by every worker and survive a process restart; the
rolling hour is the last 60 buckets, the current minute included. Spend & Expense calls are
not counted here: BILL limits them per API token, apart from the developer key
(``limits.spend_call``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta

from ..conf import bill_settings, now
from ..constants import MAX_CALLS_PER_HOUR
from .base import LimiterBackend

CALLER = "caller"
CALLER_LOGIN = "caller_login"
BACKGROUND_LOGIN = "background_login"
KEEP_ALIVE = "keep_alive"
OTHER = "other"
#: Every kind of call, in the order :class:`HourOfCalls` has them.
CALL_KINDS = (CALLER, CALLER_LOGIN, BACKGROUND_LOGIN, KEEP_ALIVE, OTHER)
#: What keeping sessions warm costs: the kinds ``UPKEEP_SHARE`` bounds.
UPKEEP_KINDS = (BACKGROUND_LOGIN, KEEP_ALIVE)
#: Not a call: upkeep the share or the login pacing turned away (counted to show it).
DEFERRED = "deferred"

MINUTE = timedelta(minutes=1)
#: Minute buckets in the rolling hour.
HOUR_MINUTES = 60
#: How long buckets are kept: a day of hours for the charts, and an hour of slack.
KEEP_BUCKETS = timedelta(hours=25)


@dataclass(frozen=True)
class HourOfCalls:
    """Calls of one developer key in one hour (a clock hour, or the rolling last 60 minutes)."""

    start: datetime
    caller: int = 0
    caller_login: int = 0
    background_login: int = 0
    keep_alive: int = 0
    other: int = 0
    #: Upkeep turned away for want of room or pace (no call was made; not in ``total``).
    deferred: int = 0

    @property
    def logins(self) -> int:
        """Logins counted by kind (link attempts and organization lists are in ``other``)."""
        return self.caller_login + self.background_login

    @property
    def upkeep(self) -> int:
        """Keep-alives and background logins: what ``UPKEEP_SHARE`` bounds."""
        return self.keep_alive + self.background_login

    @property
    def total(self) -> int:
        """Every call BILL counted against the developer key's hourly limit."""
        return sum(getattr(self, kind) for kind in CALL_KINDS)


_KIND_FIELDS = frozenset(f.name for f in fields(HourOfCalls)) - {"start"}


def minute_of(at: datetime) -> datetime:
    """The start of ``at``'s minute, in UTC: the bucket a call at ``at`` is counted in."""
    return at.astimezone(UTC).replace(second=0, microsecond=0)


def window(at: datetime) -> tuple[datetime, datetime]:
    """First and last minute bucket of the rolling hour that ends with ``at``'s minute."""
    last = minute_of(at)
    return last - (HOUR_MINUTES - 1) * MINUTE, last


def upkeep_limit() -> int:
    """Upkeep calls allowed per rolling hour: ``UPKEEP_SHARE`` of BILL's hourly limit."""
    # The epsilon keeps 0.00015 x 20,000 at 3, not 2.9999...
    return math.floor(float(bill_settings.UPKEEP_SHARE) * MAX_CALLS_PER_HOUR + 1e-9)


def _backend() -> LimiterBackend:
    from . import get_limiter  # the package picks the backend; imported late (cycle)

    return get_limiter()


def check_kind(kind: str) -> None:
    """Raise ``ValueError`` unless ``kind`` is one of the kinds of call counted."""
    if kind not in _KIND_FIELDS:
        raise ValueError(f"Unknown kind of BILL call: {kind!r}")


def count_call(fingerprint: str, kind: str, *, n: int = 1, at: datetime | None = None) -> None:
    """Count ``n`` calls of ``kind`` made with the developer key ``fingerprint`` at ``at``.

    ``n`` may be negative to take back a count for a call that was not made after all.
    """
    check_kind(kind)
    _backend().count_calls(fingerprint, kind, n=n, minute=minute_of(at or now()))


def take_upkeep(
    fingerprint: str, kind: str = KEEP_ALIVE, *, n: int = 1, at: datetime | None = None
) -> bool:
    """Count ``n`` upkeep calls if the rolling hour has room for them.

    Room means both: upkeep stays within :func:`upkeep_limit` (the share), and the hour's calls
    of every kind stay within BILL's ``MAX_CALLS_PER_HOUR`` (callers past their rest of the hour
    take room from upkeep, never the other way round). Check and count are one atomic step
    across workers, so this holds however many sweeps run at once. Returns False (nothing
    counted) when there is no room.
    """
    if kind not in UPKEEP_KINDS:
        raise ValueError(f"{kind!r} is not upkeep")
    moment = at or now()
    return bool(
        _backend().take_upkeep(
            fingerprint,
            kind,
            n=n,
            minute=minute_of(moment),
            limit=upkeep_limit(),
            ceiling=MAX_CALLS_PER_HOUR,
        )
    )


def _sum(start: datetime, buckets: list[tuple[datetime, str, int]]) -> HourOfCalls:
    totals = dict.fromkeys(_KIND_FIELDS, 0)
    for _, kind, count in buckets:
        if kind in totals:
            totals[kind] += int(count)
    return HourOfCalls(start=start, **totals)


def calls_last_hour(fingerprint: str, *, at: datetime | None = None) -> HourOfCalls:
    """The rolling hour's calls (the 60 minute buckets up to ``at``'s, inclusive)."""
    first, last = window(at or now())
    return _sum(first, _backend().call_buckets(fingerprint, since=first, until=last))


def calls_by_hour(
    fingerprint: str, *, hours: int = 24, at: datetime | None = None
) -> list[HourOfCalls]:
    """Calls per clock hour for the last ``hours`` hours, oldest first (the current one last)."""
    last_minute = minute_of(at or now())
    current = last_minute.replace(minute=0)
    first = current - timedelta(hours=hours - 1)
    by_hour: dict[datetime, list[tuple[datetime, str, int]]] = {
        first + timedelta(hours=i): [] for i in range(hours)
    }
    for bucket in _backend().call_buckets(fingerprint, since=first, until=last_minute):
        hour = bucket[0].replace(minute=0)
        if hour in by_hour:
            by_hour[hour].append(bucket)
    return [_sum(start, buckets) for start, buckets in by_hour.items()]


def upkeep_room(fingerprint: str, *, at: datetime | None = None) -> int:
    """Upkeep calls still allowed in the rolling hour ending at ``at`` (never below 0): the
    share's room, or less where callers have used the rest of BILL's limit."""
    hour = calls_last_hour(fingerprint, at=at)
    return max(0, min(upkeep_limit() - hour.upkeep, MAX_CALLS_PER_HOUR - hour.total))


def counted_fingerprints(*, hours: int = 24) -> list[str]:
    """Fingerprints of developer keys with calls counted in the last ``hours`` hours, sorted."""
    since = minute_of(now()) - timedelta(hours=hours)
    return sorted(set(_backend().counted_fingerprints(since=since)))


def record_deferral(fingerprint: str, *, at: datetime | None = None) -> None:
    """Count one piece of upkeep turned away (shown per hour as ``HourOfCalls.deferred``)."""
    _backend().count_calls(fingerprint, DEFERRED, n=1, minute=minute_of(at or now()))
