"""``manage.py bill_refresh_sessions``: the Celery sweep, run in this process (for cron users).

Without Celery, run it from cron every few minutes (as often as ``SWEEP_INTERVAL``)::

    */5 * * * * cd /srv/app && python manage.py bill_refresh_sessions --no-progress

By default it handles the connections that are due (sessions about to go idle, or gone, or
older than ``MAX_SESSION_AGE``), most recently used first. ``--all`` also keeps alive every
healthy session that is not due yet; ``--tenant ID`` handles one tenant; ``--dry-run`` only
lists what would be done and makes no call to BILL. It is safe to run while Celery workers
run the same sweep: each connection is re-checked under its row lock.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ...conf import get_tenant_model
from ...services import due_connection_ids, plan_due, refresh_due, refresh_now


class Command(BaseCommand):
    help = (
        "Keep BILL sessions alive now: keep-alive or log in again for every due connection "
        "(or --all, or one --tenant). The same work as the Celery task "
        "bill_integration.refresh_due_sessions."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        which = parser.add_mutually_exclusive_group()
        which.add_argument(
            "--all",
            action="store_true",
            help="Every connection that is not needs_relink/disabled, due or not.",
        )
        which.add_argument("--tenant", metavar="ID", help="Only this tenant (its primary key).")
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="List what would be done; make no call to BILL and change nothing.",
        )
        parser.add_argument(
            "--no-progress", action="store_true", help="Do not draw the progress bar."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = self._tenant(options["tenant"]) if options["tenant"] else None
        if options["dry_run"]:
            self._dry_run(tenant=tenant, include_all=options["all"])
            return
        total = len(self._candidates(tenant=tenant, include_all=options["all"]))
        outcomes: Counter[str] = Counter()
        progress = Progress(
            TextColumn("Refreshing BILL sessions"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            disable=options["no_progress"] or total == 0,
        )
        with progress:
            bar = progress.add_task("refresh", total=total)

            def advance(connection_id: int, outcome: str) -> None:
                outcomes[outcome] += 1
                progress.advance(bar)

            if tenant is not None or options["all"]:
                refresh_now(tenant=tenant, progress=advance)
            else:
                refresh_due(progress=advance)
        summary = ", ".join(f"{name}: {count}" for name, count in sorted(outcomes.items()))
        self.stdout.write(f"{sum(outcomes.values())} connection(s) handled. {summary}".rstrip(". "))
        failed = sum(count for name, count in outcomes.items() if name.startswith("failed:"))
        if failed:
            self.stderr.write(
                f"{failed} refresh(es) failed; `python manage.py bill_status` shows why. "
                "They are retried with backoff by the next sweep."
            )

    def _tenant(self, value: str) -> Any:
        model = get_tenant_model()
        try:
            return model._default_manager.get(pk=value)
        except (model.DoesNotExist, ValueError) as exc:
            raise CommandError(f"No tenant with id {value!r}.") from exc

    def _candidates(self, *, tenant: Any, include_all: bool) -> list[int]:
        if tenant is None and not include_all:
            return due_connection_ids()
        return [plan.connection_id for plan in plan_due(tenant=tenant, include_all=include_all)]

    def _dry_run(self, *, tenant: Any, include_all: bool) -> None:
        plans = plan_due(tenant=tenant, include_all=include_all)
        counts: Counter[str] = Counter()
        for plan in plans:
            counts[plan.action] += 1
            self.stdout.write(
                f"connection {plan.connection_id} tenant {plan.tenant_id} "
                f"org {plan.organization_id} status {plan.status}: would {plan.action}"
            )
        summary = ", ".join(f"{name}: {count}" for name, count in sorted(counts.items()))
        self.stdout.write(f"Dry run: {len(plans)} connection(s). {summary}".rstrip(". "))
