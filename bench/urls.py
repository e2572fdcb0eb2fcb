"""The example project's URLs plus the hot-path benchmark's baseline: a trivial DRF view."""

from django.urls import path
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from bill_integration.api.permissions import TenantConnectionAccess
from project.urls import urlpatterns as project_urlpatterns


class TrivialView(APIView):
    """The baseline: same authentication as the status endpoint, a constant answer."""

    permission_classes = (IsAuthenticated,)

    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})


class TrivialTenantView(APIView):
    """An informational baseline: a constant answer behind the app's own permission class.

    Same session authentication, and ``TenantConnectionAccess`` (the project's tenant resolver
    and access policy, which the status endpoint must run on every request): a reading of
    "the same authentication" that includes the tenant check.
    """

    permission_classes = (TenantConnectionAccess,)

    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})


class SameLookupsView(APIView):
    """A second, informational baseline: the cached status endpoint's lookups, a constant.

    Same authentication, the project's tenant resolver and access policy, and the query of
    the connection's change marker (``api/status_cache.py``); the cached document is left out.
    The difference to the status endpoint is the cost of the document from the cache.
    """

    permission_classes = (IsAuthenticated,)

    def get(self, request: Request) -> Response:
        from bill_integration.api.permissions import resolve_access
        from bill_integration.api.status_cache import read_marker

        tenant, access = resolve_access(request)
        marker = read_marker(tenant)
        return Response({"version": marker[1] if marker else None, "access": access})


urlpatterns = [
    *project_urlpatterns,
    path("bench/trivial/", TrivialView.as_view(), name="trivial"),
    path("bench/trivial-tenant/", TrivialTenantView.as_view(), name="trivial-tenant"),
    path("bench/same-lookups/", SameLookupsView.as_view(), name="same-lookups"),
]
