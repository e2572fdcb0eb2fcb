"""URLs of the HTML pages; mount with ``path("connect/bill/", include("bill_integration.urls_pages"))``.

The page calls the REST API by its URL names, so the API must be included too (under any
prefix): ``path("api/bill/", include("bill_integration.api.urls"))``.
"""

from django.urls import path

from .views import ConnectPageView

app_name = "bill_integration_pages"

urlpatterns = [
    path("", ConnectPageView.as_view(), name="connect"),
]
