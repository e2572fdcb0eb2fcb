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
