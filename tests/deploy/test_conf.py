"""``bill_integration.conf``: BILL's limits are constants, durations are timedeltas, the clock is
a test hook, and the settings that were removed keep working for one release."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from bill_integration import constants
from bill_integration.client import get_client
from bill_integration.client.base import HttpClient
from bill_integration.conf import (
    DEFAULTS,
    DEPRECATED_SETTINGS,
    bill_settings,
    get_clock,
    keepalive_after_idle,
    now,
    override_clock,
    set_clock,
)

FIXED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def later_clock() -> datetime:
    """A clock importable by dotted path (``tests.deploy.test_conf.later_clock``)."""
    return FIXED + timedelta(hours=5)


# --- BILL's facts are constants, not settings ----------------------------------------------------


def test_bills_limits_are_constants_not_settings():
    for key in ("SESSION_IDLE_TIMEOUT", "MAX_CONCURRENT_PER_ORGANIZATION", "CLOCK"):
        assert key not in DEFAULTS
        assert key in DEPRECATED_SETTINGS
    assert constants.SESSION_IDLE_TIMEOUT == timedelta(minutes=35)
    assert constants.MAX_CONCURRENT_PER_ORGANIZATION == 3
    assert (constants.MAX_LOGINS_PER_HOUR, constants.MAX_CALLS_PER_HOUR) == (200, 20_000)
    assert DEFAULTS["LOGIN_BUDGET_PER_HOUR"] < constants.MAX_LOGINS_PER_HOUR


def test_every_duration_default_is_a_timedelta():
    durations = [
        key
        for key in DEFAULTS
        if key.endswith(
            ("TIMEOUT", "INTERVAL", "WAIT", "LEASE", "MARGIN", "AGE", "EXPIRES", "IDLE")
        )
    ]
    durations += ["BACKOFF_BASE", "BACKOFF_MAX"]
    assert {"CONNECT_TIMEOUT", "READ_TIMEOUT"} <= set(durations)
    for key in durations:
        assert DEFAULTS[key] is None or isinstance(DEFAULTS[key], timedelta), key


# --- removed keys still read right for one release ----------------------------------------------


def test_removed_keys_read_as_bills_constants_when_the_project_does_not_set_them(project):
    project.remove(*DEPRECATED_SETTINGS)
    assert bill_settings.SESSION_IDLE_TIMEOUT == constants.SESSION_IDLE_TIMEOUT
    assert (
        bill_settings.MAX_CONCURRENT_PER_ORGANIZATION == constants.MAX_CONCURRENT_PER_ORGANIZATION
    )
    assert bill_settings.CLOCK is timezone.now


def test_removed_keys_a_project_still_sets_keep_their_value(project):
    project.remove("KEEPALIVE_AFTER_IDLE")
    project(
        SESSION_IDLE_TIMEOUT=timedelta(minutes=30),
        MAX_CONCURRENT_PER_ORGANIZATION=2,
        SESSION_SAFETY_MARGIN=timedelta(minutes=3),
        SWEEP_INTERVAL=timedelta(minutes=1),
    )
    assert bill_settings.SESSION_IDLE_TIMEOUT == timedelta(minutes=30)
    assert bill_settings.MAX_CONCURRENT_PER_ORGANIZATION == 2
    # The derived keep-alive cadence follows the project's (deprecated) idle timeout.
    assert keepalive_after_idle() == timedelta(minutes=25, seconds=30)


def test_unknown_names_still_raise():
    with pytest.raises(AttributeError, match="SESSION_TIMEOUT"):
        bill_settings.SESSION_TIMEOUT  # noqa: B018


# --- HTTP timeouts are timedeltas; numbers are converted for one release -------------------------


def test_timeouts_default_to_timedeltas_with_seconds_accessors(project):
    project.remove("CONNECT_TIMEOUT", "READ_TIMEOUT")
    assert bill_settings.CONNECT_TIMEOUT == timedelta(seconds=5)
    assert bill_settings.READ_TIMEOUT == timedelta(seconds=30)
    assert isinstance(bill_settings.READ_TIMEOUT, timedelta)
    assert bill_settings.connect_timeout_seconds() == 5.0
    assert bill_settings.read_timeout_seconds() == 30.0


@pytest.mark.parametrize("given", [0.25, timedelta(milliseconds=250)], ids=["float", "timedelta"])
def test_a_number_of_seconds_or_a_timedelta_reach_the_http_client_alike(project, given):
    project(CONNECT_TIMEOUT=given, READ_TIMEOUT=given)
    assert bill_settings.READ_TIMEOUT == timedelta(milliseconds=250)
    assert bill_settings.read_timeout_seconds() == 0.25
    # Code written for float settings (float(bill_settings.READ_TIMEOUT)) keeps working.
    assert float(bill_settings.CONNECT_TIMEOUT) == 0.25
    assert HttpClient("https://bill.invalid").timeout == (0.25, 0.25)
    assert get_client("sandbox", "v3").timeout == (0.25, 0.25)


def test_an_integer_number_of_seconds_is_converted(project):
    project(READ_TIMEOUT=12)
    assert bill_settings.READ_TIMEOUT == timedelta(seconds=12)


@pytest.mark.parametrize("given", ["30", timedelta(0), -1.0, None])
def test_a_timeout_that_is_not_a_positive_duration_is_refused(project, given):
    project(READ_TIMEOUT=given)
    with pytest.raises(ImproperlyConfigured, match="READ_TIMEOUT"):
        bill_settings.READ_TIMEOUT  # noqa: B018


# --- the clock is a test hook --------------------------------------------------------------------


def test_now_is_real_time_by_default(project):
    project.remove("CLOCK")
    before = timezone.now()
    assert before <= now() <= timezone.now()
    assert now().tzinfo is not None


def test_override_clock_moves_now_and_puts_it_back():
    with override_clock(lambda: FIXED):
        assert now() == FIXED
        with override_clock(later_clock):
            assert now() == FIXED + timedelta(hours=5)
        assert now() == FIXED
    assert abs(now() - timezone.now()) < timedelta(seconds=5)


def test_override_clock_puts_the_clock_back_when_the_block_raises():
    with pytest.raises(RuntimeError), override_clock(lambda: FIXED):
        raise RuntimeError
    assert now() != FIXED


def test_set_clock_takes_a_dotted_path_for_settings_modules():
    try:
        set_clock("tests.deploy.test_conf.later_clock")
        assert get_clock() is later_clock
        assert now() == FIXED + timedelta(hours=5)
    finally:
        set_clock(None)
    assert now() != FIXED + timedelta(hours=5)


def test_a_deprecated_clock_setting_still_works_and_the_hook_wins(project):
    project(CLOCK="tests.deploy.test_conf.later_clock")
    assert now() == FIXED + timedelta(hours=5)
    assert bill_settings.CLOCK is later_clock
    with override_clock(lambda: FIXED):
        assert now() == FIXED
        assert bill_settings.CLOCK() == FIXED


def test_bill_clock_fixture_moves_the_app_clock(bill_clock):
    start = now()
    bill_clock.advance(3600)
    assert timedelta(minutes=59) < now() - start < timedelta(minutes=61)
