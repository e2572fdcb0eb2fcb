"""Linking a tenant's BILL account: ``link`` (first link and relink), ``unlink`` and ``verify``.

The rule the customer relies on: credentials are stored only after BILL accepted them.

``link`` logs in at BILL first (through :mod:`gateway`), outside any database transaction
(BILL may be slow, and a row lock must never wait on the network), and checks the Spend &
Expense API token when one is given. Only then, in one transaction, it locks the tenant's row
and checks the **credentials fence**: the stored credentials must still be the ones read before
logging in (the ciphertext of each secret column, which every link writes anew, and the plain
credential columns). If another relink wrote in between, this attempt loses with
:class:`ConflictError` and logs its fresh session out: two concurrent relinks never interleave
their credentials, and exactly one wins. A background login or keep-alive in between changes
only the session, not the credentials, so it never makes a relink fail. Two concurrent
*first* links race on the one-to-one constraint; the loser also gets :class:`ConflictError`.

A refused attempt writes nothing to the connection: the previous credentials stay
byte-identical (the row is not even saved). Whatever goes wrong after BILL opened a session
(BILL's refusal of the API token, a conflict, or any other exception) logs that session out,
is audited and sends ``connection_link_failed``. Audit details and log lines carry ids and error codes,
never input.

A relink does not log out the previous session: it is BILL's to expire (35 minutes idle), and
logging it out could break a call another worker is making with it right now.
"""

from __future__ import annotations

import time
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import TextField
from django.db.models.functions import Cast
from django.views.decorators.debug import sensitive_variables

from .. import signals
from ..auth_methods import CREDENTIAL_SECRETS, NONE, AuthMethod, rules
from ..conf import bill_settings, now
from ..exceptions import (
    BillIntegrationError,
    ConfigurationError,
    ConflictError,
    ConnectionNotLinked,
    DecryptionFailed,
)
from ..log_redaction import register_secret
from ..models import TRUST_FIELDS, ApiVersion, AuditEvent, BillConnection, ConnectionStatus
from . import gateway, trust
from .common import developer_key, limits_key, log_failure, log_outcome, record
from .freshness import expiry
from .locking import lock_without_secrets

#: What a successful link writes (credentials, session, status), in one ``save()``.
LINK_WRITE_FIELDS = [
    "environment",
    "api_version",
    "auth_method",
    "username",
    "organization_id",
    "password",
    "dev_key",
    "api_token",
    "console_token",
    "oauth_client_id",
    "oauth_client_secret",
    "dev_key_fingerprint",
    "session_id",
    "session_expires_at",
    "user_id",
    "session_obtained_at",
    "session_last_used_at",
    "last_refresh_at",
    "status",
    "last_error_code",
    "last_error_message",
    "consecutive_failures",
    "next_attempt_at",
    "session_trusted",
    "version",
    "updated_at",
]
#: The plain columns and the secret columns (compared as stored ciphertext) of the fence.
FENCE_PLAIN = (
    "environment",
    "api_version",
    "auth_method",
    "username",
    "organization_id",
    "oauth_client_id",
)
FENCE_SECRETS = CREDENTIAL_SECRETS


def _check_choices(environment: str, api_version: str) -> None:
    if environment not in bill_settings.ENVIRONMENTS:
        raise ConfigurationError(
            f"Unknown BILL environment {environment!r}; configured: "
            f"{', '.join(bill_settings.environment_names())}."
        )
    if api_version not in ApiVersion.values:
        raise ConfigurationError(f"Unknown BILL API version {api_version!r}; use v3 or v2.")


def _credentials_fence(tenant: Any, *, lock: bool = False) -> tuple[Any, ...] | None:
    """The tenant's stored credentials as a comparable tuple (ciphertext, never decrypted).

    Every link encrypts its secrets anew (Fernet tokens carry a random IV), so a relink in
    between always changes the tuple; a login or keep-alive never does.
    """
    raw = {f"raw_{name}": Cast(name, output_field=TextField()) for name in FENCE_SECRETS}
    query = BillConnection.objects.without_secrets().filter(tenant=tenant)
    if lock:
        query = query.select_for_update()
    row = query.annotate(**raw).values_list("pk", *FENCE_PLAIN, *raw).first()
    return tuple(row) if row is not None else None


def _failed(
    tenant: Any,
    connection_id: int | None,
    exc: BillIntegrationError,
    *,
    actor: Any,
    environment: str,
    api_version: str,
    relink: bool,
    started: float,
) -> None:
    """Audit, log and signal a refused attempt (codes only, never the input)."""
    bill_code = getattr(exc, "bill_code", None)
    # A refused relink names the connection it left untouched (status fields only, no secrets).
    existing = (
        BillConnection.objects.without_secrets().filter(pk=connection_id).first()
        if connection_id
        else None
    )
    record(
        existing,
        AuditEvent.Kind.LINK_FAILED,
        tenant=tenant,
        actor=actor,
        code=exc.code,
        bill_code=bill_code,
        environment=environment,
        api_version=api_version,
        relink=relink,
    )
    log_failure("link", existing, exc, started=started, tenant=tenant)
    signals.connection_link_failed.send(
        sender=BillConnection, tenant=tenant, error=exc, actor=actor
    )


@sensitive_variables(
    "password",
    "dev_key",
    "api_token",
    "console_token",
    "oauth_client_secret",
    "secret",
    "result",
    "account",
)
def link(
    tenant: Any,
    *,
    username: str = "",
    password: str = "",
    organization_id: str = "",
    dev_key: str = "",
    api_token: str | None = None,
    environment: str | None = None,
    api_version: str = "v3",
    actor: Any = None,
    auth_method: str = AuthMethod.USER_PASSWORD,
    console_token: str | None = None,
    oauth_client_id: str = "",
    oauth_client_secret: str | None = None,
) -> BillConnection:
    """Link (or relink) ``tenant``'s BILL account, storing the credentials only if BILL accepts them.

    Raises what BILL said (:class:`InvalidCredentials`, :class:`InvalidDevKey`,
    :class:`InvalidApiToken`, :class:`RateLimited`, :class:`TransientError`,
    :class:`UnexpectedResponse`) with nothing stored changed, or :class:`ConflictError` when a
    concurrent relink of the same connection won. ``api_token=None`` (or ``""``) stores no
    Spend & Expense token; a relink replaces all credentials together.

    ``auth_method`` (``auth_methods.METHODS``) says which credentials these are: a sync token
    is ``username`` (its name) and ``password`` (the token); a console token is ``username``
    and ``console_token`` (no password is sent); ``spend_token`` is ``api_token`` alone (no
    login: the token is checked); ``oauth_client`` is ``oauth_client_id`` and
    ``oauth_client_secret`` (a token is fetched, never a password login). The credentials of
    other methods are not stored. A change of method is a relink.
    """
    environment = environment or bill_settings.DEFAULT_ENVIRONMENT
    _check_choices(environment, api_version)
    api_token = api_token or None
    entry = rules(auth_method)
    # The SaaS's own key where it supplies one (DEVELOPER_KEYS): used to log in, never stored,
    # read again from the settings at each login and call (common.developer_key).
    host_key = entry.uses_dev_key and not dev_key
    if host_key:
        dev_key = bill_settings.host_developer_key(environment) or ""
    started = time.monotonic()

    # The fence: the credentials this attempt replaces, read before talking to BILL.
    fence = _credentials_fence(tenant)
    connection_id = fence[0] if fence else None
    relink = fence is not None

    for secret in (password, dev_key, api_token, console_token, oauth_client_secret):
        register_secret(secret)  # the log filter redacts these wherever they would appear
    account = gateway.Account(
        environment=environment,
        api_version=api_version,
        username=username,
        password=password,
        organization_id=organization_id,
        dev_key=dev_key,
        fingerprint=limits_key(entry.method, dev_key, api_token, oauth_client_id),
        tenant_key=str(getattr(tenant, "pk", tenant)),
        auth_method=entry.method,
        console_token=console_token or None,
        oauth_client_id=oauth_client_id,
        oauth_client_secret=oauth_client_secret or None,
        api_token=api_token,
    )
    result = None
    try:
        if entry.renewal == NONE:  # Spend & Expense only: no login, the token is checked
            user = gateway.check_api_token(environment, api_token or "", key=account.fingerprint)
            session = gateway.LoginResult(session_id="", organization_id="", user_id=user.id)
        else:
            result = session = gateway.login(account, attempt=True)
            register_secret(result.session_id)
            if api_token:
                gateway.check_api_token(environment, api_token)
        connection, created = _store(
            tenant, fence, account, api_token, session, actor=actor, host_key=host_key
        )
    except Exception as exc:
        # Whatever failed after BILL opened a session, that session must not stay open.
        if result is not None:
            gateway.logout_quietly(account, result.session_id)
        failure: BillIntegrationError
        if isinstance(exc, IntegrityError):
            failure = ConflictError()  # a concurrent first link won the one-to-one row
        elif isinstance(exc, BillIntegrationError):
            failure = exc
        else:
            failure = BillIntegrationError(f"Linking failed: {type(exc).__name__}.")
        _failed(
            tenant,
            connection_id,
            failure,
            actor=actor,
            environment=environment,
            api_version=api_version,
            relink=relink,
            started=started,
        )
        if failure is not exc and isinstance(exc, IntegrityError):
            raise failure from None
        raise

    log_outcome(
        "link", connection, "relinked" if relink else "linked", duration=time.monotonic() - started
    )
    signal = signals.connection_linked if created else signals.connection_relinked
    signal.send(sender=BillConnection, tenant=tenant, connection=connection, actor=actor)
    return connection


@sensitive_variables("account", "api_token", "result")
def _store(
    tenant: Any,
    fence: tuple[Any, ...] | None,
    account: gateway.Account,
    api_token: str | None,
    result: Any,
    *,
    actor: Any,
    host_key: bool = False,
) -> tuple[BillConnection, bool]:
    """Write the accepted credentials and the new session, if the fence still holds."""
    with transaction.atomic():
        if _credentials_fence(tenant, lock=True) != fence:
            raise ConflictError()
        connection = BillConnection.objects.without_secrets().filter(tenant=tenant).first()
        created = connection is None
        if connection is None:
            connection = BillConnection(tenant=tenant, version=0)
        # MFA trust belongs to a BILL user: kept across a relink of the same user (a new
        # password), cleared when the relink names another (services/trust.py).
        same_user = not created and _identity(connection) == _identity(account)
        trust_fields = [] if created or same_user else list(TRUST_FIELDS)
        if trust_fields:
            trust.clear(connection)
        moment = now()
        entry = rules(account.auth_method)
        connection.environment = account.environment
        connection.api_version = account.api_version
        connection.auth_method = entry.method
        connection.username = account.username if "username" in entry.fields.values() else ""
        connection.organization_id = result.organization_id or account.organization_id
        offered = {
            "password": account.password,
            "dev_key": None if host_key else account.dev_key,
            "api_token": api_token,
            "console_token": account.console_token,
            "oauth_client_secret": account.oauth_client_secret,
        }
        for column in CREDENTIAL_SECRETS:  # only this method's secrets; others cleared
            setattr(
                connection, column, offered[column] or None if column in entry.secrets else None
            )
        connection.oauth_client_id = account.oauth_client_id
        connection.dev_key_fingerprint = account.fingerprint
        connection.session_id = result.session_id or None
        connection.session_expires_at = expiry(connection, result, moment)
        connection.user_id = result.user_id or ""
        connection.session_obtained_at = moment
        connection.session_last_used_at = moment
        connection.last_refresh_at = moment
        connection.status = ConnectionStatus.ACTIVE
        connection.last_error_code = ""
        connection.last_error_message = ""
        connection.consecutive_failures = 0
        connection.next_attempt_at = None
        connection.session_trusted = False  # a plain login; trust is regained by a step-up
        connection.version = (connection.version or 0) + 1
        if created:
            connection.save(force_insert=True)
        else:
            connection.save(update_fields=list(dict.fromkeys([*LINK_WRITE_FIELDS, *trust_fields])))
        record(
            connection,
            AuditEvent.Kind.LINKED if created else AuditEvent.Kind.RELINKED,
            actor=actor,
            environment=account.environment,
            api_version=account.api_version,
            organization_id=connection.organization_id,
            user_id=connection.user_id,
            has_api_token=bool(api_token),
            version=connection.version,
        )
    return connection, created


def _identity(holder: Any) -> tuple[str, ...]:
    """Whose BILL account this is: method, environment, API version, user name, organization."""
    return (
        holder.auth_method,
        holder.environment,
        holder.api_version,
        holder.username.strip().lower(),
        holder.organization_id,
    )


@sensitive_variables("secrets", "session")
def unlink(tenant: Any, *, actor: Any = None) -> None:
    """Remove ``tenant``'s BILL connection: delete the secrets, log out at BILL (best effort).

    Raises :class:`ConnectionNotLinked` when there is nothing to remove.
    """
    started = time.monotonic()
    with transaction.atomic():
        connection = lock_without_secrets(tenant=tenant)
        if connection is None:
            raise ConnectionNotLinked()
        facts = {
            "organization_id": connection.organization_id,
            "environment": connection.environment,
            "api_version": connection.api_version,
        }
        method = connection.auth_method
        fingerprint = connection.dev_key_fingerprint
        session = None
        try:
            # values_list() decrypts through from_db_value, failing closed.
            secrets = (
                BillConnection.objects.filter(pk=connection.pk)
                .values_list("session_id", "dev_key")
                .first()
            )
            key = developer_key(connection, stored=secrets[1] or "")[0] if secrets else ""
            if secrets and secrets[0] and key:
                session = (secrets[0], key)
        except DecryptionFailed:
            session = None  # cannot log out what we cannot read; the session expires anyway
        connection_id = connection.pk
        connection.delete()
        record(
            None,
            AuditEvent.Kind.UNLINKED,
            tenant=tenant,
            actor=actor,
            connection_id=connection_id,
            **facts,
        )

    if session is not None:
        account = gateway.Account(
            environment=facts["environment"],
            api_version=facts["api_version"],
            username="",
            password="",
            organization_id=facts["organization_id"],
            dev_key=session[1],
            fingerprint=fingerprint,
            auth_method=method,
        )
        gateway.logout_quietly(account, session[0])
    log_outcome("unlink", None, "unlinked", duration=time.monotonic() - started, tenant=tenant)
    signals.connection_unlinked.send(
        sender=BillConnection, tenant=tenant, organization_id=facts["organization_id"], actor=actor
    )


@sensitive_variables("connection", "result", "account")
def verify(tenant: Any) -> None:
    """Check that BILL still accepts ``tenant``'s stored credentials, changing nothing stored.

    Logs in with the stored credentials (and checks the API token, if one is stored), then logs
    that test session out again; the connection's own session is untouched. Raises what BILL
    said, :class:`ConnectionNotLinked`, or :class:`DecryptionFailed`. Costs one login from the
    developer key's hourly allowance, so it is an operator's action, not a periodic check.
    """
    started = time.monotonic()
    connection = BillConnection.objects.filter(tenant=tenant).first()
    if connection is None:
        raise ConnectionNotLinked()
    account = gateway.Account.of(connection)
    try:
        if rules(connection.auth_method).renewal == NONE:  # Spend & Expense only
            gateway.check_api_token(
                connection.environment, account.api_token or "", key=account.fingerprint
            )
            log_outcome("verify", connection, "ok", duration=time.monotonic() - started)
            return
        result = gateway.login(account, attempt=True)
        try:
            if connection.api_token:
                gateway.check_api_token(connection.environment, connection.api_token)
        finally:
            gateway.logout_quietly(account, result.session_id)
    except BillIntegrationError as exc:
        log_failure("verify", connection, exc, started=started)
        raise
    log_outcome("verify", connection, "ok", duration=time.monotonic() - started)
