"""The admin's budget pages: each developer key's last 24 hours against BILL's limits.

Linked from the BILL connections list ("Budget per developer key"), served by the
connections' own ``ModelAdmin`` (:class:`BudgetAdminMixin`), so they are staff-only through
``admin_site.admin_view`` and need the permission to view connections:

* ``budget/``: every developer key (the :data:`KEYS_LISTED` with the most connections) with
  its connections, warm and lapsed tenants, and the rolling hour's calls and logins;
* ``budget/<key>/``: one key's report (``services/budget.py``: the same figures
  ``manage.py bill_status --budget`` prints) and its chart (``budget_chart.py``, server-side
  SVG), with the chart's numbers as a table beside it.

A key is named by the first characters of its fingerprint (a keyed hash), never the key.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils.translation import gettext as _

from .budget_chart import budget_svg
from .services import budget

#: How many developer keys the list page shows (most connections first).
KEYS_LISTED = 50


class BudgetAdminMixin:
    """Adds the budget pages to a ``ModelAdmin`` of ``BillConnection``."""

    admin_site: Any
    model: Any

    def get_urls(self) -> list[URLPattern]:
        prefix = f"{self.model._meta.app_label}_{self.model._meta.model_name}"
        view = self.admin_site.admin_view
        return [
            path("budget/", view(self.budget_index_view), name=f"{prefix}_budget"),
            path(
                "budget/<str:key>/",
                view(self.budget_key_view),
                name=f"{prefix}_budget_key",
            ),
            *super().get_urls(),  # type: ignore[misc]
        ]

    def _context(self, request: HttpRequest, title: str) -> dict[str, Any]:
        if not self.has_view_permission(request):  # type: ignore[attr-defined]
            raise PermissionDenied
        return {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
        }

    def budget_index_view(self, request: HttpRequest) -> HttpResponse:
        context = self._context(request, _("Budget per developer key"))
        keys = budget.developer_keys()
        context["reports"] = [budget.key_budget(key) for key in keys[:KEYS_LISTED]]
        context["keys_total"] = len(keys)
        return TemplateResponse(request, "admin/bill_integration/budget_index.html", context)

    def budget_key_view(self, request: HttpRequest, key: str) -> HttpResponse:
        fingerprint = budget.find_key(key)
        if fingerprint is None:
            raise Http404(_("No developer key starts with these characters."))
        report = budget.key_budget(fingerprint)
        context = self._context(
            request, _("Developer key %(key)s: the last 24 hours") % {"key": report.label}
        )
        context.update(
            report=report,
            chart=budget_svg(report),
            summary=budget.summary_rows(report),
            table=budget.hour_table(report),
            predict_from=budget.PREDICT_FROM_HOURS,
        )
        return TemplateResponse(request, "admin/bill_integration/budget_key.html", context)
