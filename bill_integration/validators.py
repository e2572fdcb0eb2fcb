"""Validation of what a customer types into the "Connect your BILL account" form.

Shared by the REST serializer and the admin form, so both reject the same input with the same
words before BILL is ever called. Each limit is generous next to what BILL issues (organization
ids and developer keys are 20 characters: https://developer.bill.com/docs/sign-up-process) and small next to abuse (a 10 KB
"password" is refused here, not sent to BILL).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.utils.deconstruct import deconstructible
from django.utils.translation import gettext_lazy as _

#: Longest value accepted per field (characters).
MAX_LENGTHS: dict[str, int] = {
    "username": 254,  # an email address (RFC 5321 path limit), as BillConnection stores it
    "password": 256,
    "organization_id": 40,  # BillConnection.organization_id max_length
    "dev_key": 64,
    "api_token": 1024,
    "token_name": 254,  # a sync token's name, BILL's username for it
    "sync_token": 256,
    "console_token": 1024,
    "client_id": 200,  # BillConnection.oauth_client_id max_length
    "client_secret": 1024,
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
    "token_name": _(
        "The name you gave the sync token in BILL (Settings → Sync & Integrations → Tokens)."
    ),
    "sync_token": _("The AP & AR sync token BILL generated. Stored encrypted, never shown again."),
    "console_token": _(
        "Your Accountant Console API token; BILL signs you in with it instead of a password."
    ),
    "client_id": _("The client ID of the developer app you created in BILL."),
    "client_secret": _(
        "The client secret of that developer app. Stored encrypted and never shown again."
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
    """Refuse NUL bytes and other control characters (tabs and newlines too): none is typed.

    Field-blind; :func:`credential_validators` checks a credential field fully (also invisible
    and, for header fields, non-ASCII characters) and names the field in its messages.
    """
    if _CONTROL.search(value) or any(unicodedata.category(ch) == "Cs" for ch in value):
        raise ValidationError(
            _("This field contains control characters (such as NUL or a line break); remove them."),
            code="control_characters",
        )


# --- the characters of each credential ----------------------------------------------------------

#: How each credential field is named inside a sentence ("The %(field)s contains …").
FIELD_NAMES = {
    "username": _("user name"),
    "password": _("password"),
    "organization_id": _("organization ID"),
    "dev_key": _("developer key"),
    "api_token": _("API token"),
    "token_name": _("sync token name"),
    "sync_token": _("sync token"),
    "console_token": _("console API token"),
    "client_id": _("client ID"),
    "client_secret": _("client secret"),
}

#: Fields BILL receives in an HTTP header (v3 ``devKey``, Spend & Expense ``apiToken``). A
#: header must be Latin-1 (``requests`` raises ``UnicodeEncodeError`` otherwise, after the
#: login has already happened), and BILL issues these values as plain ASCII letters, digits and
#: punctuation (https://developer.bill.com/docs/sign-up-process), so anything else, a space included, is a copying accident.
HEADER_FIELDS = frozenset(
    {"dev_key", "api_token", "sync_token", "console_token", "client_id", "client_secret"}
)

#: Characters that print as nothing and are not Unicode "format" (Cf) characters: the combining
#: grapheme joiner and the Hangul fillers, which are used to hide text.
_OTHER_INVISIBLE = frozenset("\u034f\u115f\u1160\u3164\uffa0")
_ZERO_WIDTH_JOINER = "\u200d"
_EMOJI_VARIATION_SELECTOR = "\ufe0f"


def _is_invisible(value: str, index: int) -> bool:
    """Whether ``value[index]`` prints as nothing: format characters (zero-width spaces, BOM,
    bidi controls, soft hyphen), line/paragraph separators and the fillers above.

    The zero-width joiner inside an emoji sequence (between two symbols, as in a family emoji)
    is part of what a person typed on a phone, so it is allowed there.
    """
    char = value[index]
    if char == _ZERO_WIDTH_JOINER and 0 < index < len(value) - 1:
        before, after = value[index - 1], value[index + 1]
        joins_emoji = (
            before == _EMOJI_VARIATION_SELECTOR or unicodedata.category(before) in ("So", "Sk")
        ) and unicodedata.category(after) == "So"
        if joins_emoji:
            return False
    return unicodedata.category(char) in ("Cf", "Zl", "Zp") or char in _OTHER_INVISIBLE


@deconstructible
class CredentialCharactersValidator:
    """Refuse characters a credential field cannot hold, naming the field and the character.

    For every field: control characters (NUL, tabs, line breaks), lone UTF-16 surrogates (JSON
    can carry them, PostgreSQL cannot store them) and invisible characters (zero-width space,
    byte order mark, bidi controls), which are always copying accidents. For the fields BILL
    receives in a header (:data:`HEADER_FIELDS`): anything but visible ASCII characters as well.
    User name and password may hold other Unicode (they travel in the body as UTF-8).

    A message names the character by its code point (and Unicode name), never the value.
    """

    def __init__(self, field: str) -> None:
        if field not in FIELD_NAMES:
            raise ValueError(f"not a credential field: {field!r}")
        self.field = field

    def __call__(self, value: str) -> None:
        for index, char in enumerate(value):
            error = self._error(value, index, char)
            if error is not None:
                raise error

    def _error(self, value: str, index: int, char: str) -> ValidationError | None:
        params = {
            "field": FIELD_NAMES[self.field],
            "code_point": f"U+{ord(char):04X}",
            "char_name": unicodedata.name(char, ""),
        }
        category = unicodedata.category(char)
        if category == "Cc":
            message = _(
                "The %(field)s contains a control character (%(code_point)s), such as NUL, a tab "
                "or a line break; remove it."
            )
            code = "control_characters"
        elif category == "Cs":
            message = _(
                "The %(field)s contains an invalid character (%(code_point)s, half of a UTF-16 "
                "pair); enter it again."
            )
            code = "invalid_character"
        elif _is_invisible(value, index):
            message = _(
                "The %(field)s contains an invisible character (%(code_point)s); it was probably "
                "copied by accident. Paste or type it again."
            )
            code = "invisible_character"
        elif self.field not in HEADER_FIELDS:
            return None
        elif char.isspace():
            message = _(
                "The %(field)s contains a space (%(code_point)s), and BILL never puts one in it; "
                "it was probably copied by accident. Paste it again."
            )
            code = "space_character"
        elif not ("!" <= char <= "~"):
            message = _(
                "The %(field)s contains the character %(code_point)s %(char_name)s, which BILL "
                "never puts in one: it is made of plain letters, digits and punctuation. It was "
                "probably changed while copying (a quote made curly, for example); paste it again."
            )
            code = "not_ascii"
        else:
            return None
        return ValidationError(message, code=code, params=params)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CredentialCharactersValidator) and other.field == self.field

    def __hash__(self) -> int:
        return hash((type(self), self.field))


def credential_validators(field: str) -> list[Any]:
    """Every check of a credential field's text beyond its length, for the serializer and forms.

    ``field`` is one of :data:`FIELD_NAMES`. The characters are checked first, then the shape
    (user name, organization ID).
    """
    shapes = {"username": [username_validator], "organization_id": [organization_id_validator]}
    return [CredentialCharactersValidator(field), *shapes.get(field, [])]
