"""The "Connect your BILL account" page: a template and a little JavaScript over the REST API.

Mount it with ``path("connect/bill/", include("bill_integration.urls_pages"))``. The page only
renders the form; every action (link, refresh, disconnect) is a ``fetch()`` to the REST API,
which resolves the tenant and checks access itself. A user who belongs to several tenants opens
``/connect/bill/?tenant=<id>``; the page then sends ``X-Tenant-ID: <id>`` with each call (the
header the example project's ``TENANT_RESOLVER`` reads).
"""

from __future__ import annotations

import re
from typing import Any

from django.contrib.auth.mixins import LoginRequiredMixin
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.translation import gettext_lazy as _
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.generic import TemplateView

from . import validators
from .conf import bill_settings

#: What a tenant id in ``?tenant=`` may look like (integers, UUIDs, slugs).
TENANT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


#: Words the page's JavaScript shows (translated here, so the script needs no catalog).
PAGE_LABELS = {
    "active": _("Linked"),
    "degraded": _("Linked · BILL not answering, retrying"),
    "rate_limited": _("Linked · waiting for BILL's rate limit"),
    "needs_relink": _("Needs relink"),
    "disabled": _("Disabled"),
    "not_linked": _("Not linked"),
    "connecting": _("Signing in to BILL…"),
    "linked_ok": _("Linked. BILL accepted the credentials."),
    "refreshing": _("Getting a new BILL session…"),
    "refreshed": _("New BILL session obtained."),
    "disconnect_confirm": _("Disconnect this BILL account? The stored credentials are deleted."),
    "disconnected": _("Disconnected. The credentials were deleted."),
    "no_access": _(
        "There is no BILL connection you can manage here. If you belong to several "
        "organizations, open this page with ?tenant=<organization id>."
    ),
    "network": _("The server could not be reached. Check your connection and try again."),
    "session_age": _("obtained %(age)s ago"),
    "no_session": _("no session"),
    "none": _("None"),
    "token_stored": _("API token stored"),
    "no_token": _("no API token"),
    "token_reenter": _("Enter it again to keep Spend & Expense linked"),
    "seconds": _("%(n)s seconds"),
    "minutes": _("%(n)s minutes"),
    "hours": _("%(n)s hours"),
    "days": _("%(n)s days"),
}


@method_decorator(ensure_csrf_cookie, name="dispatch")
class ConnectPageView(LoginRequiredMixin, TemplateView):
    """The linking page for a signed-in user (the API decides what they may see or do)."""

    template_name = "bill_integration/connect.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        tenant = self.request.GET.get("tenant", "")
        context["page_config"] = {
            "connectionUrl": reverse("bill_integration:connection"),
            "refreshUrl": reverse("bill_integration:connection-refresh"),
            # Only ever sent back as a header; the API checks membership.
            "tenant": tenant if TENANT_ID.fullmatch(tenant) else "",
            "labels": {key: str(text) for key, text in PAGE_LABELS.items()},
        }
        context["environments"] = bill_settings.environment_names()
        context["default_environment"] = bill_settings.DEFAULT_ENVIRONMENT
        context["help"] = validators.HELP_TEXTS
        context["max_lengths"] = validators.MAX_LENGTHS
        return context
