"""The "Connect your BILL account" page: a template and a little JavaScript over the REST API.

Mount it with ``path("connect/bill/", include("bill_integration.urls_pages"))``. The page only
renders the form; every action (link, refresh, disconnect) is a ``fetch()`` to the REST API,
which resolves the tenant and checks access itself, and the page polls the status document
(``GET /connection/``) to stay current.

Choosing a tenant: the page sends ``X-Tenant-ID: <id>`` with each call when it was opened as
``/connect/bill/?tenant=<id>`` (the header the example project's ``TENANT_RESOLVER`` reads). A
person never types that: when the API finds no tenant, the page shows the template
``bill_integration/_choose_organization.html``, which a project overrides with its own way of
choosing an organization (the example project lists the user's organizations as links).

Every word the script shows comes from :data:`PAGE_LABELS` (translated here, handed to the
script as JSON), so the script needs no translation catalog.
"""

from __future__ import annotations

import re
from typing import Any

from django.contrib.auth.mixins import LoginRequiredMixin
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.generic import TemplateView

from . import validators
from .auth_methods import METHODS, AuthMethod, api_fields, rules
from .conf import bill_settings
from .services.organizations import LISTABLE_METHODS

#: What a tenant id in ``?tenant=`` may look like (integers, UUIDs, slugs).
TENANT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

#: How often the page asks for the status again, and how often it redraws relative times.
POLL_SECONDS = 20
TICK_SECONDS = 5

#: BILL's page on getting API access (developer key, organization ID, sandbox sign-up).
BILL_HELP_URL = "https://developer.bill.com/docs/sign-up-process"

#: How an environment is named to a person; others fall back to their title-cased name.
ENVIRONMENT_LABELS = {
    "sandbox": _("BILL sandbox (test)"),
    "production": _("BILL production"),
    "emulator": _("Local BILL emulator"),
}

#: Under each field: what it is and where in BILL a customer finds it (https://developer.bill.com/docs/token-based-sign-in, https://developer.bill.com/docs/spend-expense-api).
FIELD_HELP = {
    "environment": _(
        "Sandbox (test) credentials only work on BILL sandbox, production credentials only "
        "on BILL production."
    ),
    "username": _("The email address you sign in to BILL with."),
    "password": _("Your BILL password. It is stored encrypted and never shown again."),
    "organization_id": _(
        "In BILL: Settings → Sync & Integrations → Manage Developer Keys. It starts with 008."
    ),
    "dev_key": _(
        "In BILL: Settings → Sync & Integrations → Manage Developer Keys (an administrator can "
        "generate one there). Sandbox and production keys differ."
    ),
    "api_token": _(
        "Only for BILL Spend & Expense: in Spend & Expense, Settings → API tokens → Generate "
        "new token. Leave it empty if you do not use Spend & Expense."
    ),
}

FIELD_HELP.update(
    {
        "token_name": _(
            "The name you gave the token in BILL: Settings → Sync & Integrations → Tokens."
        ),
        "sync_token": _(
            "The token BILL generated there (Settings → Sync & Integrations → Tokens → New). "
            "Stored encrypted, never shown again."
        ),
        "console_token": _(
            "Your Accountant Console API token, from BILL's Accountant Console. Stored "
            "encrypted, never shown again."
        ),
        "client_id": _("The client ID of the developer app your organization created in BILL."),
        "client_secret": _(
            "The client secret BILL showed when the developer app was created. Stored "
            "encrypted, never shown again."
        ),
    }
)

#: "How do you sign in to BILL?": one line per method, and where its credentials are in BILL.
METHOD_HELP = {
    AuthMethod.USER_PASSWORD: _(
        "Your own BILL email and password, with your organization's developer key (Settings → "
        "Sync & Integrations → Manage Developer Keys). Can pay bills."
    ),
    AuthMethod.SYNC_TOKEN: _(
        "A token for data sync, made in BILL under Settings → Sync & Integrations → Tokens. "
        "Cannot pay bills; no 2-step verification."
    ),
    AuthMethod.CONSOLE_TOKEN: _(
        "For accounting firms: your Accountant Console email and API token, signing in to a "
        "client organization."
    ),
    AuthMethod.SPEND_TOKEN: _(
        "Only BILL Spend & Expense: an API token from Spend & Expense, Settings → API tokens. "
        "Cannot pay bills."
    ),
    AuthMethod.OAUTH_CLIENT: _(
        "A developer app's client ID and secret (OAuth client credentials), created in BILL by "
        "your administrator."
    ),
}


def method_fields(method: str) -> dict[str, list[str]]:
    """The page's fields of ``method``: every one it shows, and the required ones."""
    entry = rules(method)
    return {"fields": sorted(api_fields(method)), "required": sorted(entry.fields)}


#: Words the page's JavaScript shows (translated here, so the script needs no catalog).
PAGE_LABELS = {
    # Status badges.
    "active": _("Connected"),
    "degraded": _("Connected · BILL not answering"),
    "rate_limited": _("Connected · waiting for BILL"),
    "needs_relink": _("Needs your attention"),
    "disabled": _("Disabled"),
    "not_linked": _("Not connected"),
    # What happened after an action.
    "connecting": _("Signing in to BILL…"),
    "linked_ok": _("Connected. BILL accepted the details."),
    "refreshing": _("Getting a new BILL session…"),
    "refreshed": _("New BILL session obtained."),
    "disconnect_confirm": _("Disconnect this BILL account? The stored credentials are deleted."),
    "disconnected": _("Disconnected. The stored credentials were deleted."),
    "network": _("The server could not be reached. Check your internet connection and try again."),
    # The error summary.
    "fix_fields": _("Some details need fixing"),
    "bill_refused": _("BILL did not accept these details"),
    "problem": _("Something went wrong"),
    "check_fields": _("Check these fields:"),
    # The facts of a linked connection.
    "session_age": _("obtained %(age)s"),
    "no_session": _("No session yet; the app signs in when one is needed."),
    "no_usable_session": _("None until the details are entered again"),
    "attempt_failed": _("%(age)s (failed)"),
    "required_username": _("Enter the email address you sign in to BILL with."),
    "required_password": _("Enter your BILL password."),
    "required_organization_id": _("Enter your BILL organization ID (it starts with 008)."),
    "required_dev_key": _("Enter your BILL developer key."),
    "required_token_name": _("Enter the sync token's name."),
    "required_sync_token": _("Enter the sync token."),
    "required_console_token": _("Enter your Accountant Console API token."),
    "required_api_token": _("Enter your Spend & Expense API token."),
    "required_client_id": _("Enter the developer app's client ID."),
    "required_client_secret": _("Enter the developer app's client secret."),
    # The Spend & Expense token: optional beside AP/AR, the only field of the S&E-only method.
    "spend_optional": _("Spend & Expense (optional)"),
    "spend_only": _("Spend & Expense"),
    "spend_optional_help": FIELD_HELP["api_token"],
    "spend_only_help": _(
        "In BILL Spend & Expense: Settings → API tokens → Generate new token. It is stored "
        "encrypted and never shown again."
    ),
    # Picking the organization.
    "finding_organizations": _("Asking BILL which organizations you may open…"),
    "choose_organization": _("Choose your organization below, then connect."),
    "no_organizations": _("BILL lists no organization for these details; type the ID."),
    "never": _("not yet"),
    "environment_version": _("%(environment)s · API %(version)s"),
    "token_stored": _("API token stored"),
    "no_token": _("No API token"),
    "token_reenter": _("Enter it again to keep Spend & Expense connected"),
    "status_changed": _("The connection's status changed: %(status)s."),
    "checked": _("Status checked %(age)s. This page checks again every %(seconds)s seconds."),
    "just_now": _("just now"),
    "done": _("completed"),
    "current": _("current step"),
    # The last problem, worded for something that happened in the background.
    "error_unreachable": _(
        "BILL was unreachable at %(time)s. The app retries on its own; nothing for you to do."
    ),
    "error_rate_limited": _(
        "BILL asked the app to slow down at %(time)s (a limit of the developer key). The app "
        "waits and retries on its own."
    ),
    "error_login_budget": _(
        "At %(time)s this developer key had used its BILL sign-ins for the hour. The app "
        "retries on its own; nothing is wrong with your account."
    ),
    "error_credentials": _(
        "BILL stopped accepting the stored details at %(time)s; they may have been changed in "
        "BILL. Enter them again to reconnect."
    ),
    "error_api_token": _(
        "BILL Spend & Expense stopped accepting the API token at %(time)s. Enter a new token, "
        "or leave it empty."
    ),
    "error_mfa": _(
        "At %(time)s BILL asked for multi-factor authentication for this account. Ask your BILL "
        "administrator, then enter the details again."
    ),
    "error_session_ended": _(
        "BILL ended the session at %(time)s. The app signs in again on its own."
    ),
    "error_unexpected": _(
        "BILL gave an answer the app did not understand at %(time)s. The app retries on its "
        "own; if this keeps happening, contact support."
    ),
    "error_unreadable": _(
        "The stored details can no longer be read (the server's encryption key changed). "
        "Enter them again to reconnect."
    ),
    "error_disabled": _("An operator disabled this connection. Contact support to enable it."),
    "unknown_time": _("an unknown time"),
}


def environment_label(name: str) -> str:
    """How environment ``name`` is shown to a person: a known label or the title-cased name."""
    known = ENVIRONMENT_LABELS.get(name)
    if known is not None:
        return str(known)
    return re.sub(r"[_\-\s]+", " ", name).strip().title() or name


@method_decorator(ensure_csrf_cookie, name="dispatch")
class ConnectPageView(LoginRequiredMixin, TemplateView):
    """The linking page for a signed-in user (the API decides what they may see or do)."""

    template_name = "bill_integration/connect.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        tenant = self.request.GET.get("tenant", "")
        environments = [
            (name, environment_label(name)) for name in bill_settings.environment_names()
        ]
        context["page_config"] = {
            "connectionUrl": reverse("bill_integration:connection"),
            "refreshUrl": reverse("bill_integration:connection-refresh"),
            "organizationsUrl": reverse("bill_integration:connection-organizations"),
            "methods": {str(method): method_fields(method) for method in METHODS},
            "methodLabels": {value: str(label) for value, label in AuthMethod.choices},
            "listable": [str(method) for method in LISTABLE_METHODS],
            # Environments whose developer key the SaaS supplies: the page does not ask for one.
            "hostKeys": [
                name
                for name in bill_settings.environment_names()
                if bill_settings.host_developer_key(name)
            ],
            # Only ever sent back as a header; the API checks membership.
            "tenant": tenant if TENANT_ID.fullmatch(tenant) else "",
            "language": get_language() or "en",
            "pollSeconds": POLL_SECONDS,
            "tickSeconds": TICK_SECONDS,
            "environments": dict(environments),
            "labels": {key: str(text) for key, text in PAGE_LABELS.items()},
        }
        context["environments"] = environments
        context["default_environment"] = bill_settings.DEFAULT_ENVIRONMENT
        context["help"] = FIELD_HELP
        context["methods"] = [
            (value, label, METHOD_HELP[AuthMethod(value)]) for value, label in AuthMethod.choices
        ]
        context["host_key"] = bill_settings.host_developer_key(None) is not None
        context["bill_help_url"] = BILL_HELP_URL
        context["max_lengths"] = validators.MAX_LENGTHS
        return context
