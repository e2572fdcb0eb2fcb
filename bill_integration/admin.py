"""Django admin for BILL connections and their audit trail.

* The list never decrypts anything (``without_secrets()``) and shows status as a coloured badge.
* The form links through :func:`bill_integration.services.link`, so BILL checks every change
  before it is stored. Secret inputs are password widgets that never render a stored value;
  leaving one blank keeps the stored value.
* Actions call the services: refresh the session now, verify the credentials, unlink.
  Deleting a row directly is not offered (it would skip the BILL logout and the audit trail).
* Audit events are read-only, on their own page and inline on the connection.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from . import services, validators
from .conf import bill_settings
from .exceptions import BillIntegrationError, DecryptionFailed, customer_message
from .models import AuditEvent, BillConnection, ConnectionStatus

SECRET_INPUTS = ("password", "dev_key", "api_token")
UNDECRYPTABLE_MESSAGE = _(
    "The stored secrets cannot be decrypted; enter the password, developer key and API token "
    "again."
)

BADGE_COLOURS = {
    ConnectionStatus.ACTIVE: "#1e7e34",
    ConnectionStatus.DEGRADED: "#b8860b",
    ConnectionStatus.RATE_LIMITED: "#b8860b",
    ConnectionStatus.NEEDS_RELINK: "#b02a37",
    ConnectionStatus.DISABLED: "#6c757d",
}


def _secret_input(name: str, *, label: str) -> forms.CharField:
    return forms.CharField(
        label=label,
        required=False,
        strip=False,
        max_length=validators.MAX_LENGTHS[name],
        validators=[validators.no_control_characters],
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=validators.HELP_TEXTS[name],
    )


class BillConnectionForm(forms.ModelForm):
    """Link or relink through the service; BILL must accept the credentials before they are stored.

    On a change, a blank secret keeps the stored one (so an operator can fix a user name
    without retyping the password); ``clear_api_token`` removes the Spend & Expense token.
    """

    password = _secret_input("password", label=_("Password"))
    dev_key = _secret_input("dev_key", label=_("Developer key"))
    api_token = _secret_input("api_token", label=_("Spend & Expense API token"))
    clear_api_token = forms.BooleanField(label=_("Remove the stored API token"), required=False)
    environment = forms.ChoiceField(help_text=validators.HELP_TEXTS["environment"])

    class Meta:
        model = BillConnection
        fields = ("tenant", "environment", "api_version", "username", "organization_id")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.request: HttpRequest | None = kwargs.pop("request", None)
        super().__init__(*args, **kwargs)
        self.linked_connection: BillConnection | None = None
        self.fields["environment"].choices = [(n, n) for n in bill_settings.environment_names()]
        if not self.instance.pk:
            self.fields["environment"].initial = bill_settings.DEFAULT_ENVIRONMENT
            self.fields["password"].required = True
            self.fields["dev_key"].required = True
            self.fields.pop("clear_api_token")
        else:
            for name in SECRET_INPUTS:
                self.fields[name].help_text = _("Leave blank to keep the stored value.")
        if "username" in self.fields:
            self.fields["username"].validators.append(validators.username_validator)
            self.fields["username"].validators.append(validators.no_control_characters)
        if "organization_id" in self.fields:
            self.fields["organization_id"].validators.append(validators.organization_id_validator)

    def _post_clean(self) -> None:
        # After the model's own checks (one connection per tenant): only valid input reaches BILL.
        super()._post_clean()
        if not self.errors:
            self._link()

    @method_decorator(sensitive_variables("data", "stored", "api_token"))
    def _link(self) -> None:
        data = self.cleaned_data
        tenant = data.get("tenant") or self.instance.tenant
        # Decrypt only the stored secrets the operator left blank: after a key loss a full
        # relink (every secret typed again) must work without touching the unreadable ones.
        blank = [name for name in SECRET_INPUTS if not data.get(name)]
        if data.get("clear_api_token") and "api_token" in blank:
            blank.remove("api_token")
        stored: dict[str, Any] = {}
        if self.instance.pk and blank:
            try:
                stored = (
                    BillConnection.objects.filter(pk=self.instance.pk).values(*blank).first()
                    or {}
                )
            except DecryptionFailed:
                self.add_error(None, UNDECRYPTABLE_MESSAGE)
                return
        api_token = data.get("api_token") or stored.get("api_token")
        if data.get("clear_api_token"):
            api_token = None
        try:
            self.linked_connection = services.link(
                tenant,
                username=data["username"],
                password=data.get("password") or stored.get("password") or "",
                organization_id=data["organization_id"],
                dev_key=data.get("dev_key") or stored.get("dev_key") or "",
                api_token=api_token,
                environment=data["environment"],
                api_version=data["api_version"],
                actor=getattr(self.request, "user", None),
            )
        except BillIntegrationError as exc:
            self.add_error(None, customer_message(exc.code, exc.message))


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


@admin.register(BillConnection)
class BillConnectionAdmin(admin.ModelAdmin):
    form = BillConnectionForm
    list_display = (
        "tenant",
        "organization_id",
        "environment",
        "status_badge",
        "last_refresh_at",
        "last_error",
    )
    list_filter = ("status", "environment", "api_version")
    search_fields = ("organization_id", "username", "user_id")
    list_select_related = ("tenant",)
    ordering = ("-updated_at",)
    actions = ("refresh_now", "verify_credentials", "unlink_selected")
    inlines = (AuditEventInline,)
    readonly_fields = (
        "status_badge",
        "user_id",
        "session_obtained_at",
        "session_last_used_at",
        "last_refresh_at",
        "last_error",
        "consecutive_failures",
        "next_attempt_at",
        "version",
        "created_at",
        "updated_at",
    )

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        credentials = [
            "environment",
            "api_version",
            "username",
            "organization_id",
            "password",
            "dev_key",
            "api_token",
        ]
        if obj is None:
            return [(None, {"fields": ["tenant", *credentials]})]
        return [
            (None, {"fields": ["tenant", "status_badge", "last_error"]}),
            (
                _("Credentials (checked with BILL when you save)"),
                {"fields": [*credentials, "clear_api_token"]},
            ),
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
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        if obj is None:
            return ()
        return (*self.readonly_fields, "tenant")

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any):  # type: ignore[no-untyped-def]
        # Secret inputs are the form's own fields, never model fields: a model field would
        # be read from the instance (decrypting it) to fill the form's initial data.
        fields = kwargs.get("fields") or flatten_fieldsets(self.get_fieldsets(request, obj))
        kwargs["fields"] = [f for f in fields if f not in (*SECRET_INPUTS, "clear_api_token")]
        form_class = super().get_form(request, obj, change=change, **kwargs)

        class RequestForm(form_class):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, **inner: Any) -> None:
                super().__init__(*args, request=request, **inner)

        return RequestForm

    def get_queryset(self, request: HttpRequest) -> QuerySet[BillConnection]:
        # Never decrypt for a list or a form: secrets are deferred.
        return super().get_queryset(request).without_secrets()

    @method_decorator(sensitive_post_parameters(*SECRET_INPUTS))
    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        return super().changeform_view(request, *args, **kwargs)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        # The form already linked through the service; adopt what it stored.
        linked = form.linked_connection
        obj.pk = linked.pk
        obj.tenant_id = linked.tenant_id
        obj._state.adding = False

    def get_inlines(self, request: HttpRequest, obj: Any) -> list[Any]:
        # A connection being added has no trail yet.
        return list(self.inlines) if obj is not None else []

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

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

    @admin.display(description=_("last error"))
    def last_error(self, obj: BillConnection) -> str:
        if not obj.last_error_code:
            return "—"
        return customer_message(obj.last_error_code, obj.last_error_message)

    def _each(
        self, request: HttpRequest, queryset: QuerySet[BillConnection], action: Any, done: str
    ) -> None:
        for connection in queryset.select_related("tenant"):
            try:
                action(connection.tenant)
            except BillIntegrationError as exc:
                self.message_user(
                    request,
                    f"{connection}: {customer_message(exc.code, exc.message)}",
                    messages.ERROR,
                )
            else:
                self.message_user(request, f"{connection}: {done}", messages.SUCCESS)

    @admin.action(description=_("Refresh session now"), permissions=["change"])
    def refresh_now(self, request: HttpRequest, queryset: QuerySet[BillConnection]) -> None:
        self._each(
            request,
            queryset,
            lambda t: services.refresh(t, force=True),
            str(_("new session obtained.")),
        )

    @admin.action(description=_("Verify credentials with BILL"), permissions=["change"])
    def verify_credentials(self, request: HttpRequest, queryset: QuerySet[BillConnection]) -> None:
        self._each(request, queryset, services.verify, str(_("BILL accepts the stored credentials.")))

    @admin.action(description=_("Unlink (log out and delete credentials)"), permissions=["change"])
    def unlink_selected(self, request: HttpRequest, queryset: QuerySet[BillConnection]) -> None:
        actor = request.user
        self._each(
            request, queryset, lambda t: services.unlink(t, actor=actor), str(_("unlinked."))
        )


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
