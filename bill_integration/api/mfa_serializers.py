"""Serializers of the MFA steps (``/connection/mfa/...``): strict input, never a secret out.

The code a person types is checked here (six digits; "123 456" and "123-456" are fine) before
BILL is called; the remember-me id BILL answers never leaves the service layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from django.core.validators import RegexValidator
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers
from rest_framework.settings import api_settings

from ..services.mfa import normalise_code
from .serializers import StrictCharField

#: What a challenge id may look like (BILL's are ``!a`` + 43 url-safe characters on v2).
CHALLENGE_ID = RegexValidator(
    r"^[A-Za-z0-9!_\-.~]{1,200}$",
    message=_("Send back the challenge_id the challenge step answered, unchanged."),
)
#: Six digits, optionally split in two by a space or a dash.
CODE = RegexValidator(
    r"^\d{3}[ -]?\d{3}$", message=_("Enter the 6 digits of the code BILL texted you.")
)


class StrictBooleanField(serializers.BooleanField):
    """A JSON ``true`` or ``false``, nothing else (no "yes", 1 or "true")."""

    default_error_messages: ClassVar[dict[str, Any]] = {
        "invalid": _("Send true or false (a JSON boolean).")
    }

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class _ObjectBody(serializers.Serializer):
    """Refuse a body that is not a JSON object, naming what to send."""

    shape: ClassVar[Any] = ""

    def run_validation(self, data: Any = serializers.empty) -> Any:
        if data is serializers.empty or data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise serializers.ValidationError(
                {api_settings.NON_FIELD_ERRORS_KEY: [self.shape]}, code="not_an_object"
            )
        return super().run_validation(data)


class MfaChallengeSerializer(_ObjectBody):
    """What ``POST /connection/mfa/challenge/`` accepts."""

    shape = _('The request body must be a JSON object such as {"use_backup": false}.')
    use_backup = StrictBooleanField(
        required=False,
        default=False,
        help_text=_("true: text the code to the backup phone instead of the primary one."),
    )


class MfaValidateSerializer(_ObjectBody):
    """What ``POST /connection/mfa/validate/`` accepts."""

    shape = _(
        'The request body must be a JSON object such as {"challenge_id": "...", "code": "123456"}.'
    )
    challenge_id = StrictCharField(
        max_length=200,
        validators=[CHALLENGE_ID],
        help_text=_("The challenge_id the challenge step answered."),
    )
    code = StrictCharField(
        max_length=7,
        validators=[CODE],
        trim_whitespace=True,
        help_text=_("The 6-digit code BILL texted to the phone."),
        style={"input_type": "password"},
        write_only=True,
    )

    def validate_code(self, value: str) -> str:
        digits = normalise_code(value)
        if digits is None:  # the validator already said so; kept for other callers
            raise serializers.ValidationError(CODE.message)
        return digits


class MfaChallengeSentSerializer(serializers.Serializer):
    """What the challenge step answers."""

    challenge_id = serializers.CharField(help_text=_("Send it back with the code."))
    use_backup = serializers.BooleanField(help_text=_("Whether the backup phone was asked for."))


class MfaPhoneSerializer(serializers.Serializer):
    type = serializers.CharField(help_text=_("MOBILE or WORK, as BILL lists it."))
    last4digits = serializers.CharField(help_text=_("The phone's last four digits."))
    primary = serializers.BooleanField(help_text=_("Whether codes go to this phone by default."))
    masked = serializers.CharField(help_text=_("The phone as a page shows it (•••• 1234)."))


class MfaPhonesSerializer(serializers.Serializer):
    """What ``GET /connection/mfa/phones/`` answers."""

    listed = serializers.BooleanField(
        help_text=_("false on BILL's v2 API, which lists no phones (codes still go to them).")
    )
    phones = MfaPhoneSerializer(many=True)
