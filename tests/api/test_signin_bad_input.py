"""Bad input for every sign-in method: 400 naming the field, nothing stored, no call to BILL.

The cases are generated from ``auth_methods.METHODS``, so a method or a field added there is
covered here without an edit: for each method, every required field left out, every field of
another method sent along, and every one of its own fields with characters it cannot hold.
"""

from __future__ import annotations

import pytest

from bill_integration.auth_methods import METHODS, all_api_fields, api_fields, rules
from bill_integration.models import BillConnection
from bill_integration.validators import HEADER_FIELDS
from tests.api.test_signin_api import KIND, body
from tests.linking_support import CONNECTION_URL

pytestmark = pytest.mark.django_db

#: A value of the wrong kind per field: a space in what BILL sends in a header, a user name that
#: is no email, an organization ID without 008, and an invisible character anywhere else.
WRONG = {
    "username": "not-an-email",
    "organization_id": "12345",
    "token_name": "sync\u200bname",
    "password": "pass\u200bword",
}
#: A value for a field of another method.
FOREIGN = {
    "username": "someone@example.com",
    "password": "hunter2-hunter2",
    "organization_id": "00801ABCDEFGHIJKLMN1",
    "dev_key": "01ABCDEFGHIJKLMNOP12",
    "api_token": "01ABCDEFGHIJ",
    "token_name": "sync-name",
    "sync_token": "SYNCTOKEN123",
    "console_token": "CONSOLETOKEN123",
    "client_id": "app_client",
    "client_secret": "SECRET123",
}


def wrong_value(field: str) -> str:
    if field in WRONG:
        return WRONG[field]
    assert field in HEADER_FIELDS, field
    return "has space"


def cases() -> list[tuple[str, str, str]]:
    """(method, problem, field) for every bad input of every method."""
    found = []
    for method, entry in METHODS.items():
        found += [(method, "missing", field) for field in entry.fields]
        found += [
            (method, "foreign", field) for field in sorted(all_api_fields() - api_fields(method))
        ]
        found += [(method, "wrong", field) for field in sorted(api_fields(method))]
    return found


def test_every_method_and_every_kind_of_problem_has_cases():
    seen = {(method, problem) for method, problem, _field in cases()}
    assert seen == {(m, p) for m in METHODS for p in ("missing", "foreign", "wrong")}


@pytest.mark.parametrize(("method", "problem", "field"), cases())
def test_bad_input_is_refused_naming_the_field_with_nothing_stored_and_no_bill_call(
    method, problem, field, tenant, owner_api, bill_emulator, bill_app
):
    account = bill_emulator.state.add_account(kind=KIND[method])
    data = body(method, account)
    if problem == "missing":
        data.pop(field)
    elif problem == "foreign":
        data[field] = FOREIGN[field]
    else:
        data[field] = wrong_value(field)
    before = sum(bill_emulator.state.counters().values())

    answer = owner_api.put(CONNECTION_URL, data, format="json")

    assert answer.status_code == 400, answer.content
    assert field in answer.json()["fields"], answer.json()
    assert not BillConnection.objects.filter(tenant=tenant).exists()
    assert sum(bill_emulator.state.counters().values()) == before


@pytest.mark.parametrize("method", list(METHODS))
def test_a_good_body_of_each_method_is_accepted(method, tenant, owner_api, bill_emulator, bill_app):
    """The bodies the cases above spoil are themselves valid (so each refusal is the spoiling's)."""
    account = bill_emulator.state.add_account(kind=KIND[method])
    answer = owner_api.put(CONNECTION_URL, body(method, account), format="json")
    assert answer.status_code == 201, answer.content
    assert BillConnection.objects.get(tenant=tenant).auth_method == rules(method).method
