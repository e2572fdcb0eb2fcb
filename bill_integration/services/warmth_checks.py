"""System check for the warmth settings (registered by ``bill_integration.checks``).

``WARMTH`` picks the policy of :mod:`bill_integration.services.warmth`; ``ALWAYS_WARM`` lists
tenant ids pinned warm. A typo in either would silently change what the sweep spends of the
developer key's hourly call budget, so both are checked at startup.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error

from ..conf import SETTINGS_NAME
from .warmth import POLICIES

E015_WARMTH = "bill_integration.E015"

WARMTH_HINT = (
    'Set WARMTH to "predicted" (keep warm the tenants likely to call BILL soon) or "always" '
    "(keep every tenant warm), and ALWAYS_WARM to a list of tenant ids (e.g. [12, 40])."
)


def check_warmth(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """E015: ``WARMTH`` is a known policy and ``ALWAYS_WARM`` a list of tenant ids."""
    user = getattr(settings, SETTINGS_NAME, {}) or {}
    if not isinstance(user, dict):
        return []  # E007 already says so
    errors = []
    policy = user.get("WARMTH", POLICIES[0])
    if policy not in POLICIES:
        errors.append(
            Error(
                f"{SETTINGS_NAME}['WARMTH'] must be one of {', '.join(map(repr, POLICIES))}, "
                f"not {policy!r}.",
                hint=WARMTH_HINT,
                id=E015_WARMTH,
            )
        )
    pins = user.get("ALWAYS_WARM", ())
    if isinstance(pins, (str, bytes)) or not isinstance(pins, (list, tuple, set, frozenset)):
        errors.append(
            Error(
                f"{SETTINGS_NAME}['ALWAYS_WARM'] must be a list of tenant ids, not "
                f"{type(pins).__name__}.",
                hint=WARMTH_HINT,
                id=E015_WARMTH,
            )
        )
    return errors
