"""Shared fixtures: tenants, users with roles, and the BILL emulator (the app's own plugin).

Also the ``slow`` mark's rules: browser and worker tests are slow, and so is every test that
starts a process (a test that does without the mark fails, naming the command), so that
``pytest -m "not slow"`` is the quick run and starts no process.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

pytest_plugins = [
    "bill_integration.emulator.pytest_plugin",
    "tests.linking_support",  # fixtures of the linking tests (API, admin, page)
    "tests.session_support",  # fixtures of the session-keeping tests (linked, limiters)
    "tests.mfa_support",  # fixtures of the MFA trust tests (signal capture)
]


@pytest.fixture
def bill_tenant_factory():
    """Tenants of ``bill_connection()`` are the example project's, named "Tenant <n>"."""
    from tests.session_support import make_tenant

    return make_tenant


@pytest.fixture
def tenant(db):
    from project.tenants.models import Tenant

    return Tenant.objects.create(name="Acme", slug="acme")


@pytest.fixture
def make_user(db, django_user_model):
    """make_user(tenant, role) -> a user with that role in the tenant (or none)."""
    from project.tenants.models import Membership

    counter = {"n": 0}

    def make(tenant=None, role: str | None = "owner", **extra):
        counter["n"] += 1
        user = django_user_model.objects.create_user(
            username=f"user{counter['n']}", password="pw-for-tests", **extra
        )
        if tenant is not None and role is not None:
            Membership.objects.create(user=user, tenant=tenant, role=role)
        return user

    return make


#: Marks that make a test slow by themselves.
SLOW_MARKS = ("browser", "worker")


def pytest_collection_modifyitems(config, items):
    from django.conf import settings

    on_postgresql = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    for item in items:
        if any(item.get_closest_marker(name) for name in SLOW_MARKS):
            item.add_marker(pytest.mark.slow)
        needs = item.get_closest_marker("postgresql")
        if needs is not None and not on_postgresql:
            reason = needs.kwargs.get("reason", "PostgreSQL-only behaviour")
            item.add_marker(pytest.mark.skip(reason=f"needs PostgreSQL: {reason}"))


@pytest.fixture(autouse=True)
def _forget_recorded_uses():
    """Each test starts with no remembered last use (the services keep one per process).

    It is keyed by connection id, and SQLite hands a rolled-back test's ids out again.
    """
    from bill_integration.services import session

    session._last_recorded.clear()
    yield
    session._last_recorded.clear()


@contextmanager
def _processes_recorded(item) -> Iterator[list[str]]:
    """Note every process started while a test not marked ``slow`` sets up or runs."""
    started: list[str] = []
    if item.get_closest_marker("slow"):
        yield started
        return
    original = subprocess.Popen.__init__

    def noting(self, args, *more, **options):
        started.append(args if isinstance(args, str) else " ".join(map(str, args)))
        original(self, args, *more, **options)

    subprocess.Popen.__init__ = noting
    try:
        yield started
    finally:
        subprocess.Popen.__init__ = original


def _refuse(item, started: list[str]) -> None:
    if started:
        pytest.fail(
            f"{item.nodeid} starts a process ({started[0][:120]}): mark it slow "
            "(@pytest.mark.slow), so that pytest -m 'not slow' stays quick.",
            pytrace=False,
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    with _processes_recorded(item) as started:
        result = yield
    _refuse(item, started)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    with _processes_recorded(item) as started:
        result = yield
    _refuse(item, started)
    return result
