"""``POST /connection/organizations/``: the organizations some credentials may open.

The customer sends the sign-in method's credentials without an organization ID and gets the
organizations BILL lists for *those* credentials (``services.organizations``), with names, to
pick the one to link (``PUT /connection/`` with its ``organization_id``). Nothing is stored.
Write access only, throttled like a link (BILL counts the listing as a login).
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from ..services import organizations
from . import errors
from .serializers import LinkSerializer
from .throttling import LinkTenantThrottle, LinkUserThrottle
from .views import (
    BILL_ERRORS,
    FORBIDDEN,
    NOT_FOUND,
    TENANT_HEADER,
    BillAPIView,
    _error,
    bill_schema,
)


class OrganizationsRequestSerializer(LinkSerializer):
    """A link's credentials without ``organization_id``, for a method BILL can list for."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        method = attrs.get("auth_method")
        if method not in organizations.LISTABLE_METHODS:
            raise serializers.ValidationError(
                {
                    "auth_method": [
                        _("BILL lists organizations only for: %(methods)s; type the ID instead.")
                        % {"methods": ", ".join(organizations.LISTABLE_METHODS)}
                    ]
                },
                code="invalid",
            )
        if attrs.get("organization_id"):
            raise serializers.ValidationError(
                {"organization_id": [_("Leave this field out: it is what the answer lists.")]},
                code="invalid",
            )
        attrs["organization_id"] = "-"  # satisfies the link's rules; never sent to BILL
        return super().validate(attrs)

    def listing_arguments(self) -> dict[str, Any]:
        """The validated input as ``organizations.list_organizations`` keyword arguments."""
        link = self.link_arguments()
        return {
            "auth_method": link["auth_method"],
            "username": link["username"],
            "password": link["password"],
            "dev_key": link["dev_key"] or "",
            "environment": link["environment"],
        }


class OrganizationSerializer(serializers.Serializer):
    id = serializers.CharField(help_text=_("BILL's organization ID (starts with 008)."))
    name = serializers.CharField(help_text=_("The organization's name in BILL."))


class OrganizationsSerializer(serializers.Serializer):
    organizations = OrganizationSerializer(many=True)


class ConnectionOrganizationsView(BillAPIView):
    """The organizations the given credentials may open, to pick the one to link."""

    throttle_classes = (LinkTenantThrottle, LinkUserThrottle)
    throttle_action = "link"

    @bill_schema(
        operation_id="bill_connection_organizations",
        summary=_("List the BILL organizations some credentials may open"),
        description=_(
            "Send the sign-in method's credentials (user_password or sync_token) without an "
            "organization_id; the answer lists the organizations BILL says they may open, with "
            "names. Nothing is stored. BILL counts the listing as a login: it is throttled like "
            "a link and taken from the developer key's login budget."
        ),
        parameters=[TENANT_HEADER],
        request=OrganizationsRequestSerializer,
        responses={
            200: OrganizationsSerializer,
            400: _error(
                "code validation_error (see fields) or malformed_request; "
                f"{', '.join(errors.codes_with_status(400))}: BILL refused the credentials."
            ),
            403: FORBIDDEN,
            404: NOT_FOUND,
            **BILL_ERRORS,
            429: _error(
                "code throttled: too many attempts for this tenant or user; "
                "code rate_limited: BILL's own limit. Both carry Retry-After."
            ),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = OrganizationsRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        found = organizations.list_organizations(
            self.tenant(request), **serializer.listing_arguments()
        )
        data = {"organizations": [{"id": org.id, "name": org.name} for org in found]}
        return Response(OrganizationsSerializer(data).data)
