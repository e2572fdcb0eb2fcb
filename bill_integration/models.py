"""Models: one :class:`BillConnection` per tenant, and an :class:`AuditEvent` trail.

Only ``bill_integration.services`` changes a connection. Secrets (password, dev_key,
api_token, session_id, mfa_remember_id) are :class:`~bill_integration.fields.EncryptedSecretField`: they can
never be filtered, ordered or searched, are saved one row at a time with
``save(update_fields=...)``, and never appear in ``repr()`` or ``str()``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from .auth_methods import AuthMethod
from .conf import get_tenant_model_string, now
from .fields import EncryptedSecretField, TenantOneToOneField

#: Fields that hold secrets. Views, admin and logs never show them.
SECRET_FIELDS = (
    "password",
    "dev_key",
    "api_token",
    "session_id",
    "mfa_remember_id",
    "console_token",
    "oauth_client_secret",
)
#: What a refresh may write.
SESSION_FIELDS = (
    "session_id",
    "user_id",
    "session_obtained_at",
    "session_last_used_at",
    "session_trusted",
    "session_expires_at",
)
#: BILL's MFA trust of this app's device (``services/trust.py`` writes them).
TRUST_FIELDS = (
    "mfa_remember_id",
    "mfa_device",
    "mfa_trusted_at",
    "mfa_trust_expires_at",
    "mfa_trust_notice",
    "mfa_trust_needed_at",
    "session_trusted",
)
#: What a failed refresh may write (status only, never credentials or the session).
STATUS_FIELDS = (
    "status",
    "last_error_code",
    "last_error_message",
    "consecutive_failures",
    "next_attempt_at",
    "last_refresh_at",
)


class ConnectionStatus(models.TextChoices):
    ACTIVE = "active", _("Active")
    DEGRADED = "degraded", _("Degraded (retrying)")
    RATE_LIMITED = "rate_limited", _("Rate limited (waiting)")
    NEEDS_RELINK = "needs_relink", _("Needs relink")
    DISABLED = "disabled", _("Disabled")


#: Statuses the sweep looks after (needs_relink and disabled wait for a person); the partial
#: index on ``next_due_at`` holds only these rows.
SWEPT_STATUSES = (ConnectionStatus.ACTIVE, ConnectionStatus.DEGRADED, ConnectionStatus.RATE_LIMITED)
#: What ``freshness.due_action`` reads: a write of any of them stores a new ``next_due_at``.
DUE_FIELDS = frozenset(
    {
        "status",
        "auth_method",
        "session_id",
        "session_expires_at",
        "session_obtained_at",
        "session_last_used_at",
        "next_attempt_at",
        "last_error_code",
        # The warmth decision's inputs, when saved (the hot path's visit note does not save
        # them: it only ever makes a row due later, and the sweep's re-check stores the rest).
        "usage_histogram",
    }
)


class ApiVersion(models.TextChoices):
    V3 = "v3", _("v3 (JSON)")
    V2 = "v2", _("v2 (form-encoded)")


class BillConnectionQuerySet(models.QuerySet["BillConnection"]):
    def without_secrets(self) -> BillConnectionQuerySet:
        """Defer every encrypted column: for lists and status pages (no decryption, no risk)."""
        return self.defer(*SECRET_FIELDS)


class BillConnection(models.Model):
    """A tenant's linked BILL account: its credentials, its current session, its health."""

    tenant = TenantOneToOneField(
        get_tenant_model_string(),  # BILL_INTEGRATION_TENANT_MODEL (migration 0001 reads it too)
        on_delete=models.CASCADE,
        related_name="bill_connection",
        verbose_name=_("tenant"),
    )
    environment = models.CharField(
        _("environment"),
        max_length=32,
        help_text=_("Which BILL environment these credentials belong to (sandbox or production)."),
    )
    api_version = models.CharField(
        _("API version"), max_length=2, choices=ApiVersion.choices, default=ApiVersion.V3
    )
    #: How the customer signs in to BILL (``auth_methods.METHODS``: fields and session rules).
    auth_method = models.CharField(
        _("sign-in method"),
        max_length=16,
        choices=AuthMethod.choices,
        default=AuthMethod.USER_PASSWORD,
    )
    username = models.CharField(
        _("user name"),
        max_length=254,
        blank=True,
        help_text=_("The email used to sign in to BILL (a sync token's name for sync tokens)."),
    )
    organization_id = models.CharField(
        _("organization ID"),
        max_length=40,
        blank=True,
        help_text=_("Starts with 008 (empty for a Spend & Expense-only connection)."),
    )
    password = EncryptedSecretField(_("password"))
    dev_key = EncryptedSecretField(_("developer key"))
    api_token = EncryptedSecretField(_("Spend & Expense API token"))
    #: Accountant Console API token (``consoleApiToken``), console_token connections only.
    console_token = EncryptedSecretField(_("Accountant Console API token"))
    #: OAuth client credentials of a BILL developer app (oauth_client connections only).
    oauth_client_id = models.CharField(_("OAuth client ID"), max_length=200, blank=True)
    oauth_client_secret = EncryptedSecretField(_("OAuth client secret"))
    #: The session: a BILL ``sessionId``, or an OAuth access token (``Bearer``).
    session_id = EncryptedSecretField(_("session ID"))
    #: When an OAuth access token runs out (``expires_in``); ``None`` for BILL sessions.
    session_expires_at = models.DateTimeField(_("session expires at"), null=True, blank=True)
    #: A hash of the developer key, so limits can be shared per key without decrypting it.
    dev_key_fingerprint = models.CharField(
        _("developer key fingerprint"), max_length=64, editable=False
    )
    user_id = models.CharField(_("BILL user ID"), max_length=40, blank=True)
    status = models.CharField(
        _("status"),
        max_length=16,
        choices=ConnectionStatus.choices,
        default=ConnectionStatus.ACTIVE,
    )
    session_obtained_at = models.DateTimeField(_("session obtained at"), null=True, blank=True)
    #: Not indexed: the hot path's use mark and every keep-alive write it, and an indexed
    #: column would make each of those writes a non-HOT update.
    session_last_used_at = models.DateTimeField(_("session last used at"), null=True, blank=True)
    last_refresh_at = models.DateTimeField(_("last refresh at"), null=True, blank=True)
    last_error_code = models.CharField(_("last error code"), max_length=64, blank=True)
    last_error_message = models.TextField(_("last error message"), blank=True)
    consecutive_failures = models.PositiveIntegerField(_("consecutive failures"), default=0)
    next_attempt_at = models.DateTimeField(_("next attempt at"), null=True, blank=True)
    #: When the sweep next has work here (``freshness.next_due_at``; ``None``: never until the
    #: row changes), written with every change of what decides it (``DUE_FIELDS``).
    next_due_at = models.DateTimeField(_("next due at"), null=True, blank=True, editable=False)
    version = models.PositiveBigIntegerField(
        _("version"), default=1, help_text=_("Incremented on every write that fences others.")
    )
    # --- BILL's MFA trust (services/trust.py): payments need an MFA-trusted session ----------
    #: v3 ``rememberMeId`` / v2 ``mfaId``: logins that send it (with the device) are trusted.
    mfa_remember_id = EncryptedSecretField(_("MFA remember-me ID"))
    mfa_device = models.CharField(
        _("MFA device name"),
        max_length=100,
        blank=True,
        help_text=_("The device name BILL's trust was given to (sent with the remember-me ID)."),
    )
    mfa_trusted_at = models.DateTimeField(_("trusted for payments since"), null=True, blank=True)
    mfa_trust_expires_at = models.DateTimeField(
        _("trusted for payments until"), null=True, blank=True, db_index=True
    )
    #: Which expiry notice was sent for the current trust: "", "expiring" or "expired".
    mfa_trust_notice = models.CharField(_("trust notice sent"), max_length=16, blank=True)
    #: When BILL last refused an operation for want of trust, while none was set up.
    mfa_trust_needed_at = models.DateTimeField(
        _("trust for payments needed since"), null=True, blank=True
    )
    session_trusted = models.BooleanField(
        _("session trusted for payments"),
        default=False,
        help_text=_("Whether BILL said the current session is MFA-trusted (login or step-up)."),
    )
    mfa_status = models.CharField(
        _("BILL MFA status"), max_length=32, blank=True, help_text=_("mfaStatus, last seen.")
    )
    mfa_bypass = models.BooleanField(
        _("BILL MFA bypass"), null=True, blank=True, help_text=_("mfaBypass, last seen.")
    )
    # The tenant's own use of BILL (services/warmth.py): whether to keep its session warm.
    usage_last_at = models.DateTimeField(
        _("last called BILL at"),
        null=True,
        blank=True,
        help_text=_("The last call the tenant itself made (keep-alives and logins aside)."),
    )
    usage_visits = models.PositiveIntegerField(_("visits"), default=0)
    usage_histogram = models.CharField(
        _("visits by hour of week"),
        max_length=448,
        blank=True,
        default="",
        help_text=_("168 hourly slots of decayed visit counts (base64)."),
    )
    # The app's clock (conf.now), like every session moment: warmth reads a connection's age.
    created_at = models.DateTimeField(_("created at"), default=now, editable=False)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    objects = BillConnectionQuerySet.as_manager()

    class Meta:
        verbose_name = _("BILL connection")
        verbose_name_plural = _("BILL connections")
        # Only what a query uses (every index is written by each non-HOT update):
        # the sweep's due selection (partial: swept rows only), bill_status's list by status,
        # per developer key counts, the MFA expiry notices (mfa_trust_expires_at's own index).
        # Plain Index rather than db_index on CharFields: no varchar_pattern_ops twin.
        indexes = [
            models.Index(
                fields=["next_due_at"],
                name="bill_conn_next_due",
                condition=models.Q(status__in=SWEPT_STATUSES),
            ),
            models.Index(fields=["status"], name="bill_conn_status"),
            models.Index(fields=["dev_key_fingerprint"], name="bill_conn_dev_key"),
        ]

    def __str__(self) -> str:
        return f"BILL {self.organization_id} ({self.environment})"

    def __repr__(self) -> str:
        # Never the secrets: only what the admin list shows.
        return (
            f"<BillConnection id={self.pk} tenant_id={self.tenant_id} "
            f"organization_id={self.organization_id!r} environment={self.environment!r} "
            f"status={self.status!r} version={self.version}>"
        )

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Save; a write of anything that decides when the sweep is due (``DUE_FIELDS``, or a
        whole-row save) stores ``next_due_at`` with it, in the same statement."""
        update_fields = kwargs.get("update_fields")
        if update_fields is None or DUE_FIELDS.intersection(update_fields):
            # The one rule lives with the other session rules (services import this module).
            from .services.freshness import next_due_at

            self.next_due_at = next_due_at(self, now())
            if update_fields is not None:
                kwargs["update_fields"] = list(dict.fromkeys([*update_fields, "next_due_at"]))
        super().save(*args, **kwargs)

    @property
    def has_api_token(self) -> bool:
        """Whether a Spend & Expense token is stored (without decrypting it)."""
        return "api_token" not in self.get_deferred_fields() and bool(self.api_token)


class AuditEvent(models.Model):
    """One thing that happened to a connection. ``detail`` never holds a secret."""

    class Kind(models.TextChoices):
        LINKED = "linked", _("Linked")
        RELINKED = "relinked", _("Relinked")
        LINK_FAILED = "link_failed", _("Link failed")
        UNLINKED = "unlinked", _("Unlinked")
        SESSION_REFRESHED = "session_refreshed", _("Session refreshed")
        MFA_TRUSTED = "mfa_trusted", _("Trusted for payments")
        MFA_STEPPED_UP = "mfa_stepped_up", _("Session stepped up to trusted")
        MFA_EXPIRING = "mfa_expiring", _("Trust for payments expiring")
        MFA_EXPIRED = "mfa_expired", _("Trust for payments expired")
        MFA_FORGOTTEN = "mfa_forgotten", _("Trust for payments forgotten")
        MFA_NEEDED = "mfa_needed", _("Trust for payments needed")
        MFA_FAILED = "mfa_failed", _("Trust for payments refused")
        KEPT_ALIVE = "kept_alive", _("Session kept alive")
        STATUS_CHANGED = "status_changed", _("Status changed")
        KEYS_ROTATED = "keys_rotated", _("Secrets re-encrypted")

    connection = models.ForeignKey(
        BillConnection,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="audit_events",
        verbose_name=_("connection"),
    )
    # Kept as a plain id so the trail outlives the connection (and the tenant).
    tenant_id = models.CharField(_("tenant ID"), max_length=64, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("actor"),
    )
    kind = models.CharField(_("kind"), max_length=32, choices=Kind.choices, db_index=True)
    detail = models.JSONField(_("detail"), default=dict, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = _("BILL audit event")
        verbose_name_plural = _("BILL audit events")
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} · tenant {self.tenant_id}"

    def __repr__(self) -> str:
        return f"<AuditEvent id={self.pk} kind={self.kind!r} tenant_id={self.tenant_id!r}>"


def describe(connection: BillConnection) -> dict[str, Any]:
    """The non-secret facts about a connection, for logs and audit details."""
    return {
        "connection_id": connection.pk,
        "tenant_id": str(connection.tenant_id),
        "organization_id": connection.organization_id,
        "environment": connection.environment,
        "api_version": connection.api_version,
        "status": connection.status,
    }


class LimiterEvent(models.Model):
    """One counted thing of the database limiters (``limits/``); with Redis, the login journal.

    ``kind`` is ``"login"`` (a login against a developer key's hourly budget, kept for an hour)
    or ``"slot"`` (an in-flight request to one organization, kept until released or its lease
    ends, so a crashed worker cannot hold a slot forever). ``key`` is a developer key
    *fingerprint* (never the key), plus the organization id for slots.
    """

    kind = models.CharField(_("kind"), max_length=16)
    key = models.CharField(_("key"), max_length=160)
    token = models.CharField(_("token"), max_length=64)
    at = models.DateTimeField(_("at"))
    expires_at = models.DateTimeField(_("expires at"))

    class Meta:
        verbose_name = _("BILL limiter event")
        verbose_name_plural = _("BILL limiter events")
        indexes = [models.Index(fields=["kind", "key", "expires_at"], name="bill_limiter_window")]

    def __repr__(self) -> str:
        return f"<LimiterEvent kind={self.kind!r} at={self.at!s}>"


class CallCount(models.Model):
    """Calls made to BILL with one developer key in one minute, by kind (``limits/counting.py``).

    One row per (fingerprint, minute, kind), upserted as calls are made; the database limiters'
    store (Redis keeps the same buckets as hashes). A rolling hour is the last 60 minutes' rows;
    rows older than a day are pruned. ``kind`` is one of ``limits.CALL_KINDS`` or ``deferred``
    (upkeep the share or the login pacing turned away: no call was made).
    """

    fingerprint = models.CharField(_("developer key fingerprint"), max_length=64)
    minute = models.DateTimeField(_("minute"))
    kind = models.CharField(_("kind"), max_length=16)
    count = models.BigIntegerField(_("count"), default=0)

    class Meta:
        verbose_name = _("BILL call count")
        verbose_name_plural = _("BILL call counts")
        constraints = [
            models.UniqueConstraint(
                fields=["fingerprint", "minute", "kind"], name="bill_call_count_bucket"
            )
        ]
        indexes = [models.Index(fields=["minute"], name="bill_call_count_minute")]

    def __repr__(self) -> str:
        return f"<CallCount minute={self.minute!s} kind={self.kind!r} count={self.count}>"


class DevKeyState(models.Model):
    """What the app knows about one developer key (by fingerprint): a BDC_1144 pause, and how
    often the login budget could not cover every due login (``bill_status`` shows both)."""

    fingerprint = models.CharField(_("developer key fingerprint"), max_length=64, unique=True)
    paused_until = models.DateTimeField(_("paused until"), null=True, blank=True)
    budget_shortfalls = models.PositiveBigIntegerField(_("login budget shortfalls"), default=0)
    last_shortfall_at = models.DateTimeField(_("last shortfall at"), null=True, blank=True)

    class Meta:
        verbose_name = _("BILL developer key state")
        verbose_name_plural = _("BILL developer key states")

    def __repr__(self) -> str:
        return f"<DevKeyState paused_until={self.paused_until!s}>"
