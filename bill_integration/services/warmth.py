"""Keep a tenant's session warm, or let it lapse: a prediction from the tenant's own use.

A keep-alive costs one of the developer key's 20,000 calls an hour and buys about half an
hour of warmth; a lapsed session costs one of its 200 logins (and the caller's wait) when the
tenant comes back. Keeping every session warm around the clock (the ``"always"`` policy) spends
~2 calls per tenant-hour on tenants who call once a month, and caps one key near 10,000
tenants. The ``"predicted"`` policy (the default) keeps a session warm only while a visit is
likely before the next keep-alive would be due, and logs in shortly before a regular tenant's
usual time (a nightly sync at 02:00 finds a warm session).

Pure functions of a connection row and a moment; no database, no BILL. The sweep
(:func:`freshness.due_action`) asks :func:`decide`; the hot path records use with
:func:`note_visit` (only when a new visit starts: one small write per visit, not per call).

**What is stored per connection** (three columns, written by :func:`note_visit`):

* ``usage_last_at``: the last call a caller made (``BillSession.request``/``mark_used``),
  never moved by keep-alives or logins (``session_last_used_at`` is);
* ``usage_visits``: how many visits (calls separated by at least :data:`VISIT_GAP`);
* ``usage_histogram``: 168 hour-of-week slots (UTC; Monday 00:00 is slot 0), each a count of
  visits that started in that hour, decayed with a half-life of :data:`HALF_LIFE`, so a
  changed habit wins within weeks. Two bytes a slot, in units of 1/:data:`UNIT` visit, stored
  as 448 base64 characters (compact, and portable across databases).

**The prediction.** The expected visits in slot ``s``'s next occurrence is the slot's decayed
count over the decayed number of weeks observed (since the connection was created), blended
with the tenant's overall rate spread evenly (:data:`SPREAD`), so an irregular tenant is judged
by its frequency and a regular one by its hours. Visits are taken as a Poisson process spread
evenly inside each hour; :func:`expected_wait` is the expected time to the next visit.

**The decision** (:func:`decide`). Keeping the session warm until that visit costs one
keep-alive call per keep-alive cadence of the wait; letting it lapse costs one login then,
worth :data:`LOGIN_WORTH` calls (above BILL's own 100 calls per login: a caller waits for
it, in the hours the login budget binds). ``value`` is the login's worth over that cost: kept warm while it is at least 1, or
more under ``pressure`` (0..1, how short the upkeep share of the call budget runs), so the
tenants worth least are cut first. A lapsed session is not logged in for that value (its
login is paid whenever it is made; made early it only adds keep-alives) but
:data:`PREWARM_LEAD` before an hour from which the tenant visits within :data:`PREWARM_WINDOW`
most weeks (:data:`PREWARM_AT`, ``prewarm_at``): a nightly sync at 02:00 finds its session
warm, and so does a busy tenant's first visit of the working day. A connection linked less than
:data:`NEW_CONNECTION_WARM` ago is kept warm (its history is empty, its owner is setting it
up now).

Settings: ``WARMTH`` chooses the policy (``"predicted"`` or ``"always"``) and
``ALWAYS_WARM`` pins tenants (their ids) to always warm.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..conf import bill_settings

#: Calls closer together than this belong to one visit; the next call after a longer pause
#: starts a new visit (a new visit is what a lapsed session makes pay a login).
VISIT_GAP = timedelta(minutes=30)
#: Slots in a week of hours.
SLOTS = 7 * 24
#: Resolution of the stored counts: one visit adds UNIT to its slot. Two bytes a slot, so a
#: day's decay (x0.97) is not lost to rounding (with one byte, counts stall near 15).
UNIT = 256
#: The largest stored count (~255 visits in one hour of the week, decayed).
MAX_COUNT = 0xFFFF
#: A visit's weight halves in three weeks: history matters, a changed habit wins soon.
HALF_LIFE = timedelta(weeks=3)
#: Share of the prediction from the tenant's overall rate, spread evenly over the week.
SPREAD = 0.1
#: What a login is worth in keep-alive calls. BILL's own ratio is 100 (20,000 calls and 200
#: logins an hour); a lapse's login is worth more than its share of the budget, since a caller
#: waits for it and it falls in the callers' busy hours, where the login budget binds first.
#: 160 keeps a daily tenant warm over a weekend (~140 keep-alives) rather than paying a login
#: on Monday morning: the fleet benchmark (docs/benchmarks.md, section 7) showed those Monday
#: logins set the limit at 80, and the limit moving to calls at 160.
LOGIN_WORTH = 160.0
#: Log in ahead of a stretch of :data:`PREWARM_WINDOW` that sees a visit with at least this
#: chance.
PREWARM_AT = 0.5
#: The stretch a prewarm looks at: a visit likely within four hours. One hour would only catch
#: tenants whose visits fall in the same hour each week (a nightly sync, a daily habit); a
#: tenant with two to five visits spread over the working day (each hour 20-40 % likely) has a
#: visit within four hours of the day's start almost surely, and would otherwise pay a login
#: each morning after a lapse.
PREWARM_WINDOW = timedelta(hours=4)
#: How likely a visit may come before its prewarm: the login is made before the first hour of
#: the stretch by which a visit would have come with more than this chance (a nightly sync's
#: own hour, not the empty hours before it; a busy tenant's first working hour). The login is
#: the one the visit would pay anyway; earlier only adds keep-alives until the visit.
PREWARM_MISS = 0.05
#: Log in this long before that hour, so the caller finds the session warm.
PREWARM_LEAD = timedelta(minutes=5)
#: How far ahead :func:`decide` looks for the next visit.
LOOKAHEAD = timedelta(days=7)
LOOKAHEAD_HOURS = int(LOOKAHEAD / timedelta(hours=1))
#: The most a day's history can make a visit that day certain (see :func:`_day_calibration`).
DAY_CERTAINTY = 0.97
#: Under full login pressure a login is worth this many times :data:`LOGIN_WORTH`: with the
#: login budget short, keep-alives are the cheaper way to have a session when the visit comes.
LOGIN_PRESSURE_WORTH = 4.0
#: Upkeep may spend this share of ``UPKEEP_SHARE``'s calls before the bar to keep a session
#: warm rises (:func:`pressure_from`), so the last of the share goes to the most valuable.
PRESSURE_FROM = 0.7
#: A connection this young is kept warm whatever its (empty) history says.
NEW_CONNECTION_WARM = timedelta(hours=24)
#: The policies of setting ``WARMTH``.
PREDICTED, ALWAYS = "predicted", "always"
POLICIES = (PREDICTED, ALWAYS)

_EPOCH_MONDAY = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday: slot 0 starts at its midnight


@dataclass(frozen=True)
class WarmthDecision:
    """What the sweep should do with a tenant's session now.

    ``keep_warm``: keep it alive (or log in for it) now; ``value``: the chance of a visit
    before the next decision (1.0 when pinned or new; the sweep cuts upkeep lowest first);
    ``prewarm_at``: for a tenant let lapse, when a visit next becomes likely enough to log in
    ahead of it (``None``: not within :data:`LOOKAHEAD`).
    """

    keep_warm: bool
    value: float
    prewarm_at: datetime | None = None


# --- the stored history ---------------------------------------------------------------------


def slot_of(at: datetime) -> int:
    """The hour-of-week slot (UTC, Monday 00:00 = 0) of ``at``."""
    return int((at - _EPOCH_MONDAY).total_seconds() // 3600) % SLOTS


def read_histogram(value: str | None) -> list[int]:
    """The 168 stored counts (units of 1/UNIT visit); empty or damaged history reads as zeros."""
    try:
        raw = base64.b64decode(value or "", validate=True)
    except (binascii.Error, ValueError):
        return [0] * SLOTS
    if len(raw) != 2 * SLOTS:
        return [0] * SLOTS
    return list(struct.unpack(f">{SLOTS}H", raw))


def write_histogram(counts: list[float]) -> str:
    """``counts`` rounded and clamped to two bytes each, as base64 text."""
    clamped = [max(0, min(MAX_COUNT, round(count))) for count in counts]
    return base64.b64encode(struct.pack(f">{SLOTS}H", *clamped)).decode("ascii")


def _decay(elapsed: timedelta) -> float:
    return 0.5 ** (max(elapsed, timedelta(0)) / HALF_LIFE)


def note_visit(connection: Any, at: datetime) -> bool:
    """Record a caller's call at ``at``; ``True`` when it starts a visit (history changed).

    A visit's start decays the histogram by the time since the last recorded use and adds one
    visit to the slot of ``at``. A call inside a visit only moves ``usage_last_at``.
    """
    last = connection.usage_last_at
    if last is not None and at < last:
        return False  # never move time backwards (an older call reported late)
    starts = last is None or at - last >= VISIT_GAP
    if starts:
        factor = _decay(at - last) if last is not None else 1.0
        counts: list[float] = [
            count * factor for count in read_histogram(connection.usage_histogram)
        ]
        counts[slot_of(at)] += UNIT
        connection.usage_histogram = write_histogram(counts)
        connection.usage_visits = (connection.usage_visits or 0) + 1
    connection.usage_last_at = at
    return starts


# --- the prediction -------------------------------------------------------------------------


def weekly_rates(connection: Any, at: datetime) -> list[float]:
    """Expected visits in each hour-of-week slot's next occurrence, as judged at ``at``.

    A visit already made in the current hour counts against that hour (a nightly sync that
    ran at 02:05 will not run again before 03:00).
    """
    counts = read_histogram(connection.usage_histogram)
    total = sum(counts)
    if total == 0:
        return [0.0] * SLOTS
    last = connection.usage_last_at or at
    since = getattr(connection, "created_at", None) or last
    # The decayed number of whole weeks observed: one visit a week would sum to this.
    week = timedelta(weeks=1)
    weeks = max(math.floor((at - since) / week), 1)
    weekly = 0.5 ** (week / HALF_LIFE)
    observed = (1 - weekly**weeks) / (1 - weekly)
    # The stored counts are as of the last visit and already hold the week before it; only a
    # silence longer than a week fades them further (a tenant who stopped calling).
    scale = _decay(at - last - week) / UNIT / observed
    even = SPREAD * total / SLOTS
    rates = [((1 - SPREAD) * count + even) * scale for count in counts]
    hour = at.replace(minute=0, second=0, microsecond=0)
    if connection.usage_last_at is not None and connection.usage_last_at >= hour:
        rates[slot_of(at)] = max(0.0, rates[slot_of(at)] - 1.0)
    return _calibrated(rates)


def _hours_ahead(rates: list[float], at: datetime, hours: int) -> list[tuple[float, float]]:
    """``(rate, length in hours)`` of each piece of the ``hours`` hours after ``at``, cut at hour
    boundaries."""
    elapsed = (at - _EPOCH_MONDAY) / timedelta(hours=1)
    first = int(elapsed // 1)
    pieces = [(rates[first % SLOTS], 1 - (elapsed - first))]
    pieces += [(rates[(first + step) % SLOTS], 1.0) for step in range(1, hours)]
    if elapsed > first:
        pieces.append((rates[(first + hours) % SLOTS], elapsed - first))
    return pieces


def _calibrated(rates: list[float]) -> list[float]:
    """Each slot's rate scaled so that the day around it (12 hours either side) has the chance
    of a visit its expected visits say (at most :data:`DAY_CERTAINTY`), not
    ``1 - exp(-expected)``.

    Per-hour Poisson rates read a tenant that comes once a day at a habit that drifts over two
    or three hours as a 63 % chance a day; its visits are one a day, almost surely. The window
    is centred on each slot, so a slot's rate never depends on when it is asked about.
    """
    window = sum(rates[slot % SLOTS] for slot in range(-12, 12))
    scaled = []
    for slot, rate in enumerate(rates):
        scaled.append(rate * _day_calibration(window))
        window += rates[(slot + 12) % SLOTS] - rates[(slot - 12) % SLOTS]
    return scaled


def _day_calibration(expected: float) -> float:
    """The factor that makes a day with ``expected`` visits (Poisson) as likely to see one as
    ``expected`` says (at most :data:`DAY_CERTAINTY`); never below 1."""
    if expected <= 0:
        return 1.0
    chance = min(expected, DAY_CERTAINTY)
    return max(1.0, -math.log(1 - chance) / expected)


def expected_visits(rates: list[float], start: datetime, end: datetime) -> float:
    """Expected visits in ``(start, end]`` (visits spread evenly inside each hour)."""
    hours = max(math.ceil((end - start) / timedelta(hours=1)), 1)
    total, left = 0.0, (end - start) / timedelta(hours=1)
    for rate, length in _hours_ahead(rates, start, hours):
        piece = min(length, left)
        total += rate * piece
        left -= piece
        if left <= 0:
            break
    return total


def expected_wait(rates: list[float], at: datetime) -> timedelta:
    """Expected time from ``at`` to the next visit, capped at :data:`LOOKAHEAD`: the integral
    of the chance that no visit happened yet (visits as a Poisson process, calibrated per day)."""
    waited, cumulative = 0.0, 0.0
    for rate, hours in _hours_ahead(rates, at, LOOKAHEAD_HOURS):
        if rate > 0:
            waited += math.exp(-cumulative) * (1 - math.exp(-rate * hours)) / rate
        else:
            waited += math.exp(-cumulative) * hours
        cumulative += rate * hours
        if cumulative > 12:  # the rest adds less than a millionth
            break
    return timedelta(hours=waited)


def pressure_from(used: int, limit: int, *, start: float = PRESSURE_FROM) -> float:
    """How short a budget runs (0..1) when ``used`` of its ``limit`` is spent in the rolling
    hour: none until ``start`` of it, full when it is all spent."""
    if limit <= 0:
        return 1.0
    share = used / limit
    return min(max((share - start) / (1 - start), 0.0), 1.0)


def needed_value(pressure: float) -> float:
    """The value (:func:`decide`) a session needs to be kept warm under ``pressure`` (0..1)."""
    pressure = min(max(pressure, 0.0), 1.0)
    return 1.0 / (1.0 - 0.9 * pressure)


def pinned(connection: Any) -> bool:
    """Whether settings keep this connection warm whatever its history (policy or pin)."""
    if bill_settings.WARMTH == ALWAYS:
        return True
    pins = bill_settings.ALWAYS_WARM
    return bool(pins) and str(connection.tenant_id) in {str(tenant) for tenant in pins}


def decide(
    connection: Any, at: datetime, *, pressure: float = 0.0, login_pressure: float = 0.0
) -> WarmthDecision:
    """Keep ``connection``'s session warm at ``at``, or let it lapse.

    ``value`` is what keeping it warm until the next visit saves per call it costs: a login's
    worth (:data:`LOGIN_WORTH`, up to :data:`LOGIN_PRESSURE_WORTH` times more under
    ``login_pressure``, how short the login budget runs) over the keep-alive calls of the
    expected wait. Kept warm when the value reaches :func:`needed_value` of ``pressure`` (how
    short the calls run) while the session is alive, or once the prewarm moment of a likely
    visit has come (:data:`PREWARM_AT` within :data:`PREWARM_WINDOW`, :data:`PREWARM_LEAD`
    before the hour :data:`PREWARM_MISS` picks; alive or lapsed: log in ahead of the visit);
    otherwise ``prewarm_at`` says when that next happens.
    """
    if pinned(connection):
        return WarmthDecision(keep_warm=True, value=math.inf)
    created = getattr(connection, "created_at", None)
    if created is None or at - created < NEW_CONNECTION_WARM:  # None: being linked now
        return WarmthDecision(keep_warm=True, value=math.inf)
    from .freshness import keepalive_after, session_is_alive  # freshness imports this module

    rates = weekly_rates(connection, at)
    if not any(rates):
        return WarmthDecision(keep_warm=False, value=0.0)
    # A live session is judged as of its keep-alive moment, so the answer does not drift in the
    # minute or two the sweep may take to get to it (freshness.next_due_at stays exact).
    used = getattr(connection, "session_last_used_at", None)
    judged = at if used is None else min(at, used + keepalive_after(connection))
    wait = expected_wait(rates, judged)
    cost = max(wait / keepalive_after(connection), 0.01)  # keep-alive calls until the visit
    login_pressure = min(max(login_pressure, 0.0), 1.0)
    worth = LOGIN_WORTH * (1 + (LOGIN_PRESSURE_WORTH - 1) * login_pressure)
    value = worth / cost
    prewarm_at = _next_likely_hour(rates, at)
    if prewarm_at is not None and prewarm_at <= at:
        return WarmthDecision(keep_warm=True, value=value)
    # A lapsed session costs its login whenever it is made: made early, it only adds
    # keep-alives. So only a live session is kept for the value of not losing it.
    if session_is_alive(connection, at) and value >= needed_value(pressure):
        return WarmthDecision(keep_warm=True, value=value)
    return WarmthDecision(keep_warm=False, value=value, prewarm_at=prewarm_at)


def _prewarm_hours(rates: list[float], hour: datetime) -> Iterator[int | None]:
    """For each of the :data:`LOOKAHEAD` whole hours from ``hour``: if the
    :data:`PREWARM_WINDOW` starting then sees a visit with at least :data:`PREWARM_AT` chance,
    the offset (hours from ``hour``) of the window's hour by which a visit would have come
    with more than :data:`PREWARM_MISS` chance (a nightly sync's own hour, not the empty hour
    before it); else ``None``. Lazily: the next likely hour is usually near."""
    width = max(1, int(PREWARM_WINDOW / timedelta(hours=1)))
    needed = -math.log(1 - PREWARM_AT)  # expected visits in the window for that chance
    missed = -math.log(1 - PREWARM_MISS)  # expected visits before the prewarm, at most
    ahead = [rate for rate, _ in _hours_ahead(rates, hour, LOOKAHEAD_HOURS + width - 1)]
    for step in range(LOOKAHEAD_HOURS):
        window = ahead[step : step + width]
        if sum(window) < needed:
            yield None
            continue
        before, offset = 0.0, step + width - 1
        for k, rate in enumerate(window):
            if before + rate > missed:
                offset = step + k
                break
            before += rate
        yield offset


def _next_likely_hour(rates: list[float], at: datetime) -> datetime | None:
    """:data:`PREWARM_LEAD` before the first hour (the current one included) in which a visit
    likely within :data:`PREWARM_WINDOW` may come; ``None`` within :data:`LOOKAHEAD`."""
    # Not raised by call pressure: a prewarm spends the login the visit would, a bit earlier.
    hour = at.replace(minute=0, second=0, microsecond=0)
    for offset in _prewarm_hours(rates, hour):
        if offset is not None:
            return max(hour + timedelta(hours=offset) - PREWARM_LEAD, hour)
    return None


def prewarm_moments(connection: Any, at: datetime) -> list[datetime]:
    """Every moment within :data:`LOOKAHEAD` after ``at`` at which :func:`decide` starts to log
    in ahead of a likely visit (at no pressure): :data:`PREWARM_LEAD` before the first hour of
    each run of likely hours. ``freshness.next_due_at`` wakes the sweep at them."""
    if pinned(connection):
        return []
    rates = weekly_rates(connection, at)
    hour = at.replace(minute=0, second=0, microsecond=0)
    moments: list[datetime] = []
    previous = False
    for offset in _prewarm_hours(rates, hour):
        if offset is not None and not previous:
            start = hour + timedelta(hours=offset) - PREWARM_LEAD
            if start > at and start not in moments:
                moments.append(start)
        previous = offset is not None
    return moments
