"""Validation of what a customer types into the "Connect your BILL account" form.

Shared by the REST serializer and the admin form, so both reject the same input with the same
words before BILL is ever called. Each limit is generous next to what BILL issues (organization
ids and developer keys are 20 characters, bill-api.md §5) and small next to abuse (a 10 KB
"password" is refused here, not sent to BILL).
"""

from __future__ import annotations

import re
import unicodedata

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.utils.translation import gettext_lazy as _

#: Longest value accepted per field (characters).
MAX_LENGTHS: dict[str, int] = {
    "username": 254,  # an email address (RFC 5321 path limit), as BillConnection stores it
    "password": 256,
    "organization_id": 40,  # BillConnection.organization_id max_length
    "dev_key": 64,
    "api_token": 1024,
}

#: One line of help per field, saying where the customer finds the value.
HELP_TEXTS = {
    "username": _("The email address you use to sign in to BILL."),
    "password": _("Your BILL password. It is stored encrypted and never shown again."),
    "organization_id": _(
        "Your BILL organization ID; it starts with 008. BILL sends it with your developer key."
    ),
    "dev_key": _(
        "The developer key BILL gave you for API access. Sandbox and production keys differ."
    ),
    "api_token": _(
        "Optional. Spend & Expense API token (Settings → API tokens in BILL Spend & Expense)."
    ),
    "environment": _(
        "Sandbox credentials only work against sandbox, production ones only against production."
    ),
    "api_version": _("Which BILL API the app talks to; v3 unless you know you need v2."),
}

organization_id_validator = RegexValidator(
    regex=r"\A008[A-Za-z0-9]{1,37}\Z",
    message=_(
        "A BILL organization ID starts with 008 followed by letters and digits, "
        "like 00801ABCDEFGHIJKa1b2."
    ),
    code="invalid_organization_id",
)

username_validator = RegexValidator(
    regex=r"\A[^@\s]+@[^@\s]+\Z",
    message=_("Enter the email address you use to sign in to BILL."),
    code="invalid_username",
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def no_control_characters(value: str) -> None:
    """Refuse NUL bytes and other control characters (tabs and newlines too): none is typed."""
    if _CONTROL.search(value) or any(unicodedata.category(ch) == "Cs" for ch in value):
        raise ValidationError(
            _("This field contains control characters (such as NUL or a line break); remove them."),
            code="control_characters",
        )
