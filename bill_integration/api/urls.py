"""URLs of the REST API; mount with ``path("api/bill/", include("bill_integration.api.urls"))``."""

from django.urls import path

from .mfa_views import MfaChallengeView, MfaForgetView, MfaPhonesView, MfaValidateView
from .organizations import ConnectionOrganizationsView
from .views import ConnectionRefreshView, ConnectionView

app_name = "bill_integration"

urlpatterns = [
    path("connection/", ConnectionView.as_view(), name="connection"),
    path("connection/refresh/", ConnectionRefreshView.as_view(), name="connection-refresh"),
    path(
        "connection/organizations/",
        ConnectionOrganizationsView.as_view(),
        name="connection-organizations",
    ),
    path("connection/mfa/phones/", MfaPhonesView.as_view(), name="connection-mfa-phones"),
    path("connection/mfa/challenge/", MfaChallengeView.as_view(), name="connection-mfa-challenge"),
    path("connection/mfa/validate/", MfaValidateView.as_view(), name="connection-mfa-validate"),
    path("connection/mfa/forget/", MfaForgetView.as_view(), name="connection-mfa-forget"),
]
