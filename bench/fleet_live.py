"""The developer key's rolling hour at N tenants, live: what the fleet model's tenants share.

In the app every tenant of a developer key meets the key's counts as they stand: the sweep
weighs how short the rolling hour runs (``sweep.budget_pressures``) and the limiter holds
upkeep to the budget's rules at the moment it asks (``limits.take_login``,
``limits.take_upkeep``). The fleet model (``bench/fleet_model.py``) runs a sample of the
trace's tenants interleaved in time order (``fleet.simulate``), and each of them asks a
:class:`LiveKey` at its own moment. Per minute of simulated time:

* **Counts**: callers' own calls at N, exact from the trace, are counted in full at the start
  of their minute (callers first: upkeep gives way to them). What the sample does (callers'
  logins and replays, keep-alives, background logins) is counted as it happens, each scaled by
  N / sample. The rolling hour is the last 60 minutes, this one included (the window of
  ``limits.calls_last_hour``).
* **Pressures**: ``sweep.pressures_of`` (the sweep's own function) of the rolling hour; the
  login pressure is against the app's ``LOGIN_BUDGET_PER_HOUR``.
* **The budget's rules**: a background login only while the rolling hour's logins leave
  ``LOGIN_RESERVE_FOR_CALLERS`` of ``LOGIN_BUDGET_PER_HOUR`` to callers and this minute's
  background logins are under ``LOGINS_PER_MINUTE``; keep-alives and background logins only
  while upkeep is under ``UPKEEP_SHARE`` of 20,000 and every call of the hour under 20,000.

**Where a sample stands in for the fleet.** One sampled tenant's action stands for N / sample
actions of the fleet, more than the room a rule often has left (3 logins a minute against
about 8 per sampled login at 17,000 tenants). So a rule with some room but less than one
sampled action's worth lets the action through with the chance room / (N / sample), drawn
from this key's own seeded generator: the rule holds on average, and a minute can overshoot
by at most one sampled action. A rule with no room refuses. Callers' logins are never refused
by the app's ``LOGIN_BUDGET_PER_HOUR`` here (BILL's 200 is the pass rule; the report shows the
busiest hour against it).
"""

from __future__ import annotations

import random

from . import fleet_model as fm
from . import trace as tr

FIRST = -fm.WARMUP // 60  # minute index of the warm-up's first minute
MINUTES = (fm.WARMUP + tr.WEEK) // 60
WINDOW = 60
#: The kinds a sampled tenant counts (``limits.HourOfCalls`` fields).
SAMPLED = ("caller_login", "background_login", "keep_alive")


def callers_by_minute(tenants: list[tr.Tenant]) -> list[int]:
    """Callers' own calls of ``tenants`` per minute from the warm-up's start (exact)."""
    minutes = [0] * MINUTES
    for tenant in tenants:
        for at in fm.caller_calls(tenant):
            minutes[int(at // 60) - FIRST] += 1
    return minutes


class LiveKey:
    """One developer key's rolling hour at ``n`` tenants, of which ``sample`` are simulated."""

    def __init__(self, n: int, sample: int, callers: list[int], *, seed: int = 0) -> None:
        from bill_integration import limits
        from bill_integration.conf import bill_settings

        self.n, self.scale = n, n / sample
        self.callers = callers
        self.draws = random.Random(f"live-key:{seed}:{n}")
        budget = int(bill_settings.LOGIN_BUDGET_PER_HOUR)
        reserve = round(budget * float(bill_settings.LOGIN_RESERVE_FOR_CALLERS))
        self.background_budget = budget - reserve
        self.pace = bill_settings.LOGINS_PER_MINUTE
        self.share = limits.upkeep_limit()
        self.minutes: dict[str, list[float]] = {
            kind: [0.0] * MINUTES for kind in ("caller", *SAMPLED)
        }
        self.rolling = dict.fromkeys(("caller", *SAMPLED), 0.0)
        self.index = -1  # the current minute (0 = the warm-up's first); none yet
        self.cached: tuple[float, float] | None = None

    def _at(self, at: float) -> int:
        """Move the window to ``at``'s minute (never back: a late sweep action counts in the
        current minute) and return the minute's index."""
        index = min(max(int(at // 60) - FIRST, 0), MINUTES - 1)
        while self.index < index:
            self.index += 1
            if self.index >= WINDOW:
                for kind, values in self.minutes.items():
                    self.rolling[kind] -= values[self.index - WINDOW]
            self.minutes["caller"][self.index] += self.callers[self.index]
            self.rolling["caller"] += self.callers[self.index]
            self.cached = None
        return self.index

    def record(self, kind: str, at: float) -> None:
        """One sampled action of ``kind`` (a ``limits.HourOfCalls`` field) at ``at``."""
        index = self._at(at)
        self.minutes[kind][index] += self.scale
        self.rolling[kind] += self.scale
        self.cached = None

    def pressures(self, at: float) -> tuple[float, float]:
        """``sweep.pressures_of`` of the rolling hour ending with ``at``'s minute."""
        from bill_integration import limits
        from bill_integration.services.sweep import pressures_of

        index = self._at(at)
        if self.cached is None:
            hour = limits.HourOfCalls(
                start=tr.moment((index + FIRST + 1 - WINDOW) * 60),
                **{kind: round(value) for kind, value in self.rolling.items()},
            )
            self.cached = pressures_of(hour)
        return self.cached

    def room(self, kind: str, at: float) -> float:
        """How many more actions of ``kind`` the budget's rules let through at ``at``."""
        from bill_integration.constants import MAX_CALLS_PER_HOUR

        index = self._at(at)
        r = self.rolling
        calls_room = MAX_CALLS_PER_HOUR - sum(r.values())
        room = min(self.share - r["background_login"] - r["keep_alive"], calls_room)
        if kind == "background_login":
            logins = self.background_budget - r["caller_login"] - r["background_login"]
            room = min(room, logins)
            if self.pace is not None:
                room = min(room, self.pace - self.minutes["background_login"][index])
        return room

    def admit(self, kind: str, at: float) -> bool:
        """Whether a sampled ``kind`` ("keep_alive" or "background_login") goes through now
        (module docstring: a room smaller than one sampled action is a chance)."""
        room = self.room(kind, at)
        return room >= self.scale or (room > 0 and self.draws.random() < room / self.scale)
