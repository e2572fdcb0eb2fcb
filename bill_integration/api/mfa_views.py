"""REST views of the "Trust this app for payments" step: ``/connection/mfa/...``.

In production BILL pays bills, creates bank accounts, sends vendor invites and turns on
autopay only for an MFA-trusted session (BDC_1361 otherwise). A person does this once every
30 days, through these endpoints (owners and admins: write access, whatever the method):

* ``GET  mfa/phones/``: the BILL user's phones (last four digits), to choose where the code goes;
* ``POST mfa/challenge/`` ``{"use_backup": false}``: BILL texts a 6-digit code; answers the
  ``challenge_id``;
* ``POST mfa/validate/`` ``{"challenge_id": ..., "code": "123456"}``: trusted for 30 days;
  answers the connection's status (its ``mfa`` object says until when);
* ``POST mfa/forget/``: drop the stored trust.

Phones, challenge and validate are throttled per tenant and per user (``MFA_THROTTLE_RATES``);
the services add their own text-message throttle below BILL's 5 a minute.
"""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _
from rest_framework.request import Request
from rest_framework.response import Response

from ..services import mfa
from .mfa_serializers import (
    MfaChallengeSentSerializer,
    MfaChallengeSerializer,
    MfaPhonesSerializer,
    MfaValidateSerializer,
)
from .permissions import TenantConnectionWriteAccess
from .serializers import ConnectionStatusSerializer
from .throttling import MfaTenantThrottle, MfaUserThrottle
from .views import (
    BILL_ERRORS,
    FORBIDDEN,
    NOT_FOUND,
    TENANT_HEADER,
    TOO_LARGE,
    BillAPIView,
    _error,
    bill_schema,
)

THROTTLED = _error(
    "code throttled: too many MFA steps for this tenant or user; code mfa_text_limited: too "
    "many codes texted in the last minute; code mfa_too_many_attempts: BILL refuses more codes "
    "for a while; code rate_limited: BILL's own limit. All carry Retry-After."
)
COMMON = {403: FORBIDDEN, 404: NOT_FOUND, 413: TOO_LARGE, **BILL_ERRORS, 429: THROTTLED}


class MfaView(BillAPIView):
    """Owners and admins only; throttled per tenant and per user."""

    permission_classes = (TenantConnectionWriteAccess,)
    throttle_classes = (MfaTenantThrottle, MfaUserThrottle)
    throttle_action = "mfa"


class MfaPhonesView(MfaView):
    @bill_schema(
        operation_id="bill_connection_mfa_phones",
        summary=_("The BILL user's phones for 2-step verification"),
        description=_(
            "Last four digits only, and which one is primary. BILL's v2 API lists no phones: "
            "listed is false and the code still goes to the primary (or backup) phone."
        ),
        parameters=[TENANT_HEADER],
        responses={200: MfaPhonesSerializer, **COMMON},
    )
    def get(self, request: Request) -> Response:
        phones = mfa.phones(self.tenant(request))
        data = {
            "listed": phones is not None,
            "phones": [
                {
                    "type": p.type,
                    "last4digits": p.last4digits,
                    "primary": p.primary,
                    "masked": p.masked,
                }
                for p in phones or []
            ],
        }
        return Response(MfaPhonesSerializer(data).data)


class MfaChallengeView(MfaView):
    @bill_schema(
        operation_id="bill_connection_mfa_challenge",
        summary=_("Have BILL text a code"),
        description=_(
            "BILL texts a 6-digit code to the primary phone (use_backup: the backup phone). "
            "Send the answered challenge_id back with the code. 409 mfa_no_phone: the BILL "
            "user has no phone; add one in BILL."
        ),
        parameters=[TENANT_HEADER],
        request=MfaChallengeSerializer,
        responses={
            200: MfaChallengeSentSerializer,
            400: _error("code validation_error (see fields) or malformed_request."),
            415: _error("code unsupported_media_type: send application/json."),
            **COMMON,
        },
    )
    def post(self, request: Request) -> Response:
        serializer = MfaChallengeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        use_backup = serializer.validated_data["use_backup"]
        challenge_id = mfa.challenge(
            self.tenant(request), use_backup=use_backup, actor=request.user
        )
        data = {"challenge_id": challenge_id, "use_backup": use_backup}
        return Response(MfaChallengeSentSerializer(data).data)


class MfaValidateView(MfaView):
    @bill_schema(
        operation_id="bill_connection_mfa_validate",
        summary=_("Confirm the code: trust this app for payments"),
        description=_(
            "Checks the code with BILL (remember me: 30 days). Answers the connection's "
            "status; its mfa object says until when payments are trusted. 400 "
            "mfa_code_invalid: wrong or expired code; 429 mfa_too_many_attempts: wait "
            "(Retry-After), then ask for a new code. Nothing stored changes on a refusal."
        ),
        parameters=[TENANT_HEADER],
        request=MfaValidateSerializer,
        responses={
            200: ConnectionStatusSerializer,
            400: _error(
                "code validation_error (see fields), malformed_request or mfa_code_invalid."
            ),
            415: _error("code unsupported_media_type: send application/json."),
            **COMMON,
        },
    )
    def post(self, request: Request) -> Response:
        serializer = MfaValidateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        mfa.validate(
            self.tenant(request),
            challenge_id=data["challenge_id"],
            code=data["code"],
            actor=request.user,
        )
        return self.status_response(request)


class MfaForgetView(BillAPIView):
    permission_classes = (TenantConnectionWriteAccess,)

    @bill_schema(
        operation_id="bill_connection_mfa_forget",
        summary=_("Forget the trust for payments"),
        description=_(
            "Deletes the stored MFA remember-me id: payments need a new code. (BILL keeps "
            "its side until the 30 days end; this app stops using it.)"
        ),
        parameters=[TENANT_HEADER],
        request=None,
        responses={200: ConnectionStatusSerializer, 403: FORBIDDEN, 404: NOT_FOUND},
    )
    def post(self, request: Request) -> Response:
        mfa.forget(self.tenant(request), actor=request.user)
        return self.status_response(request)
