"""Each developer key's budget at BILL, the last 24 hours: the one report the admin page and
``manage.py bill_status --budget`` both show.

BILL limits each developer key to 20,000 calls and 200 logins an hour, for every tenant
sharing the key (``constants.py``). Per key, :func:`key_budget` gathers:

* calls per clock hour by kind (``limits.calls_by_hour``: keep-alives, background logins,
  logins callers waited for, callers' own calls, other), against BILL's limit and the upkeep
  share's line (``UPKEEP_SHARE`` of it: keep-alives and background logins stop there);
* the rolling last hour (``limits.calls_last_hour``) and the login budget's window
  (``limits.status``), which is what the limits actually enforce;
* warm and lapsed tenants: *warm* = a connection the sweep looks after whose session is alive
  (:func:`~bill_integration.services.freshness.session_is_alive`); *lapsed* = one the sweep
  looks after with no live session (its next ``get_session()`` logs in); connections waiting
  for a person (``needs_relink``, ``disabled``) are neither;
* logins paid by callers (``caller_login``: a caller waited for them) in 24 hours;
* the predicted use of the next hour and the headroom left: the prediction is the busiest of
  the last :data:`PREDICT_FROM_HOURS` complete clock hours and the rolling last hour (by total
  calls, and separately by logins), so one quiet hour after a busy one does not promise room
  that the next busy hour will take.

Reads only: counts and plain columns, never a secret (a stored session is known to exist
without being decrypted).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import BooleanField, Count, ExpressionWrapper, Q
from django.utils.translation import gettext_lazy as _

from .. import limits
from ..conf import bill_settings, now
from ..constants import MAX_CALLS_PER_HOUR, MAX_LOGINS_PER_HOUR
from ..models import BillConnection
from .freshness import SWEPT_STATUSES, session_is_alive

#: The prediction looks at this many complete clock hours (and the rolling last hour).
PREDICT_FROM_HOURS = 3
HOURS = 24
#: What the report calls each kind of call, in the order the chart stacks them (bottom first).
KIND_LABELS = (
    (limits.KEEP_ALIVE, _("keep-alive")),
    (limits.BACKGROUND_LOGIN, _("background login")),
    (limits.CALLER_LOGIN, _("caller login")),
    (limits.CALLER, _("callers' calls")),
    (limits.OTHER, _("other")),
)
#: Characters of the fingerprint shown (as ``bill_status`` shows it).
KEY_LABEL_LENGTH = 12
#: A stand-in for "a session id is stored", so freshness can judge a row never decrypted.
_STORED = "stored"


@dataclass(frozen=True)
class Tenants:
    """The connections of one developer key by what their session is doing."""

    total: int = 0
    warm: int = 0
    lapsed: int = 0
    waiting_for_a_person: int = 0


@dataclass(frozen=True)
class KeyBudget:
    """One developer key's last 24 hours against BILL's limits (module docstring)."""

    fingerprint: str
    hours: list[limits.HourOfCalls]  # oldest first, the current (partial) hour last
    last_hour: limits.HourOfCalls  # rolling 60 minutes
    tenants: Tenants
    logins_in_budget_window: int
    paused_until: datetime | None
    call_limit: int
    login_limit: int
    login_budget: int
    upkeep_limit: int
    predicted_calls: int
    predicted_logins: int

    @property
    def label(self) -> str:
        return self.fingerprint[:KEY_LABEL_LENGTH]

    @property
    def caller_logins(self) -> int:
        """Logins callers waited for in the 24 hours (the price of letting sessions lapse)."""
        return sum(hour.caller_login for hour in self.hours)

    @property
    def calls(self) -> int:
        return sum(hour.total for hour in self.hours)

    @property
    def call_headroom(self) -> int:
        """Calls BILL would still allow in the next hour if it is as busy as predicted."""
        return self.call_limit - self.predicted_calls

    @property
    def login_headroom(self) -> int:
        """Logins the app's budget would still allow in the next hour, as predicted."""
        return self.login_budget - self.predicted_logins

    @property
    def busiest_hour(self) -> int:
        return max((hour.total for hour in self.hours), default=0)


def tenants_of(fingerprint: str, *, at: datetime) -> Tenants:
    """Warm, lapsed and waiting connections of one developer key at ``at`` (no decryption)."""
    rows = (
        BillConnection.objects.filter(dev_key_fingerprint=fingerprint)
        .annotate(
            has_session=ExpressionWrapper(Q(session_id__isnull=False), output_field=BooleanField())
        )
        .values_list(
            "status", "auth_method", "session_expires_at", "session_last_used_at", "has_session"
        )
    )
    total = warm = lapsed = 0
    for status, method, expires, last_used, has_session in rows.iterator():
        total += 1
        if status not in SWEPT_STATUSES:
            continue
        # An unsaved row with the plain columns the rule reads; the session id is only a flag.
        row = BillConnection(
            status=status,
            auth_method=method,
            session_expires_at=expires,
            session_last_used_at=last_used,
            session_id=_STORED if has_session else "",
        )
        if session_is_alive(row, at):
            warm += 1
        else:
            lapsed += 1
    return Tenants(
        total=total, warm=warm, lapsed=lapsed, waiting_for_a_person=total - warm - lapsed
    )


def _predicted(hours: list[limits.HourOfCalls], rolling: int, measure: str) -> int:
    complete = hours[:-1][-PREDICT_FROM_HOURS:]  # the last hour in the list is still running
    return max([rolling, *(getattr(hour, measure) for hour in complete)])


def key_budget(fingerprint: str, *, at: datetime | None = None) -> KeyBudget:
    """The report of one developer key (by fingerprint) for the 24 hours up to ``at``."""
    moment = at or now()
    hours = limits.calls_by_hour(fingerprint, hours=HOURS, at=moment)
    last_hour = limits.calls_last_hour(fingerprint, at=moment)
    state = limits.status(fingerprint)
    logins_now = max(last_hour.logins, state.logins_used)
    return KeyBudget(
        fingerprint=fingerprint,
        hours=hours,
        last_hour=last_hour,
        tenants=tenants_of(fingerprint, at=moment),
        logins_in_budget_window=state.logins_used,
        paused_until=state.paused_until,
        call_limit=MAX_CALLS_PER_HOUR,
        login_limit=MAX_LOGINS_PER_HOUR,
        login_budget=int(bill_settings.LOGIN_BUDGET_PER_HOUR),
        upkeep_limit=limits.upkeep_limit(),
        predicted_calls=_predicted(hours, last_hour.total, "total"),
        predicted_logins=_predicted(hours, logins_now, "logins"),
    )


def keys_by_connections() -> list[str]:
    """Fingerprints of the developer keys with connections, most connections first."""
    rows = (
        BillConnection.objects.values_list("dev_key_fingerprint")
        .annotate(n=Count("id"))
        .order_by("-n", "dev_key_fingerprint")
    )
    return [fingerprint for fingerprint, _n in rows]


def developer_keys(*, hours: int = HOURS) -> list[str]:
    """Fingerprints with connections or with calls counted in ``hours``: most connections
    first, then the ones with calls only (a key whose connections were all unlinked)."""
    linked = keys_by_connections()
    seen = set(linked)
    return linked + [f for f in limits.counted_fingerprints(hours=hours) if f not in seen]


def find_key(label: str) -> str | None:
    """The fingerprint a shown label (its first characters) stands for, if exactly one."""
    matches = [f for f in developer_keys() if f.startswith(label)] if label else []
    return matches[0] if len(matches) == 1 else None


def hour_table(report: KeyBudget) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)``: the per-hour table both the admin page and ``bill_status --budget``
    show, one row per clock hour (UTC), oldest first, as text."""
    header = [
        str(_("hour (UTC)")),
        *(str(label) for _kind, label in KIND_LABELS),
        str(_("total")),
        str(_("upkeep")),
        str(_("deferred upkeep")),
    ]
    rows = []
    for index, hour in enumerate(report.hours):
        start = hour.start.strftime("%Y-%m-%d %H:00")
        if index == len(report.hours) - 1:
            start += " " + str(_("(running)"))
        counts = [getattr(hour, kind) for kind, _label in KIND_LABELS]
        rows.append([start, *map(_number, [*counts, hour.total, hour.upkeep, hour.deferred])])
    return header, rows


def summary_rows(report: KeyBudget) -> list[tuple[str, str]]:
    """The key's figures as (what, value) pairs, worded once for both the page and the command."""
    tenants = report.tenants
    last = report.last_hour
    paused = report.paused_until.isoformat() if report.paused_until else str(_("no"))
    of = str(_("%(used)s of %(limit)s"))

    def used(value: int, limit: int) -> str:
        return of % {"used": _number(value), "limit": _number(limit)}

    rows = [
        (_("connections"), tenants.total),
        (_("warm (session alive)"), tenants.warm),
        (_("lapsed (the next call logs in)"), tenants.lapsed),
        (_("waiting for a person (relink, disabled)"), tenants.waiting_for_a_person),
        (_("calls, rolling last hour"), used(last.total, report.call_limit)),
        (_("upkeep, rolling last hour (upkeep share)"), used(last.upkeep, report.upkeep_limit)),
        (
            _("logins, rolling last hour (login budget)"),
            used(report.logins_in_budget_window, report.login_budget),
        ),
        (_("logins paid by callers, 24 h"), report.caller_logins),
        (_("calls, 24 h"), report.calls),
        (_("busiest clock hour, calls"), report.busiest_hour),
        (_("predicted calls, next hour"), report.predicted_calls),
        (_("call headroom, next hour (of BILL's limit)"), report.call_headroom),
        (_("predicted logins, next hour"), report.predicted_logins),
        (_("login headroom, next hour (of the login budget)"), report.login_headroom),
        (_("paused by BILL (BDC_1144) until"), paused),
    ]
    return [(str(what), _number(value)) for what, value in rows]


def _number(value: object) -> str:
    """A count with thousands separators (``20,000``); anything else as text."""
    return f"{value:,}" if isinstance(value, int) else str(value)
