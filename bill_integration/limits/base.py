"""What every limiter backend shares: the backend interface, ``LimitStatus``, database reads.

A backend counts three things per developer key *fingerprint* (never the key): logins in a
rolling hour, in-flight requests per organization (slots with a lease), and a BDC_1144 pause.
The public functions in ``bill_integration.limits`` turn its answers into exceptions.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from django.db import DEFAULT_DB_ALIAS

if TYPE_CHECKING:
    from ..models import CallCount, DevKeyState, LimiterEvent

#: BILL counts logins per developer key per hour:
#: https://developer.bill.com/docs/api-rate-limits
LOGIN_WINDOW = timedelta(hours=1)
#: Redis keys start with this, so the app can share a Redis database with others.
REDIS_PREFIX = "bill_integration:limits:"


@dataclass(frozen=True)
class LimitStatus:
    """What ``bill_status`` shows per developer key: budget used, pause, shortfalls."""

    logins_used: int
    budget: int
    paused_until: datetime | None
    budget_shortfalls: int


class LimiterBackend(Protocol):
    """Check-and-count operations, each atomic across every process that shares the backend."""

    def acquire_login(self, fingerprint: str, *, budget: int, at: datetime) -> bool: ...
    def login_window(self, fingerprint: str, *, at: datetime) -> tuple[int, datetime | None]: ...
    def acquire_slot(
        self,
        key: str,
        fingerprint: str,
        *,
        limit: int,
        at: datetime,
        lease: timedelta,
        count: str | None = None,
    ) -> str | datetime | None: ...
    def release_slot(self, key: str, token: str) -> None: ...
    def pause(self, fingerprint: str, until: datetime) -> None: ...
    def paused_until(self, fingerprint: str, *, at: datetime) -> datetime | None: ...
    def record_shortfall(self, fingerprint: str, *, at: datetime) -> int: ...
    def shortfalls(self, fingerprint: str) -> int: ...
    def reset(self) -> None: ...
    # Calls counted per minute bucket (``limits/counting.py``).
    def count_calls(self, fingerprint: str, kind: str, *, n: int, minute: datetime) -> None: ...
    def take_upkeep(
        self, fingerprint: str, kind: str, *, n: int, minute: datetime, limit: int, ceiling: int
    ) -> bool: ...
    def call_buckets(
        self, fingerprint: str, *, since: datetime, until: datetime
    ) -> list[tuple[datetime, str, int]]: ...
    def counted_fingerprints(self, *, since: datetime) -> list[str]: ...


def from_ts(value: float) -> datetime:
    """A UTC datetime from a Unix timestamp (Redis stores scores and pauses as floats)."""
    return datetime.fromtimestamp(value, tz=UTC)


def limiter_models() -> tuple[type[LimiterEvent], type[DevKeyState]]:
    # Imported late: ``limits`` is imported by ``services`` while the app registry loads.
    from ..models import DevKeyState, LimiterEvent

    return LimiterEvent, DevKeyState


def call_count_model() -> type[CallCount]:
    from ..models import CallCount

    return CallCount


class DatabaseLimiterBase:
    """The reads both database backends make through the ORM, and the login journal's reads.

    Reads run on the caller's connection: under READ COMMITTED they see every count another
    worker (or the PostgreSQL backend's own connection) has committed.
    """

    def __init__(self, alias: str = DEFAULT_DB_ALIAS) -> None:
        self.alias = alias

    def _events(self) -> Any:
        return limiter_models()[0].objects.using(self.alias)

    def _states(self) -> Any:
        return limiter_models()[1].objects.using(self.alias)

    def _take(
        self,
        kind: str,
        key: str,
        *,
        limit: int | None,
        at: datetime,
        expires_at: datetime,
        token: str,
    ) -> bool:
        """Create one ``kind`` row for ``key`` unless ``limit`` unexpired ones exist."""
        raise NotImplementedError

    def acquire_login(self, fingerprint: str, *, budget: int, at: datetime) -> bool:
        expires_at, token = at + LOGIN_WINDOW, uuid.uuid4().hex
        return self._take(
            "login", fingerprint, limit=budget, at=at, expires_at=expires_at, token=token
        )

    def record_login(self, fingerprint: str, *, token: str, at: datetime) -> None:
        """Journal a login another backend (Redis) granted; never refused."""
        self._take(
            "login", fingerprint, limit=None, at=at, expires_at=at + LOGIN_WINDOW, token=token
        )

    def login_window(self, fingerprint: str, *, at: datetime) -> tuple[int, datetime | None]:
        from django.db.models import Count, Min

        facts = (
            self._events()
            .filter(kind="login", key=fingerprint, expires_at__gt=at)
            .aggregate(used=Count("id"), frees_at=Min("expires_at"))
        )
        return int(facts["used"]), facts["frees_at"]

    def recent_logins(self, fingerprint: str, *, at: datetime) -> list[tuple[str, datetime]]:
        """``(token, at)`` of each login of ``fingerprint`` still inside its hour at ``at``."""
        rows = self._events().filter(kind="login", key=fingerprint, expires_at__gt=at)
        return list(rows.order_by("at").values_list("token", "at"))

    def paused_until(self, fingerprint: str, *, at: datetime) -> datetime | None:
        until: datetime | None = (
            self._states()
            .filter(fingerprint=fingerprint, paused_until__gt=at)
            .values_list("paused_until", flat=True)
            .first()
        )
        return until

    def _counts(self) -> Any:
        return call_count_model().objects.using(self.alias)

    def call_buckets(
        self, fingerprint: str, *, since: datetime, until: datetime
    ) -> list[tuple[datetime, str, int]]:
        """``(minute, kind, count)`` of every bucket of ``fingerprint`` in ``[since, until]``."""
        rows = self._counts().filter(fingerprint=fingerprint, minute__gte=since, minute__lte=until)
        return list(rows.values_list("minute", "kind", "count"))

    def counted_fingerprints(self, *, since: datetime) -> list[str]:
        rows = self._counts().filter(minute__gte=since).values_list("fingerprint", flat=True)
        return list(rows.distinct())

    def _hour_used(self, fingerprint: str, *, minute: datetime) -> tuple[int, int]:
        """(upkeep, every call) counted in the rolling hour ending with ``minute``."""
        from django.db.models import Q, Sum

        from .counting import CALL_KINDS, HOUR_MINUTES, MINUTE, UPKEEP_KINDS

        first = minute - (HOUR_MINUTES - 1) * MINUTE
        used = (
            self._counts()
            .filter(fingerprint=fingerprint, minute__gte=first, minute__lte=minute)
            .aggregate(
                upkeep=Sum("count", filter=Q(kind__in=UPKEEP_KINDS)),
                total=Sum("count", filter=Q(kind__in=CALL_KINDS)),
            )
        )
        return int(used["upkeep"] or 0), int(used["total"] or 0)

    def shortfalls(self, fingerprint: str) -> int:
        value = (
            self._states()
            .filter(fingerprint=fingerprint)
            .values_list("budget_shortfalls", flat=True)
            .first()
        )
        return int(value or 0)
