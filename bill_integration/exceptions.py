"""The exceptions bill_integration raises: each error defined once, here.

Every class carries everything the rest of the app needs to know about that error (as DRF's
``APIException`` carries ``status_code``, ``default_detail`` and ``default_code``):

* ``code``: a stable machine-readable string (the REST API's ``code``, the audit trail's and
  the status document's ``last_error.code``);
* ``api_status``: the HTTP status the REST API answers with;
* ``default_message``: the developer's sentence (exception text, logs; never a secret);
* ``customer_text``: what a person reads (the REST API, the Connect page, the admin), and
  what to do about it. ``%(hint)s`` and ``%(when)s`` are filled in by :meth:`for_customer`.

The REST API's list of error codes, its OpenAPI descriptions and the page texts are derived
from these classes (:func:`error_classes`, :func:`customer_message`), so a new error is one
new class in this file. ``bill_code`` is BILL's own ``BDC_xxxx`` code when BILL gave one; the
table from BILL's codes to these classes is ``client/errors.py``.

Every message here is safe to log and to show: it may name a BILL error code, an HTTP status,
a connection id or a field, and never a password, developer key, API token or session id.

============================  ====================================  ============================
BILL says                     exception                             what the app does
============================  ====================================  ============================
BDC_1101                      InvalidCredentials                    needs_relink
BDC_1102                      InvalidDevKey (an InvalidCredentials) needs_relink
BDC_1109, HTTP 401 on v3      SessionInvalid                        log in again once, replay
BDC_1144, BDC_1322            RateLimited                           back off, not broken
BDC_1361                      UntrustedSession                      step-up once, else trust needed
BDC_1354                      MfaPhoneMissing                       add a phone in BILL
BDC_1356, BDC_1374, others    MfaCodeRejected (validate only)       ask for a new code
BDC_1358                      MfaTooManyAttempts                    wait, then a new code
BDC_1144 on a text message    MfaTextLimited                        wait a minute
5xx, timeout, reset           TransientError                        retry with backoff
anything else                 UnexpectedResponse                    fail loudly, keep state
============================  ====================================  ============================
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from django.core.exceptions import ImproperlyConfigured
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

#: Added to the customer text of a refused login (BILL's FAQ gives this advice).
WRONG_ENVIRONMENT_HINT = _(
    "Are these sandbox credentials used against production, or the other way round? "
    "Sandbox and production accounts have different credentials."
)

#: code -> class, filled as classes are defined (the first class to claim a code keeps it).
_BY_CODE: dict[str, type[BillIntegrationError]] = {}


class BillIntegrationError(Exception):
    """Base class of every error bill_integration raises on purpose."""

    code: ClassVar[str] = "bill_error"
    api_status: ClassVar[int] = 502
    default_message: ClassVar[str | Promise] = _("BILL integration error.")
    customer_text: ClassVar[str | Promise | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            _BY_CODE.setdefault(cls.code, cls)

    def __init__(self, message: str | None = None) -> None:
        self.message = str(message if message is not None else self.default_message)
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    @classmethod
    def for_customer(cls, *, retry_after: int | None = None) -> str:
        """The sentence a person reads for this error (``retry_after`` in seconds, if known)."""
        template = cls.customer_text if cls.customer_text is not None else cls.default_message
        when = ""
        if retry_after:
            minutes = max(1, round(retry_after / 60))
            when = str(_(" in about %(minutes)d minutes")) % {"minutes": minutes}
        return str(template) % {"hint": WRONG_ENVIRONMENT_HINT, "when": when}


_BY_CODE[BillIntegrationError.code] = BillIntegrationError


class ConfigurationError(BillIntegrationError, ImproperlyConfigured):
    """The project's settings are wrong; a system check usually says so first."""

    code = "configuration_error"
    api_status = 500
    default_message = _("bill_integration is not configured correctly; see the system checks.")
    customer_text = _("The BILL integration is not set up correctly here; contact support.")


# --- errors that come from BILL ---------------------------------------------------------------


class BillAPIError(BillIntegrationError):
    """BILL answered with an error (or did not answer usefully)."""

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
    api_status = 400
    default_message = _("BILL did not accept the user name and password for this organization.")
    customer_text = _(
        "BILL did not accept this user name and password for this organization ID. "
        "Check all three. %(hint)s"
    )


class InvalidDevKey(InvalidCredentials):
    """BILL refused the developer key (BDC_1102)."""

    code = "invalid_dev_key"
    default_message = _("BILL did not accept the developer key.")
    customer_text = _("BILL did not accept the developer key. Check it. %(hint)s")


class InvalidApiToken(InvalidCredentials):
    """BILL Spend & Expense refused the API token (any refusal of /v3/spend's token check)."""

    code = "invalid_api_token"
    default_message = _("BILL Spend & Expense did not accept the API token.")
    customer_text = _(
        "BILL Spend & Expense did not accept the API token. Generate a new one in BILL "
        "Spend & Expense (Settings → API tokens), or leave the field empty."
    )


class SessionInvalid(BillAPIError):
    """The session is unknown, expired or logged out (BDC_1109): log in again."""

    code = "session_invalid"
    default_message = _("The BILL session has expired.")
    customer_text = _("The BILL session ended; the app logs in again on its own.")


class RateLimited(BillAPIError):
    """BILL (BDC_1144, BDC_1322) or our own limits say: wait, then try again.

    ``retry_at`` is when trying again makes sense, if known. ``scope`` is ``"hourly"`` (BDC_1144,
    pauses the developer key until the next hour), ``"concurrency"`` (BDC_1322, or our own
    slots stayed busy), or a subclass's ``default_scope`` (our own limits).
    """

    code = "rate_limited"
    api_status = 429
    default_scope: ClassVar[str] = "hourly"
    default_message = _("BILL's request limit was reached; the app will try again later.")
    customer_text = _(
        "BILL's request limit for this developer key was reached. Wait, then try again%(when)s."
    )

    def __init__(
        self,
        message: str | None = None,
        *,
        bill_code: str | None = None,
        http_status: int | None = None,
        retry_at: datetime | None = None,
        scope: str | None = None,
    ) -> None:
        super().__init__(message, bill_code=bill_code, http_status=http_status)
        self.retry_at = retry_at
        self.scope = scope or self.default_scope

    @property
    def from_bill(self) -> bool:
        """Whether BILL itself answered this (the app's own limits carry no HTTP status)."""
        return self.http_status is not None


class LoginBudgetExhausted(RateLimited):
    """The developer key's login budget for this hour is spent (the app's own limit).

    Also the ``last_error_code`` of a session whose ``MAX_SESSION_AGE`` renewal waits for the
    budget while the session itself stays in use.
    """

    code = "login_budget_exhausted"
    default_scope = "login_budget"
    default_message = _("The developer key's login budget for this hour is spent.")
    customer_text = _(
        "Too many BILL sign-ins were made with this developer key in the last hour. "
        "The app tries again on its own%(when)s; nothing is wrong with your account."
    )


class UpkeepShareExhausted(RateLimited):
    """No room to keep sessions warm now (UPKEEP_SHARE, login pacing): the sweep skips it."""

    code = "upkeep_share_exhausted"
    default_scope = "upkeep"
    default_message = _("Keeping sessions warm used its share of BILL's hourly calls.")
    customer_text = _("The app signs in to BILL again when you next use it; nothing is wrong.")


class UntrustedSession(BillAPIError):
    """BILL requires an MFA-trusted session for this operation (BDC_1361). Never re-login."""

    code = "mfa_required"
    api_status = 409
    default_message = _(
        "BILL requires an MFA-trusted session for this operation (payments, bank accounts, "
        "vendor invites, autopay); establish trust with services.mfa first."
    )
    customer_text = _(
        "BILL asks you to confirm this app before it pays bills. On the BILL connection page, "
        "choose “Trust this app for payments” and enter the code BILL texts to your "
        "phone."
    )


class MfaTrustExpired(UntrustedSession):
    """BILL no longer trusts this app's device (the 30 days ran out, or step-up said false)."""

    code = "mfa_trust_expired"
    default_message = _("BILL's MFA trust for this connection expired; establish it again.")
    customer_text = _(
        "Trust for payments expired (BILL trusts this app for 30 days at a time). On the BILL "
        "connection page, choose “Trust this app for payments” and enter the new code "
        "BILL texts to your phone."
    )


class MfaPhoneMissing(BillAPIError):
    """The BILL user has no phone set up for 2-step verification (BDC_1354)."""

    code = "mfa_no_phone"
    api_status = 409
    default_message = _("The BILL user has no phone for 2-step verification (BDC_1354).")
    customer_text = _(
        "Your BILL user has no phone for 2-step verification. Sign in to BILL, add a mobile "
        "phone in your profile's security settings (2-step verification), then try again."
    )


class MfaCodeRejected(BillAPIError):
    """BILL did not accept the code: wrong, expired, or its challenge is used up."""

    code = "mfa_code_invalid"
    api_status = 400
    default_message = _("BILL did not accept the MFA code.")
    customer_text = _(
        "BILL did not accept this code: it is wrong or has expired (codes last a few minutes). "
        "Enter the 6 digits of the latest text message, or ask for a new code."
    )


class MfaTooManyAttempts(RateLimited):
    """Too many wrong codes (BDC_1358): BILL refuses more for a while."""

    code = "mfa_too_many_attempts"
    default_message = _("Too many wrong MFA codes; BILL refuses more for a while (BDC_1358).")
    customer_text = _(
        "Too many wrong codes, so BILL refuses more for a while. Ask for a new code%(when)s."
    )

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("scope", "mfa_attempts")
        super().__init__(message, **kwargs)


class MfaTextLimited(RateLimited):
    """Too many text messages a minute (BILL allows 5; the app stops earlier)."""

    code = "mfa_text_limited"
    default_message = _("Too many MFA text messages were asked for in the last minute.")
    customer_text = _("Too many codes were texted in the last minute. Ask for a new code%(when)s.")

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("scope", "mfa_texts")
        super().__init__(message, **kwargs)


class TransientError(BillAPIError):
    """BILL was unreachable, slow, or answered 5xx: retry with backoff."""

    code = "bill_unavailable"
    api_status = 503
    default_message = _("BILL is not reachable right now; the app will try again.")
    customer_text = _(
        "BILL is not reachable right now. Nothing was changed; try again in a few minutes."
    )


class CallDeadlineExceeded(TransientError):
    """BILL did not finish answering within ``CALL_DEADLINE``; the app closed the connection.

    BILL may still count the request as running for a moment: the organization's
    concurrency slot is held a little longer before it is given back (see ``limits``).
    """

    code = "bill_too_slow"
    default_message = _("BILL did not finish answering in time; the app will try again.")
    customer_text = _(
        "BILL is answering too slowly right now. Nothing was changed; the app tries again on "
        "its own."
    )


class LimiterUnavailable(TransientError):
    """The store that shares BILL's limits across workers (Redis) cannot be reached.

    A :class:`TransientError`: connections back off and retry as during a BILL outage, but
    the words say whose fault it is.
    """

    code = "limiter_unavailable"
    default_message = _("The shared store of BILL's limits (Redis) cannot be reached.")
    customer_text = _(
        "The app cannot reach BILL right now because of a problem on our side. Nothing was "
        "changed; it retries on its own."
    )


class UnexpectedResponse(BillAPIError):
    """BILL answered something we do not understand; nothing stored is changed."""

    code = "bill_unexpected_response"
    default_message = _("BILL gave an unexpected answer.")
    customer_text = _(
        "BILL gave an answer the app does not understand. Nothing was changed; if this "
        "persists, contact support."
    )


# --- errors of the app's own state --------------------------------------------------------------


class ConnectionNotLinked(BillIntegrationError):
    """The tenant has no BILL connection."""

    code = "not_linked"
    api_status = 404
    default_message = _("This account is not linked to BILL.")
    customer_text = _("No BILL account is linked yet.")


class ConnectionNeedsRelink(BillIntegrationError):
    """BILL refused the stored credentials; a person must link the account again."""

    code = "needs_relink"
    api_status = 409
    default_message = _("BILL refused the stored credentials; link the BILL account again.")
    customer_text = _(
        "BILL refused the stored credentials. Enter them again (they may have changed) to "
        "link the account again."
    )


class ConnectionDisabled(BillIntegrationError):
    """The connection was disabled by an operator."""

    code = "disabled"
    api_status = 409
    default_message = _("This BILL connection is disabled.")
    customer_text = _("This BILL connection is disabled by an operator.")


class ConflictError(BillIntegrationError):
    """Another change to the same connection won; reload and try again."""

    code = "conflict"
    api_status = 409
    default_message = _("The BILL connection was changed at the same time; reload and try again.")
    customer_text = _(
        "Someone changed this BILL connection at the same time. Reload the page and try again."
    )


class SessionUnavailable(BillIntegrationError):
    """No session could be obtained in time (another worker's login did not finish)."""

    code = "session_unavailable"
    api_status = 503
    default_message = _("No BILL session is available right now; try again shortly.")


class DecryptionFailed(BillIntegrationError):
    """A stored secret could not be decrypted with any configured key (fail closed).

    Raised instead of returning ciphertext. Fix by restoring the old key to
    ``FIELD_ENCRYPTION_KEY`` (after the new one) or by linking the account again.
    """

    code = "decryption_failed"
    api_status = 409
    default_message = _(
        "A stored BILL secret cannot be decrypted with any key in FIELD_ENCRYPTION_KEY."
    )
    customer_text = _(
        "The stored BILL credentials cannot be read (the encryption key changed). Link the "
        "account again."
    )
    #: What an operator reads (admin, ``bill_status``, the connection's last error).
    operator_text = _(
        "A stored BILL secret of this connection cannot be decrypted with any key in "
        "FIELD_ENCRYPTION_KEY. Put the key it was encrypted with back in the list (after the "
        "current one), or link the BILL account again."
    )


# --- derived views of the classes above ---------------------------------------------------------


def error_classes() -> list[type[BillIntegrationError]]:
    """Every error class with a code of its own, in definition order (one per code)."""
    return list(_BY_CODE.values())


def error_class_for(code: str) -> type[BillIntegrationError] | None:
    """The class whose ``code`` (or whose BILL ``BDC_xxxx`` code) is ``code``, if any."""
    cls = _BY_CODE.get(code)
    if cls is None and code.startswith("BDC_"):
        from .client.errors import BILL_ERROR_CODES  # the one table of BILL's codes

        cls = BILL_ERROR_CODES.get(code)
    return cls


def customer_message(code: str, default: str = "", *, retry_after: int | None = None) -> str:
    """The sentence a person reads for ``code`` (ours or BILL's), or ``default`` if unknown."""
    cls = error_class_for(code) if code else None
    if cls is None:
        return str(default)
    return cls.for_customer(retry_after=retry_after)
