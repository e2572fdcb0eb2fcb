"""``{% bill_mfa_config as config %}``: what the "Trust this app for payments" step needs.

Used by ``bill_integration/_mfa_step.html`` (included in the Connect page): the REST URLs of
the MFA steps, the tenant named in ``?tenant=`` (sent back as ``X-Tenant-ID``; the API checks
access), and the words ``mfa.js`` shows, translated here so the script needs no catalog.
"""

from __future__ import annotations

import re
from typing import Any

from django import template
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

register = template.Library()

#: What a tenant id in ``?tenant=`` may look like (integers, UUIDs, slugs).
TENANT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

LABELS = {
    "start": _("Get a code from BILL"),
    "renew": _("Renew trust now"),
    "primary": _("Primary phone"),
    "backup": _("Backup phone"),
    "primary_suffix": _("(primary)"),
    "backup_suffix": _("(backup)"),
    "no_phone": _(
        "Your BILL user has no phone for 2-step verification. Sign in to BILL, add a mobile "
        "phone in your profile's security settings, then come back."
    ),
    "sending": _("Asking BILL to text you a code…"),
    "sent": _("BILL texted a 6-digit code to %(phone)s. Enter it below."),
    "sent_phone": _("your phone"),
    "checking": _("Checking the code with BILL…"),
    "trusted_ok": _("Done: this app may pay bills through BILL."),
    "forget_confirm": _("Forget the trust? Payments will need a new code from BILL."),
    "forgotten": _("Trust forgotten. Payments need a new code from BILL."),
    "code_format": _("Enter the 6 digits of the code BILL texted you."),
    "network": _("The server could not be reached. Check your connection and try again."),
}


@register.simple_tag(takes_context=True)
def bill_mfa_config(context: template.Context) -> dict[str, Any]:
    """URLs, tenant and labels for ``mfa.js`` (render with ``|json_script``)."""
    request = context.get("request")
    tenant = request.GET.get("tenant", "") if request is not None else ""
    return {
        "connectionUrl": reverse("bill_integration:connection"),
        "phonesUrl": reverse("bill_integration:connection-mfa-phones"),
        "challengeUrl": reverse("bill_integration:connection-mfa-challenge"),
        "validateUrl": reverse("bill_integration:connection-mfa-validate"),
        "forgetUrl": reverse("bill_integration:connection-mfa-forget"),
        "tenant": tenant if TENANT_ID.fullmatch(tenant) else "",
        "labels": {key: str(text) for key, text in LABELS.items()},
    }
