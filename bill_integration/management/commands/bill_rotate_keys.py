"""``manage.py bill_rotate_keys``: re-encrypt every BILL secret with the newest key.

Put the new key first in ``FIELD_ENCRYPTION_KEY`` (keep the old ones after it), restart the
processes, then run this command. Kill it whenever you like and run it again: it continues.
``--check`` exits 1 while any row still needs an old key (or cannot be decrypted at all) and
0 when the old keys can be removed. The work is in :mod:`bill_integration.key_rotation`.
"""

from __future__ import annotations

from typing import Any

from django.core.checks import Tags
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ... import key_rotation as rotation
from ...models import BillConnection


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored BILL secret with the first key of FIELD_ENCRYPTION_KEY "
        "(resumable). With --check, report how many rows still need an old key."
    )

    # The key checks (E001/E002) must pass; URL or template problems elsewhere must not stop
    # an operator from rotating keys.
    requires_system_checks = [Tags.security, Tags.models]  # noqa: RUF012 (Django's own API)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--check",
            action="store_true",
            help="Change nothing; exit 1 while any row still needs an old key or cannot be "
            "decrypted, 0 when the old keys can be retired.",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=100,
            help="Rows read per query (default 100). Each row is still written on its own.",
        )
        parser.add_argument(
            "--database", default=DEFAULT_DB_ALIAS, help="Database alias (default: 'default')."
        )
        parser.add_argument(
            "--no-progress", action="store_true", help="Do not draw the progress bar."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        if options["check"]:
            self._check(options["database"])
        else:
            self._rotate(options)

    def _check(self, using: str) -> None:
        status = rotation.key_status(using=using)
        self.stdout.write(
            f"{status.rows_on_old_key} of {status.total_rows} rows "
            f"({status.fields_on_old_key} secrets) still need an old key."
        )
        if status.undecryptable_ids:
            self.stderr.write(self._undecryptable_text(status.undecryptable_ids))
        if not status.done:
            self.stderr.write(
                "Keep the old keys in FIELD_ENCRYPTION_KEY; run bill_rotate_keys first."
            )
            raise SystemExit(1)
        self.stdout.write(self.style.SUCCESS("Every secret is on the first key: old keys can go."))

    def _rotate(self, options: dict[str, Any]) -> None:
        using = options["database"]
        total = BillConnection.objects.using(using).count()
        progress = Progress(
            TextColumn("Re-encrypting BILL secrets"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            disable=options["no_progress"],
            transient=False,
        )
        with progress:
            task = progress.add_task("rotate", total=total)
            report = rotation.rotate_all(
                batch_size=options["batch_size"],
                using=using,
                on_row=lambda outcome: progress.advance(task),
            )
        self.stdout.write(
            f"Re-encrypted {report.fields_rotated} secrets in {report.rows_rotated} rows; "
            f"{report.rows_current} rows were already on the first key."
        )
        if report.conflict_ids:
            self.stderr.write(
                "These connections kept changing while being rotated; run the command again: "
                + ", ".join(map(str, report.conflict_ids))
            )
        if report.undecryptable_ids:
            self.stderr.write(self._undecryptable_text(report.undecryptable_ids))
        if report.conflict_ids or report.undecryptable_ids:
            raise SystemExit(1)

    @staticmethod
    def _undecryptable_text(ids: list[int]) -> str:
        return (
            f"{len(ids)} connections have a secret that no configured key decrypts (left "
            "unchanged): "
            + ", ".join(map(str, ids[:50]))
            + (" …" if len(ids) > 50 else "")
            + ". Add the key they were encrypted with back to FIELD_ENCRYPTION_KEY, or link "
            "those BILL accounts again."
        )
