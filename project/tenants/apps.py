"""App config of the example tenants app."""

from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "project.tenants"
    label = "tenants"
    verbose_name = "Tenants"
    default_auto_field = "django.db.models.BigAutoField"
