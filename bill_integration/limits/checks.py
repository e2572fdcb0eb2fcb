"""System checks for the limits' settings (registered by ``bill_integration.checks``).

* E013: ``UPKEEP_SHARE`` is a number in (0, 1]; ``LOGIN_RESERVE_FOR_CALLERS`` in [0, 1);
  ``LOGINS_PER_MINUTE`` a positive whole number or ``None``.
* W004 (``check --deploy``): no ``REDIS_URL`` on PostgreSQL. The database limiter works across
  workers, but every BILL call then costs a few database round trips (about 2.8x a bare call
  on the limiter benchmark, Redis 1.8x) and each worker process keeps a few connections of
  its own: Redis is the recommended limiter in production, above all with many workers.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Warning
from django.db import DEFAULT_DB_ALIAS, connections

from ..conf import DEFAULTS, SETTINGS_NAME

E013_LIMIT_SETTINGS = "bill_integration.E013"
W004_DATABASE_LIMITER = "bill_integration.W004"


def _user() -> dict[str, Any]:
    user = getattr(settings, SETTINGS_NAME, {}) or {}
    return user if isinstance(user, dict) else {}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_limit_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """E013: the upkeep share, the callers' login reserve and the login pace are sensible."""
    user, errors = _user(), []
    share = user.get("UPKEEP_SHARE", DEFAULTS["UPKEEP_SHARE"])
    if not _number(share) or not 0 < share <= 1:
        errors.append(
            Error(
                f"{SETTINGS_NAME}['UPKEEP_SHARE'] must be a number above 0 and at most 1 (the "
                f"share of BILL's hourly calls keep-alives may use), not {share!r}.",
                id=E013_LIMIT_SETTINGS,
            )
        )
    reserve = user.get("LOGIN_RESERVE_FOR_CALLERS", DEFAULTS["LOGIN_RESERVE_FOR_CALLERS"])
    if not _number(reserve) or not 0 <= reserve < 1:
        errors.append(
            Error(
                f"{SETTINGS_NAME}['LOGIN_RESERVE_FOR_CALLERS'] must be a number from 0 to below "
                f"1, not {reserve!r}.",
                id=E013_LIMIT_SETTINGS,
            )
        )
    pace = user.get("LOGINS_PER_MINUTE", DEFAULTS["LOGINS_PER_MINUTE"])
    if pace is not None and (not isinstance(pace, int) or isinstance(pace, bool) or pace < 1):
        errors.append(
            Error(
                f"{SETTINGS_NAME}['LOGINS_PER_MINUTE'] must be a whole number of at least 1, or "
                f"None (background logins unpaced), not {pace!r}.",
                id=E013_LIMIT_SETTINGS,
            )
        )
    return errors


def check_database_limiter(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """W004: on PostgreSQL without ``REDIS_URL``, recommend Redis for production."""
    if _user().get("REDIS_URL") or connections[DEFAULT_DB_ALIAS].vendor != "postgresql":
        return []
    return [
        Warning(
            f"{SETTINGS_NAME}['REDIS_URL'] is not set: BILL's limits are kept in PostgreSQL.",
            hint="That works across workers, but each BILL call then makes a few database round "
            "trips (about 2.8x a bare call against 1.8x with Redis, docs/benchmarks.md) and "
            "every worker process keeps up to 4 limiter connections besides its own: with many "
            "workers or threads, set REDIS_URL (Redis is the recommended limiter).",
            id=W004_DATABASE_LIMITER,
        )
    ]
