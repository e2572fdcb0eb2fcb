"""The exceptions bill_integration raises, one family for everything a caller can act on.

Every message here is safe to log and to show: it may name a BILL error code, an HTTP status,
a connection id or a field, and never a password, developer key, API token or session id.
``code`` is a stable machine-readable string (the REST API returns it); ``bill_code`` is BILL's
own ``BDC_xxxx`` code when BILL gave one.

Taxonomy (DESIGN.md, "Connection lifecycle"):

============================  ====================================  ============================
BILL says                     exception                             what the app does
============================  ====================================  ============================
BDC_1101                      InvalidCredentials                    needs_relink
BDC_1102                      InvalidDevKey (an InvalidCredentials) needs_relink
BDC_1109, HTTP 401 on v3      SessionInvalid                        log in again once, replay
BDC_1144, BDC_1322            RateLimited                           back off, not broken
BDC_1361                      UntrustedSession                      report MFA needed, no loop
5xx, timeout, reset           TransientError                        retry with backoff
anything else                 UnexpectedResponse                    fail loudly, keep state
============================  ====================================  ============================
"""

from __future__ import annotations

from datetime import datetime

from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _


class BillIntegrationError(Exception):
    """Base class of every error bill_integration raises on purpose."""

    code: str = "bill_error"
    default_message = _("BILL integration error.")

    def __init__(self, message: str | None = None) -> None:
        self.message = str(message if message is not None else self.default_message)
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class ConfigurationError(BillIntegrationError, ImproperlyConfigured):
    """The project's settings are wrong; a system check usually says so first."""

    code = "configuration_error"


# --- errors that come from BILL ---------------------------------------------------------------


class BillAPIError(BillIntegrationError):
    """BILL answered with an error (or did not answer usefully)."""

    code = "bill_error"

    def __init__(
        self,
        message: str | None = None,
        *,
        bill_code: str | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.bill_code = bill_code
        self.http_status = http_status

    def __str__(self) -> str:
        parts = [self.message]
        if self.bill_code:
            parts.append(f"[{self.bill_code}]")
        if self.http_status:
            parts.append(f"(HTTP {self.http_status})")
        return " ".join(parts)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, bill_code={self.bill_code!r}, "
            f"http_status={self.http_status!r})"
        )


class InvalidCredentials(BillAPIError):
    """BILL refused the user name, password or organization (BDC_1101)."""

    code = "invalid_credentials"
    default_message = _("BILL did not accept the user name and password for this organization.")


class InvalidDevKey(InvalidCredentials):
    """BILL refused the developer key (BDC_1102)."""

    code = "invalid_dev_key"
    default_message = _("BILL did not accept the developer key.")


class InvalidApiToken(InvalidCredentials):
    """BILL Spend & Expense refused the API token (HTTP 401 on /v3/spend)."""

    code = "invalid_api_token"
    default_message = _("BILL Spend & Expense did not accept the API token.")


class SessionInvalid(BillAPIError):
    """The session is unknown, expired or logged out (BDC_1109): log in again."""

    code = "session_invalid"
    default_message = _("The BILL session has expired.")


class RateLimited(BillAPIError):
    """BILL (BDC_1144, BDC_1322) or our own budget says: wait, then try again.

    ``retry_at`` is when trying again makes sense, if known. ``scope`` is ``"hourly"`` (BDC_1144,
    pauses the developer key until the next hour), ``"concurrency"`` (BDC_1322) or
    ``"login_budget"`` (our own per-devKey login budget).
    """

    code = "rate_limited"
    default_message = _("BILL's request limit was reached; the app will try again later.")

    def __init__(
        self,
        message: str | None = None,
        *,
        bill_code: str | None = None,
        http_status: int | None = None,
        retry_at: datetime | None = None,
        scope: str = "hourly",
    ) -> None:
        super().__init__(message, bill_code=bill_code, http_status=http_status)
        self.retry_at = retry_at
        self.scope = scope


class UntrustedSession(BillAPIError):
    """BILL requires an MFA-trusted session for this operation (BDC_1361). Never re-login."""

    code = "mfa_required"
    default_message = _("BILL requires multi-factor authentication for this operation.")


class TransientError(BillAPIError):
    """BILL was unreachable, slow, or answered 5xx: retry with backoff."""

    code = "bill_unavailable"
    default_message = _("BILL is not reachable right now; the app will try again.")


class UnexpectedResponse(BillAPIError):
    """BILL answered something we do not understand; nothing stored is changed."""

    code = "bill_unexpected_response"
    default_message = _("BILL gave an unexpected answer.")


# --- errors of the app's own state --------------------------------------------------------------


class ConnectionNotLinked(BillIntegrationError):
    """The tenant has no BILL connection."""

    code = "not_linked"
    default_message = _("This account is not linked to BILL.")


class ConnectionNeedsRelink(BillIntegrationError):
    """BILL refused the stored credentials; a person must link the account again."""

    code = "needs_relink"
    default_message = _("BILL refused the stored credentials; link the BILL account again.")


class ConnectionDisabled(BillIntegrationError):
    """The connection was disabled by an operator."""

    code = "disabled"
    default_message = _("This BILL connection is disabled.")


class ConflictError(BillIntegrationError):
    """Another change to the same connection won; reload and try again."""

    code = "conflict"
    default_message = _("The BILL connection was changed at the same time; reload and try again.")


class SessionUnavailable(BillIntegrationError):
    """No session could be obtained in time (another worker's login did not finish)."""

    code = "session_unavailable"
    default_message = _("No BILL session is available right now; try again shortly.")


class DecryptionFailed(BillIntegrationError):
    """A stored secret could not be decrypted with any configured key (fail closed).

    Raised instead of returning ciphertext. Fix by restoring the old key to
    ``FIELD_ENCRYPTION_KEY`` (after the new one) or by linking the account again.
    """

    code = "decryption_failed"
    default_message = _(
        "A stored BILL secret cannot be decrypted with any key in FIELD_ENCRYPTION_KEY."
    )
