"""REST views: thin wrappers that resolve the tenant, validate input and call the services.

``GET|PUT|DELETE /connection/`` and ``POST /connection/refresh/``. Permission, throttle,
parser and schema classes are set here explicitly (never inherited from the project's
defaults), and every error goes through :func:`bill_integration.api.errors.exception_handler`.

Error reports: every POST parameter and every local variable under ``dispatch`` is marked
sensitive, and each request carries :class:`~bill_integration.api.reporting.ApiReporterFilter`,
so a 500's mail or debug page shows no body, no parsed data and no secret.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.http import HttpRequest, HttpResponseBase
from django.utils.decorators import method_decorator
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from .. import services
from ..models import BillConnection
from . import errors
from .link_schema import LINK_REQUEST
from .parsers import BillJSONParser
from .permissions import TenantConnectionAccess, resolve_access
from .reporting import ApiReporterFilter
from .serializers import ConnectionStatusSerializer, LinkSerializer
from .status_cache import status_document
from .throttling import (
    LinkTenantThrottle,
    LinkUserThrottle,
    RefreshTenantThrottle,
    RefreshUserThrottle,
)

F = TypeVar("F", bound=Callable[..., Any])


TENANT_HEADER = OpenApiParameter(
    name="X-Tenant-ID",
    type=OpenApiTypes.STR,
    location=OpenApiParameter.HEADER,
    required=False,
    description=(
        "Which tenant, for a user who belongs to several. Read by the project's "
        "TENANT_RESOLVER (the example project's resolver reads this header); without it a "
        "user with exactly one tenant gets that one."
    ),
)


def bill_schema(**kwargs: Any) -> Callable[[F], F]:
    """``@extend_schema(**kwargs)`` built on drf-spectacular's ``AutoSchema``, whatever DRF's
    ``DEFAULT_SCHEMA_CLASS`` is.

    ``extend_schema`` builds a method's schema on the method's own ``schema`` if it has one,
    else on DRF's global default, read at import time: DRF's own ``AutoSchema`` in a project
    that never set it, which drf-spectacular cannot use (``drf_spectacular.E001``).
    """

    def decorator(method: F) -> F:
        method.schema = AutoSchema  # type: ignore[attr-defined]
        return extend_schema(**kwargs)(method)

    return decorator


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(response=errors.ErrorSerializer, description=description)


NOT_FOUND = _error(
    "code not_found: not signed in, no tenant, or no access to it (the same answer for all, "
    "so nothing is revealed). code not_linked: nothing to act on."
)
FORBIDDEN = _error("code permission_denied: a member may read but not change the connection.")
UNSUPPORTED = _error("code unsupported_media_type: send application/json.")
TOO_LARGE = _error("code request_too_large: the body is over the server's size limit.")


def _codes_error(http_status: int, meaning: str) -> OpenApiResponse:
    """An error response whose code list comes from the exception classes themselves."""
    codes = ", ".join(errors.codes_with_status(http_status))
    return _error(f"code {codes}: {meaning}")


BILL_ERRORS = {
    409: _codes_error(
        409,
        "another change won at the same time (reload and retry), or the account must be "
        "linked again.",
    ),
    429: _codes_error(429, "a BILL limit of the developer key; see Retry-After."),
    502: _codes_error(502, "BILL answered oddly, needs MFA, or the session ended."),
    503: _codes_error(503, "BILL unreachable or no session available now; try later."),
}


class BillAPIView(APIView):
    """Base of the app's views: its own error shape and access rules, whatever the project sets."""

    permission_classes = (TenantConnectionAccess,)
    throttle_classes: tuple[type, ...] = ()
    parser_classes = (BillJSONParser, FormParser, MultiPartParser)
    # drf-spectacular's inspector on the app's own views, so a project need not set DRF's
    # global DEFAULT_SCHEMA_CLASS (drf_spectacular.E001 "Incompatible AutoSchema" otherwise).
    schema = AutoSchema()
    #: Which 429 message a refusal by this view's throttles gets (errors.THROTTLED_MESSAGES).
    throttle_action = "default"

    @method_decorator(sensitive_post_parameters())
    @method_decorator(sensitive_variables())
    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        # Before anything reads the body: a report of an error from here on hides it all.
        request.exception_reporter_filter = ApiReporterFilter()  # type: ignore[attr-defined]
        return super().dispatch(request, *args, **kwargs)

    def get_exception_handler(self) -> Callable[[Exception, dict[str, Any]], Response | None]:
        return errors.exception_handler

    def tenant(self, request: Request) -> Any:
        return resolve_access(request)[0]

    def can_change(self, request: Request) -> bool:
        return resolve_access(request)[1] == "write"

    def status_response(self, request: Request, *, http_status: int = 200) -> Response:
        # A GET may be answered from the status cache (status_cache.py: keyed by the row's
        # version and change marker, access checked on every request); a write's answer never.
        data = status_document(
            self.tenant(request),
            can_change=self.can_change(request),
            fresh=request.method != "GET",
        )
        return Response(data, status=http_status)


class ConnectionView(BillAPIView):
    """The tenant's BILL connection: see it, link or relink it, unlink it."""

    throttle_action = "link"
    link_throttle_classes = (LinkTenantThrottle, LinkUserThrottle)

    def get_throttles(self) -> list[BaseThrottle]:
        # Only link attempts are throttled: reading the status must stay cheap and unlimited.
        if self.request.method == "PUT":
            return [throttle() for throttle in self.link_throttle_classes]
        return []

    @bill_schema(
        operation_id="bill_connection_retrieve",
        summary=_("The BILL connection's status"),
        description=_(
            "Status, environment, organization, user, session timestamps and the last error "
            "in words. Never a secret. status is not_linked when no account is linked."
        ),
        parameters=[TENANT_HEADER],
        responses={200: ConnectionStatusSerializer, 404: NOT_FOUND},
    )
    def get(self, request: Request) -> Response:
        return self.status_response(request)

    @bill_schema(
        operation_id="bill_connection_link",
        summary=_("Link or relink a BILL account"),
        description=_(
            "Logs in to BILL with the given credentials (and checks the Spend & Expense API "
            "token, if given); only if BILL accepts them are they stored, replacing any "
            "previous ones. A refused relink leaves the previous credentials working. Secret "
            "fields are write-only. Throttled per tenant and per user (429 with Retry-After)."
        ),
        parameters=[TENANT_HEADER],
        request=LINK_REQUEST,  # one shape per sign-in method (link_schema.py)
        responses={
            200: OpenApiResponse(ConnectionStatusSerializer, description="Relinked."),
            201: OpenApiResponse(ConnectionStatusSerializer, description="Linked."),
            400: _error(
                "code validation_error (see fields) or malformed_request; "
                f"{', '.join(errors.codes_with_status(400))}: BILL refused, nothing stored "
                "changed."
            ),
            403: FORBIDDEN,
            404: NOT_FOUND,
            413: TOO_LARGE,
            415: UNSUPPORTED,
            **BILL_ERRORS,
            429: _error(
                "code throttled: too many link attempts for this tenant or user; "
                "code rate_limited: BILL's own limit. Both carry Retry-After."
            ),
        },
        examples=[
            OpenApiExample(
                "Sandbox credentials",
                request_only=True,
                value={
                    "username": "ap@example.com",
                    "password": "********",
                    "organization_id": "00801ABCDEFGHIJKa1b2",
                    "dev_key": "01ABCDEFGHIJKLMNOP12",
                    "environment": "sandbox",
                    "api_version": "v3",
                },
            )
        ],
    )
    def put(self, request: Request) -> Response:
        serializer = LinkSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        tenant = self.tenant(request)
        existed = BillConnection.objects.filter(tenant=tenant).exists()
        services.link(tenant, actor=request.user, **serializer.link_arguments())
        return self.status_response(
            request, http_status=status.HTTP_200_OK if existed else status.HTTP_201_CREATED
        )

    @bill_schema(
        operation_id="bill_connection_unlink",
        summary=_("Unlink the BILL account"),
        description=_("Logs the session out at BILL (best effort) and deletes the credentials."),
        parameters=[TENANT_HEADER],
        responses={204: None, 403: FORBIDDEN, 404: NOT_FOUND},
    )
    def delete(self, request: Request) -> Response:
        services.unlink(self.tenant(request), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ConnectionRefreshView(BillAPIView):
    """Log in to BILL again now with the stored credentials."""

    # Each refresh spends a login of the developer key's shared hourly budget: throttled so
    # one tenant cannot use up the logins of every tenant sharing the key.
    throttle_classes = (RefreshTenantThrottle, RefreshUserThrottle)
    throttle_action = "refresh"

    @bill_schema(
        operation_id="bill_connection_refresh",
        summary=_("Refresh the BILL session now"),
        description=_(
            "Logs in again with the stored credentials and answers the new status. If BILL "
            "refuses them the status becomes needs_relink and the answer says so. Each "
            "refresh spends a login of the developer key's hourly budget, so it is throttled "
            "per tenant and per user (429 with Retry-After)."
        ),
        parameters=[TENANT_HEADER],
        request=None,
        responses={
            200: ConnectionStatusSerializer,
            400: _error(
                f"code {', '.join(errors.codes_with_status(400))}: BILL refused the stored "
                "credentials; link the account again."
            ),
            403: FORBIDDEN,
            404: NOT_FOUND,
            **BILL_ERRORS,
            429: _error(
                "code throttled: too many refreshes for this tenant or user; "
                "code rate_limited: BILL's own limit. Both carry Retry-After."
            ),
        },
    )
    def post(self, request: Request) -> Response:
        services.refresh(self.tenant(request), force=True)
        return self.status_response(request)
