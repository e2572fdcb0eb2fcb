"""URLs of the REST API; mount with ``path("api/bill/", include("bill_integration.api.urls"))``."""

from django.urls import path

from .views import ConnectionRefreshView, ConnectionView

app_name = "bill_integration"

urlpatterns = [
    path("connection/", ConnectionView.as_view(), name="connection"),
    path("connection/refresh/", ConnectionRefreshView.as_view(), name="connection-refresh"),
]
