"""The shape of the code, checked: every call to BILL goes through ``services/gateway.py``.

Outside the client itself, the limits package and the gateway, no module of the app may
import the BILL client (only ``client.errors``, the table of BILL's error codes, which makes
no call), nor take a login or a concurrency slot from the limits. A module that did would
call BILL without the login budget, the organization's slots or the BDC_1144 pause.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "bill_integration"
#: Where BILL calls and the limits' own machinery live.
ALLOWED = ("client/", "limits", "services/gateway.py", "emulator/")
#: What any module may import from the client: pure tables, types and checks, no calls.
PURE_CLIENT_MODULES = {
    "bill_integration.client.errors",
    "bill_integration.client.types",
    "bill_integration.client.checks",
}


def _modules() -> list[Path]:
    return [
        path
        for path in PACKAGE.rglob("*.py")
        if not str(path.relative_to(PACKAGE)).startswith(ALLOWED) and "migrations" not in path.parts
    ]


def _dotted(path: Path) -> list[str]:
    return ["bill_integration", *path.relative_to(PACKAGE).with_suffix("").parts]


def _imports(path: Path) -> set[str]:
    """Every module (and ``module.name``) ``path`` imports, relative imports resolved."""
    found: set[str] = set()
    package = _dotted(path)[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _client_imports(path: Path) -> set[str]:
    return {
        name
        for name in _imports(path)
        if (name == "bill_integration.client" or name.startswith("bill_integration.client."))
        and not any(name == pure or name.startswith(pure + ".") for pure in PURE_CLIENT_MODULES)
    }


def test_the_check_sees_the_app_modules():
    names = {str(path.relative_to(PACKAGE)) for path in _modules()}
    assert {"services/session.py", "services/linking.py", "admin.py", "tasks.py"} <= names
    # ... and would see a client import in them (the gateway's own imports, for instance).
    assert _client_imports(PACKAGE / "services" / "gateway.py")


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_but_the_gateway_imports_the_client(path):
    assert not _client_imports(path), f"{path.name} must call BILL through services.gateway"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_but_the_gateway_takes_logins_or_slots(path):
    calls = {
        node.attr
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr in {"take_login", "request_slot"}
    }
    assert not calls, f"{path.name} uses limits.{calls}: go through services.gateway"


def test_no_module_is_a_room_doing_seven_jobs():
    """Small modules (about 450 lines at most), migrations and the emulator's server aside."""
    long = {
        str(path.relative_to(PACKAGE)): len(path.read_text().splitlines())
        for path in PACKAGE.rglob("*.py")
        if "migrations" not in path.parts
        and str(path.relative_to(PACKAGE)) not in {"emulator/server.py", "emulator/state.py"}
    }
    assert {name: lines for name, lines in long.items() if lines > 460} == {}
