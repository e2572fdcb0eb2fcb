"""Django admin for BILL connections and their audit trail.

* No page renders a secret, whatever the viewer's permissions: the change page says, per
  secret, only "stored" or "not stored", and when the credentials were last set (the newest
  *linked* or *relinked* audit event). The list never decrypts anything (``without_secrets()``);
  it shows the organization with its environment, status as a coloured badge, the session's
  age and the last error, narrow enough for a 1280-pixel screen. Trust for payments (BILL's
  MFA) has a list filter and read-only fields (``admin_trust.py``), never the remember-me id.
* The form links through :func:`bill_integration.services.link`, so BILL checks every change
  before it is stored. Secret inputs are password widgets that never render a stored value;
  leaving one blank keeps the stored value. Saving an unchanged form calls nothing ("No
  changes."): a relink spends a login of the developer key's shared hourly budget.
* Actions: "Refresh session now" and "Verify credentials" queue one Celery task per selected
  connection (``bill_integration.force_refresh_session``, ``bill_integration.verify_connection``;
  ids only), as django-celery-beat's "Run selected tasks" does, instead of logging in to BILL
  inside the request. Each queued row counts against the REST refresh throttle
  (``REFRESH_THROTTLE_RATES``, per tenant and per user, shared with
  ``POST /connection/refresh/``); rows over it are skipped and the message says how many and
  why. "Unlink" runs at once (one logout, no login). Deleting a row directly is not offered (it
  would skip the BILL logout and the audit trail).
* Audit events are read-only, on their own page and inline on the connection.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.db.models import BooleanField, ExpressionWrapper, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils import formats, timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.utils.text import Truncator
from django.utils.timesince import timesince
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.debug import sensitive_post_parameters

from . import services, tasks
from .admin_budget import BudgetAdminMixin
from .admin_forms import (
    CREDENTIAL_INPUTS,
    SECRET_INPUTS,
    BillConnectionForm,
    tenant_model_installed,
)
from .admin_trust import TRUST_FIELDSET, TRUST_READONLY, TrustAdminMixin, TrustListFilter
from .api.throttling import TenantRefreshCounter, UserRefreshCounter
from .auth_methods import rules
from .conf import bill_settings, now
from .exceptions import BillIntegrationError, customer_message
from .models import AuditEvent, BillConnection, BillConnectionQuerySet, ConnectionStatus

#: The secret columns whose state the change page shows.
STORED_SECRETS = ("password", "dev_key", "api_token")
#: What the change page shows instead of each secret: whether one is stored.
SECRET_STATES = ("password_state", "dev_key_state", "api_token_state", "credentials_set_at")
#: The list's columns, each short enough that the list fits a 1280-pixel-wide screen.
LIST_DISPLAY = ("tenant", "organization", "status_badge", "session", "last_error")
#: The list shows this much of the last error; the whole text is in the cell's tooltip.
ERROR_PREVIEW_CHARS = 48
#: Set on the request when a change form was saved without any change (nothing was called).
_UNCHANGED = "_bill_admin_unchanged"

BADGE_COLOURS: dict[str, str] = {
    ConnectionStatus.ACTIVE: "#1e7e34",
    ConnectionStatus.DEGRADED: "#b8860b",
    ConnectionStatus.RATE_LIMITED: "#b8860b",
    ConnectionStatus.NEEDS_RELINK: "#b02a37",
    ConnectionStatus.DISABLED: "#6c757d",
}


def _when(value: datetime | None) -> str:
    """A timestamp in the reader's format and time zone, or a dash."""
    return formats.localize(timezone.template_localtime(value)) if value else "—"  # type: ignore[attr-defined]  # Django has it; its stubs omit it


class AuditEventInline(admin.TabularInline):
    model = AuditEvent
    extra = 0
    max_num = 0
    can_delete = False
    fields = ("created_at", "kind", "actor", "detail")
    readonly_fields = fields
    ordering = ("-created_at", "-id")
    verbose_name_plural = _("Audit events (newest first)")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[AuditEvent]:
        return super().get_queryset(request).select_related("actor")


class BillConnectionAdmin(BudgetAdminMixin, TrustAdminMixin, admin.ModelAdmin):
    form = BillConnectionForm
    list_display = LIST_DISPLAY
    list_filter = ("status", TrustListFilter, "environment", "api_version")
    search_fields = ("organization_id", "username", "user_id")
    list_select_related = ("tenant",)
    ordering = ("-updated_at",)
    actions = ("refresh_now", "verify_credentials", "unlink_selected")
    inlines = (AuditEventInline,)
    readonly_fields = (
        "status_badge",
        "last_error",
        *SECRET_STATES,
        "user_id",
        "session_obtained_at",
        "session_last_used_at",
        "last_refresh_at",
        "consecutive_failures",
        "next_attempt_at",
        "version",
        "created_at",
        "updated_at",
        *TRUST_READONLY,
    )

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        # Secret *model* fields are never listed: a read-only field (everything, for a viewer
        # without change permission) is rendered from the object, decrypted. The inputs below
        # are the form's own write-only fields, offered only to those who may change.
        # The form's inputs are every method's; admin_methods.js shows the chosen method's.
        inputs = ["auth_method", "environment", "api_version", *CREDENTIAL_INPUTS]
        if obj is None:
            return [(None, {"fields": ["tenant", *inputs]})]
        credentials = ["auth_method", "environment", "api_version", "username", "organization_id"]
        credentials.append("oauth_client_id")  # plain model fields, shown read-only
        if self.has_change_permission(request, obj):
            credentials = [*inputs, "clear_api_token"]
        return [
            (None, {"fields": ["tenant", "status_badge", "last_error"]}),
            (_("Credentials (checked with BILL when you save)"), {"fields": credentials}),
            (_("Stored secrets (never shown)"), {"fields": list(SECRET_STATES)}),
            (
                _("Session"),
                {
                    "fields": [
                        "user_id",
                        "session_obtained_at",
                        "session_last_used_at",
                        "last_refresh_at",
                        "consecutive_failures",
                        "next_attempt_at",
                        "version",
                        "created_at",
                        "updated_at",
                    ]
                },
            ),
            TRUST_FIELDSET,
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        if obj is None:
            return ()
        return (*self.readonly_fields, "tenant")

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        # Credential inputs are the form's own fields, never model fields: a secret model field
        # would be read from the instance (decrypting it) to fill the form's initial data, and
        # the service, not the form, writes the row. Only the tenant is bound to the model.
        fields = kwargs.get("fields") or flatten_fieldsets(self.get_fieldsets(request, obj))
        kwargs["fields"] = [f for f in fields if f == "tenant"]
        form_class = super().get_form(request, obj, change=change, **kwargs)

        class RequestForm(form_class):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, **inner: Any) -> None:
                super().__init__(*args, request=request, **inner)

        return RequestForm

    def get_queryset(self, request: HttpRequest) -> QuerySet[BillConnection]:
        # Never decrypt for a list or a form: secrets are deferred.
        return cast(BillConnectionQuerySet, super().get_queryset(request)).without_secrets()

    @method_decorator(sensitive_post_parameters(*SECRET_INPUTS))
    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return super().changeform_view(request, *args, **kwargs)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if form.unchanged:
            setattr(request, _UNCHANGED, True)
            return
        # The form already linked through the service; adopt what it stored.
        linked = form.linked_connection
        obj.pk = linked.pk
        obj.tenant_id = linked.tenant_id
        obj._state.adding = False

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        # Nothing was saved, so the history gets no "changed" entry.
        if getattr(request, _UNCHANGED, False):
            return None
        return super().log_change(request, obj, message)

    def response_change(self, request: HttpRequest, obj: Any) -> HttpResponse:
        if not getattr(request, _UNCHANGED, False):
            return super().response_change(request, obj)
        self.message_user(request, _("No changes."), messages.INFO)
        if "_continue" in request.POST:
            return HttpResponseRedirect(request.path)
        return self.response_post_save_change(request, obj)

    def get_inlines(self, request: HttpRequest, obj: Any) -> list[Any]:
        # A connection being added has no trail yet.
        return list(self.inlines) if obj is not None else []

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    # --- columns and read-only fields ---------------------------------------------------------

    @admin.display(description=_("organization"), ordering="organization_id")
    def organization(self, obj: BillConnection) -> str:
        return format_html(
            '{}<br><span class="quiet">{}</span>', obj.organization_id, obj.environment
        )

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, obj: BillConnection) -> str:
        colour = BADGE_COLOURS.get(obj.status, "#6c757d")
        return format_html(
            '<span class="bill-status bill-status-{}" style="background:{};color:#fff;'
            'padding:2px 8px;border-radius:10px;font-size:11px;white-space:nowrap">{}</span>',
            obj.status,
            colour,
            obj.get_status_display(),
        )

    @admin.display(description=_("session"), ordering="session_last_used_at")
    def session(self, obj: BillConnection) -> str:
        """How long ago the session was last used and refreshed (exact times in the tooltip)."""
        moment = now()

        def ago(value: datetime | None) -> str:
            if value is None:
                return "—"
            return str(_("%(age)s ago") % {"age": timesince(value, moment, depth=1)})

        return format_html(
            '<span title="{}">{}<br>{}</span>',
            _("obtained %(obtained)s, last used %(used)s, last refreshed %(refreshed)s")
            % {
                "obtained": _when(obj.session_obtained_at),
                "used": _when(obj.session_last_used_at),
                "refreshed": _when(obj.last_refresh_at),
            },
            _("used %(ago)s") % {"ago": ago(obj.session_last_used_at)},
            _("refreshed %(ago)s") % {"ago": ago(obj.last_refresh_at)},
        )

    @admin.display(description=_("last error"))
    def last_error(self, obj: BillConnection) -> str:
        if not obj.last_error_code:
            return "—"
        text = customer_message(obj.last_error_code, obj.last_error_message)
        return format_html(
            '<span title="{}">{}</span>', text, Truncator(text).chars(ERROR_PREVIEW_CHARS)
        )

    def _stored(self, obj: BillConnection) -> dict[str, bool]:
        """Which secrets are stored, by ``IS NOT NULL`` in SQL: nothing is decrypted."""
        cached: dict[str, bool] | None = getattr(obj, "_bill_stored", None)
        if cached is None:
            flags = {
                f"{name}_is_stored": ExpressionWrapper(
                    Q(**{f"{name}__isnull": False}), output_field=BooleanField()
                )
                for name in STORED_SECRETS
            }
            row = BillConnection.objects.filter(pk=obj.pk).values(**flags).first() or {}
            cached = {name: bool(row.get(f"{name}_is_stored")) for name in STORED_SECRETS}
            obj._bill_stored = cached  # type: ignore[attr-defined]
        return cached

    def _state(self, obj: BillConnection, name: str) -> str:
        return str(_("stored") if self._stored(obj)[name] else _("not stored"))

    @admin.display(description=_("password"))
    def password_state(self, obj: BillConnection) -> str:
        return self._state(obj, "password")

    @admin.display(description=_("developer key"))
    def dev_key_state(self, obj: BillConnection) -> str:
        host = rules(obj.auth_method).uses_dev_key and bill_settings.host_developer_key(
            obj.environment
        )
        if host and not self._stored(obj)["dev_key"]:  # read from the settings at each login
            return str(_("the service's key (DEVELOPER_KEYS)"))
        return self._state(obj, "dev_key")

    @admin.display(description=_("Spend & Expense API token"))
    def api_token_state(self, obj: BillConnection) -> str:
        return self._state(obj, "api_token")

    @admin.display(description=_("credentials last set"))
    def credentials_set_at(self, obj: BillConnection) -> datetime | None:
        """When BILL last accepted a link or relink of this connection (its audit trail)."""
        return (
            AuditEvent.objects.filter(
                connection_id=obj.pk,
                kind__in=(AuditEvent.Kind.LINKED, AuditEvent.Kind.RELINKED),
            )
            .order_by("-created_at", "-id")
            .values_list("created_at", flat=True)
            .first()
        )

    # --- actions ------------------------------------------------------------------------------

    def _queue(self, request: HttpRequest, queryset: QuerySet[BillConnection], task: Any) -> int:
        """Queue ``task(connection_id)`` per row within the refresh throttles; report skips."""
        queued = skipped_tenant = skipped_user = 0
        user_throttle = UserRefreshCounter()
        for connection in queryset.select_related("tenant").order_by("pk"):
            tenant_throttle = TenantRefreshCounter(connection.tenant)
            if not tenant_throttle.allows(request):
                skipped_tenant += 1
                continue
            if not user_throttle.allows(request):
                skipped_user += 1
                continue
            tenant_throttle.count()
            user_throttle.count()
            tasks.enqueue(task, connection.pk)
            queued += 1
        rates = bill_settings.REFRESH_THROTTLE_RATES or {}
        if skipped_tenant:
            self.message_user(
                request,
                ngettext(
                    "%(count)d skipped: its tenant reached the refresh limit (%(rate)s).",
                    "%(count)d skipped: their tenants reached the refresh limit (%(rate)s).",
                    skipped_tenant,
                )
                % {"count": skipped_tenant, "rate": rates.get("tenant")},
                messages.WARNING,
            )
        if skipped_user:
            self.message_user(
                request,
                ngettext(
                    "%(count)d skipped: you reached your refresh limit (%(rate)s).",
                    "%(count)d skipped: you reached your refresh limit (%(rate)s).",
                    skipped_user,
                )
                % {"count": skipped_user, "rate": rates.get("user")},
                messages.WARNING,
            )
        return queued

    @admin.action(description=_("Refresh session now"), permissions=["change"])
    def refresh_now(self, request: HttpRequest, queryset: QuerySet[BillConnection]) -> None:
        queued = self._queue(request, queryset, tasks.force_refresh_session)
        if queued:
            self.message_user(
                request,
                ngettext(
                    "%(count)d queued: a worker logs in to BILL again; the session column "
                    "shows the outcome.",
                    "%(count)d queued: a worker logs in to BILL again for each; the session "
                    "column shows the outcomes.",
                    queued,
                )
                % {"count": queued},
                messages.SUCCESS,
            )

    @admin.action(description=_("Verify credentials with BILL"), permissions=["change"])
    def verify_credentials(self, request: HttpRequest, queryset: QuerySet[BillConnection]) -> None:
        queued = self._queue(request, queryset, tasks.verify_connection)
        if queued:
            self.message_user(
                request,
                ngettext(
                    "%(count)d queued: a worker checks the stored credentials with BILL and "
                    "logs the outcome.",
                    "%(count)d queued: a worker checks each connection's stored credentials "
                    "with BILL and logs the outcomes.",
                    queued,
                )
                % {"count": queued},
                messages.SUCCESS,
            )

    @admin.action(description=_("Unlink (log out and delete credentials)"), permissions=["change"])
    def unlink_selected(self, request: HttpRequest, queryset: QuerySet[BillConnection]) -> None:
        # At once: unlinking logs the session out, it never logs in.
        actor = request.user
        for connection in queryset.select_related("tenant"):
            try:
                services.unlink(connection.tenant, actor=actor)
            except BillIntegrationError as exc:
                self.message_user(
                    request,
                    f"{connection}: {customer_message(exc.code, exc.message)}",
                    messages.ERROR,
                )
            else:
                self.message_user(request, f"{connection}: {_('unlinked.')}", messages.SUCCESS)


# Only once the tenant model resolves: otherwise system check E003 names the setting, and this
# page (its tenant field and column) could not be built. Registering it anyway would crash
# every command in django.setup(), before the check could speak.
if tenant_model_installed():
    admin.site.register(BillConnection, BillConnectionAdmin)


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    # connection_id, not connection: showing the connection would load (decrypt) its row.
    list_display = ("created_at", "kind", "tenant_id", "connection_id", "actor", "detail")
    list_filter = ("kind",)
    search_fields = ("tenant_id",)
    date_hierarchy = "created_at"
    fields = ("created_at", "kind", "tenant_id", "connection_id", "actor", "detail")
    readonly_fields = fields
    list_select_related = ("actor",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
