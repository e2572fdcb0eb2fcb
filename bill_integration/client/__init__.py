"""The BILL HTTP client: v3, v2 and Spend & Expense, with typed results and one error taxonomy.

Usage::

    from bill_integration.client import get_client, get_spend_client
    client = get_client("sandbox", "v3")
    result = client.login(username=..., password=..., organization_id=..., dev_key=...)
    client.session_info(session_id=result.session_id, dev_key=...)

Every method raises the exceptions of :mod:`bill_integration.exceptions` (see ``errors.py``
for the code table). Secrets go in headers (v3, Spend) or the form body (v2), never in a URL,
and never into exception text, ``repr()`` or the locals of Django error reports.

A ``CLIENT_CLASS`` is called as ``cls(base_url, api_version, connect_timeout=...,
read_timeout=...)`` (seconds, as floats); subclass :class:`BillClient` and override ``send()``
to add logging. Every call has a total deadline, ``CALL_DEADLINE`` (default ``CONNECT_TIMEOUT +
READ_TIMEOUT``), which :class:`HttpClient` reads itself: a slow or dripping answer raises
``TransientError`` when it passes, so a call never outlives its concurrency slot's lease
(``CONCURRENCY_LEASE``; the check in ``client/checks.py`` keeps the deadline shorter).

Choices where BILL's behaviour is UNCONFIRMED (BILL does not document it):

* v3 login failures: read by code (BDC_1101/1102), whatever the status (docs suggest 400).
* v3 rate limits: read by code (BDC_1144/1322), never by status (the emulator uses 429).
* HTTP 401 without a code: ``SessionInvalid`` on a v3 session call; ``UnexpectedResponse`` on
  ``/v3/login`` (a gateway hiccup must not make a tenant relink).
* BDC_1001 "System error occurred." is treated as transient (retry with backoff).
* ``RateLimited.retry_at``: start of the next UTC hour (app clock) for BDC_1144; ``None`` for
  BDC_1322 (a slot frees within seconds; the caller backs off).
* Spend & Expense: 401 and 403 → ``InvalidApiToken`` whatever BDC code the body carries (S&E
  has no session to renew); 400 (header missing: our bug) → ``UnexpectedResponse``.
* v2 ``apiEndPoint`` (the login answer names where later v2 calls should go,
  https://developersupport.bill.com/hc/en-us/articles/208197226-Login) is parsed into
  ``LoginResult.api_endpoint`` and not followed. Following another host would send the
  session id and developer key to a host named by a response (an exfiltration risk if the
  answer is forged or a proxy is compromised); following only the configured v2 host would
  change nothing but the path; and BILL's own example names the retired sandbox host
  ``api-sandbox.bill.com``, so the value for today's ``api-stage.bill.com`` logins is
  UNCONFIRMED. Every v2 call goes to the configured environment's v2 base URL.
* An answer larger than 10 MB (``HttpClient.max_response_bytes``) is ``UnexpectedResponse``:
  no documented answer comes near it; the connection is closed without reading the rest.
* MFA (``errors.py``: :func:`~.errors.on_code_check`, :func:`~.errors.on_text_message`): any
  unknown BILL code on a code check is ``MfaCodeRejected``; a BDC_1144 or bare 429 on a
  challenge is ``MfaTextLimited`` (a minute, the key is not paused); BDC_1358 lasts 10 minutes.
  v3 sends ``useBackup`` as a JSON boolean and the code as six digits; v2 sends ``123-456``.
  v2 has no phone list (``mfa_phones`` is ``None``) and no step-up (``MFAStatus.json``).
"""

from __future__ import annotations

from typing import Any

from django.views.decorators.debug import sensitive_variables

from ..exceptions import ConfigurationError
from . import cache
from .base import HttpClient
from .deadline import configured_timeouts
from .oauth import OAuthClient, OAuthToken
from .spend import SpendClient
from .types import LoginResult, MfaPhone, Organization, SessionInfo, SpendUser, StepUpResult
from .v2 import V2Api
from .v3 import V3Api

__all__ = [
    "BillClient",
    "LoginResult",
    "MfaPhone",
    "OAuthClient",
    "OAuthToken",
    "Organization",
    "SessionInfo",
    "SpendClient",
    "SpendUser",
    "StepUpResult",
    "get_client",
    "get_oauth_client",
    "get_spend_client",
]

API_VERSIONS: dict[str, Any] = {"v3": V3Api(), "v2": V2Api()}


class BillClient(HttpClient):
    """Log in, probe, log out and call BILL through one API version ("v3" or "v2").

    ``base_url`` is the environment's base for that version (``.../connect`` for v3,
    ``.../api/v2`` for v2). The default of ``BILL_INTEGRATION["CLIENT_CLASS"]``; a project may
    subclass it (override :meth:`send` to log or proxy) and name the subclass there.
    """

    def __init__(self, base_url: str, api_version: str = "v3", **options: Any) -> None:
        try:
            self.api = API_VERSIONS[api_version]
        except KeyError:
            raise ConfigurationError(
                f"Unknown BILL API version {api_version!r}; use one of {sorted(API_VERSIONS)}."
            ) from None
        self.api_version = api_version
        super().__init__(base_url, **options)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r}, api_version={self.api_version!r})"

    @sensitive_variables()
    def login(
        self,
        *,
        username: str,
        password: str,
        organization_id: str,
        dev_key: str,
        remember_me_id: str | None = None,
        device: str | None = None,
        console_token: str | None = None,
    ) -> LoginResult:
        """Open a new session (counts against BILL's 200 logins per hour per developer key).

        With an MFA remember-me id and its device (v3 ``rememberMeId``/``device``, v2
        ``mfaId``/``deviceId``) the session is MFA-trusted while the id holds. With
        ``console_token`` (v3 only) the login sends ``consoleApiToken`` and no password.
        """
        extra = {"console_token": console_token} if console_token else {}
        return self.api.login(
            self,
            username=username,
            password=password,
            organization_id=organization_id,
            dev_key=dev_key,
            remember_me_id=remember_me_id,
            device=device,
            **extra,
        )

    @sensitive_variables()
    def session_info(
        self, *, session_id: str, dev_key: str, bearer: str | None = None
    ) -> SessionInfo:
        """Cheap authenticated probe; a successful call also resets BILL's 35-minute idle timer.

        ``bearer``: an OAuth access token sent as ``Authorization: Bearer`` instead (v3).
        """
        extra = {"bearer": bearer} if bearer else {}
        return self.api.session_info(self, session_id=session_id, dev_key=dev_key, **extra)

    @sensitive_variables()
    def mfa_phones(self, *, session_id: str, dev_key: str) -> list[MfaPhone] | None:
        """The user's 2-step verification phones (last four digits); ``None`` on v2."""
        return self.api.mfa_phones(self, session_id=session_id, dev_key=dev_key)

    @sensitive_variables()
    def mfa_challenge(self, *, session_id: str, dev_key: str, use_backup: bool = False) -> str:
        """Have BILL text a 6-digit code to the primary (or backup) phone; the challenge id."""
        return self.api.mfa_challenge(
            self, session_id=session_id, dev_key=dev_key, use_backup=use_backup
        )

    @sensitive_variables()
    def mfa_validate(
        self,
        *,
        session_id: str,
        dev_key: str,
        challenge_id: str,
        code: str,
        device: str,
        machine_name: str,
    ) -> str:
        """Confirm the code with "remember me": the session is trusted; the remember-me id."""
        return self.api.mfa_validate(
            self,
            session_id=session_id,
            dev_key=dev_key,
            challenge_id=challenge_id,
            code=code,
            device=device,
            machine_name=machine_name,
        )

    @sensitive_variables()
    def mfa_step_up(
        self, *, session_id: str, dev_key: str, remember_me_id: str, device: str
    ) -> StepUpResult:
        """Trust the live session with a stored remember-me id (v3), or check the id (v2)."""
        return self.api.mfa_step_up(
            self,
            session_id=session_id,
            dev_key=dev_key,
            remember_me_id=remember_me_id,
            device=device,
        )

    @sensitive_variables()
    def list_organizations(
        self, *, username: str, password: str, dev_key: str
    ) -> list[Organization]:
        """The organizations these credentials open (v2 ``ListOrgs.json``; a v2 client only).

        Needs no session and no organization id; BILL counts it as a login.
        """
        if self.api_version != "v2":
            raise ConfigurationError("Organizations are listed with a v2 client (ListOrgs.json).")
        return self.api.list_orgs(self, username=username, password=password, dev_key=dev_key)

    @sensitive_variables()
    def logout(self, *, session_id: str, dev_key: str) -> None:
        """End the session at BILL immediately."""
        self.api.logout(self, session_id=session_id, dev_key=dev_key)

    @sensitive_variables()
    def request(
        self,
        method: str,
        path: str,
        *,
        session_id: str,
        dev_key: str,
        json: Any = None,
        data: Any = None,
        params: dict[str, Any] | None = None,
        bearer: str | None = None,
    ) -> Any:
        """Any authenticated call; returns parsed JSON (v3) or ``response_data`` (v2).

        ``path`` is relative to the base URL (``/v3/vendors``; ``/List/Vendor.json``). On v2 the
        payload (``data`` or ``json``) is sent as the JSON string form field ``data``.
        ``bearer``: an OAuth access token (v3), sent instead of ``devKey``/``sessionId``.
        """
        extra = {"bearer": bearer} if bearer else {}
        return self.api.request(
            self,
            method,
            path,
            session_id=session_id,
            dev_key=dev_key,
            json=json,
            data=data,
            params=params,
            **extra,
        )


def get_client(environment: str, api_version: str) -> BillClient:
    """This thread's pooled client for ``environment`` and ``api_version`` (``CLIENT_CLASS``)."""
    from ..conf import bill_settings

    client_class = bill_settings.CLIENT_CLASS
    base_url = bill_settings.base_url(environment, api_version)
    connect_timeout, read_timeout = configured_timeouts()
    return cache.cached(
        ("bill", client_class, base_url, api_version, connect_timeout, read_timeout),
        lambda: client_class(
            base_url, api_version, connect_timeout=connect_timeout, read_timeout=read_timeout
        ),
    )


def get_spend_client(environment: str) -> SpendClient:
    """This thread's pooled Spend & Expense client (it lives under the v3 base URL)."""
    from ..conf import bill_settings

    base_url = bill_settings.base_url(environment, "v3")
    connect_timeout, read_timeout = configured_timeouts()
    return cache.cached(
        ("spend", SpendClient, base_url, connect_timeout, read_timeout),
        lambda: SpendClient(base_url, connect_timeout=connect_timeout, read_timeout=read_timeout),
    )


#: BILL's OAuth token host per environment when ``ENVIRONMENTS[env]`` names no ``"oauth"`` URL.
#: Sandbox is BILL's OpenAPI ``servers`` entry; production is UNCONFIRMED (by analogy).
OAUTH_HOSTS = {"sandbox": "https://auth.stage.bill.com", "production": "https://auth.prod.bill.com"}


def get_oauth_client(environment: str) -> OAuthClient:
    """This thread's pooled client for BILL's OAuth token endpoint (``POST /authx/token``)."""
    from ..conf import bill_settings

    configured = bill_settings.ENVIRONMENTS.get(environment, {})
    base_url = (configured.get("oauth") or OAUTH_HOSTS.get(environment) or "").rstrip("/")
    if not base_url:
        raise ConfigurationError(
            f"BILL_INTEGRATION['ENVIRONMENTS'] has no 'oauth' URL for {environment!r}."
        )
    connect_timeout, read_timeout = configured_timeouts()
    return cache.cached(
        ("oauth", OAuthClient, base_url, connect_timeout, read_timeout),
        lambda: OAuthClient(base_url, connect_timeout=connect_timeout, read_timeout=read_timeout),
    )
