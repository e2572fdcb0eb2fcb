"""The health check a host mounts (``bill_integration.health.health``): 200 or 503, no secret."""

from __future__ import annotations

import json

import pytest
from django.db.utils import OperationalError
from django.test import RequestFactory

from bill_integration import health as health_module
from bill_integration import limits
from bill_integration.health import health

pytestmark = pytest.mark.django_db

URL = "/health/bill/"


@pytest.fixture(autouse=True)
def fresh_limits():
    limits.reset()
    yield
    limits.reset()


def ask(**headers):
    response = health(RequestFactory().get(URL, **headers))
    return response.status_code, json.loads(response.content)


def test_healthy_counts_connections_and_shows_no_secret_or_tenant(bill_connection, bill_account):
    connection = bill_connection(account=bill_account, link=True, api_token=bill_account.api_token)
    bill_connection()
    status, body = ask()
    assert status == 200 and body["status"] == "ok" and body["problems"] == []
    assert body["checks"]["database"]["ok"] and body["checks"]["limiter"]["ok"]
    assert body["connections"]["active"] == 2 and body["connections"]["needs_relink"] == 0
    assert body["developer_keys"] == {
        "total": 2,
        "checked": 2,
        "paused": 0,
        "login_budget_nearly_spent": 0,
        "calls_nearly_spent": 0,
    }
    text = json.dumps(body)
    for private in (
        bill_account.password,
        bill_account.dev_key,
        bill_account.api_token,
        connection.dev_key_fingerprint[:12],
        connection.organization_id,
        bill_account.username,
    ):
        assert private not in text


def test_the_example_project_mounts_it(client, bill_connection):
    bill_connection()
    response = client.get(URL)
    assert response.status_code == 200 and response.json()["status"] == "ok"
    assert "no-cache" in response["Cache-Control"]


def test_a_paused_developer_key_is_unhealthy(bill_connection):
    connection = bill_connection()
    bill_connection()
    limits.pause_dev_key(connection.dev_key_fingerprint)
    status, body = ask()
    assert status == 503 and body["status"] == "failing"
    assert body["developer_keys"]["paused"] == 1
    assert "BDC_1144" in body["problems"][0]


def test_a_login_budget_nearly_spent_is_a_warning(bill_connection, bill_settings):
    bill_settings(LOGIN_BUDGET_PER_HOUR=10)
    connection = bill_connection()
    for _ in range(9):
        limits.take_login(connection.dev_key_fingerprint)
    status, body = ask()
    assert status == 200 and body["status"] == "warning"
    assert body["developer_keys"]["login_budget_nearly_spent"] == 1
    assert "90%" in body["warnings"][0]


def test_an_hour_of_calls_nearly_spent_is_a_warning(bill_connection):
    connection = bill_connection()
    limits.count_call(connection.dev_key_fingerprint, limits.CALLER, n=17_999)
    assert ask()[1]["status"] == "ok"
    limits.count_call(connection.dev_key_fingerprint, limits.KEEP_ALIVE, n=1)
    status, body = ask()
    assert status == 200 and body["status"] == "warning"
    assert body["developer_keys"]["calls_nearly_spent"] == 1
    assert "BILL's calls per hour" in body["warnings"][0]


def test_an_unreachable_limiter_is_unhealthy_and_names_no_url(bill_settings):
    bill_settings(REDIS_URL="redis://:hunter2-secret@127.0.0.1:1/0")
    status, body = ask()
    assert status == 503 and body["checks"]["limiter"]["ok"] is False
    assert body["checks"]["database"]["ok"] is True
    assert "limiter unreachable" in body["problems"]
    assert "hunter2" not in json.dumps(body) and "6379" not in json.dumps(body)


class BrokenConnection:
    """A database connection whose every query fails as an unreachable server's would."""

    def cursor(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, sql):
        raise OperationalError("could not connect to server at db.internal:5432")


def test_an_unreachable_database_is_unhealthy_and_names_no_host(monkeypatch):
    monkeypatch.setattr(health_module, "connections", {"default": BrokenConnection()})
    status, body = ask()
    assert status == 503 and body["status"] == "failing"
    assert body["checks"]["database"] == {"ok": False, "error": "OperationalError"}
    assert "database unreachable" in body["problems"]
    assert "connections" not in body and "db.internal" not in json.dumps(body)


def test_a_token_when_given_is_required():
    request = RequestFactory().get(URL)
    assert health(request, token="s3cret-token").status_code == 401
    request = RequestFactory().get(URL, HTTP_AUTHORIZATION="Bearer wrong")
    assert health(request, token="s3cret-token").status_code == 401
    request = RequestFactory().get(URL, HTTP_AUTHORIZATION="Bearer s3cret-token")
    assert health(request, token="s3cret-token").status_code == 200


def test_only_the_most_shared_keys_are_checked(bill_connection, monkeypatch):
    monkeypatch.setattr(health_module, "KEYS_CHECKED", 1)
    shared = bill_connection()
    bill_connection(dev_key=shared.dev_key)
    lone = bill_connection()
    limits.pause_dev_key(lone.dev_key_fingerprint)
    status, body = ask()
    assert body["developer_keys"] == {
        "total": 2,
        "checked": 1,
        "paused": 0,  # the lone key is past KEYS_CHECKED: the document says so by its counts
        "login_budget_nearly_spent": 0,
        "calls_nearly_spent": 0,
    }
    assert status == 200
