"""The emulator's accounts file has one format: ``--accounts FILE`` and ``POST /_emulator/accounts``.

The shipped example (``bill_integration/emulator/accounts.example.json``) is posted as it is,
over real HTTP, and its accounts can then log in to the emulated BILL.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import bill_integration.emulator
from bill_integration.client import BillClient
from bill_integration.emulator import EmulatorControl, EmulatorServer, load_accounts_file

EXAMPLE = Path(bill_integration.emulator.__file__).parent / "accounts.example.json"


@pytest.fixture
def emulator():
    with EmulatorServer(port=0) as server:
        yield server


def post(url: str, body) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{url}/_emulator/accounts",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_the_shipped_example_file_posts_as_it_is_and_its_account_logs_in(emulator):
    document = json.loads(EXAMPLE.read_text())
    status, answer = post(emulator.url, document)
    assert status == 201, answer
    [account] = document["accounts"]
    assert [a["username"] for a in answer["accounts"]] == [account["username"]]
    login = BillClient(emulator.v3_base, "v3").login(
        username=account["username"],
        password=account["password"],
        organization_id=account["organization_id"],
        dev_key=account["dev_key"],
    )
    assert login.session_id


def test_a_bare_list_and_a_single_account_are_accepted_too(emulator):
    status, answer = post(emulator.url, [{"username": "a@example.com", "password": "pw-a"}])
    assert status == 201 and answer["accounts"][0]["username"] == "a@example.com"
    status, answer = post(emulator.url, {"username": "b@example.com", "password": "pw-b"})
    assert status == 201 and answer["username"] == "b@example.com"  # as before: the account
    assert {a.username for a in emulator.state.accounts()} == {"a@example.com", "b@example.com"}


def test_a_misspelled_field_is_refused_with_the_emulators_explanation(emulator):
    status, answer = post(
        emulator.url, {"accounts": [{"username": "c@example.com", "pasword": "typo"}]}
    )
    assert status == 400 and "pasword" in answer["error"]
    status, answer = post(emulator.url, {"accounts": "not a list"})
    assert status == 400 and '{"accounts": [...]}' in answer["error"]


def test_control_loads_an_accounts_file_in_one_call(emulator):
    accounts = EmulatorControl(emulator.url).load_accounts(load_accounts_file(EXAMPLE))
    assert [a.organization_name for a in accounts] == ["Demo Co (emulated)"]
    assert emulator.state.get_account(accounts[0].username).dev_key == accounts[0].dev_key
