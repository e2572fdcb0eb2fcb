"""Which BILL answer means which exception: the one table to edit when BILL's codes change.

Both API versions share one code space (https://developer.bill.com/v2/docs/common-error-codes, https://developer.bill.com/v3/docs/common-api-error-codes), so one table serves v3, v2
and Spend & Expense. The rules, in order:

0. Spend & Expense: HTTP 401 or 403 is :class:`InvalidApiToken`, whatever code the body
   carries. S&E has no session (the ``apiToken`` header is its only credential), so even a
   ``BDC_1109`` "Session is invalid" there can only mean the token is refused; read as
   :class:`SessionInvalid` it used to surface as a 502 ``session_invalid`` when a customer
   typed a wrong token. UNCONFIRMED: BILL documents 401 for an invalid ``apiToken`` and 403
   for a refused "security validation" (https://developer.bill.com/docs/webhook-api-error-responses),
   but not the body; a rate limit answered as 401/403 would also read as a refused token.
0b. OAuth token endpoint (``POST /authx/token``): HTTP 400 or 401 is
   :class:`InvalidCredentials` (a wrong client id or secret, revoked app), whatever the body.
   UNCONFIRMED: BILL documents neither status nor body (RFC 6749 says 400/401 with
   ``{"error": "invalid_client"}``). An expired or refused Bearer token on a v3 call is a 401,
   so rule 3 makes it :class:`SessionInvalid` and the app fetches a new token.
1. A ``BDC_xxxx`` code listed in :data:`BILL_ERROR_CODES` decides, whatever the HTTP status
   (BILL's HTTP status for rate limits on v3 is UNCONFIRMED, so we never depend on it; the
   emulator happens to use 429).
2. Otherwise HTTP 5xx or 429 is :class:`TransientError` (a gateway or BILL outage).
3. Otherwise HTTP 401 on a v3 session call is :class:`SessionInvalid` (the OSS-observed
   answer for a dead session; https://developer.bill.com/v3/docs/common-api-error-codes). On ``/v3/login`` a 401 without a code is
   *not* treated as bad credentials: it is :class:`UnexpectedResponse`, so a gateway hiccup
   can never mark a tenant ``needs_relink``.
4. Everything else is :class:`UnexpectedResponse`: fail loudly, change nothing stored.

Timeouts, refused or reset connections are :class:`TransientError` (see ``base.py``).

Messages: BILL's own ``message``/``error_message`` is included (it never holds our secrets),
cut to a readable length; request bodies and headers never are.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ..exceptions import (
    BillAPIError,
    InvalidApiToken,
    InvalidCredentials,
    InvalidDevKey,
    MfaCodeRejected,
    MfaPhoneMissing,
    MfaTextLimited,
    MfaTooManyAttempts,
    RateLimited,
    SessionInvalid,
    TransientError,
    UnexpectedResponse,
    UntrustedSession,
)

#: BILL error code -> exception class. Edit here when BILL documents more codes.
BILL_ERROR_CODES: dict[str, type[BillAPIError]] = {
    "BDC_1001": TransientError,  # "System error occurred." — BILL's generic server error.
    "BDC_1101": InvalidCredentials,  # "User name and/or password do not match our records."
    "BDC_1102": InvalidDevKey,  # "Developer key is invalid."
    "BDC_1109": SessionInvalid,  # "Session is invalid.  Please log in."
    "BDC_1144": RateLimited,  # "Max number of allowed requests per hour reached: 20000."
    "BDC_1322": RateLimited,  # "Max number of concurrent requests per organization reached."
    "BDC_1361": UntrustedSession,  # "Untrusted session." (MFA needed; never log in again)
    "BDC_1354": MfaPhoneMissing,  # "Specified 2-Step Verification phone is not setup ..."
    "BDC_1356": MfaCodeRejected,  # an expired code (OSS notes only; UNCONFIRMED)
    "BDC_1374": MfaCodeRejected,  # "expired token" (OSS notes only; UNCONFIRMED)
    "BDC_1358": MfaTooManyAttempts,  # "2-Step Verification too many token response attempts."
}

#: HTTP statuses that always mean "the API token is refused" on Spend & Expense (rule 0).
SPEND_TOKEN_REFUSED = frozenset({401, 403})
#: OAuth token endpoint statuses that mean "wrong client credentials" (rule 0b; UNCONFIRMED).
OAUTH_CLIENT_REFUSED = frozenset({400, 401})

#: ``RateLimited.scope`` for each rate-limit code.
RATE_LIMIT_SCOPES: dict[str, str] = {"BDC_1144": "hourly", "BDC_1322": "concurrency"}

#: When to try again after an MFA refusal that BILL gives no time for (UNCONFIRMED: BILL does
#: not say how long BDC_1358 lasts; OSS notes advise waiting 5 to 10 minutes; the text-message
#: limit is "5 per minute").
MFA_RETRY_AFTER: dict[str, timedelta] = {
    "BDC_1358": timedelta(minutes=10),
    "texts": timedelta(minutes=1),
}

#: Longest piece of BILL's own message copied into an exception.
MAX_BILL_MESSAGE = 200


def start_of_next_hour(moment: datetime) -> datetime:
    """BDC_1144 lifts "at the beginning of the next hour" (https://developer.bill.com/docs/api-rate-limits)."""
    return moment.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


def _clock_now() -> datetime:
    # Imported late: the app clock reads Django settings, the client module must import without.
    from ..conf import now

    return now()


def _compose(cls: type[BillAPIError], bill_message: object) -> str:
    text = " ".join(str(bill_message or "").split())
    if len(text) > MAX_BILL_MESSAGE:
        text = text[: MAX_BILL_MESSAGE - 1] + "…"
    base = str(cls.default_message)
    return f"{base} BILL said: {text}" if text else base


def error_for_code(
    code: str, bill_message: object, *, http_status: int | None
) -> BillAPIError | None:
    """The exception for a BILL error code from the table, or ``None`` if the code is unlisted."""
    cls = BILL_ERROR_CODES.get(code)
    if cls is None:
        return None
    message = _compose(cls, bill_message)
    if cls is MfaTooManyAttempts:
        retry_at: datetime | None = _clock_now() + MFA_RETRY_AFTER[code]
        return MfaTooManyAttempts(
            message, bill_code=code, http_status=http_status, retry_at=retry_at
        )
    if cls is RateLimited:
        scope = RATE_LIMIT_SCOPES.get(code, "hourly")
        retry_at = start_of_next_hour(_clock_now()) if scope == "hourly" else None
        return RateLimited(
            message, bill_code=code, http_status=http_status, retry_at=retry_at, scope=scope
        )
    return cls(message, bill_code=code, http_status=http_status)


def error_for_answer(
    *,
    code: str | None,
    bill_message: object,
    http_status: int | None,
    session_call: bool,
    api: str,
) -> BillAPIError:
    """Apply the rules of this module's docstring to one error answer from BILL."""
    if api == "spend" and http_status in SPEND_TOKEN_REFUSED:
        # BILL's text is left out: a message about a refused token is where an echo of the
        # token would be most likely.
        return InvalidApiToken(bill_code=code, http_status=http_status)
    if api == "oauth" and http_status in OAUTH_CLIENT_REFUSED:
        return InvalidCredentials(bill_code=code, http_status=http_status)
    if code:
        known = error_for_code(code, bill_message, http_status=http_status)
        if known is not None:
            return known
    if http_status is not None and (http_status >= 500 or http_status == 429):
        return TransientError(
            _compose(TransientError, bill_message), bill_code=code, http_status=http_status
        )
    if http_status == 401 and api in ("v3", "oauth") and session_call:
        return SessionInvalid(
            _compose(SessionInvalid, bill_message), bill_code=code, http_status=http_status
        )
    return UnexpectedResponse(
        _compose(UnexpectedResponse, bill_message)
        if bill_message
        else f"{UnexpectedResponse.default_message} BILL returned error {code or 'without a code'}.",
        bill_code=code,
        http_status=http_status,
    )


def unexpected(
    what: str, *, http_status: int | None, bill_code: str | None = None
) -> UnexpectedResponse:
    """An :class:`UnexpectedResponse` describing what was wrong with BILL's answer (never its body)."""
    return UnexpectedResponse(
        f"{UnexpectedResponse.default_message} {what}", bill_code=bill_code, http_status=http_status
    )


def on_code_check(exc: BillAPIError) -> BillAPIError:
    """What a refusal of an MFA code check (v3 validate, v2 ``MFAAuthenticate``) means.

    BILL documents no code for a wrong code (UNCONFIRMED), so on that one call any error code
    the table does not know means "BILL did not accept the code": :class:`MfaCodeRejected`.
    """
    if isinstance(exc, UnexpectedResponse) and exc.bill_code:
        return MfaCodeRejected(
            f"{MfaCodeRejected.default_message} BILL answered {exc.bill_code}.",
            bill_code=exc.bill_code,
            http_status=exc.http_status,
        )
    return exc


def on_text_message(exc: BillAPIError) -> BillAPIError:
    """What a rate-limit answer to an MFA challenge (a text message) means.

    BILL sends at most 5 text messages a minute and documents no code for it (UNCONFIRMED):
    a BDC_1144 or a bare HTTP 429 on a challenge is that limit, :class:`MfaTextLimited`,
    retried after a minute. It does not pause the developer key for the hour (if it really
    was the hourly limit, the next ordinary call answers BDC_1144 and pauses it then).
    """
    hourly = type(exc) is RateLimited and exc.scope == "hourly"
    bare_429 = isinstance(exc, TransientError) and exc.http_status == 429
    if hourly or bare_429:
        return MfaTextLimited(
            str(MfaTextLimited.default_message),
            bill_code=exc.bill_code,
            http_status=exc.http_status,
            retry_at=_clock_now() + MFA_RETRY_AFTER["texts"],
        )
    return exc
