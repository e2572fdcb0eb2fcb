"""Serializers: the link form (write-only secrets) and the connection status (never a secret).

Input is checked here, before BILL is called: the body's shape (a JSON object), types (strings
only, no numbers passed off as text), lengths, the characters of each credential
(:func:`bill_integration.validators.credential_validators`), the organization id's shape, and
the environment and API version against the configured choices. Secret fields are
``write_only``, shown as password inputs in the browsable API, and not trimmed (a password may
end in a space).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar, cast

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers
from rest_framework.settings import api_settings

from .. import validators
from ..auth_methods import AuthMethod, all_api_fields, api_fields, rules
from ..conf import bill_settings, now
from ..exceptions import (
    ConnectionDisabled,
    DecryptionFailed,
    InvalidApiToken,
    InvalidCredentials,
    LoginBudgetExhausted,
    RateLimited,
    SessionInvalid,
    TransientError,
    UnexpectedResponse,
    UntrustedSession,
    customer_message,
    error_class_for,
)
from ..models import ApiVersion, BillConnection, ConnectionStatus
from ..services import trust

NOT_LINKED = "not_linked"

NOT_AN_OBJECT = _(
    "The request body must be a JSON object with the fields username, password, "
    "organization_id and dev_key (api_token, environment and api_version are optional), "
    "not %(got)s."
)


def _json_type(data: Any) -> str:
    """What a parsed JSON value is, in JSON's words (for an error message; never the value)."""
    if data is None or data is serializers.empty:
        return str(_("null"))
    if isinstance(data, bool):
        return str(_("true or false"))
    if isinstance(data, int | float):
        return str(_("a number"))
    if isinstance(data, str):
        return str(_("a string"))
    if isinstance(data, list | tuple):
        return str(_("an array"))
    return str(_("a value of another kind"))


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers and booleans instead of turning them into text."""

    default_error_messages: ClassVar[dict[str, Any]] = {
        "invalid": _("Enter text (a JSON string), not a number or list.")
    }

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


def _text(
    name: str, *, required: bool = True, secret: bool = False, **extra: Any
) -> StrictCharField:
    options: dict[str, Any] = {
        "max_length": validators.MAX_LENGTHS[name],
        "help_text": validators.HELP_TEXTS[name],
        "validators": validators.credential_validators(name),
        "required": required,
        "error_messages": {
            "max_length": _("Ensure this field has no more than {max_length} characters."),
        },
    }
    if secret:
        options.update(write_only=True, style={"input_type": "password"}, trim_whitespace=False)
    options.update(extra)
    return StrictCharField(**options)


class LinkSerializer(serializers.Serializer):
    """What ``PUT /connection/`` accepts: ``auth_method`` and exactly that method's fields.

    ``auth_methods.METHODS`` says which fields each method needs; a missing one, or one of
    another method, is refused naming the field (400), before BILL is called.
    """

    auth_method = serializers.ChoiceField(
        choices=AuthMethod.choices,
        default=AuthMethod.USER_PASSWORD,
        help_text=_("How you sign in to BILL; it decides which other fields are needed."),
    )
    username = _text("username", required=False)
    password = _text("password", secret=True, required=False)
    organization_id = _text("organization_id", required=False)
    dev_key = _text("dev_key", secret=True, required=False)
    api_token = _text("api_token", secret=True, required=False, allow_blank=True, allow_null=True)
    token_name = _text("token_name", required=False)
    sync_token = _text("sync_token", secret=True, required=False)
    console_token = _text("console_token", secret=True, required=False)
    client_id = _text("client_id", required=False)
    client_secret = _text("client_secret", secret=True, required=False)
    environment = serializers.ChoiceField(
        choices=[], required=False, help_text=validators.HELP_TEXTS["environment"]
    )
    api_version = serializers.ChoiceField(
        choices=ApiVersion.values,
        default=ApiVersion.V3,
        help_text=validators.HELP_TEXTS["api_version"],
        error_messages={"invalid_choice": _("Choose v3 or v2.")},
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Read per instance: the configured environments may change (override_settings).
        names = bill_settings.environment_names()
        field = cast(serializers.ChoiceField, self.fields["environment"])
        field.choices = names
        # Name the choices, never echo the input (it may be 10 KB of anything).
        field.error_messages["invalid_choice"] = _("Choose one of: %(choices)s.") % {
            "choices": ", ".join(names)
        }

    def run_validation(self, data: Any = serializers.empty) -> Any:
        # DRF would say "Expected a dictionary, but got list" (or "No data provided" for null):
        # name what to send instead, in JSON's words.
        if not isinstance(data, Mapping):
            raise serializers.ValidationError(
                {api_settings.NON_FIELD_ERRORS_KEY: [NOT_AN_OBJECT % {"got": _json_type(data)}]},
                code="not_an_object",
            )
        return super().run_validation(data)

    def validate_environment(self, value: str) -> str:
        return value or bill_settings.DEFAULT_ENVIRONMENT

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs.setdefault("environment", bill_settings.DEFAULT_ENVIRONMENT)
        method = attrs.get("auth_method") or AuthMethod.USER_PASSWORD
        entry = rules(method)
        errors: dict[str, list[Any]] = {}
        for name in sorted(all_api_fields() - api_fields(method)):
            if attrs.get(name) not in (None, ""):
                errors[name] = [
                    _("Not a field of the sign-in method %(method)s.") % {"method": method}
                ]
        for name in entry.fields:
            if not attrs.get(name) and not (name == "dev_key" and self.host_key(attrs)):
                errors[name] = [_("This field is required for this sign-in method.")]
        if entry.uses_dev_key and attrs.get("dev_key") and self.host_key(attrs):
            if not bill_settings.ALLOW_TENANT_DEVELOPER_KEY:
                errors["dev_key"] = [
                    _("Leave this field out: this service supplies the developer key.")
                ]
        if method != AuthMethod.USER_PASSWORD and attrs.get("api_version") == ApiVersion.V2:
            if method != AuthMethod.SYNC_TOKEN:
                errors["api_version"] = [_("This sign-in method works with v3 only.")]
        if errors:
            raise serializers.ValidationError(errors, code="invalid")
        attrs["api_token"] = attrs.get("api_token") or None
        return attrs

    @staticmethod
    def host_key(attrs: dict[str, Any]) -> bool:
        """Whether the SaaS supplies the developer key of the chosen environment."""
        return bill_settings.host_developer_key(attrs.get("environment")) is not None

    def link_arguments(self) -> dict[str, Any]:
        """The validated input as ``services.link`` keyword arguments (model column names)."""
        data = self.validated_data
        entry = rules(data["auth_method"])
        arguments = {
            column: data.get(name) for name, column in {**entry.fields, **entry.optional}.items()
        }
        arguments.update(
            auth_method=entry.method,
            environment=data["environment"],
            api_version=data["api_version"],
        )
        return arguments


#: What kind of problem a stored error is, most specific class first (see :func:`error_kind`).
ERROR_KINDS: tuple[tuple[type, str], ...] = (
    (LoginBudgetExhausted, "login_budget"),
    (RateLimited, "rate_limited"),
    (TransientError, "unreachable"),
    (InvalidApiToken, "api_token"),
    (InvalidCredentials, "credentials"),
    (UntrustedSession, "mfa"),
    (SessionInvalid, "session_ended"),
    (UnexpectedResponse, "unexpected"),
    (DecryptionFailed, "unreadable"),
    (ConnectionDisabled, "disabled"),
)
ERROR_KIND_NAMES = [kind for _cls, kind in ERROR_KINDS] + ["other"]
#: Kinds not marked by a call to BILL, so ``last_refresh_at`` does not say when they happened.
UNTIMED_ERROR_KINDS = frozenset({"unreadable", "disabled", "other"})


def error_kind(code: str) -> str:
    """The kind of a stored error code (ours or BILL's ``BDC_xxxx``), ``"other"`` if unknown.

    A page words a problem met in the background differently from one a person just caused
    ("BILL was unreachable at 10:02; the app retries on its own", not "nothing was changed"),
    so it needs the kind, not only the sentence written for the link form.
    """
    cls = error_class_for(code) if code else None
    for klass, kind in ERROR_KINDS:
        if cls is not None and issubclass(cls, klass):
            return kind
    return "other"


class LastErrorSerializer(serializers.Serializer):
    code = serializers.CharField(help_text=_("Stable code of the last error."))
    message = serializers.CharField(help_text=_("The last error, in words, with what to do."))
    kind = serializers.ChoiceField(
        choices=ERROR_KIND_NAMES,
        help_text=_(
            "What kind of problem it is: unreachable (BILL down or slow; retried on its own), "
            "rate_limited, login_budget (waiting, not broken), credentials, api_token, mfa, "
            "unreadable (link again), session_ended, unexpected, disabled or other."
        ),
    )
    at = serializers.DateTimeField(
        allow_null=True,
        help_text=_("When the app last met it (its last attempt); null if not known."),
    )


class MfaTrustSerializer(serializers.Serializer):
    """BILL's MFA trust of this app (payments need it). Never the remember-me id."""

    state = serializers.ChoiceField(
        choices=list(trust.STATES),
        help_text=_(
            "not_set_up, needed (BILL refused an operation for want of trust), trusted, "
            "expiring (within MFA_EXPIRY_WARNING), expired, or not_required (MFA is off)."
        ),
    )
    message = serializers.CharField(help_text=_("What the state means and what to do, in words."))
    trusted_since = serializers.DateTimeField(allow_null=True)
    trusted_until = serializers.DateTimeField(
        allow_null=True, help_text=_("When BILL's 30-day trust ends (or ended).")
    )
    session_trusted = serializers.BooleanField(
        help_text=_("Whether BILL said the current session is MFA-trusted.")
    )
    device = serializers.CharField(
        allow_null=True, help_text=_("The device name the trust was given to.")
    )
    mfa_status = serializers.CharField(
        allow_null=True, help_text=_("BILL's mfaStatus, as last seen on a keep-alive.")
    )
    mfa_bypass = serializers.BooleanField(
        allow_null=True, help_text=_("BILL's mfaBypass, as last seen on a keep-alive.")
    )


class ConnectionStatusSerializer(serializers.Serializer):
    """What ``GET /connection/`` answers. Never a secret; ``has_api_token`` is a yes/no."""

    linked = serializers.BooleanField(help_text=_("Whether a BILL account is linked."))
    status = serializers.ChoiceField(
        choices=[*ConnectionStatus.values, NOT_LINKED],
        help_text=_("active, degraded, rate_limited, needs_relink, disabled, or not_linked."),
    )
    status_display = serializers.CharField(help_text=_("The status in words."))
    can_change = serializers.BooleanField(
        help_text=_("Whether the signed-in user may link, refresh or unlink.")
    )
    auth_method = serializers.ChoiceField(
        choices=AuthMethod.values,
        allow_null=True,
        help_text=_("How the connection signs in to BILL (a relink preselects it); null if none."),
    )
    environment = serializers.CharField(allow_null=True)
    api_version = serializers.CharField(allow_null=True)
    organization_id = serializers.CharField(allow_null=True)
    username = serializers.CharField(allow_null=True)
    user_id = serializers.CharField(allow_null=True, help_text=_("BILL's id of the user."))
    has_api_token = serializers.BooleanField(
        help_text=_("Whether a Spend & Expense API token is stored (the token is never shown).")
    )
    session_obtained_at = serializers.DateTimeField(allow_null=True)
    session_last_used_at = serializers.DateTimeField(allow_null=True)
    session_age_seconds = serializers.IntegerField(
        allow_null=True, help_text=_("Seconds since the current session was obtained.")
    )
    last_refresh_at = serializers.DateTimeField(allow_null=True)
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    last_error = LastErrorSerializer(allow_null=True)
    linked_at = serializers.DateTimeField(allow_null=True)
    updated_at = serializers.DateTimeField(allow_null=True)
    server_time = serializers.DateTimeField(
        help_text=_(
            "The server's clock when this document was made: a page subtracts it from the "
            "timestamps above to show relative times without trusting the browser's clock."
        )
    )
    mfa = MfaTrustSerializer(
        allow_null=True,
        help_text=_(
            "Trust for payments (BILL's MFA); null when not linked, when the connection needs "
            "its details entered again or is disabled, and for sign-in methods BILL's MFA trust "
            "does not apply to (sync token, Spend & Expense token, OAuth client credentials)."
        ),
    )


#: Annotation name carrying "an API token is stored" (see :func:`status_queryset`).
HAS_API_TOKEN = "has_api_token_stored"


def status_queryset() -> Any:
    """Connections without their secrets, annotated with whether an API token is stored."""
    from django.db.models import BooleanField, ExpressionWrapper, Q

    return BillConnection.objects.without_secrets().annotate(
        **{
            HAS_API_TOKEN: ExpressionWrapper(
                Q(api_token__isnull=False), output_field=BooleanField()
            )
        }
    )


def connection_status(connection: BillConnection | None, *, can_change: bool) -> dict[str, Any]:
    """The status document for ``connection`` (``None``: not linked), built without secrets."""
    if connection is None:
        empty: dict[str, Any] = {name: None for name in ConnectionStatusSerializer._declared_fields}
        empty.update(
            linked=False,
            status=NOT_LINKED,
            status_display=str(customer_message(NOT_LINKED)),
            can_change=can_change,
            has_api_token=False,
            server_time=now(),
        )
        return empty
    moment = now()
    obtained: datetime | None = connection.session_obtained_at
    age = max(0, int((moment - obtained).total_seconds())) if obtained else None
    last_error = None
    if connection.last_error_code:
        kind = error_kind(connection.last_error_code)
        last_error = {
            "code": connection.last_error_code,
            "message": customer_message(
                connection.last_error_code,
                connection.last_error_message or connection.last_error_code,
            ),
            "kind": kind,
            # A failed call to BILL sets last_refresh_at to the attempt's time; an unreadable
            # or disabled row was marked without one.
            "at": None if kind in UNTIMED_ERROR_KINDS else connection.last_refresh_at,
        }
    # The token column is deferred (never decrypted here); the view annotates whether it is
    # set (STATUS_QUERYSET), and only a connection loaded some other way costs a query.
    has_token = getattr(connection, HAS_API_TOKEN, None)
    if has_token is None:
        stored = BillConnection.objects.filter(pk=connection.pk, api_token__isnull=False)
        has_token = stored.exists()
    return {
        "linked": True,
        "status": connection.status,
        "status_display": str(connection.get_status_display()),
        "can_change": can_change,
        "auth_method": rules(connection.auth_method).method,
        "environment": connection.environment,
        "api_version": connection.api_version,
        "organization_id": connection.organization_id,
        "username": connection.username,
        "user_id": connection.user_id or None,
        "has_api_token": has_token,
        "session_obtained_at": connection.session_obtained_at,
        "session_last_used_at": connection.session_last_used_at,
        "session_age_seconds": age,
        "last_refresh_at": connection.last_refresh_at,
        "next_attempt_at": connection.next_attempt_at,
        "last_error": last_error,
        "linked_at": connection.created_at,
        "updated_at": connection.updated_at,
        "server_time": moment,
        "mfa": trust.describe_trust(connection) if _trust_applies(connection) else None,
    }


def _trust_applies(connection: BillConnection) -> bool:
    """Whether the page may offer "Trust this app for payments" for ``connection``.

    Not for a method BILL's MFA trust does not apply to, and not while the connection has no
    usable credentials (``needs_relink``) or is disabled: a code could not be asked for, and
    the person's next step is to enter the details again.
    """
    unusable = (ConnectionStatus.NEEDS_RELINK, ConnectionStatus.DISABLED)
    return rules(connection.auth_method).mfa_trust and connection.status not in unusable
