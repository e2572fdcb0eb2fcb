"""App config of the swapped-in tenant app used by the migration tests."""

from django.apps import AppConfig


class SwappedTenantsConfig(AppConfig):
    name = "tests.swapped_tenants"
    label = "swapped_tenants"
    default_auto_field = "django.db.models.AutoField"
