"""Helpers and fixtures for the MFA tests: signal capture, codes from the emulator, payments."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from bill_integration import signals

MFA_SIGNALS = {
    "connection_mfa_trusted": signals.connection_mfa_trusted,
    "connection_mfa_stepped_up": signals.connection_mfa_stepped_up,
    "connection_mfa_expiring": signals.connection_mfa_expiring,
    "connection_mfa_expired": signals.connection_mfa_expired,
    "connection_mfa_forgotten": signals.connection_mfa_forgotten,
    "connection_mfa_needed": signals.connection_mfa_needed,
    "connection_needs_relink": signals.connection_needs_relink,
}


class Sent(Counter):
    """Signal names sent, with the keyword arguments of each send in ``calls``."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, dict[str, Any]]] = []


@pytest.fixture
def mfa_sent():
    sent = Sent()
    handlers = {}
    for name, signal in MFA_SIGNALS.items():

        def handler(sender, _name=name, **kwargs):
            sent[_name] += 1
            sent.calls.append((_name, kwargs))

        handlers[name] = handler
        signal.connect(handler, weak=False)
    yield sent
    for name, signal in MFA_SIGNALS.items():
        signal.disconnect(handlers[name])


def code_for(emulator: Any, account: Any) -> str:
    """The 6 digits BILL (the emulator) just texted to the account's phone."""
    return emulator.state.mfa_code(account.username)["code"]


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


def pay(tenant: Any, api_version: str = "v3") -> Any:
    """A payment through the tenant's session (MFA-protected at BILL)."""
    from bill_integration.services import get_session

    session = get_session(tenant)
    if api_version == "v2":
        return session.request("POST", "/PayBills.json", data={"billPays": [{"billId": "00n01X"}]})
    return session.request("POST", "/v3/payments", json={"billId": "00n01ABC", "amount": 12.5})
