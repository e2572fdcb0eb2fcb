"""Linking a tenant's BILL account: ``link`` (first link and relink), ``unlink`` and ``verify``.

The rule the customer relies on: credentials are stored only after BILL accepted them.

``link`` logs in at BILL first, outside any database transaction (BILL may be slow, and a row
lock must never wait on the network), and checks the Spend & Expense API token when one is
given. Only then, in one transaction, it locks the tenant's row and checks that the row's
``version`` is still the one read before logging in. If another relink (or a refresh) wrote in
between, this attempt loses with :class:`ConflictError` and logs its fresh session out: two
concurrent relinks never interleave their credentials, and exactly one wins. Two concurrent
*first* links race on the one-to-one constraint; the loser also gets :class:`ConflictError`.

A refused attempt writes nothing to the connection: the previous credentials stay
byte-identical (the row is not even saved). Every attempt writes an :class:`AuditEvent` and
sends a signal (``connection_linked``, ``connection_relinked``, ``link_failed``,
``connection_unlinked``); audit details and log lines carry ids and error codes, never input.

A relink does not log out the previous session: it is BILL's to expire (35 minutes idle), and
logging it out could break a call another worker is making with it right now.
"""

from __future__ import annotations

import time
from typing import Any

from django.db import IntegrityError, transaction
from django.views.decorators.debug import sensitive_variables

from .. import limits, signals
from ..client import get_client, get_spend_client
from ..conf import bill_settings, now
from ..exceptions import (
    BillAPIError,
    BillIntegrationError,
    ConfigurationError,
    ConflictError,
    ConnectionNotLinked,
    DecryptionFailed,
    RateLimited,
)
from ..log_redaction import register_secret
from ..models import ApiVersion, AuditEvent, BillConnection, ConnectionStatus
from .common import dev_key_fingerprint, log_failure, log_outcome, logger, record

#: What a successful link writes (credentials, session, status), in one ``save()``.
LINK_WRITE_FIELDS = [
    "environment",
    "api_version",
    "username",
    "organization_id",
    "password",
    "dev_key",
    "api_token",
    "dev_key_fingerprint",
    "session_id",
    "user_id",
    "session_obtained_at",
    "session_last_used_at",
    "last_refresh_at",
    "status",
    "last_error_code",
    "last_error_message",
    "consecutive_failures",
    "next_attempt_at",
    "version",
    "updated_at",
]


def _check_choices(environment: str, api_version: str) -> None:
    if environment not in bill_settings.ENVIRONMENTS:
        raise ConfigurationError(
            f"Unknown BILL environment {environment!r}; configured: "
            f"{', '.join(bill_settings.environment_names())}."
        )
    if api_version not in ApiVersion.values:
        raise ConfigurationError(f"Unknown BILL API version {api_version!r}; use v3 or v2.")


@sensitive_variables("session_id", "dev_key")
def _logout_quietly(environment: str, api_version: str, *, session_id: str, dev_key: str) -> None:
    """Best effort: a session we will not keep should not stay open at BILL."""
    try:
        get_client(environment, api_version).logout(session_id=session_id, dev_key=dev_key)
    except Exception as exc:  # noqa: BLE001 - best effort; the session expires on its own
        logger.info("bill logout skipped: %s", type(exc).__name__)


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
    signals.link_failed.send(sender=BillConnection, tenant=tenant, error=exc, actor=actor)


@sensitive_variables("password", "dev_key", "api_token", "secret", "result")
def link(
    tenant: Any,
    *,
    username: str,
    password: str,
    organization_id: str,
    dev_key: str,
    api_token: str | None = None,
    environment: str | None = None,
    api_version: str = "v3",
    actor: Any = None,
) -> BillConnection:
    """Link (or relink) ``tenant``'s BILL account, storing the credentials only if BILL accepts them.

    Raises what BILL said (:class:`InvalidCredentials`, :class:`InvalidDevKey`,
    :class:`InvalidApiToken`, :class:`RateLimited`, :class:`TransientError`,
    :class:`UnexpectedResponse`) with nothing stored changed, or :class:`ConflictError` when a
    concurrent change to the same connection won. ``api_token=None`` (or ``""``) stores no
    Spend & Expense token; a relink replaces all credentials together.
    """
    environment = environment or bill_settings.DEFAULT_ENVIRONMENT
    _check_choices(environment, api_version)
    api_token = api_token or None
    started = time.monotonic()

    # The fence: the version this attempt builds on, read before talking to BILL.
    before = (
        BillConnection.objects.without_secrets()
        .filter(tenant=tenant)
        .values_list("pk", "version")
        .first()
    )
    connection_id, expected_version = before if before else (None, None)
    relink = before is not None

    for secret in (password, dev_key, api_token):
        register_secret(secret)  # the log filter redacts these wherever they would appear
    fingerprint = dev_key_fingerprint(dev_key)
    client = get_client(environment, api_version)
    result = None
    try:
        # A link's login counts against the developer key's hourly budget like any other.
        limits.take_login(fingerprint)
        with limits.request_slot(fingerprint, organization_id):
            result = client.login(
                username=username,
                password=password,
                organization_id=organization_id,
                dev_key=dev_key,
            )
        register_secret(result.session_id)
        if api_token:
            get_spend_client(environment).current_user(api_token=api_token)
    except BillAPIError as exc:
        if isinstance(exc, RateLimited) and exc.bill_code == "BDC_1144":
            limits.pause_dev_key(fingerprint)
        if result is not None:
            _logout_quietly(environment, api_version, session_id=result.session_id, dev_key=dev_key)
        _failed(
            tenant,
            connection_id,
            exc,
            actor=actor,
            environment=environment,
            api_version=api_version,
            relink=relink,
            started=started,
        )
        raise

    try:
        with transaction.atomic():
            connection = (
                BillConnection.objects.without_secrets()
                .select_for_update()
                .filter(tenant=tenant)
                .first()
            )
            current_version = connection.version if connection is not None else None
            if current_version != expected_version:
                raise ConflictError()
            created = connection is None
            if created:
                connection = BillConnection(tenant=tenant, version=0)
            moment = now()
            connection.environment = environment
            connection.api_version = api_version
            connection.username = username
            connection.organization_id = result.organization_id or organization_id
            connection.password = password
            connection.dev_key = dev_key
            connection.api_token = api_token
            connection.dev_key_fingerprint = fingerprint
            connection.session_id = result.session_id
            connection.user_id = result.user_id or ""
            connection.session_obtained_at = moment
            connection.session_last_used_at = moment
            connection.last_refresh_at = moment
            connection.status = ConnectionStatus.ACTIVE
            connection.last_error_code = ""
            connection.last_error_message = ""
            connection.consecutive_failures = 0
            connection.next_attempt_at = None
            connection.version = (connection.version or 0) + 1
            if created:
                connection.save(force_insert=True)
            else:
                connection.save(update_fields=LINK_WRITE_FIELDS)
            record(
                connection,
                AuditEvent.Kind.LINKED if created else AuditEvent.Kind.RELINKED,
                actor=actor,
                environment=environment,
                api_version=api_version,
                organization_id=connection.organization_id,
                user_id=connection.user_id,
                has_api_token=bool(api_token),
                version=connection.version,
            )
    except (ConflictError, IntegrityError) as exc:
        # Another link won between our login and our write: keep its result, drop our session.
        _logout_quietly(environment, api_version, session_id=result.session_id, dev_key=dev_key)
        conflict = exc if isinstance(exc, ConflictError) else ConflictError()
        _failed(
            tenant,
            connection_id,
            conflict,
            actor=actor,
            environment=environment,
            api_version=api_version,
            relink=relink,
            started=started,
        )
        raise conflict from None

    log_outcome(
        "link", connection, "relinked" if relink else "linked", duration=time.monotonic() - started
    )
    signal = signals.connection_linked if created else signals.connection_relinked
    signal.send(sender=BillConnection, tenant=tenant, connection=connection, actor=actor)
    return connection


@sensitive_variables("secrets", "session")
def unlink(tenant: Any, *, actor: Any = None) -> None:
    """Remove ``tenant``'s BILL connection: delete the secrets, log out at BILL (best effort).

    Raises :class:`ConnectionNotLinked` when there is nothing to remove.
    """
    started = time.monotonic()
    with transaction.atomic():
        connection = (
            BillConnection.objects.without_secrets()
            .select_for_update()
            .filter(tenant=tenant)
            .first()
        )
        if connection is None:
            raise ConnectionNotLinked()
        facts = {
            "organization_id": connection.organization_id,
            "environment": connection.environment,
            "api_version": connection.api_version,
        }
        session = None
        try:
            # values_list() decrypts through from_db_value, failing closed.
            secrets = (
                BillConnection.objects.filter(pk=connection.pk)
                .values_list("session_id", "dev_key")
                .first()
            )
            if secrets and secrets[0] and secrets[1]:
                session = (secrets[0], secrets[1])
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
        _logout_quietly(
            facts["environment"], facts["api_version"], session_id=session[0], dev_key=session[1]
        )
    log_outcome("unlink", None, "unlinked", duration=time.monotonic() - started, tenant=tenant)
    signals.connection_unlinked.send(
        sender=BillConnection, tenant=tenant, organization_id=facts["organization_id"], actor=actor
    )


@sensitive_variables("connection", "result")
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
    client = get_client(connection.environment, connection.api_version)
    fingerprint = connection.dev_key_fingerprint
    try:
        limits.take_login(fingerprint)
        with limits.request_slot(fingerprint, connection.organization_id):
            result = client.login(
                username=connection.username,
                password=connection.password,
                organization_id=connection.organization_id,
                dev_key=connection.dev_key,
            )
        try:
            if connection.api_token:
                get_spend_client(connection.environment).current_user(
                    api_token=connection.api_token
                )
        finally:
            _logout_quietly(
                connection.environment,
                connection.api_version,
                session_id=result.session_id,
                dev_key=connection.dev_key,
            )
    except BillAPIError as exc:
        log_failure("verify", connection, exc, started=started)
        raise
    log_outcome("verify", connection, "ok", duration=time.monotonic() - started)
