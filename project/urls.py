"""URLs of the example project: admin, the BILL API, its schema and docs, the linking page."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from bill_integration.health import health

urlpatterns = [
    path("", RedirectView.as_view(url="/connect/bill/", permanent=False)),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/bill/", include("bill_integration.api.urls", namespace="bill_integration")),
    # schema=None: drf-spectacular's own views stay out of the schema they serve, so DRF's
    # DEFAULT_SCHEMA_CLASS need not be drf-spectacular's (bill_integration's views set theirs).
    path("api/schema/", SpectacularAPIView.as_view(schema=None), name="schema"),
    path(
        "api/docs/",
        SpectacularSwaggerView.as_view(url_name="schema", schema=None),
        name="swagger-ui",
    ),
    path("connect/bill/", include("bill_integration.urls_pages")),
    # For monitoring: 200 healthy, 503 not (docs/how-to/monitoring.md). A real deployment
    # would require a token: path("health/bill/", health, {"token": "..."}).
    path("health/bill/", health, name="bill-health"),
]
