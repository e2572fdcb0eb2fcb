"""URLs of the REST API; mount with ``path("api/bill/", include("bill_integration.api.urls"))``."""

app_name = "bill_integration"
urlpatterns: list = []
