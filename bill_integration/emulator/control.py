"""Control a running emulator over HTTP (``/_emulator/...``), e.g. from another process.

:class:`EmulatorControl` has the same method names and meaning as the in-process
``server.state`` (:class:`~bill_integration.emulator.state.EmulatorState`), so a test can take
either::

    control = EmulatorControl("http://127.0.0.1:8111")
    account = control.add_account(username="ap@example.com", password="pw")
    control.advance(35 * 60)
    control.set_fault("status", organization_id=account.organization_id, status=503)
    control.counters(organization_id=account.organization_id)["logins"]
    control.mfa_code(account.username)["code"]      # the 6 digits BILL texted

Bad input raises :class:`ValueError` with the emulator's explanation, as the state does.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from typing import Any

from .state import Account


class EmulatorControl:
    """HTTP twin of :class:`~bill_integration.emulator.state.EmulatorState`'s public methods."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"EmulatorControl({self.url!r})"

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: dict[str, Any] | None = None,
    ) -> Any:
        url = f"{self.url}/_emulator{path}"
        clean = {k: v for k, v in (query or {}).items() if v is not None}
        if clean:
            url += "?" + urllib.parse.urlencode(clean)
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            url, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return json.load(answer)
        except urllib.error.HTTPError as exc:
            try:
                message = json.load(exc).get("error", str(exc))
            except ValueError:
                message = str(exc)
            raise ValueError(message) from None

    def add_account(self, **fields: Any) -> Account:
        return Account.from_dict(self._call("POST", "/accounts", fields))

    def load_accounts(self, accounts: list[dict[str, Any]]) -> list[Account]:
        """Add many accounts in one request (the accounts file's format)."""
        answer = self._call("POST", "/accounts", {"accounts": list(accounts)})
        return [Account.from_dict(item) for item in answer["accounts"]]

    def accounts(self) -> list[Account]:
        return [Account.from_dict(a) for a in self._call("GET", "/accounts")["accounts"]]

    def get_account(self, username: str) -> Account:
        for account in self.accounts():
            if account.username.lower() == username.lower():
                return account
        raise ValueError(f"No account with username {username!r}.")

    def change_password(self, username: str, password: str) -> None:
        self._call("POST", "/accounts/password", {"username": username, "password": password})

    def now(self) -> datetime:
        return datetime.fromisoformat(self._call("GET", "/clock")["now"])

    def advance(self, seconds: float) -> datetime:
        return datetime.fromisoformat(self._call("POST", "/clock", {"advance": seconds})["now"])

    def set_offset(self, seconds: float) -> datetime:
        return datetime.fromisoformat(self._call("POST", "/clock", {"offset": seconds})["now"])

    def offset(self) -> float:
        return float(self._call("GET", "/clock")["offset"])

    def set_fault(
        self,
        kind: str,
        *,
        organization_id: str | None = None,
        dev_key: str | None = None,
        count: int | None = None,
        path: str | None = None,
        **params: Any,
    ) -> int:
        body = {
            "kind": kind,
            "organization_id": organization_id,
            "dev_key": dev_key,
            "count": count,
            "path": path,
            **params,
        }
        return int(self._call("POST", "/faults", body)["id"])

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def faults(self) -> list[dict[str, Any]]:
        return self._call("GET", "/faults")["faults"]

    def counters(
        self, organization_id: str | None = None, dev_key: str | None = None
    ) -> dict[str, int]:
        return self._call(
            "GET", "/counters", query={"organization_id": organization_id, "dev_key": dev_key}
        )

    def active_sessions(
        self, organization_id: str | None = None, dev_key: str | None = None
    ) -> int:
        query = {"organization_id": organization_id, "dev_key": dev_key}
        return int(self._call("GET", "/sessions", query=query)["active"])

    def invalidate_sessions(
        self, organization_id: str | None = None, dev_key: str | None = None
    ) -> int:
        body = {"organization_id": organization_id, "dev_key": dev_key}
        return int(self._call("POST", "/sessions/invalidate", body)["invalidated"])

    def set_limits(self, **limits: int) -> dict[str, int]:
        return self._call("POST", "/limits", limits)

    def mfa_code(self, username: str) -> dict[str, Any]:
        return self._call("GET", "/mfa/code", query={"username": username})

    def set_mfa_phones(self, username: str, phones: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self._call("POST", "/mfa/phones", {"username": username, "phones": phones})["phones"]

    def login_records(
        self, organization_id: str | None = None, username: str | None = None
    ) -> list[dict[str, Any]]:
        query = {"organization_id": organization_id, "username": username}
        return self._call("GET", "/logins", query=query)["logins"]

    def reset(self) -> None:
        self._call("POST", "/reset", {})
