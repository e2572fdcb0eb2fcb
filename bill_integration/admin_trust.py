"""The admin's view of BILL's MFA trust (payments need it): a list filter and read-only fields.

Shows the trust's state, since when and until when, the device name, what BILL last said
(``mfaStatus``, ``mfaBypass``), and only whether a remember-me id is stored: never the id
(it is a secret, like the password). Nothing here decrypts a column.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from .conf import bill_settings, now
from .models import BillConnection
from .services import trust

#: The change page's "Trust for payments" fields (all read-only).
TRUST_READONLY = (
    "trust_state",
    "remember_me_state",
    "mfa_trusted_at",
    "mfa_trust_expires_at",
    "mfa_device",
    "session_trusted",
    "mfa_trust_needed_at",
    "mfa_status",
    "mfa_bypass",
)
TRUST_FIELDSET = (
    _("Trust for payments (BILL's MFA; the remember-me ID is never shown)"),
    {"fields": list(TRUST_READONLY)},
)

STATE_LABELS = {
    trust.NOT_SET_UP: _("not set up"),
    trust.NEEDED: _("needed"),
    trust.TRUSTED: _("trusted"),
    trust.EXPIRING: _("expiring"),
    trust.EXPIRED: _("expired"),
    trust.NOT_REQUIRED: _("not required"),
}


class TrustListFilter(admin.SimpleListFilter):
    """Trust for payments: expiring or expired first, as the sweep's notices see it."""

    title = _("trust for payments")
    parameter_name = "trust"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [
            ("expiring_or_expired", _("expiring or expired")),
            (trust.EXPIRING, _("expiring")),
            (trust.EXPIRED, _("expired")),
            (trust.TRUSTED, _("trusted")),
            (trust.NEEDED, _("needed")),
            (trust.NOT_SET_UP, _("not set up")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[BillConnection]) -> Any:
        at = now()
        soon = at + bill_settings.MFA_EXPIRY_WARNING
        over = Q(mfa_trust_expires_at__lte=at) | Q(mfa_trust_notice=trust.NOTICE_EXPIRED)
        expiring = Q(mfa_trust_expires_at__gt=at, mfa_trust_expires_at__lte=soon) & ~Q(
            mfa_trust_notice=trust.NOTICE_EXPIRED
        )
        conditions = {
            "expiring_or_expired": over | expiring,
            trust.EXPIRING: expiring,
            trust.EXPIRED: over,
            trust.TRUSTED: Q(mfa_trust_expires_at__gt=soon)
            & ~Q(mfa_trust_notice=trust.NOTICE_EXPIRED),
            trust.NEEDED: Q(mfa_trust_expires_at__isnull=True, mfa_trust_needed_at__isnull=False),
            trust.NOT_SET_UP: Q(
                mfa_trust_expires_at__isnull=True, mfa_trust_needed_at__isnull=True
            ),
        }
        condition = conditions.get(self.value() or "")
        return queryset.filter(condition) if condition is not None else queryset


class TrustAdminMixin:
    """Read-only displays of the trust for ``BillConnectionAdmin``."""

    @admin.display(description=_("trust for payments"))
    def trust_state(self, obj: BillConnection) -> str:
        facts = trust.describe_trust(obj)
        return format_html(
            '<strong class="bill-trust bill-trust-{}">{}</strong><br>{}',
            facts["state"],
            STATE_LABELS[facts["state"]],
            facts["message"],
        )

    @admin.display(description=_("remember-me ID"))
    def remember_me_state(self, obj: BillConnection) -> str:
        # IS NOT NULL in SQL: the id is never loaded, let alone shown.
        stored = BillConnection.objects.filter(pk=obj.pk, mfa_remember_id__isnull=False).exists()
        return str(_("stored") if stored else _("not stored"))
