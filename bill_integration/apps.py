"""The app config: label, verbose name, pinned auto field, and the imports ``ready()`` needs."""

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class BillIntegrationConfig(AppConfig):
    name = "bill_integration"
    label = "bill_integration"
    verbose_name = _("BILL integration")
    # Pinned so a project's DEFAULT_AUTO_FIELD never creates a migration in this app.
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
        from .log_redaction import install as install_redaction

        install_redaction()  # RedactSecretsFilter on the bill_integration logger and its handlers
        from .startup import connect as guard_celery_startup

        guard_celery_startup()  # Celery worker/beat refuse to start without a valid key
