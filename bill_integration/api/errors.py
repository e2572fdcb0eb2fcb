"""One JSON error shape for every failure of the API, with a stable ``code``.

Every error body is ``{"code": "...", "message": "..."}``; validation errors add ``"fields"``,
a mapping of field name to a list of messages. ``code`` values come from the exceptions'
``.code`` (:mod:`bill_integration.exceptions`) plus the API's own: ``validation_error``,
``malformed_request``, ``request_too_large``, ``not_found``, ``permission_denied``,
``throttled``, ``method_not_allowed``, ``not_acceptable``, ``unsupported_media_type``.

Django's own refusals of a body (``RequestDataTooBig`` past ``DATA_UPLOAD_MAX_MEMORY_SIZE``,
``TooManyFieldsSent``, ``TooManyFilesSent``) would be its HTML 400 page: here they are
``request_too_large`` (413) in the same shape.

The handler is attached to the app's views (``get_exception_handler``), not installed through
``REST_FRAMEWORK["EXCEPTION_HANDLER"]``, so the shape holds in any project unconfigured.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import Http404
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext_lazy
from rest_framework import exceptions as drf
from rest_framework import serializers, status
from rest_framework.response import Response

from .. import exceptions as bill
from ..conf import now
from .parsers import JSONTooDeep

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

#: The API's own codes (not errors of the services), with their HTTP status.
API_ERROR_CODES: dict[str, int] = {
    "validation_error": status.HTTP_400_BAD_REQUEST,
    "malformed_request": status.HTTP_400_BAD_REQUEST,
    "request_too_large": status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    "not_found": status.HTTP_404_NOT_FOUND,
    "permission_denied": status.HTTP_403_FORBIDDEN,
    "throttled": status.HTTP_429_TOO_MANY_REQUESTS,
    "method_not_allowed": status.HTTP_405_METHOD_NOT_ALLOWED,
    "not_acceptable": status.HTTP_406_NOT_ACCEPTABLE,
    "unsupported_media_type": status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
}

#: Every ``code`` the API may answer with (the OpenAPI enum and the docs): the API's own, then
#: one per error class of :mod:`bill_integration.exceptions`.
ERROR_CODES = [*API_ERROR_CODES, *(cls.code for cls in bill.error_classes())]


def codes_with_status(http_status: int) -> list[str]:
    """The error classes' codes the API answers with ``http_status`` (OpenAPI descriptions)."""
    return [cls.code for cls in bill.error_classes() if cls.api_status == http_status]


NOT_FOUND_MESSAGE = _(
    "No BILL connection you can see here. Sign in as a member of the organization; if you "
    "belong to several organizations, name one with the X-Tenant-ID header."
)


class ErrorSerializer(serializers.Serializer):
    """The body of every error response (used for the OpenAPI document)."""

    code = serializers.ChoiceField(
        choices=ERROR_CODES, help_text=_("Stable machine-readable code.")
    )
    message = serializers.CharField(help_text=_("What went wrong and what to do, in words."))

    class Meta:
        ref_name = "BillError"


# A declared field named "fields" would hide Serializer.fields; add it to the declared map.
ErrorSerializer._declared_fields["fields"] = serializers.DictField(
    child=serializers.ListField(child=serializers.CharField()),
    required=False,
    help_text=_("Only for code validation_error: per field, what is wrong with it."),
)


TOO_LARGE_MESSAGE = _(
    "The request body is larger than this server accepts (%(limit)s bytes); the link form "
    "needs less than one kilobyte."
)
TOO_MANY_FIELDS_MESSAGE = _(
    "The request has more form fields or files than this server accepts; send only the link "
    "form's fields."
)

#: The 429 message per throttled action (a view's ``throttle_action``); ``%(minutes)d`` is the
#: wait, rounded up.
THROTTLED_MESSAGES = {
    "link": ngettext_lazy(
        "Too many attempts to link a BILL account here. Wait about %(minutes)d minute, then "
        "try again.",
        "Too many attempts to link a BILL account here. Wait about %(minutes)d minutes, then "
        "try again.",
        "minutes",
    ),
    "refresh": ngettext_lazy(
        "Too many session refreshes here: each one uses a BILL login that other accounts "
        "share. Wait about %(minutes)d minute, then try again.",
        "Too many session refreshes here: each one uses a BILL login that other accounts "
        "share. Wait about %(minutes)d minutes, then try again.",
        "minutes",
    ),
    "mfa": ngettext_lazy(
        "Too many tries at trusting this app for payments. Wait about %(minutes)d minute, then "
        "try again.",
        "Too many tries at trusting this app for payments. Wait about %(minutes)d minutes, "
        "then try again.",
        "minutes",
    ),
    "default": ngettext_lazy(
        "Too many requests of this kind. Wait about %(minutes)d minute, then try again.",
        "Too many requests of this kind. Wait about %(minutes)d minutes, then try again.",
        "minutes",
    ),
}


def _retry_after_seconds(exc: bill.RateLimited) -> int | None:
    if exc.retry_at is None:
        return None
    return max(1, math.ceil((exc.retry_at - now()).total_seconds()))


def _flatten(detail: Any) -> dict[str, list[str]]:
    """DRF's nested error detail as ``{field: [messages]}`` (strings only)."""
    if isinstance(detail, dict):
        flat: dict[str, list[str]] = {}
        for key, value in detail.items():
            if isinstance(value, dict):
                for inner_key, inner in _flatten(value).items():
                    flat[f"{key}.{inner_key}"] = inner
            elif isinstance(value, list):
                flat[str(key)] = [str(item) for item in value]
            else:
                flat[str(key)] = [str(value)]
        return flat
    if isinstance(detail, list):
        return {"non_field_errors": [str(item) for item in detail]}
    return {"non_field_errors": [str(detail)]}


def error_response(
    code: str,
    message: StrOrPromise,
    http_status: int,
    *,
    fields: dict[str, list[str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {"code": code, "message": str(message)}
    if fields is not None:
        body["fields"] = fields
    return Response(body, status=http_status, headers=headers)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Turn any exception the API raises into the one error shape (or ``None``: a real 500)."""
    if isinstance(exc, bill.BillIntegrationError):
        http_status = exc.api_status
        headers: dict[str, str] = {}
        retry_after = None
        if isinstance(exc, bill.RateLimited):
            retry_after = _retry_after_seconds(exc) or 60
            headers["Retry-After"] = str(retry_after)
        # A class without words for customers shows the developer's message (no secret in it).
        if type(exc).customer_text is None:
            message = exc.message
        else:
            message = exc.for_customer(retry_after=retry_after)
        return error_response(exc.code, message, http_status, headers=headers)

    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return error_response(
            "request_too_large",
            TOO_LARGE_MESSAGE % {"limit": limit},
            status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        return error_response(
            "request_too_large", TOO_MANY_FIELDS_MESSAGE, status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
        )
    if isinstance(exc, Http404):
        exc = drf.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf.PermissionDenied()
    if not isinstance(exc, drf.APIException):
        return None

    headers = {}
    if auth_header := getattr(exc, "auth_header", None):  # set by APIView.handle_exception
        headers["WWW-Authenticate"] = auth_header
    if isinstance(exc, drf.ValidationError):
        return error_response(
            "validation_error",
            _("Some fields are not valid; see fields."),
            status.HTTP_400_BAD_REQUEST,
            fields=_flatten(exc.detail),
        )
    if isinstance(exc, drf.Throttled):
        wait = max(1, math.ceil(exc.wait or 1))  # type: ignore[attr-defined]  # DRF sets it; its stubs omit it
        headers["Retry-After"] = str(wait)
        minutes = max(1, math.ceil(wait / 60))
        action = getattr(context.get("view"), "throttle_action", None)
        template = THROTTLED_MESSAGES.get(action or "default", THROTTLED_MESSAGES["default"])
        message = template % {"minutes": minutes}
        return error_response("throttled", message, exc.status_code, headers=headers)
    if isinstance(exc, JSONTooDeep):
        return error_response("malformed_request", str(exc.detail), exc.status_code)
    if isinstance(exc, drf.ParseError):
        return error_response(
            "malformed_request",
            _("The request body is not valid JSON: %(detail)s") % {"detail": exc.detail},
            exc.status_code,
        )
    codes: dict[type[drf.APIException], tuple[str, StrOrPromise | None]] = {
        drf.NotFound: ("not_found", NOT_FOUND_MESSAGE),
        drf.NotAuthenticated: ("not_found", NOT_FOUND_MESSAGE),
        drf.AuthenticationFailed: ("not_found", NOT_FOUND_MESSAGE),
        drf.PermissionDenied: ("permission_denied", None),
        drf.MethodNotAllowed: ("method_not_allowed", None),
        drf.NotAcceptable: ("not_acceptable", None),
        drf.UnsupportedMediaType: ("unsupported_media_type", None),
    }
    for cls, (code, text) in codes.items():
        if isinstance(exc, cls):
            http_status = status.HTTP_404_NOT_FOUND if code == "not_found" else exc.status_code
            if code == "not_found":
                headers.pop("WWW-Authenticate", None)
            return error_response(code, text or str(exc.detail), http_status, headers=headers)
    return error_response("bill_error", str(exc.detail), exc.status_code, headers=headers)
