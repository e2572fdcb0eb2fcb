"""The admin's link form: BILL must accept the credentials before they are stored.

Secret inputs are write-only password widgets (never model fields, so never read from the
instance and never rendered); each is checked with the same validators as the REST API
(:func:`bill_integration.validators.credential_validators`) before BILL is asked. On a change a
blank secret keeps the stored one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest
from django.utils.decorators import method_decorator
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_variables

from . import services, validators
from .conf import bill_settings, get_tenant_model
from .exceptions import BillIntegrationError, DecryptionFailed, customer_message
from .models import BillConnection

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

#: The form's write-only secret inputs (never model fields, so never read from the instance).
SECRET_INPUTS = ("password", "dev_key", "api_token")
UNDECRYPTABLE_MESSAGE = _(
    "The stored secrets cannot be decrypted; enter the password, developer key and API token again."
)


def tenant_model_installed() -> bool:
    """Whether ``BILL_INTEGRATION_TENANT_MODEL`` names an installed model.

    When it does not (a misspelled name, the tenant app missing from ``INSTALLED_APPS``),
    system check ``bill_integration.E003`` says so. Until then no form may have a field for the
    tenant: Django raises "Cannot create form field for 'tenant' yet" as the admin is
    discovered, in ``django.setup()``, so every command, ``check`` included, would crash with
    a traceback before any check runs. (Read once the models are loaded: the admin imports
    this module while Django autodiscovers admin modules.)
    """
    try:
        get_tenant_model()
    except ImproperlyConfigured:
        return False
    return True


def _secret_input(name: str, *, label: StrOrPromise) -> forms.CharField:
    return forms.CharField(
        label=label,
        required=False,
        strip=False,
        max_length=validators.MAX_LENGTHS[name],
        validators=validators.credential_validators(name),
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=validators.HELP_TEXTS[name],
    )


class BillConnectionForm(forms.ModelForm):
    """Link or relink through the service; BILL must accept the credentials before they are stored.

    On a change, a blank secret keeps the stored one (so an operator can fix a user name
    without retyping the password); ``clear_api_token`` removes the Spend & Expense token.
    A change form submitted with nothing changed and no secret typed calls nothing
    (``unchanged``): every relink is a login from the developer key's shared hourly budget.
    """

    password = _secret_input("password", label=_("Password"))
    dev_key = _secret_input("dev_key", label=_("Developer key"))
    api_token = _secret_input("api_token", label=_("Spend & Expense API token"))
    clear_api_token = forms.BooleanField(label=_("Remove the stored API token"), required=False)
    environment = forms.ChoiceField(help_text=validators.HELP_TEXTS["environment"])

    class Meta:
        model = BillConnection
        # Without an installed tenant model (E003) the admin registers no connection page.
        fields = (
            *(("tenant",) if tenant_model_installed() else ()),
            "environment",
            "api_version",
            "username",
            "organization_id",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.request: HttpRequest | None = kwargs.pop("request", None)
        super().__init__(*args, **kwargs)
        self.linked_connection: BillConnection | None = None
        self.unchanged = False
        cast(forms.ChoiceField, self.fields["environment"]).choices = [
            (n, n) for n in bill_settings.environment_names()
        ]
        if not self.instance.pk:
            self.fields["environment"].initial = bill_settings.DEFAULT_ENVIRONMENT
            self.fields["password"].required = True
            self.fields["dev_key"].required = True
            self.fields.pop("clear_api_token")
        else:
            for name in SECRET_INPUTS:
                self.fields[name].help_text = _("Leave blank to keep the stored value.")
        if "username" in self.fields:
            self.fields["username"].validators.extend(validators.credential_validators("username"))
        if "organization_id" in self.fields:
            self.fields["organization_id"].validators.extend(
                validators.credential_validators("organization_id")
            )

    def _post_clean(self) -> None:
        # After the model's own checks (one connection per tenant): only valid input reaches BILL.
        super()._post_clean()  # type: ignore[misc]  # BaseModelForm's; its stubs omit it
        if self.errors:
            return
        # Every field of this form is a credential (tenant is read-only on a change), and a
        # typed secret always counts as a change: nothing changed means nothing to check.
        if self.instance.pk and not self.has_changed():
            self.unchanged = True
            return
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
                    BillConnection.objects.filter(pk=self.instance.pk).values(*blank).first() or {}
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
