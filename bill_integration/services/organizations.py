"""Which BILL organizations some credentials may open, before any of them is linked.

A customer who signs in with an email and password (or a sync token) often does not know the
organization ID BILL's login needs. :func:`list_organizations` asks BILL with the credentials
of *this request only* (v2 ``ListOrgs.json``: no session and no organization ID needed,
https://developer.bill.com/docs/api-rate-limits), so the list never shows another tenant's organizations.

BILL counts ``ListOrgs.json`` as a login (200 an hour per developer key): it is taken from the
login budget as the tenant's *attempt* (:func:`gateway.list_organizations`). Nothing is stored.
v3's ``GET /v3/login/organizations`` needs a session, hence an organization ID: it cannot help
here.
"""

from __future__ import annotations

import time
from typing import Any

from django.views.decorators.debug import sensitive_variables

from ..auth_methods import AuthMethod
from ..client.types import Organization
from ..conf import bill_settings
from ..exceptions import BillIntegrationError, ConfigurationError
from ..log_redaction import register_secret
from . import gateway
from .common import dev_key_fingerprint, log_failure, log_outcome

#: Sign-in methods whose credentials BILL's organization listing accepts (a user name and a
#: password: an email and password, or a sync token's name and value).
LISTABLE_METHODS = (AuthMethod.USER_PASSWORD, AuthMethod.SYNC_TOKEN)


@sensitive_variables("password", "dev_key", "account")
def list_organizations(
    tenant: Any,
    *,
    auth_method: str = AuthMethod.USER_PASSWORD,
    username: str,
    password: str,
    dev_key: str = "",
    environment: str | None = None,
) -> list[Organization]:
    """The organizations BILL says these credentials may open, by name then id.

    ``username``/``password`` are the method's (a sync token's name and value for
    ``sync_token``); ``dev_key`` may be empty where the SaaS supplies one
    (``DEVELOPER_KEYS``). Raises what BILL answered (:class:`InvalidCredentials`, ...),
    :class:`LoginBudgetExhausted`, or :class:`ConfigurationError` for another method.
    """
    if auth_method not in LISTABLE_METHODS:
        raise ConfigurationError(f"BILL lists no organizations for {auth_method} credentials.")
    environment = environment or bill_settings.DEFAULT_ENVIRONMENT
    dev_key = dev_key or bill_settings.host_developer_key(environment) or ""
    for secret in (password, dev_key):
        register_secret(secret)
    account = gateway.Account(
        environment=environment,
        api_version="v2",
        username=username,
        password=password,
        organization_id="",
        dev_key=dev_key,
        fingerprint=dev_key_fingerprint(dev_key),
        tenant_key=str(getattr(tenant, "pk", tenant)),
        auth_method=auth_method,
    )
    started = time.monotonic()
    try:
        found = gateway.list_organizations(account)
    except BillIntegrationError as exc:
        log_failure("list_organizations", None, exc, started=started, tenant=tenant)
        raise
    log_outcome(
        "list_organizations", None, "listed", duration=time.monotonic() - started, tenant=tenant
    )
    unique = {org.id: org for org in found}
    return sorted(unique.values(), key=lambda org: (org.name.casefold(), org.id))
