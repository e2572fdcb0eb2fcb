"""Fixtures of the services tests: each limiter backend in turn."""

from __future__ import annotations

from typing import Any

import pytest

from bill_integration import limits
from tests.session_support import REDIS_URL


@pytest.fixture(params=["database", "redis"])
def limiter_backend(request: Any, bill_settings: Any, bill_app: Any) -> Any:
    """Run the test once with the database limiter and once with Redis."""
    bill_settings(REDIS_URL=REDIS_URL if request.param == "redis" else None)
    limits.get_limiter().reset()
    yield request.param
    limits.get_limiter().reset()
