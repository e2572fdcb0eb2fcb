"""Fixtures of the deploy tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def project(bill_settings):
    """The project's ``BILL_INTEGRATION`` for this test: ``project(KEY=value)``,
    ``project.remove(KEY)``. The plugin's ``bill_settings``, named apart from the app's
    ``conf.bill_settings``, which these modules read."""
    return bill_settings
