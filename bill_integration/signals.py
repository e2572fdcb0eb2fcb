"""Signals sent by the service layer, once per event or state transition (never per retry).

Every signal is sent with ``sender=BillConnection`` and the keyword arguments listed on it.
``tenant`` is the tenant model instance, ``connection`` the :class:`BillConnection` (secrets
are on it, as on any model instance: do not log it field by field), ``actor`` the user who
acted or ``None`` for the app itself.
"""

from django.dispatch import Signal

#: A tenant linked a BILL account for the first time. kwargs: tenant, connection, actor.
connection_linked = Signal()
#: A tenant replaced its BILL credentials. kwargs: tenant, connection, actor.
connection_relinked = Signal()
#: A tenant removed its BILL account. kwargs: tenant, organization_id, actor.
connection_unlinked = Signal()
#: BILL refused a link attempt; nothing stored changed. kwargs: tenant, error, actor.
connection_link_failed = Signal()
#: A new BILL session was obtained by logging in. kwargs: tenant, connection, reason.
connection_session_refreshed = Signal()
#: A connection went from healthy to failing transiently or rate limited.
#: kwargs: tenant, connection, error.
connection_degraded = Signal()
#: A degraded or rate-limited connection works again. kwargs: tenant, connection.
connection_recovered = Signal()
#: BILL refused the stored credentials; automatic logins stop. kwargs: tenant, connection, error.
connection_needs_relink = Signal()

# --- BILL's MFA trust (payments need an MFA-trusted session) ----------------------------------

#: A person confirmed BILL's code: this app is trusted for payments for 30 days.
#: kwargs: tenant, connection, actor, expires_at.
connection_mfa_trusted = Signal()
#: A live session was made MFA-trusted with the stored remember-me id. kwargs: tenant, connection.
connection_mfa_stepped_up = Signal()
#: Trust ends within MFA_EXPIRY_WARNING (sent once per trust). kwargs: tenant, connection,
#: expires_at.
connection_mfa_expiring = Signal()
#: Trust ended (its 30 days ran out, or BILL no longer honours it); sent once per trust.
#: kwargs: tenant, connection.
connection_mfa_expired = Signal()
#: A person removed the stored trust. kwargs: tenant, connection, actor.
connection_mfa_forgotten = Signal()
#: BILL refused an operation for want of trust, and none is set up (sent once until trust is
#: established). kwargs: tenant, connection.
connection_mfa_needed = Signal()

#: Names of 0.1, each the same Signal object as its new name (receivers keep working); reading
#: them warns. Removed in 0.3.
_RENAMED = {
    "link_failed": "connection_link_failed",
    "session_refreshed": "connection_session_refreshed",
}


def __getattr__(name: str) -> Signal:
    if name in _RENAMED:
        import warnings

        warnings.warn(
            f"bill_integration.signals.{name} is renamed {_RENAMED[name]} (every signal is "
            "connection_<event>); the old name goes away in 0.3.",
            DeprecationWarning,
            stacklevel=2,
        )
        return globals()[_RENAMED[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
