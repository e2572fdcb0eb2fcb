"""The limiter on any database other than PostgreSQL (SQLite in the demo): plain ORM rows.

Each check-and-count is a ``transaction.atomic()`` block in the caller's connection. On SQLite
the demo's IMMEDIATE transactions serialise writers, which is right for one process, all the
demo runs. Counts written inside a caller's transaction are undone if it rolls back, so use
PostgreSQL or Redis for more than one process.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F

from .base import DatabaseLimiterBase


class SQLiteLimiter(DatabaseLimiterBase):
    """The ``LimiterEvent`` and ``DevKeyState`` tables through the ORM."""

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
        with transaction.atomic(using=self.alias):
            self._events().filter(kind=kind, key=key, expires_at__lte=at).delete()
            if limit is not None and self._events().filter(kind=kind, key=key).count() >= limit:
                return False
            self._events().create(kind=kind, key=key, token=token, at=at, expires_at=expires_at)
        return True

    def acquire_slot(
        self,
        key: str,
        fingerprint: str,
        *,
        limit: int,
        at: datetime,
        lease: timedelta,
        count: str | None = None,
    ) -> str | datetime | None:
        from .counting import minute_of

        paused = self.paused_until(fingerprint, at=at)
        if paused is not None:
            return paused
        token = uuid.uuid4().hex
        with transaction.atomic(using=self.alias):
            taken = self._take("slot", key, limit=limit, at=at, expires_at=at + lease, token=token)
            if taken and count is not None:
                self.count_calls(fingerprint, count, n=1, minute=minute_of(at))
        return token if taken else None

    def release_slot(self, key: str, token: str) -> None:
        self._events().filter(kind="slot", key=key, token=token).delete()

    def _update_state(self, fingerprint: str, change: Callable[[Any], None]) -> None:
        with transaction.atomic(using=self.alias):
            state, _ = self._states().get_or_create(fingerprint=fingerprint)
            change(state)
            state.save()

    def pause(self, fingerprint: str, until: datetime) -> None:
        def later(state: Any) -> None:
            if state.paused_until is None or state.paused_until < until:
                state.paused_until = until

        self._update_state(fingerprint, later)

    def record_shortfall(self, fingerprint: str, *, at: datetime) -> int:
        def count(state: Any) -> None:
            state.budget_shortfalls += 1
            state.last_shortfall_at = at

        self._update_state(fingerprint, count)
        return self.shortfalls(fingerprint)

    def count_calls(self, fingerprint: str, kind: str, *, n: int, minute: datetime) -> None:
        with transaction.atomic(using=self.alias):
            bucket = self._counts().filter(fingerprint=fingerprint, minute=minute, kind=kind)
            if not bucket.update(count=F("count") + n):
                self._counts().create(fingerprint=fingerprint, minute=minute, kind=kind, count=n)

    def take_upkeep(
        self, fingerprint: str, kind: str, *, n: int, minute: datetime, limit: int, ceiling: int
    ) -> bool:
        with transaction.atomic(using=self.alias):
            upkeep, total = self._hour_used(fingerprint, minute=minute)
            if upkeep + n > limit or total + n > ceiling:
                return False
            self.count_calls(fingerprint, kind, n=n, minute=minute)
        return True

    def reset(self) -> None:
        """Forget every count and pause (tests and operators)."""
        self._events().all().delete()
        self._states().all().delete()
        self._counts().all().delete()
