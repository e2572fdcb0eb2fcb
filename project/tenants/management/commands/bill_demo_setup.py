"""Prepare the demo: an admin, a tenant it owns, and BILL emulator accounts to link.

One emulator account of each sign-in method (``auth_methods.METHODS``): email and password
(whose credentials also open two more organizations, to try picking one), a sync token, an
Accountant Console token, a Spend & Expense-only token and OAuth client credentials. They all
share the demo's developer key.

Idempotent: the generated passwords and BILL credentials are kept under ``.demo/`` and printed
again on every run, so the README's one command can be re-run at will.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from bill_integration.emulator import ids
from project.tenants.models import Membership, Tenant

DEMO_USERNAME = "admin"
DEMO_BILL_USER = "ap@demo-co.example"


class Command(BaseCommand):
    help = "Create the demo admin, tenant and BILL emulator account (idempotent) and print them."

    def handle(self, *args: Any, **options: Any) -> None:
        state_dir = Path(getattr(settings, "STATE_DIR", settings.BASE_DIR / ".demo"))
        state_dir.mkdir(parents=True, exist_ok=True)
        login = self._load_or_create(
            state_dir / "demo-login.json",
            lambda: {"username": DEMO_USERNAME, "password": secrets.token_urlsafe(9)},
        )
        accounts_file = state_dir / "bill-accounts.json"
        accounts = self._load_or_create(
            accounts_file,
            lambda: {
                "accounts": [
                    {
                        "username": DEMO_BILL_USER,
                        "password": "demo-" + secrets.token_urlsafe(8),
                        "organization_id": ids.organization_id(),
                        "dev_key": ids.dev_key(),
                        "api_token": "demo-spend-" + secrets.token_urlsafe(12),
                        "first_name": "Demo",
                        "last_name": "Payables",
                        # The phone BILL "texts" MFA codes to (read them from the emulator, below).
                        "mfa_phones": [
                            {"number": "+15550100042", "type": "MOBILE", "primary": True}
                        ],
                    }
                ]
            },
        )
        if self._add_other_kinds(accounts):
            accounts_file.write_text(json.dumps(accounts, indent=2))
        account = accounts["accounts"][0]
        by_kind = {item.get("kind", "user"): item for item in accounts["accounts"]}

        user_model = get_user_model()
        user, _ = user_model.objects.get_or_create(
            username=login["username"], defaults={"is_staff": True, "is_superuser": True}
        )
        user.is_staff = user.is_superuser = True
        user.set_password(login["password"])
        user.save()
        tenant, _ = Tenant.objects.get_or_create(slug="demo-co", defaults={"name": "Demo Co"})
        Membership.objects.update_or_create(
            user=user, tenant=tenant, defaults={"role": Membership.Role.OWNER}
        )

        port = getattr(settings, "DEMO_PORT", 8000)
        emulator_port = getattr(settings, "EMULATOR_PORT", 8111)
        self.stdout.write(self.style.SUCCESS("\nbill_integration demo is ready.\n"))
        self.stdout.write(
            f"  Sign in:           http://127.0.0.1:{port}/accounts/login/\n"
            f"                     user {login['username']!r}, password {login['password']!r}\n"
            f"  Link BILL here:    http://127.0.0.1:{port}/connect/bill/\n"
            f"  Django admin:      http://127.0.0.1:{port}/admin/\n"
            f"  API docs:          http://127.0.0.1:{port}/api/docs/\n"
            f"  BILL emulator:     http://127.0.0.1:{emulator_port}/ (environment 'emulator')\n\n"
            "  The demo BILL account (a fake one, served by the emulator) to type into the page:\n"
            f"    User Name        {account['username']}\n"
            f"    Password         {account['password']}\n"
            f"    Organization ID  {account['organization_id']}\n"
            f"    Developer Key    {account['dev_key']}\n"
            f"    API token        {account['api_token']}  (optional, Spend & Expense)\n\n"
            '  Or choose another answer to "How do you sign in to BILL?" (same developer key):\n'
            f"    Sync token          name {by_kind['sync_token']['username']}, token "
            f"{by_kind['sync_token']['password']}, organization "
            f"{by_kind['sync_token']['organization_id']}\n"
            f"    Accountant Console  email {by_kind['console']['username']}, token "
            f"{by_kind['console']['console_token']}, organization "
            f"{by_kind['console']['organization_id']}\n"
            f"    Spend & Expense     API token {by_kind['spend']['api_token']}\n"
            f"    OAuth client        client ID {by_kind['oauth']['client_id']}, secret "
            f"{by_kind['oauth']['client_secret']}\n"
            "  Leave the organization ID empty (email and password): BILL lists three to choose.\n\n"
            '  Paying bills needs BILL\'s MFA trust: on the page, "Trust this app for payments".\n'
            '  The emulator does not send text messages; read the 6-digit code it "texted" here:\n'
            f"    http://127.0.0.1:{emulator_port}/_emulator/mfa/code?username={account['username']}\n"
        )

    @staticmethod
    def _add_other_kinds(accounts: dict[str, Any]) -> bool:
        """Add the accounts of the sign-in methods a demo state made earlier lacks."""
        items = accounts["accounts"]
        main = items[0]
        kinds = {item.get("kind", "user") for item in items}
        added = False
        if not main.get("other_organizations"):
            main["organization_name"] = "Demo Co"
            main["other_organizations"] = [
                {"organizationId": ids.organization_id(), "name": "Demo Co East"},
                {"organizationId": ids.organization_id(), "name": "Demo Co West"},
            ]
            added = True
        common = {"dev_key": main["dev_key"], "api_token": None}
        extra = {
            "sync_token": {
                "username": "demo-sync",
                "password": "demo-" + secrets.token_urlsafe(12),
            },
            "console": {
                "username": "console@demo-co.example",
                "password": "unused-" + secrets.token_urlsafe(8),
                "console_token": "demo-console-" + secrets.token_urlsafe(12),
            },
            "spend": {
                "username": "spend@demo-co.example",
                "password": "unused-" + secrets.token_urlsafe(8),
                "api_token": "demo-spend-only-" + secrets.token_urlsafe(12),
            },
            "oauth": {
                "username": "oauth@demo-co.example",
                "password": "unused-" + secrets.token_urlsafe(8),
                "client_id": "demo-app-" + secrets.token_hex(4),
                "client_secret": "demo-secret-" + secrets.token_urlsafe(12),
            },
        }
        for kind, fields in extra.items():
            if kind not in kinds:
                items.append(
                    {"kind": kind, "organization_id": ids.organization_id(), **common, **fields}
                )
                added = True
        return added

    @staticmethod
    def _load_or_create(path: Path, make) -> dict[str, Any]:  # type: ignore[no-untyped-def]
        if path.exists():
            return json.loads(path.read_text())
        data = make()
        path.write_text(json.dumps(data, indent=2))
        path.chmod(0o600)
        return data
