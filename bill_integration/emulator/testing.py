"""Linked connections and tenants for tests and benchmarks, without pytest.

The ``bill_connection`` fixture of :mod:`.pytest_plugin` is a :class:`ConnectionFactory`; the
benchmarks build thousands of rows with :func:`build_connection` and insert them in bulk.
Django is imported inside the functions, so importing this module needs no settings.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from .state import EmulatorState

_numbers = itertools.count(1)

#: The BILL user id stored with a session nobody logged in for (``login=False``).
NO_LOGIN_USER_ID = "00601000000000000000"


class Credentials(Protocol):
    """What a connection is built from: an emulator :class:`~.state.Account`, or the like."""

    username: str
    password: str
    organization_id: str
    dev_key: str


def build_connection(
    account: Credentials,
    *,
    tenant: Any,
    session_id: str | None,
    user_id: str | None = None,
    obtained_at: datetime | None = None,
    last_used_at: datetime | None = None,
    environment: str = "emulator",
    api_version: str = "v3",
    dev_key_fingerprint: str | None = None,
) -> Any:
    """An unsaved ``BillConnection`` as ``services.link`` leaves one: credentials, fingerprint
    and the session BILL gave (``session_id``), active.

    Test and benchmark set-up only, never how the app writes credentials: no BILL call, no
    audit record, no signal. ``dev_key_fingerprint`` may be passed to save an HMAC per row.
    """
    from ..conf import now
    from ..models import BillConnection, ConnectionStatus
    from ..services.common import dev_key_fingerprint as fingerprint
    from ..services.freshness import next_due_at

    # session_id may be None: the field defaults to null=True, which django-stubs cannot see.
    connection = BillConnection(  # type: ignore[misc]
        tenant=tenant,
        environment=environment,
        api_version=api_version,
        username=account.username,
        organization_id=account.organization_id,
        password=account.password,
        dev_key=account.dev_key,
        dev_key_fingerprint=dev_key_fingerprint or fingerprint(account.dev_key),
        session_id=session_id,
        user_id=user_id or getattr(account, "user_id", "") or "",
        status=ConnectionStatus.ACTIVE,
        session_obtained_at=obtained_at,
        session_last_used_at=last_used_at,
    )
    # As every writer stores it (save() does too; bulk_create does not call save()).
    connection.next_due_at = next_due_at(connection, now())
    return connection


def create_tenant(number: int | None = None) -> Any:
    """A row of ``BILL_INTEGRATION_TENANT_MODEL``, its required text fields filled in.

    Enough for a tenant model of names, slugs and e-mail addresses (and Django's user model);
    for any other, override the ``bill_tenant_factory`` fixture.
    """
    from django.contrib.auth.hashers import make_password
    from django.db import models

    from ..conf import get_tenant_model

    model = get_tenant_model()
    n = next(_numbers) if number is None else number
    text = f"bill-tenant-{n}-{os.getpid()}"
    values: dict[str, Any] = {}
    for field in model._meta.concrete_fields:
        if field.primary_key or field.null or field.blank or field.has_default():
            continue
        if field.name == "password":
            values[field.name] = make_password(None)  # an unusable password
        elif isinstance(field, models.EmailField):
            values[field.name] = f"{text}@example.com"
        elif isinstance(field, models.CharField | models.TextField):
            values[field.name] = text[: field.max_length] if field.max_length else text
        else:
            raise TypeError(
                f"Cannot fill {model.__name__}.{field.name}: override the bill_tenant_factory "
                "fixture with a function that makes a tenant."
            )
    return model._default_manager.create(**values)


class ConnectionFactory:
    """``factory(**options)`` -> a linked ``BillConnection`` on the emulator (the
    ``bill_connection`` fixture).

    Options: ``tenant`` (else a new one from ``make_tenant``), ``account`` (an emulator
    ``Account``; else a new one, on ``dev_key`` if given, to share a developer key),
    ``api_version``, and either

    * ``link=True`` (with ``actor``, and ``api_token`` to store a Spend token): through
      ``services.link``, as a person links: a BILL login through the gateway (it spends the
      login budget), an audit record, the signal;
    * or (the default) written directly, fast and without spending the developer key's
      logins: ``login=True`` stores a session BILL gave at login (one client call),
      ``login=False`` a dead session id and no call; ``idle`` is the seconds since the
      session was last used, in the app's records.

    The connection's ``account`` attribute is the emulator account it was made with.
    """

    def __init__(
        self,
        state: EmulatorState,
        *,
        environment: str = "emulator",
        make_tenant: Callable[[], Any] = create_tenant,
    ) -> None:
        self.state = state
        self.environment = environment
        self.make_tenant = make_tenant

    def new_account(self, *, dev_key: str | None = None) -> Any:
        n = next(_numbers)
        return self.state.add_account(
            username=f"sessions-{n}-{os.getpid()}@example.com",
            password=f"pw-{n}-canary-password",
            dev_key=dev_key,
        )

    def __call__(
        self,
        *,
        tenant: Any = None,
        account: Any = None,
        dev_key: str | None = None,
        api_version: str = "v3",
        link: bool = False,
        actor: Any = None,
        api_token: str | None = None,
        login: bool = True,
        idle: float = 0,
    ) -> Any:
        from .. import services
        from ..client import get_client
        from ..conf import now

        if link and (not login or idle):
            raise TypeError("link=True logs in now: login=False and idle do not apply.")
        if api_token is not None and not link:
            raise TypeError("api_token is stored by link=True only.")
        if account is None:
            account = self.new_account(dev_key=dev_key)
        if tenant is None:
            tenant = self.make_tenant()
        if link:
            connection = services.link(
                tenant,
                actor=actor,
                username=account.username,
                password=account.password,
                organization_id=account.organization_id,
                dev_key=account.dev_key,
                api_token=api_token,
                environment=self.environment,
                api_version=api_version,
            )
        else:
            moment = now()
            if login:
                result = get_client(self.environment, api_version).login(
                    username=account.username,
                    password=account.password,
                    organization_id=account.organization_id,
                    dev_key=account.dev_key,
                )
                session_id, user_id = result.session_id, result.user_id
            else:
                session_id, user_id = f"!dead-session-{next(_numbers)}", NO_LOGIN_USER_ID
            connection = build_connection(
                account,
                tenant=tenant,
                session_id=session_id,
                user_id=user_id,
                obtained_at=moment - timedelta(seconds=idle),
                last_used_at=moment - timedelta(seconds=idle),
                environment=self.environment,
                api_version=api_version,
            )
            connection.last_refresh_at = moment
            connection.save(force_insert=True)
        connection.account = account  # type: ignore[attr-defined]  # for the test's own use
        return connection
