"""The OpenAPI schema shows each sign-in method's request shape (oneOf by auth_method)."""

from __future__ import annotations

import pytest

from bill_integration.auth_methods import METHODS, rules

pytestmark = pytest.mark.django_db


def test_link_request_is_one_shape_per_method(client):
    document = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    schemas = document["components"]["schemas"]
    put = document["paths"]["/api/bill/connection/"]["put"]
    body = put["requestBody"]["content"]["application/json"]["schema"]
    request = schemas[body["$ref"].rsplit("/", 1)[-1]]
    assert request["discriminator"]["propertyName"] == "auth_method"
    mapping = request["discriminator"]["mapping"]
    assert set(mapping) == {str(method) for method in METHODS}
    assert mapping["user_password"].endswith("/Link")
    for method, ref in mapping.items():
        shape = schemas[ref.rsplit("/", 1)[-1]]
        entry = rules(method)
        credentials = set(shape["properties"]) - {"auth_method", "environment", "api_version"}
        assert credentials == set(entry.fields) | set(entry.optional), method
        assert set(shape["required"]) == {"auth_method", *entry.fields}, method
        choice = shape["properties"]["auth_method"]
        if "allOf" in choice:  # drf-spectacular names each enum as a component
            choice = schemas[choice["allOf"][0]["$ref"].rsplit("/", 1)[-1]]
        assert choice["enum"] == [method]
        for name in entry.secrets:
            api_name = {column: name for name, column in {**entry.fields, **entry.optional}.items()}
            if name in api_name:
                assert shape["properties"][api_name[name]]["writeOnly"] is True


def test_organizations_endpoint_is_documented(client):
    document = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    post = document["paths"]["/api/bill/connection/organizations/"]["post"]
    assert {"200", "400", "403", "404", "429"} <= set(post["responses"])
