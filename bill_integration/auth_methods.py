"""Every way BILL lets a customer sign in, and each way's session rules: ONE table.

``BillConnection.auth_method`` names a row of :data:`METHODS`. Everything that differs per
method is read from here: which fields the customer gives (and where each is stored), how long
BILL keeps an idle session, when the sweep keeps one alive, whether BILL's MFA trust applies,
what the cheap authenticated call is, and how a session is renewed.

==============  =====================================  ==============================================
method          what the customer gives                session
==============  =====================================  ==============================================
user_password   email, password, org ID, devKey        ``POST /v3/login``; 35 min idle; kept alive
sync_token      token name, sync token, org ID, devKey ``POST /v3/login`` (name as ``username``,
                                                       token as ``password``); 48 h idle; no MFA,
                                                       no payments
console_token   console email, console API token,      ``POST /v3/login`` with ``consoleApiToken``
                client org ID, devKey                  and no password; 35 min idle
spend_token     Spend & Expense API token              no login, no session: header ``apiToken``
oauth_client    client ID, client secret               ``POST /authx/token`` → ``Authorization:
                                                       Bearer``; renewed before ``expires_in`` ends
==============  =====================================  ==============================================

Choices where BILL is UNCONFIRMED (https://developer.bill.com/docs/token-based-sign-in, https://developer.bill.com/docs/oauth-client-credentials, https://developer.bill.com/docs/token-based-sign-in, https://developer.bill.com/docs/authentication-with-api-token),
each a value of the table below, easy to change:

* sync-token idle timeout: 48 hours of inactivity (the current page; older pages say "expires in
  48 hours" or "does not expire"); the sweep keeps it alive after 12 idle hours.
* console-token sessions: the normal 35-minute idle session, and MFA trust applies as for a
  user login (nothing documents otherwise).
* OAuth: form fields ``grant_type``/``client_id``/``client_secret``; answer ``access_token``,
  ``expires_in`` (seconds; 3600 assumed when missing); renewed :data:`OAUTH_RENEW_BEFORE`
  before it runs out; token host per environment ``ENVIRONMENTS[env]["oauth"]`` (sandbox
  ``https://auth.stage.bill.com``, production ``https://auth.prod.bill.com``: UNCONFIRMED); the
  cheap call is ``GET /v3/login/session`` with the Bearer token, which gives the organization.
* Spend & Expense: 60 calls a minute per API token (the counter's scope is not stated).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db import models
from django.utils.translation import gettext_lazy as _


class AuthMethod(models.TextChoices):
    USER_PASSWORD = "user_password", _("Email and password")
    SYNC_TOKEN = "sync_token", _("AP & AR sync token (app partners)")
    CONSOLE_TOKEN = "console_token", _("Accountant Console API token")
    SPEND_TOKEN = "spend_token", _("Spend & Expense API token only")
    OAUTH_CLIENT = "oauth_client", _("OAuth client credentials (developer app)")


#: Renewal kinds.
LOGIN, OAUTH_TOKEN, NONE = "login", "oauth_token", "none"
#: Cheap authenticated calls.
SESSION_INFO, SPEND_USER = "session_info", "spend_user"

#: An OAuth token is renewed this long before BILL's ``expires_in`` runs out.
OAUTH_RENEW_BEFORE = timedelta(minutes=5)
#: ``expires_in`` assumed when BILL's token answer has none (BILL says only "short-lived").
OAUTH_DEFAULT_LIFETIME = timedelta(hours=1)
#: Spend & Expense calls per minute (https://developer.bill.com/docs/spend-expense-api).
SPEND_CALLS_PER_MINUTE = 60


@dataclass(frozen=True)
class MethodRules:
    """How one sign-in method is linked and how its session is kept."""

    method: str
    #: API field -> model column, every one required (``dev_key`` may come from settings).
    fields: dict[str, str]
    #: Optional API fields -> model column.
    optional: dict[str, str]
    #: The secret columns this method stores (all others are cleared on link).
    secrets: tuple[str, ...]
    #: BILL's idle timeout of the session (``None``: no session to keep alive).
    idle_timeout: timedelta | None
    #: Keep the session alive once idle this long (``None``: the derived default cadence).
    keepalive_after: timedelta | None
    #: Whether BILL's MFA trust (remember-me id) applies to its logins.
    mfa_trust: bool
    #: The cheap authenticated call (verify, keep-alive): SESSION_INFO or SPEND_USER.
    probe: str
    #: How a session is renewed: LOGIN, OAUTH_TOKEN or NONE.
    renewal: str
    #: Whether its calls carry a developer key (and count against that key's limits).
    uses_dev_key: bool
    #: Whether it can pay bills (sync tokens and Spend-only tokens cannot).
    can_pay: bool


_LOGIN_FIELDS = {"organization_id": "organization_id", "dev_key": "dev_key"}

METHODS: dict[str, MethodRules] = {
    AuthMethod.USER_PASSWORD: MethodRules(
        method=AuthMethod.USER_PASSWORD,
        fields={"username": "username", "password": "password", **_LOGIN_FIELDS},
        optional={"api_token": "api_token"},
        secrets=("password", "dev_key", "api_token"),
        idle_timeout=timedelta(minutes=35),
        keepalive_after=None,
        mfa_trust=True,
        probe=SESSION_INFO,
        renewal=LOGIN,
        uses_dev_key=True,
        can_pay=True,
    ),
    AuthMethod.SYNC_TOKEN: MethodRules(
        method=AuthMethod.SYNC_TOKEN,
        fields={"token_name": "username", "sync_token": "password", **_LOGIN_FIELDS},
        optional={},
        secrets=("password", "dev_key"),
        idle_timeout=timedelta(hours=48),
        keepalive_after=timedelta(hours=12),
        mfa_trust=False,
        probe=SESSION_INFO,
        renewal=LOGIN,
        uses_dev_key=True,
        can_pay=False,
    ),
    AuthMethod.CONSOLE_TOKEN: MethodRules(
        method=AuthMethod.CONSOLE_TOKEN,
        fields={"username": "username", "console_token": "console_token", **_LOGIN_FIELDS},
        optional={},
        secrets=("console_token", "dev_key"),
        idle_timeout=timedelta(minutes=35),
        keepalive_after=None,
        mfa_trust=True,
        probe=SESSION_INFO,
        renewal=LOGIN,
        uses_dev_key=True,
        can_pay=True,
    ),
    AuthMethod.SPEND_TOKEN: MethodRules(
        method=AuthMethod.SPEND_TOKEN,
        fields={"api_token": "api_token"},
        optional={},
        secrets=("api_token",),
        idle_timeout=None,
        keepalive_after=None,
        mfa_trust=False,
        probe=SPEND_USER,
        renewal=NONE,
        uses_dev_key=False,
        can_pay=False,
    ),
    AuthMethod.OAUTH_CLIENT: MethodRules(
        method=AuthMethod.OAUTH_CLIENT,
        fields={"client_id": "oauth_client_id", "client_secret": "oauth_client_secret"},
        optional={},
        secrets=("oauth_client_secret",),
        idle_timeout=None,
        keepalive_after=None,
        mfa_trust=False,
        probe=SESSION_INFO,
        renewal=OAUTH_TOKEN,
        uses_dev_key=False,
        can_pay=True,
    ),
}

#: Every credential column some method stores (a link clears those its method does not use).
CREDENTIAL_SECRETS = ("password", "dev_key", "api_token", "console_token", "oauth_client_secret")


def rules(method: str | None) -> MethodRules:
    """The rules of ``method`` (the default method when empty)."""
    return METHODS[method or AuthMethod.USER_PASSWORD]


def api_fields(method: str) -> set[str]:
    """Every API field a link with ``method`` accepts."""
    entry = rules(method)
    return set(entry.fields) | set(entry.optional)


def all_api_fields() -> set[str]:
    """Every method-specific API field of every method."""
    return {name for method in METHODS for name in api_fields(method)}
