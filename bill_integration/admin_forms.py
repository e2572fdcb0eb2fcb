"""The admin's link form: every sign-in method; BILL must accept the credentials before they are stored.

The form asks "How does this tenant sign in to BILL?" (``auth_method``) and has an input for
every method's fields; ``admin_methods.js`` shows only the chosen method's. What it sends is
validated by the REST API's :class:`~bill_integration.api.serializers.LinkSerializer`, the one
place that knows which fields each method needs and what each may hold (the characters of each
credential, the organization ID's shape, the host's developer key): the admin and the API refuse
the same input with the same words, before BILL is asked. Values typed into another method's
(hidden) inputs are ignored, not refused.

Secret inputs are write-only password widgets (never model fields, so never read from the
instance and never rendered). On a change that keeps the method, a blank secret keeps the stored
one; a change of method needs the new method's secrets typed.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest
from django.utils.decorators import method_decorator
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_variables

from . import services, validators
from .auth_methods import METHODS, AuthMethod, api_fields, rules
from .conf import bill_settings, get_tenant_model
from .exceptions import BillIntegrationError, DecryptionFailed, customer_message
from .models import ApiVersion, BillConnection

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

#: The form's write-only secret inputs (never model fields, so never read from the instance).
SECRET_INPUTS = ("password", "sync_token", "console_token", "client_secret", "dev_key", "api_token")
#: Its plain credential inputs, in the order the form shows them.
PLAIN_INPUTS = ("username", "token_name", "client_id", "organization_id")
#: Every input the method decides about (the others, such as the environment, always apply).
CREDENTIAL_INPUTS: tuple[str, ...] = (
    *("username", "password", "token_name", "sync_token", "console_token"),
    *("client_id", "client_secret", "organization_id", "dev_key", "api_token"),
)
UNDECRYPTABLE_MESSAGE = _(
    "The stored secrets cannot be decrypted; enter every secret of the sign-in method again."
)
LABELS: dict[str, StrOrPromise] = {
    "username": _("User name (email)"),
    "password": _("Password"),
    "token_name": _("Sync token name"),
    "sync_token": _("Sync token"),
    "console_token": _("Accountant Console API token"),
    "client_id": _("Client ID"),
    "client_secret": _("Client secret"),
    "organization_id": _("Organization ID"),
    "dev_key": _("Developer key"),
    "api_token": _("Spend & Expense API token"),
}


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


def _input(name: str) -> forms.CharField:
    """An input with the API's length and help; its content is checked by the serializer."""
    secret = name in SECRET_INPUTS
    widget: forms.Widget = (
        forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})
        if secret
        else forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"})
    )
    field = forms.CharField(
        label=LABELS[name],
        required=False,
        strip=not secret,
        max_length=validators.MAX_LENGTHS[name],
        widget=widget,
        help_text=validators.HELP_TEXTS[name],
    )
    field.validators = []  # length, NUL and every other check: the serializer's, one source
    return field


def method_config() -> str:
    """What ``admin_methods.js`` needs, as JSON: each method's inputs, environments with a host key."""
    return json.dumps(
        {
            "methods": {str(m): sorted(api_fields(m)) for m in METHODS},
            "inputs": list(CREDENTIAL_INPUTS),
            "hostKeys": [
                name
                for name in bill_settings.environment_names()
                if bill_settings.host_developer_key(name)
            ],
            "tenantKeys": bool(bill_settings.ALLOW_TENANT_DEVELOPER_KEY),
        }
    )


class BillConnectionForm(forms.ModelForm):
    """Link or relink through the service; BILL must accept the credentials before they are stored.

    On a change, a blank secret keeps the stored one when the method stays the same (so an
    operator can fix a user name without retyping the password); ``clear_api_token`` removes
    the Spend & Expense token. A change form submitted with nothing changed and no secret typed
    calls nothing (``unchanged``): every relink is a login from the developer key's shared
    hourly budget.
    """

    auth_method = forms.ChoiceField(
        label=_("How does this tenant sign in to BILL?"),
        choices=AuthMethod.choices,
        initial=AuthMethod.USER_PASSWORD,
        help_text=_("Only the fields of the chosen method are used."),
    )
    environment = forms.ChoiceField(help_text=validators.HELP_TEXTS["environment"])
    api_version = forms.ChoiceField(
        choices=ApiVersion.choices,
        initial=ApiVersion.V3,
        required=False,  # v3 when left out, as in the API
        label=_("API version"),
        help_text=validators.HELP_TEXTS["api_version"],
    )
    username = _input("username")
    password = _input("password")
    token_name = _input("token_name")
    sync_token = _input("sync_token")
    console_token = _input("console_token")
    client_id = _input("client_id")
    client_secret = _input("client_secret")
    organization_id = _input("organization_id")
    dev_key = _input("dev_key")
    api_token = _input("api_token")
    clear_api_token = forms.BooleanField(label=_("Remove the stored API token"), required=False)

    class Meta:
        model = BillConnection
        # Without an installed tenant model (E003) the admin registers no connection page.
        # Every other input is the form's own: the service writes the row, not the form.
        fields = ("tenant",) if tenant_model_installed() else ()

    class Media:
        js = ("bill_integration/admin_methods.js",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.request: HttpRequest | None = kwargs.pop("request", None)
        super().__init__(*args, **kwargs)
        self.linked_connection: BillConnection | None = None
        self.unchanged = False
        environment = cast(forms.ChoiceField, self.fields["environment"])
        environment.choices = [(n, n) for n in bill_settings.environment_names()]
        method = self.fields["auth_method"]
        method.widget.attrs["data-bill-methods"] = method_config()
        instance = self.instance
        current = rules(instance.auth_method if instance.pk else None).method
        if self.is_bound and not self.data.get("auth_method"):
            # A form posted without the choice (a script written before there was one) keeps
            # the stored method, or the default.
            self.data = {**dict(self.data.items()), "auth_method": current}
        if not instance.pk:
            environment.initial = bill_settings.DEFAULT_ENVIRONMENT
            self.fields.pop("clear_api_token")
            return
        # The plain credentials are offered again (under the method's own names); never a secret.
        name_field = "token_name" if current == AuthMethod.SYNC_TOKEN else "username"
        self.initial.update(
            auth_method=current,
            environment=instance.environment,
            api_version=instance.api_version,
            organization_id=instance.organization_id,
            client_id=instance.oauth_client_id,
            **{name_field: instance.username},
        )
        for name in SECRET_INPUTS:
            self.fields[name].help_text = _("Leave blank to keep the stored value.")

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

    @method_decorator(sensitive_variables("data", "body", "stored", "link"))
    def _link(self) -> None:
        data = self.cleaned_data
        method = data["auth_method"]
        body = self._body(method)
        if body is None:
            return
        link = self._validated(body)
        if link is None:
            return
        try:
            self.linked_connection = services.link(
                data.get("tenant") or self.instance.tenant,
                actor=getattr(self.request, "user", None),
                **link,
            )
        except BillIntegrationError as exc:
            self.add_error(None, customer_message(exc.code, exc.message))

    @method_decorator(sensitive_variables("data", "body", "stored"))
    def _body(self, method: str) -> dict[str, Any] | None:
        """What the REST API would receive: the chosen method's fields, blank secrets filled in.

        Decrypts only the stored secrets the operator left blank, and only when the method is
        the stored one: after a key loss a full relink (every secret typed again) must work
        without touching the unreadable ones.
        """
        data = self.cleaned_data
        entry = rules(method)
        names = api_fields(method)
        body: dict[str, Any] = {
            "auth_method": method,
            "environment": data["environment"],
            "api_version": data.get("api_version") or ApiVersion.V3,
        }
        body.update({name: data[name] for name in names if data.get(name)})
        clear = bool(data.get("clear_api_token"))
        if clear:
            body.pop("api_token", None)
        same = bool(self.instance.pk) and rules(self.instance.auth_method).method == method
        columns = {**entry.fields, **entry.optional}
        blank = {
            name: columns[name]
            for name in sorted(names)
            if name in SECRET_INPUTS and name not in body and columns[name] in entry.secrets
        }
        if clear:
            blank.pop("api_token", None)
        if same and blank:
            try:
                query = BillConnection.objects.filter(pk=self.instance.pk)
                stored = query.values(*blank.values()).first() or {}
            except DecryptionFailed:
                self.add_error(None, UNDECRYPTABLE_MESSAGE)
                return None
            body.update({name: stored[column] for name, column in blank.items() if stored[column]})
        return body

    def _validated(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The REST API's checks of ``body``; ``services.link`` arguments, or ``None`` (errors added)."""
        from .api.serializers import LinkSerializer  # the API's module imports DRF's settings

        serializer = LinkSerializer(data=body)
        if serializer.is_valid():
            return serializer.link_arguments()
        for name, messages in serializer.errors.items():
            self.add_error(name if name in self.fields else None, [str(m) for m in messages])
        return None
