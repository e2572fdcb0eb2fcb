"""The example project's URLs plus the hot-path benchmark's baseline: a trivial DRF view."""

from django.urls import path
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from project.urls import urlpatterns as project_urlpatterns


class TrivialView(APIView):
    """The baseline: same authentication as the status endpoint, a constant answer."""

    permission_classes = (IsAuthenticated,)

    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})


urlpatterns = [*project_urlpatterns, path("bench/trivial/", TrivialView.as_view(), name="trivial")]
