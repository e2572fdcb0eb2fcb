"""The OpenAPI document, and schemathesis against it: zero 5xx, zero schema violations.

Schemathesis loads ``/api/schema/`` from the WSGI app and calls every operation in-process as a
signed-in tenant owner (HTTP Basic, so CSRF does not turn every write into a 403), with the
BILL emulator answering the logins that valid-looking input causes. Bounded by
``max_examples`` so the whole module runs in well under two minutes.
"""

from __future__ import annotations

import base64

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi import checks as openapi_checks

from tests.linking_support import credentials

APP = get_wsgi_application()
schema = schemathesis.openapi.from_wsgi("/api/schema/", APP)

CHECKS = [
    schemathesis.checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.negative_data_rejection,
]


@pytest.fixture
def in_process_wsgi():
    """Calling the WSGI app directly: keep Django from closing the test's DB connection.

    (Django's own test client does the same around each request.)
    """
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def owner_basic_auth(
    in_process_wsgi, db, tenant, django_user_model, bill_settings, bill_environment, bill_account
):
    """An owner of a linked tenant, as an Authorization header; link throttles out of the way."""
    from bill_integration import services
    from project.tenants.models import Membership

    emulator = bill_settings["ENVIRONMENTS"]["emulator"]
    bill_settings(
        ENVIRONMENTS={name: emulator for name in bill_settings["ENVIRONMENTS"]},
        LINK_THROTTLE_RATES={"tenant": "100000/hour", "user": "100000/hour"},
    )
    user = django_user_model.objects.create_user(username="schema-owner", password="pw-schema")
    Membership.objects.create(user=user, tenant=tenant, role="owner")
    services.link(tenant, **credentials(bill_account))
    token = base64.b64encode(b"schema-owner:pw-schema").decode()
    return {"Authorization": f"Basic {token}"}


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
@pytest.mark.django_db
def test_api_conforms_to_its_schema(case, owner_basic_auth):
    response = case.call(headers=owner_basic_auth)
    case.validate_response(response, checks=CHECKS, headers=owner_basic_auth)


def test_schema_documents_every_endpoint_and_error(client):
    document = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    paths = document["paths"]
    assert set(paths["/api/bill/connection/"]) >= {"get", "put", "delete"}
    assert "post" in paths["/api/bill/connection/refresh/"]
    put = paths["/api/bill/connection/"]["put"]
    assert {"200", "201", "400", "403", "404", "409", "415", "429", "502", "503"} <= set(
        put["responses"]
    )
    schemas = document["components"]["schemas"]
    code_ref = schemas["BillError"]["properties"]["code"]["allOf"][0]["$ref"]
    codes = schemas[code_ref.rsplit("/", 1)[-1]]["enum"]
    for code in (
        "invalid_credentials",
        "invalid_dev_key",
        "bill_unavailable",
        "rate_limited",
        "conflict",
        "validation_error",
        "throttled",
        "not_found",
        "permission_denied",
    ):
        assert code in codes
    link = schemas["Link"]["properties"]
    for secret in ("password", "dev_key", "api_token"):
        assert link[secret]["writeOnly"] is True
    status = schemas["ConnectionStatus"]["properties"]
    for secret in ("password", "dev_key", "api_token", "session_id"):
        assert secret not in status


def test_swagger_ui_is_served(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    assert b"swagger" in response.content.lower()
