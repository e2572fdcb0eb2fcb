"""``manage.py bill_status``: BILL connections by status, and each developer key's limits.

Shows how many connections are active, degraded, rate limited, waiting for a relink or
disabled; the connections that need attention (with their last error code and next attempt);
the connections whose trust for payments (BILL's 30-day MFA trust) is expiring or expired;
and, per developer key (by fingerprint, never the key), the logins spent of the hourly budget,
a BDC_1144 pause, and how many due logins the budget could not cover. ``--json`` prints the
same for machines. Nothing here decrypts a secret.

``--budget`` prints, per developer key, its last 24 hours against BILL's limits instead: the
figures and the calls per hour by kind of ``services/budget.py``, the same function (and so the
same numbers) as the admin's budget page. ``--key <first characters>`` limits it to one key.
"""

from __future__ import annotations

import json
from typing import IO, Any, cast

from django.core.management.base import BaseCommand, CommandParser
from django.db.models import Count
from rich.console import Console
from rich.table import Table

from ... import limits
from ...models import BillConnection, ConnectionStatus
from ...services import budget
from ...services.trust import expiring_or_expired

ATTENTION = (
    ConnectionStatus.DEGRADED,
    ConnectionStatus.RATE_LIMITED,
    ConnectionStatus.NEEDS_RELINK,
)


def gather() -> dict[str, Any]:
    """The facts ``bill_status`` prints (no secret among them)."""
    connections = BillConnection.objects.without_secrets()
    by_status = {status: 0 for status in ConnectionStatus.values}
    for row in connections.values("status").annotate(n=Count("id")):
        by_status[row["status"]] = row["n"]
    keys = []
    for row in connections.values("dev_key_fingerprint").annotate(n=Count("id")).order_by("-n"):
        fingerprint = row["dev_key_fingerprint"]
        state = limits.status(fingerprint)
        keys.append(
            {
                "dev_key": fingerprint[:12],
                "connections": row["n"],
                "logins_last_hour": state.logins_used,
                "login_budget": state.budget,
                "paused_until": state.paused_until.isoformat() if state.paused_until else None,
                "budget_shortfalls": state.budget_shortfalls,
            }
        )
    attention = [
        {
            "connection_id": c.pk,
            "tenant_id": str(c.tenant_id),
            "organization_id": c.organization_id,
            "status": c.status,
            "last_error_code": c.last_error_code,
            "next_attempt_at": c.next_attempt_at.isoformat() if c.next_attempt_at else None,
        }
        for c in connections.filter(status__in=ATTENTION).order_by("status", "pk")[:50]
    ]
    return {
        "by_status": by_status,
        "dev_keys": keys,
        "attention": attention,
        "mfa_trust": expiring_or_expired(),
    }


class Command(BaseCommand):
    help = "Show BILL connections by status and the login budget used per developer key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print JSON instead of tables.")
        parser.add_argument(
            "--budget",
            action="store_true",
            help="Each developer key's last 24 hours: calls per hour by kind against BILL's "
            "limits, warm and lapsed tenants, logins paid by callers, predicted headroom.",
        )
        parser.add_argument(
            "--key", default="", help="With --budget: only the key whose fingerprint starts so."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["budget"]:
            self.print_budget(options["key"], as_json=options["json"])
            return
        facts = gather()
        if options["json"]:
            self.stdout.write(json.dumps(facts, indent=2))
            return
        console = Console(file=cast(IO[str], self.stdout), width=120, color_system=None)
        statuses = Table(title="BILL connections by status")
        statuses.add_column("status")
        statuses.add_column("connections", justify="right")
        for status, count in facts["by_status"].items():
            statuses.add_row(status, str(count))
        console.print(statuses)
        keys = Table(title="Developer keys (fingerprint)")
        for column in (
            "dev key",
            "connections",
            "logins (last hour)",
            "paused until",
            "shortfalls",
        ):
            keys.add_column(column)
        for key in facts["dev_keys"]:
            keys.add_row(
                key["dev_key"],
                str(key["connections"]),
                f"{key['logins_last_hour']} / {key['login_budget']}",
                key["paused_until"] or "-",
                str(key["budget_shortfalls"]),
            )
        console.print(keys)
        if facts["attention"]:
            attention = Table(title="Needing attention")
            for column in (
                "connection",
                "tenant",
                "organization",
                "status",
                "error",
                "next attempt",
            ):
                attention.add_column(column)
            for row in facts["attention"]:
                attention.add_row(
                    str(row["connection_id"]),
                    row["tenant_id"],
                    row["organization_id"],
                    row["status"],
                    row["last_error_code"] or "-",
                    row["next_attempt_at"] or "-",
                )
            console.print(attention)
        if facts["mfa_trust"]:
            trust = Table(title="Trust for payments (BILL's MFA) expiring or expired")
            for column in ("connection", "tenant", "organization", "trust", "expires at"):
                trust.add_column(column)
            for row in facts["mfa_trust"]:
                trust.add_row(
                    str(row["connection_id"]),
                    row["tenant_id"],
                    row["organization_id"],
                    row["trust"],
                    row["expires_at"],
                )
            console.print(trust)

    def print_budget(self, key: str, *, as_json: bool) -> None:
        keys = budget.developer_keys()
        if key:
            keys = [fingerprint for fingerprint in keys if fingerprint.startswith(key)]
        reports = [budget.key_budget(fingerprint) for fingerprint in keys]
        if as_json:
            self.stdout.write(json.dumps([budget_facts(report) for report in reports], indent=2))
            return
        console = Console(file=cast(IO[str], self.stdout), width=160, color_system=None)
        if not reports:
            console.print("No developer key: nothing linked, no call counted in 24 hours.")
        for report in reports:
            figures = Table(title=f"Developer key {report.label}: the last 24 hours")
            figures.add_column("figure")
            figures.add_column("value", justify="right")
            for what, value in budget.summary_rows(report):
                figures.add_row(what, value)
            console.print(figures)
            header, rows = budget.hour_table(report)
            hours = Table(title=f"Developer key {report.label}: calls per clock hour by kind")
            for index, name in enumerate(header):
                hours.add_column(name, justify="left" if index == 0 else "right")
            for row in rows:
                hours.add_row(*row)
            console.print(hours)


def budget_facts(report: budget.KeyBudget) -> dict[str, Any]:
    """One key's budget report for ``--json`` (the same strings the tables show)."""
    header, rows = budget.hour_table(report)
    return {
        "dev_key": report.label,
        "figures": dict(budget.summary_rows(report)),
        "hours": [dict(zip(header, row, strict=True)) for row in rows],
    }
