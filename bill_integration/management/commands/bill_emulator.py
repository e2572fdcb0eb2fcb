"""``manage.py bill_emulator``: run the BILL emulator in the foreground.

Prints where it listens and the (fake) accounts it loaded: the demo shows these credentials
so a person can link an account. Accounts come from ``--accounts FILE`` (see
``bill_integration/emulator/accounts.example.json``) and can be added later with
``POST /_emulator/accounts``.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from bill_integration.emulator import EmulatorServer, load_accounts_file


class Command(BaseCommand):
    help = "Run the local BILL emulator (v3 under /connect, v2 under /api/v2, control under /_emulator)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--port", type=int, default=8111, help="Port to listen on (default 8111)."
        )
        parser.add_argument(
            "--host", default="127.0.0.1", help="Address to bind (default 127.0.0.1)."
        )
        parser.add_argument("--accounts", metavar="FILE", help="JSON file of accounts to load.")
        parser.add_argument("--log-requests", action="store_true", help="Log every request.")

    def handle(self, *args: Any, **options: Any) -> None:
        server = EmulatorServer(options["host"], options["port"], verbose=options["log_requests"])
        if options["accounts"]:
            try:
                accounts = server.state.load_accounts(load_accounts_file(options["accounts"]))
            except FileNotFoundError:
                raise CommandError(f"Accounts file {options['accounts']} does not exist.") from None
            except (ValueError, TypeError) as exc:
                raise CommandError(
                    f"Accounts file {options['accounts']} is not valid: {exc}"
                ) from None
        else:
            accounts = []
        try:
            server.bind()
        except OSError as exc:
            raise CommandError(
                f"Cannot listen on {options['host']}:{options['port']}: {exc.strerror}. "
                "Is another emulator running? Pick another --port."
            ) from None
        self.stdout.write(f"BILL emulator listening on {server.url}")
        self.stdout.write(f"  v3 base: {server.v3_base}    v2 base: {server.v2_base}")
        self.stdout.write(f"  control: {server.url}/_emulator/")
        if not accounts:
            self.stdout.write("  no accounts loaded; add some with POST /_emulator/accounts")
        for account in accounts:
            self.stdout.write(
                f"  account: username={account.username} password={account.password} "
                f"organization_id={account.organization_id} dev_key={account.dev_key}"
                + (f" api_token={account.api_token}" if account.api_token else "")
            )
        self.stdout.flush()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            self.stdout.write("BILL emulator stopped.")
