"""What the gateway is handed: a login's :class:`Account`, a live session's :class:`SessionHolder`.

Plain data, no BILL call: :mod:`.gateway` (which re-exports both names) is the one road to
BILL. ``Account.of`` reads a stored connection's credentials for its sign-in method, the
host's developer key included where the connection stores none (:func:`.common.developer_key`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..auth_methods import AuthMethod, rules
from .common import developer_key


@dataclass(frozen=True)
class Account:
    """What a login needs: where, which API version, and the account's credentials."""

    environment: str
    api_version: str
    username: str
    password: str = field(repr=False)
    organization_id: str
    dev_key: str = field(repr=False)
    #: ``dev_key_fingerprint`` of the developer key: the limits are counted per key.
    fingerprint: str = field(repr=False)
    #: The tenant's primary key, as text: its own allowance of login attempts is counted by it.
    tenant_key: str = ""
    #: BILL's MFA remember-me id (v3 ``rememberMeId``, v2 ``mfaId``) and the device it was
    #: given to: a login that sends both gets an MFA-trusted session (services/trust.py).
    remember_me_id: str | None = field(default=None, repr=False)
    device: str | None = None
    #: The sign-in method (``auth_methods``) and the secrets only some methods have.
    auth_method: str = AuthMethod.USER_PASSWORD
    console_token: str | None = field(default=None, repr=False)
    oauth_client_id: str = ""
    oauth_client_secret: str | None = field(default=None, repr=False)
    api_token: str | None = field(default=None, repr=False)

    @classmethod
    def of(
        cls, connection: Any, *, remember_me_id: str | None = None, device: str | None = None
    ) -> Account:
        """The account of a stored connection (decrypts the secrets its method uses)."""
        entry = rules(getattr(connection, "auth_method", None))
        secret = {name: getattr(connection, name) or None for name in entry.secrets}
        dev_key, fingerprint = developer_key(connection, stored=secret.get("dev_key") or "")
        return cls(
            environment=connection.environment,
            api_version=connection.api_version,
            username=connection.username,
            password=secret.get("password") or "",
            organization_id=connection.organization_id,
            dev_key=dev_key,
            fingerprint=fingerprint,
            tenant_key=str(connection.tenant_id),
            remember_me_id=remember_me_id if entry.mfa_trust else None,
            device=device if entry.mfa_trust else None,
            auth_method=entry.method,
            console_token=secret.get("console_token"),
            oauth_client_id=connection.oauth_client_id,
            oauth_client_secret=secret.get("oauth_client_secret"),
            api_token=secret.get("api_token"),
        )


class SessionHolder(Protocol):
    """Anything that holds a live session: a ``BillSession`` or a locked ``BillConnection``."""

    # Read-only members, so a frozen BillSession qualifies.
    @property
    def environment(self) -> str: ...
    @property
    def api_version(self) -> str: ...
    @property
    def organization_id(self) -> str: ...
    @property
    def session_id(self) -> str: ...
    @property
    def dev_key(self) -> str: ...
    @property
    def dev_key_fingerprint(self) -> str: ...
    @property
    def auth_method(self) -> str: ...
    @property
    def api_token(self) -> str | None: ...
