"""Words for the customer: what an error code means and what to do about it.

The REST API, the linking page and the admin all show these, so a customer reads the same
advice wherever the error appears. Keyed by the stable ``code`` of
:mod:`bill_integration.exceptions`; never built from input or from BILL's raw text.
"""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

_WRONG_ENVIRONMENT = _(
    "Are these sandbox credentials used against production, or the other way round? "
    "Sandbox and production accounts have different credentials."
)

CUSTOMER_MESSAGES = {
    "invalid_credentials": _(
        "BILL did not accept this user name and password for this organization ID. "
        "Check all three. %(hint)s"
    ),
    "invalid_dev_key": _("BILL did not accept the developer key. Check it. %(hint)s"),
    "invalid_api_token": _(
        "BILL Spend & Expense did not accept the API token. Generate a new one in BILL "
        "Spend & Expense (Settings → API tokens), or leave the field empty."
    ),
    "rate_limited": _(
        "BILL's request limit for this developer key was reached. Wait, then try again%(when)s."
    ),
    "bill_unavailable": _(
        "BILL is not reachable right now. Nothing was changed; try again in a few minutes."
    ),
    "bill_unexpected_response": _(
        "BILL gave an answer the app does not understand. Nothing was changed; if this "
        "persists, contact support."
    ),
    "mfa_required": _(
        "BILL requires multi-factor authentication for this account's session. Ask your BILL "
        "administrator, then link again."
    ),
    "conflict": _(
        "Someone changed this BILL connection at the same time. Reload the page and try again."
    ),
    "not_linked": _("No BILL account is linked yet."),
    "needs_relink": _(
        "BILL refused the stored credentials. Enter them again (they may have changed) to "
        "link the account again."
    ),
    "disabled": _("This BILL connection is disabled by an operator."),
    "session_unavailable": _("No BILL session is available right now; try again shortly."),
    "decryption_failed": _(
        "The stored BILL credentials cannot be read (the encryption key changed). Link the "
        "account again."
    ),
    "session_invalid": _("The BILL session ended; the app logs in again on its own."),
}


def customer_message(code: str, default: str = "", *, retry_after: int | None = None) -> str:
    """The customer-facing sentence for ``code``, or ``default`` if the code has none."""
    template = CUSTOMER_MESSAGES.get(code)
    if template is None:
        return str(default)
    when = ""
    if retry_after:
        minutes = max(1, round(retry_after / 60))
        when = str(_(" in about %(minutes)d minutes")) % {"minutes": minutes}
    return str(template) % {"hint": _WRONG_ENVIRONMENT, "when": when}
