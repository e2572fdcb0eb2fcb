"""The OpenAPI shape of ``PUT /connection/``: one request serializer per sign-in method.

The view validates with :class:`~bill_integration.api.serializers.LinkSerializer` (every
method's fields, checked against ``auth_methods.METHODS``); the schema shows each method's own
request instead, as a ``oneOf`` told apart by ``auth_method`` (drf-spectacular's
``PolymorphicProxySerializer``). The serializers are built from the same table, so a method's
fields are written in one place. The default method's component keeps the name ``Link``.
"""

from __future__ import annotations

import copy
from typing import Any

from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import PolymorphicProxySerializer
from rest_framework import serializers

from ..auth_methods import METHODS, AuthMethod, rules
from .serializers import LinkSerializer

#: Fields every method's request has besides its credentials.
COMMON = ("environment", "api_version")


def _component(method: str) -> str:
    if method == AuthMethod.USER_PASSWORD:
        return "Link"  # the shape before sign-in methods; generated clients keep their name
    return "Link" + "".join(part.title() for part in str(method).split("_"))


def method_serializer(method: str) -> type[serializers.Serializer]:
    """A serializer with ``auth_method`` fixed to ``method`` and only that method's fields."""
    entry = rules(method)
    declared = LinkSerializer._declared_fields
    attrs: dict[str, Any] = {
        "auth_method": serializers.ChoiceField(
            choices=[(str(method), str(AuthMethod(method).label))],
            help_text=_("How you sign in to BILL: %(label)s.")
            % {"label": AuthMethod(method).label},
        )
    }
    for name in [*entry.fields, *entry.optional]:
        field = copy.deepcopy(declared[name])
        # A serializer instance deep-copies its fields from their arguments: set it there.
        field._kwargs = {**field._kwargs, "required": name in entry.fields}  # type: ignore[attr-defined]  # DRF keeps a field's arguments here; the stubs do not say so
        attrs[name] = copy.deepcopy(field)
    if method == AuthMethod.SYNC_TOKEN or method == AuthMethod.USER_PASSWORD:
        attrs["api_version"] = copy.deepcopy(declared["api_version"])
    attrs["environment"] = copy.deepcopy(declared["environment"])
    attrs["__init__"] = _environment_choices
    attrs["__doc__"] = f"``PUT /connection/`` with ``auth_method={method}``."
    return type(f"{_component(method)}Serializer", (serializers.Serializer,), attrs)


def _environment_choices(self: Any, *args: Any, **kwargs: Any) -> None:
    from ..conf import bill_settings

    serializers.Serializer.__init__(self, *args, **kwargs)
    self.fields["environment"].choices = bill_settings.environment_names()


#: The request body of ``PUT /connection/`` in the schema.
LINK_REQUEST = PolymorphicProxySerializer(
    component_name="LinkRequest",
    serializers={str(method): method_serializer(method) for method in METHODS},
    resource_type_field_name="auth_method",
)
