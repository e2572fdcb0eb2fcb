"""Benchmark 8, upkeep per sign-in method: the calls BILL gets to keep one connection usable.

``CONNECTIONS`` connections per sign-in method are linked through ``services.link`` (real HTTP
to an in-process emulator; one developer key per method), then left idle for 24 emulator hours
while ``refresh_due()`` (the beat task's body, each due connection handled by
``refresh_connection``, the ``refresh_session`` task's body) runs every ``SWEEP_INTERVAL`` of
emulated time. No caller uses them, so every call BILL sees is upkeep: logins, keep-alives
(``GET /v3/login/session``), OAuth token requests, Spend & Expense token checks. The emulator
counts them per organization; the figure is upkeep calls per connection-hour.

Baseline: the ``user_password`` method, in the same run (BILL's 35-minute idle timeout, kept
alive on the derived cadence). Targets: ``sync_token`` (48 idle hours) and ``oauth_client``
(a token renewed before ``expires_in``) below it. A Spend & Expense-only connection has no
session: it is measured too (the sweep should cost it nothing).

Where it comes out bad, measured too (a second 24 hours, same harness): a sync token kept alive
on the user-password cadence (its own lifetime ignored: what the app did before sign-in methods
had their own rules), and OAuth with 10-minute tokens (BILL says only "short-lived"; with tokens
that short, OAuth costs more than a password session).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from . import common

CONNECTIONS = 20
HOURS = 24
#: Emulator account kind per method.
KINDS = {
    "user_password": "user",
    "sync_token": "sync_token",
    "console_token": "console",
    "spend_token": "spend",
    "oauth_client": "oauth",
}
#: The counters that are calls to BILL (``calls`` counts every v3/v2 call, logins included).
UPKEEP = ("calls", "oauth_tokens", "spend")
SHORT_TOKEN_SECONDS = 600


def _credentials(method: str, account: Any) -> dict[str, Any]:
    login = {"organization_id": account.organization_id, "dev_key": account.dev_key}
    return {
        "user_password": {"username": account.username, "password": account.password, **login},
        "sync_token": {"username": account.username, "password": account.password, **login},
        "console_token": {
            "username": account.username,
            "console_token": account.console_token,
            **login,
        },
        "spend_token": {"api_token": account.api_token},
        "oauth_client": {
            "oauth_client_id": account.client_id,
            "oauth_client_secret": account.client_secret,
        },
    }[method]


def _link_group(state: Any, label: str, method: str, count: int) -> dict[str, Any]:
    from bill_integration import services
    from bill_integration.emulator import ids
    from project.tenants.models import Tenant

    dev_key = ids.dev_key()
    orgs, tenants = [], []
    for n in range(count):
        extra = {} if method == "spend_token" else {"api_token": ""}
        account = state.add_account(kind=KINDS[method], dev_key=dev_key, **extra)
        tenant = Tenant.objects.create(name=f"{label} {n}", slug=f"methods-{label}-{n}")
        services.link(
            tenant, auth_method=method, environment="emulator", **_credentials(method, account)
        )
        orgs.append(account.organization_id)
        tenants.append(tenant.pk)
    return {"label": label, "method": method, "orgs": orgs, "tenants": tenants}


def _counted(state: Any, orgs: list[str]) -> Counter[str]:
    total: Counter[str] = Counter()
    for org in orgs:
        total.update(state.counters(organization_id=org))
    return total


def _live_through(state: Any, groups: list[dict[str, Any]], hours: int) -> None:
    """``hours`` of emulated time with a sweep every SWEEP_INTERVAL; counts per group."""
    from bill_integration.conf import bill_settings
    from bill_integration.services import refresh_connection, refresh_due

    before = {g["label"]: _counted(state, g["orgs"]) for g in groups}
    start = state.now()
    step = bill_settings.SWEEP_INTERVAL
    ticks = int(timedelta(hours=hours) / step)
    for tick in range(1, ticks + 1):
        common.set_sim_time(state, start + tick * step)
        due: list[int] = []
        refresh_due(dispatch=due.append)
        for connection_id in due:
            refresh_connection(connection_id)
    for group in groups:
        counts = _counted(state, group["orgs"]) - before[group["label"]]
        group["counts"] = counts
        group["upkeep"] = sum(counts[name] for name in UPKEEP)
        group["per_hour"] = group["upkeep"] / (len(group["orgs"]) * hours)


def _statuses(groups: list[dict[str, Any]]) -> None:
    from bill_integration.models import BillConnection

    for group in groups:
        rows = BillConnection.objects.without_secrets().filter(tenant_id__in=group["tenants"])
        group["statuses"] = Counter(rows.values_list("status", flat=True))


def _unlink_all() -> None:
    from bill_integration import services
    from bill_integration.models import BillConnection

    for tenant_id in list(BillConnection.objects.values_list("tenant_id", flat=True)):
        services.unlink(tenant_id)


def run(*, connections: int = CONNECTIONS, hours: int = HOURS, quiet: bool = False) -> dict:
    from bill_integration import auth_methods
    from bill_integration.emulator import EmulatorServer

    server = EmulatorServer(port=0).start()
    state = server.state
    common.set_clock(state.now)
    common.configure(server.url)
    common.reset_app_state()
    try:
        with common.stopwatch() as elapsed:
            groups = [_link_group(state, m, m, connections) for m in KINDS]
            if not quiet:
                print(f"  linked {len(groups) * connections} connections", flush=True)
            _live_through(state, groups, hours)
            _statuses(groups)
            _unlink_all()

            # Where it comes out bad: a sync token on the user-password cadence, and OAuth
            # with 10-minute tokens. Emulated time goes back to the wall clock first: a row's
            # created_at is wall-clock time, and warmth reads a never-used connection's age
            # from it (24 emulated hours ahead, a new link would look a day old and lapse).
            common.set_sim_time(state, datetime.now(UTC))
            common.reset_app_state()
            methods = auth_methods.METHODS
            saved = methods["sync_token"]
            methods["sync_token"] = dataclasses.replace(saved, keepalive_after=None)
            state.set_limits(oauth_token_seconds=SHORT_TOKEN_SECONDS)
            try:
                bad = [
                    _link_group(
                        state, "sync_token, user-password cadence", "sync_token", connections
                    ),
                    _link_group(
                        state, "oauth_client, 10-minute tokens", "oauth_client", connections
                    ),
                ]
                _live_through(state, bad, hours)
                _statuses(bad)
                _unlink_all()
            finally:
                methods["sync_token"] = saved
    finally:
        server.stop()
    return {
        "connections": connections,
        "hours": hours,
        "groups": groups,
        "bad": bad,
        "seconds": elapsed["seconds"],
    }


def _row(group: dict[str, Any], baseline: float) -> list[Any]:
    c = group["counts"]
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(group["statuses"].items()))
    return [
        f"`{group['label']}`" if " " not in group["label"] else group["label"],
        c["logins"],
        c["session_info"],
        c["oauth_tokens"],
        c["spend"],
        group["upkeep"],
        f"**{group['per_hour']:.3f}**",
        f"{group['per_hour'] / baseline:.2f} ×" if baseline else "-",
        statuses,
    ]


def report(outcome: dict[str, Any], command: str, facts: dict[str, str], seconds: float) -> str:
    from bill_integration.conf import bill_settings, keepalive_after_idle

    by = {g["label"]: g for g in outcome["groups"]}
    baseline = by["user_password"]["per_hour"]
    rows = [_row(g, baseline) for g in outcome["groups"]]
    rows += [_row(g, baseline) for g in outcome["bad"]]
    header = [
        "sign-in method",
        "logins",
        "keep-alives",
        "OAuth tokens",
        "S&E token checks",
        "upkeep calls",
        "per connection-hour",
        "× user_password",
        "status at the end",
    ]
    targets = []
    for method in ("sync_token", "oauth_client"):
        value = by[method]["per_hour"]
        targets.append(
            [
                f"{method} upkeep calls per connection-hour below user_password's",
                f"{value:.3f} vs {baseline:.3f} ({value / baseline:.2f} ×)",
                common.verdict(value < baseline),
            ]
        )
    return (
        "## 8. Upkeep per sign-in method\n\n"
        + common.facts_block(command, facts, seconds)
        + f"- Scenario: {outcome['connections']} idle connections per sign-in method (one "
        "developer key per method), linked through `services.link` over HTTP to the emulator, "
        f"then {outcome['hours']} emulated hours with `refresh_due()` every "
        f"{common.duration(bill_settings.SWEEP_INTERVAL)} (each due connection through "
        "`refresh_connection`, the task's body, in-process); simulated in "
        f"{outcome['seconds']:.0f} s of wall time. No caller uses the connections: every "
        "call BILL gets is upkeep. Counted by the emulator per organization: "
        "logins and keep-alives (`GET /v3/login/session`) are calls, plus OAuth token requests "
        "and Spend & Expense token checks.\n"
        "- Baseline: `user_password` in the same run (BILL's 35-minute idle timeout, kept alive "
        f"after {common.duration(keepalive_after_idle())} idle). The last two rows are a second "
        "24 hours of the same harness where it comes out bad: a sync token kept alive on the "
        "user-password cadence (its 48-hour lifetime ignored) and OAuth with "
        f"{SHORT_TOKEN_SECONDS // 60}-minute tokens (the emulator's default is 1 hour; BILL "
        'says only "short-lived").\n\n'
        + common.table(header, rows)
        + "\n"
        + common.table(["target", "measured", "result"], targets)
        + "\n"
        "Sync tokens live 48 idle hours, so the sweep keeps them alive after 12 idle hours "
        "instead of every half hour; an OAuth connection has no idle timer, only a token it "
        "renews 5 minutes before `expires_in` ends (one call an hour with hour-long tokens). "
        "Accountant Console sessions follow the user-password rules (35 idle minutes). A "
        "Spend & Expense-only connection has no session and costs no upkeep: the sweep "
        "never calls BILL for it (a revoked token shows on the next caller's request, as "
        "`invalid_api_token`).\n"
    )
