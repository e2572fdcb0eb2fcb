"""Prepare the demo: an admin, a tenant it owns, and a BILL emulator account to link.

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
        login = self._load_or_create(state_dir / "demo-login.json", lambda: {
            "username": DEMO_USERNAME, "password": secrets.token_urlsafe(9)})
        accounts_file = state_dir / "bill-accounts.json"
        accounts = self._load_or_create(accounts_file, lambda: {"accounts": [{
            "username": DEMO_BILL_USER,
            "password": "demo-" + secrets.token_urlsafe(8),
            "organization_id": ids.organization_id(),
            "dev_key": ids.dev_key(),
            "api_token": "demo-spend-" + secrets.token_urlsafe(12),
            "first_name": "Demo", "last_name": "Payables",
            # The phone BILL "texts" MFA codes to (read them from the emulator, below).
            "mfa_phones": [{"number": "+15550100042", "type": "MOBILE", "primary": True}],
        }]})
        account = accounts["accounts"][0]

        user_model = get_user_model()
        user, _ = user_model.objects.get_or_create(
            username=login["username"], defaults={"is_staff": True, "is_superuser": True})
        user.is_staff = user.is_superuser = True
        user.set_password(login["password"])
        user.save()
        tenant, _ = Tenant.objects.get_or_create(slug="demo-co", defaults={"name": "Demo Co"})
        Membership.objects.update_or_create(
            user=user, tenant=tenant, defaults={"role": Membership.Role.OWNER})

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
            "  Paying bills needs BILL's MFA trust: on the page, \"Trust this app for payments\".\n"
            "  The emulator does not send text messages; read the 6-digit code it \"texted\" here:\n"
            f"    http://127.0.0.1:{emulator_port}/_emulator/mfa/code?username={account['username']}\n"
        )

    @staticmethod
    def _load_or_create(path: Path, make) -> dict[str, Any]:  # type: ignore[no-untyped-def]
        if path.exists():
            return json.loads(path.read_text())
        data = make()
        path.write_text(json.dumps(data, indent=2))
        path.chmod(0o600)
        return data
