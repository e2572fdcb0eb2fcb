"""The fleet's feedback on each tenant: budget pressures and the budget's rules, as a fixed point.

The fleet model (``bench/fleet_model.py``) simulates tenants one at a time, a sample scaled to
N. In the app they share one developer key: the sweep weighs how short the key's rolling hour
runs (``sweep.budget_pressures``) and the gateway holds upkeep to its rules. Both depend on
what the whole fleet spends, which depends on them. **How they are modelled:** pass 1 runs
every sampled tenant with no pressure and no rule; from a pass's outcome, scaled to N, and the
trace's exact callers' calls at N, :func:`derive` replays the developer key's counts minute by
minute and gives a :class:`Feedback`; the next pass runs every tenant under it; passes repeat
until N and the pressures settle (``fleet.settle``). Per minute of simulated time:

* **Pressures**: ``sweep.pressures_of`` (the sweep's own function, with its constants
  ``CALLS_PRESSURE_FROM``/``LOGINS_PRESSURE_FROM`` and ``warmth.pressure_from``) of the rolling
  60 minutes ending with that minute (``limits.calls_last_hour``'s window): callers' calls and
  replays as ``caller``, callers' logins, and the keep-alives and background logins the rules
  below let through. The login pressure is against the app's ``LOGIN_BUDGET_PER_HOUR``.
* **The budget's rules** (``limits.take_login``, ``gateway.background``): a background login
  is paced to ``LOGINS_PER_MINUTE`` and let through only while the rolling hour's logins leave
  ``LOGIN_RESERVE_FOR_CALLERS`` of ``LOGIN_BUDGET_PER_HOUR`` to callers; keep-alives and
  background logins together only while upkeep has room under ``UPKEEP_SHARE`` of 20,000
  and the rolling hour's calls of every kind (this minute's callers' first) stay within 20,000.
  Callers' logins are taken first (interactive before background). What the rules refuse in a
  minute is a share of that minute's tries; a tenant's try passes with that probability (its
  own seeded draw), and a refused one is deferred (``lifecycle.deferred``).

What this leaves out: within a minute the order of tries (a share, not a queue ordered by
value); a share is not a cap: a pass with more background-login tries in a minute than the
pass its feedback came from lets more through than the limiter would (a hard cap per minute,
shared by the pass's tenants, was tried: the passes then did not settle, 14,500-16,600 with
residuals 0.13-0.45, and it was left out); callers'
logins are never refused by the app's 150 (the pass rule is BILL's 200; the report shows the
busiest hour against both); one pass's noise (a sample of 2,000 scaled by N/2,000) feeds the
next.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from . import fleet_model as fm
from . import trace as tr

FIRST = -fm.WARMUP // 60  # minute index of the warm-up's first minute
MINUTES = (fm.WARMUP + tr.WEEK) // 60
WINDOW = 60


@dataclass
class Feedback:
    """Per minute from the warm-up's start: pressures and the share of upkeep let through."""

    calls: list[float] = field(default_factory=lambda: [0.0] * MINUTES)
    logins: list[float] = field(default_factory=lambda: [0.0] * MINUTES)
    keep_alive: list[float] = field(default_factory=lambda: [1.0] * MINUTES)
    background_login: list[float] = field(default_factory=lambda: [1.0] * MINUTES)
    deferred: dict[str, float] = field(default_factory=dict)  # scaled, measured week

    @staticmethod
    def _index(at: float) -> int:
        return min(max(int(at // 60) - FIRST, 0), MINUTES - 1)

    def pressures(self, at: float) -> tuple[float, float]:
        index = self._index(at)
        return self.calls[index], self.logins[index]

    def admits(self, kind: str, at: float) -> float:
        return getattr(self, kind)[self._index(at)]


def callers_by_minute(tenants: list[tr.Tenant]) -> list[int]:
    """Callers' own calls of ``tenants`` per minute from the warm-up's start (exact)."""
    minutes = [0] * MINUTES
    for tenant in tenants:
        for at in fm.caller_calls(tenant):
            minutes[int(at // 60) - FIRST] += 1
    return minutes


def _per_minute(counter: Counter[int], scale: float) -> list[float]:
    minutes = [0.0] * MINUTES
    for minute, count in counter.items():
        if 0 <= minute - FIRST < MINUTES:
            minutes[minute - FIRST] = count * scale
    return minutes


def derive(run: dict[str, Any], callers: list[int], n: int) -> Feedback:
    """The developer key's minutes at ``n`` tenants, replayed under the budget's rules, from a
    pass's sample (``fleet.simulate``) and the callers' calls of the first ``n`` tenants."""
    from bill_integration import limits
    from bill_integration.conf import bill_settings
    from bill_integration.constants import MAX_CALLS_PER_HOUR
    from bill_integration.services.sweep import pressures_of

    scale = n / run["tenants"]
    m = run["minutes"]
    keep_tries = _per_minute(m["keep_alive_tries"], scale)
    login_tries = _per_minute(m["background_login_tries"], scale)
    caller_logins = _per_minute(m["caller_logins_by_minute"], scale)
    replays = _per_minute(m["replays_by_minute"], scale)
    budget = int(bill_settings.LOGIN_BUDGET_PER_HOUR)
    background_budget = budget - round(budget * float(bill_settings.LOGIN_RESERVE_FOR_CALLERS))
    pace = bill_settings.LOGINS_PER_MINUTE
    share = limits.upkeep_limit()
    out = Feedback()
    kept, logged = [0.0] * MINUTES, [0.0] * MINUTES
    rolling = dict.fromkeys(("caller", "caller_login", "background_login", "keep_alive"), 0.0)
    deferred = Counter[str]()

    def move(i: int, sign: int) -> None:
        rolling["caller"] += sign * (callers[i] + replays[i])
        rolling["caller_login"] += sign * caller_logins[i]
        rolling["background_login"] += sign * logged[i]
        rolling["keep_alive"] += sign * kept[i]

    for i in range(MINUTES):
        if i >= WINDOW:
            move(i - WINDOW, -1)
        logins_room = (
            background_budget
            - rolling["caller_login"]
            - rolling["background_login"]
            - caller_logins[i]  # callers first
        )
        # Under the share, and under BILL's limit after every call the hour has, this
        # minute's callers first (``limits.take_upkeep``: upkeep gives way to callers).
        calls_room = (
            MAX_CALLS_PER_HOUR - sum(rolling.values()) - callers[i] - replays[i] - caller_logins[i]
        )
        upkeep_room = min(share - rolling["background_login"] - rolling["keep_alive"], calls_room)
        paced = login_tries[i] if pace is None else min(login_tries[i], float(pace))
        logged[i] = max(0.0, min(paced, logins_room, upkeep_room))
        kept[i] = max(0.0, min(keep_tries[i], upkeep_room - logged[i]))
        out.background_login[i] = logged[i] / login_tries[i] if login_tries[i] else 1.0
        out.keep_alive[i] = kept[i] / keep_tries[i] if keep_tries[i] else 1.0
        if i + FIRST >= 0:
            deferred["background_login"] += login_tries[i] - logged[i]
            deferred["keep_alive"] += keep_tries[i] - kept[i]
        move(i, +1)
        hour = limits.HourOfCalls(
            start=tr.moment((i + FIRST + 1 - WINDOW) * 60),
            **{kind: round(value) for kind, value in rolling.items()},
        )
        out.calls[i], out.logins[i] = pressures_of(hour)
    out.deferred = dict(deferred)
    return out


def residual(new: Feedback, old: Feedback) -> dict[str, float]:
    """How far one pass's feedback moved from the one it ran under (per-minute pressures)."""
    gaps = [abs(a - b) for a, b in zip(new.calls + new.logins, old.calls + old.logins, strict=True)]
    return {"max": max(gaps), "mean": sum(gaps) / len(gaps)}
