"""Prometheus metrics (``bill_integration.metrics``): the figures, the mounts, the missing extra."""

from __future__ import annotations

import importlib
import sys

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bill_integration import limits
from bill_integration import metrics as metrics_module
from bill_integration.metrics import BillCollector, metrics_view, register

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_limits():
    limits.reset()
    yield
    limits.reset()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def scrape() -> dict:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BillCollector())
    return samples(generate_latest(registry).decode())


def test_connections_per_status_and_sign_in_method(bill_connection):
    from bill_integration.models import BillConnection, ConnectionStatus

    first = bill_connection()
    bill_connection()
    BillConnection.objects.filter(pk=first.pk).update(status=ConnectionStatus.NEEDS_RELINK)
    found = scrape()
    labels = (("auth_method", "user_password"), ("status", "active"))
    assert found[("bill_connections", labels)] == 1
    labels = (("auth_method", "user_password"), ("status", "needs_relink"))
    assert found[("bill_connections", labels)] == 1


def test_calls_by_kind_logins_and_pause_per_developer_key(bill_connection, bill_settings):
    bill_settings(LOGIN_BUDGET_PER_HOUR=40)
    connection = bill_connection()
    key = connection.dev_key_fingerprint
    limits.reset()  # forget the set-up's own login
    limits.count_call(key, limits.KEEP_ALIVE, n=7)
    limits.count_call(key, limits.CALLER, n=30)
    limits.count_call(key, limits.CALLER_LOGIN, n=2)
    limits.take_login(key)
    limits.pause_dev_key(key)
    found = scrape()
    label = (("dev_key", key[:12]),)
    assert found[("bill_calls_last_hour", (("dev_key", key[:12]), ("kind", "keep_alive")))] == 7
    assert found[("bill_calls_last_hour", (("dev_key", key[:12]), ("kind", "caller")))] == 30
    assert found[("bill_calls_last_hour", (("dev_key", key[:12]), ("kind", "caller_login")))] == 2
    assert found[("bill_calls_last_hour", (("dev_key", key[:12]), ("kind", "other")))] == 0
    assert found[("bill_logins_last_hour", label)] == 1
    assert found[("bill_dev_key_paused", label)] == 1
    assert found[("bill_login_budget", ())] == 40
    assert found[("bill_calls_limit", ())] == 20000
    assert found[("bill_upkeep_limit", ())] == limits.upkeep_limit()
    assert found[("bill_scrape_errors", ())] == 0


def test_no_secret_or_whole_fingerprint_in_the_metrics(bill_connection, bill_account):
    connection = bill_connection(account=bill_account, link=True, api_token=bill_account.api_token)
    limits.count_call(connection.dev_key_fingerprint, limits.CALLER)
    text = generate_latest_of_view()
    for private in (
        bill_account.password,
        bill_account.dev_key,
        bill_account.api_token,
        connection.dev_key_fingerprint,
        connection.organization_id,
        bill_account.username,
    ):
        assert private not in text


def generate_latest_of_view() -> str:
    from django.test import RequestFactory

    response = metrics_view(RequestFactory().get("/metrics/bill/"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return response.content.decode()


def test_an_unreachable_limiter_keeps_the_connection_counts(bill_connection, bill_settings):
    bill_connection()
    bill_settings(REDIS_URL="redis://127.0.0.1:1/0")
    found = scrape()
    assert found[("bill_scrape_errors", ())] == 1
    assert found[("bill_connections", (("auth_method", "user_password"), ("status", "active")))]


def test_register_adds_the_collector_to_a_registry(bill_connection):
    bill_connection()
    registry = CollectorRegistry(auto_describe=False)
    collector = register(registry)
    assert isinstance(collector, BillCollector)
    assert "bill_connections" in generate_latest(registry).decode()


def test_only_the_most_shared_keys_get_series(bill_connection, monkeypatch):
    monkeypatch.setattr(metrics_module, "MAX_KEYS", 1)
    shared = bill_connection()
    bill_connection(dev_key=shared.dev_key)
    bill_connection()
    keys = {labels for name, labels in scrape() if name == "bill_logins_last_hour"}
    assert keys == {(("dev_key", shared.dev_key_fingerprint[:12]),)}


def test_without_the_extra_import_works_and_use_names_the_extra(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    reloaded = importlib.reload(metrics_module)  # importing needs nothing of it
    try:
        for use in (reloaded.BillCollector, reloaded.register, lambda: reloaded.metrics_view(None)):
            with pytest.raises(
                ImproperlyConfigured, match=r"django-bill-integration\[prometheus\]"
            ):
                use()
    finally:
        monkeypatch.undo()
        importlib.reload(metrics_module)
