"""The example project: a tiny multi-tenant SaaS that uses bill_integration."""

from .celery import app as celery_app

__all__ = ("celery_app",)
