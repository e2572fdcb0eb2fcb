"""Model fields: hardened encrypted text, and the tenant link that migrations never hard-code.

Encrypted secrets
-----------------
:class:`EncryptedSecretField` stores exactly what django-encrypted-model-fields stores (a Fernet
token as text, keys from ``FIELD_ENCRYPTION_KEY``, a list meaning "first key encrypts, all keys
decrypt", via that library's own ``get_crypter()``), so rows are interchangeable with its fields.
It differs where the library is unsafe:

* **fail closed**: a value that no configured key decrypts raises :class:`DecryptionFailed`;
  the library returns the ciphertext as if it were the secret, which then gets re-saved
  (double-encrypted) or sent to BILL;
* **no import-time key**: the library builds its crypter when imported, which breaks
  ``override_settings``, ``makemigrations`` in a fresh shell and the system check that should
  report a missing key. We build it on first use and rebuild it when the setting changes;
* **no expressions**: ``bulk_update()`` and ``QuerySet.update(F(...))`` hand the field an SQL
  expression, which the library encrypts as text. We refuse with a ``TypeError`` instead.

Secret values are plain ``str`` in memory, so a model's ``repr()`` must not print them: see
``BillConnection.__repr__``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from cryptography.fernet import InvalidToken, MultiFernet
from django.conf import settings
from django.core.signals import setting_changed
from django.db import models
from django.db.models.fields.related import OneToOneField

from .exceptions import DecryptionFailed


@functools.lru_cache(maxsize=1)
def _crypter_for(keys: tuple[str, ...] | str) -> MultiFernet:
    # Imported here, not at module level: importing encrypted_model_fields.fields builds its own
    # crypter from settings at import time and raises when the key is missing.
    from encrypted_model_fields.fields import get_crypter

    return get_crypter()


def get_crypter() -> MultiFernet:
    """The ``MultiFernet`` for the current ``FIELD_ENCRYPTION_KEY`` (raises ImproperlyConfigured)."""
    configured = getattr(settings, "FIELD_ENCRYPTION_KEY", None)
    cache_key = tuple(configured) if isinstance(configured, (list, tuple)) else configured
    if cache_key is None:
        from encrypted_model_fields.fields import get_crypter as library_get_crypter  # raises

        return library_get_crypter()
    return _crypter_for(cache_key)


def _forget_crypter(*, setting: str, **kwargs: Any) -> None:
    if setting == "FIELD_ENCRYPTION_KEY":
        _crypter_for.cache_clear()


setting_changed.connect(_forget_crypter)


def encrypt(plaintext: str) -> str:
    """Encrypt with the first configured key; the result is the stored text."""
    return get_crypter().encrypt(plaintext.encode("utf-8")).decode("ascii")


def decrypt(token: str) -> str:
    """Decrypt with any configured key, or raise :class:`DecryptionFailed`."""
    try:
        return get_crypter().decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError, ValueError) as exc:
        raise DecryptionFailed() from exc


class EncryptedSecretField(models.TextField):
    """A text secret, encrypted at rest, that fails closed. ``""`` is stored as NULL."""

    description = "Encrypted secret (Fernet, fails closed)"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("null", True)
        kwargs.setdefault("blank", True)
        kwargs.setdefault("editable", True)
        super().__init__(*args, **kwargs)

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> str | None:
        if value is None:
            return None
        try:
            return decrypt(value)
        except DecryptionFailed as exc:
            # Name the field (never the value) so the operator knows what failed.
            raise DecryptionFailed(
                f"{exc.message} (field {self.model.__name__}.{self.name})"
            ) from exc.__cause__

    def to_python(self, value: Any) -> Any:
        # Form and serializer input is plaintext; only from_db_value ever sees ciphertext.
        return value

    def get_prep_value(self, value: Any) -> Any:
        if hasattr(value, "resolve_expression"):
            raise TypeError(
                f"{self.model.__name__}.{self.name} is encrypted; set it on an instance and "
                "save(update_fields=...), never through update(), bulk_update() or F()."
            )
        return value

    def get_db_prep_save(self, value: Any, connection: Any) -> Any:
        value = self.get_prep_value(value)
        if value is None or value == "":
            return None
        return encrypt(str(value))

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        # Lookups on ciphertext never match (Fernet is randomised): only isnull makes sense.
        return value


class TenantOneToOneField(OneToOneField):
    """A one-to-one link to ``BILL_INTEGRATION_TENANT_MODEL`` that deconstructs to the setting.

    Django writes ``settings.X`` into migrations only for swappable models; for any other
    setting it writes the literal model label, which would make every project with another
    tenant model see a phantom migration (dj-stripe #264, #481). Deconstructing to a
    ``SettingsReference`` keeps ``makemigrations --check`` clean everywhere.
    """

    def deconstruct(self) -> tuple[str, str, Sequence[Any], dict[str, Any]]:
        from django.conf import SettingsReference

        from .conf import TENANT_MODEL_SETTING, get_tenant_model_string

        name, path, args, kwargs = super().deconstruct()
        kwargs["to"] = SettingsReference(get_tenant_model_string(), TENANT_MODEL_SETTING)
        return name, path, args, kwargs
