"""A health check the host project mounts: ``bill_integration.health.health``.

One JSON document, answered 200 when healthy and 503 otherwise, for a monitor (an uptime
check, Kubernetes' readiness probe, a status page)::

    from bill_integration.health import health
    urlpatterns += [path("health/bill/", health)]

What it checks, each by the cheapest read that proves it:

* ``database``: the database the connections are read from answers ``SELECT 1``;
* ``limiter``: the shared limits' backend (Redis when ``REDIS_URL`` is set, else the
  database) answers a read;
* ``developer_keys``: how many developer keys BILL has paused for the hour (BDC_1144: no
  tenant on such a key reaches BILL until the next hour), how many have spent at least
  :data:`NEARLY_SPENT` of their login budget, and how many made at least that share of BILL's
  20,000 calls in the rolling hour (``limits.calls_last_hour``). The :data:`KEYS_CHECKED` keys shared by the most
  connections are checked (a project whose tenants bring their own keys may have thousands);
  the document says how many were;
* ``connections``: how many connections are in each status.

Unhealthy (503): the database or the limiter unreachable, or a developer key paused. A login
budget or an hour's calls nearly spent is a warning (200, listed in ``warnings``): nothing is
broken yet.

Nothing secret or per tenant is shown: no key, no fingerprint, no tenant, only counts and the
error's class name. Protection is optional: give ``{"token": "..."}`` as the view's keyword
argument (``path("health/bill/", health, {"token": os.environ["BILL_HEALTH_TOKEN"]})``) to
require ``Authorization: Bearer <token>``, or wrap it in ``staff_member_required``.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from django.db import connections, router
from django.db.models import Count
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from . import limits
from .conf import bill_settings, now
from .constants import MAX_CALLS_PER_HOUR
from .models import BillConnection, ConnectionStatus
from .services.budget import keys_by_connections

logger = logging.getLogger("bill_integration.health")

#: A key counts as "login budget nearly spent" from this share of LOGIN_BUDGET_PER_HOUR.
NEARLY_SPENT = 0.9
#: How many developer keys (those shared by the most connections) are checked per request.
KEYS_CHECKED = 100
#: A fingerprint no key has: reading its pause proves the limiter answers.
PROBE_FINGERPRINT = "bill-integration-health-probe"


def _failure(exc: Exception) -> dict[str, Any]:
    # The class name only: a driver's message may carry a host name or a URL with a password.
    logger.warning("bill health check failed: %s", type(exc).__name__)
    return {"ok": False, "error": type(exc).__name__}


def _database() -> dict[str, Any]:
    try:
        with connections[router.db_for_read(BillConnection)].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return _failure(exc)
    return {"ok": True}


def _limiter() -> dict[str, Any]:
    try:
        limits.get_limiter().paused_until(PROBE_FINGERPRINT, at=now())
    except Exception as exc:  # noqa: BLE001
        return _failure(exc)
    return {"ok": True, "backend": "redis" if bill_settings.REDIS_URL else "database"}


def connections_by_status() -> dict[str, int]:
    """How many connections are in each status (every status present, zeros included)."""
    counts = dict.fromkeys(ConnectionStatus.values, 0)
    rows = BillConnection.objects.values_list("status").annotate(n=Count("id")).order_by()
    for status, n in rows:
        counts[status] = n
    return counts


def _developer_keys() -> dict[str, Any]:
    fingerprints = keys_by_connections()
    paused = nearly = busy = 0
    for fingerprint in fingerprints[:KEYS_CHECKED]:
        state = limits.status(fingerprint)
        paused += state.paused_until is not None
        nearly += state.budget > 0 and state.logins_used >= NEARLY_SPENT * state.budget
        busy += limits.calls_last_hour(fingerprint).total >= NEARLY_SPENT * MAX_CALLS_PER_HOUR
    return {
        "total": len(fingerprints),
        "checked": min(len(fingerprints), KEYS_CHECKED),
        "paused": paused,
        "login_budget_nearly_spent": nearly,
        "calls_nearly_spent": busy,
    }


def gather() -> tuple[bool, dict[str, Any]]:
    """``(healthy, document)``: what :func:`health` answers (module docstring)."""
    checks = {"database": _database(), "limiter": _limiter()}
    document: dict[str, Any] = {"checks": checks, "warnings": []}
    problems = [f"{name} unreachable" for name, check in checks.items() if not check["ok"]]
    if checks["database"]["ok"]:
        document["connections"] = connections_by_status()
        if checks["limiter"]["ok"]:
            try:
                keys = document["developer_keys"] = _developer_keys()
            except Exception as exc:  # noqa: BLE001 - the limiter failed mid-way
                checks["limiter"] = _failure(exc)
                problems.append("limiter unreachable")
            else:
                if keys["paused"]:
                    problems.append(f"{keys['paused']} developer key(s) paused by BILL (BDC_1144)")
                if keys["login_budget_nearly_spent"]:
                    document["warnings"].append(
                        f"{keys['login_budget_nearly_spent']} developer key(s) spent at least "
                        f"{NEARLY_SPENT:.0%} of the login budget"
                    )
                if keys["calls_nearly_spent"]:
                    document["warnings"].append(
                        f"{keys['calls_nearly_spent']} developer key(s) made at least "
                        f"{NEARLY_SPENT:.0%} of BILL's calls per hour"
                    )
    document["problems"] = problems
    document["status"] = "failing" if problems else "warning" if document["warnings"] else "ok"
    document["checked_at"] = now().isoformat()
    return not problems, document


def _authorized(request: HttpRequest, token: str | None) -> bool:
    if not token:
        return True
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


@never_cache
@require_GET
def health(request: HttpRequest, token: str | None = None) -> JsonResponse:
    """The health document: 200 when healthy, 503 otherwise, 401 without the token if one is
    required (module docstring)."""
    if not _authorized(request, token):
        response = JsonResponse({"status": "unauthorized"}, status=401)
        response["WWW-Authenticate"] = 'Bearer realm="bill-health"'
        return response
    healthy, document = gather()
    return JsonResponse(document, status=200 if healthy else 503)
