"""Prometheus metrics, an optional extra: ``pip install "django-bill-integration[prometheus]"``.

:class:`BillCollector` is a custom collector (``prometheus_client``'s documented extension
point): each scrape reads the figures fresh, so nothing is counted twice and no worker has to
push anything. Two ways to expose it:

* mount the app's view, which serves this collector alone::

      from bill_integration.metrics import metrics_view
      urlpatterns += [path("metrics/bill/", metrics_view)]

* or add it to the registry your project already exposes (``django-prometheus``,
  ``prometheus_client.start_http_server``), once, e.g. in an ``AppConfig.ready()``::

      from bill_integration.metrics import register
      register()  # prometheus_client.REGISTRY unless given another

Metrics (``dev_key`` is the first 12 characters of the developer key's fingerprint, a keyed
hash, as ``manage.py bill_status`` shows it; never the key, never a tenant):

==========================================  ======================================================
``bill_connections``                        connections per ``status`` and ``auth_method``
``bill_calls_last_hour``                    calls in the rolling hour per ``dev_key`` and ``kind``
                                            (caller, caller_login, background_login, keep_alive,
                                            other)
``bill_upkeep_deferred_last_hour``          upkeep the share or the pacing turned away
``bill_logins_last_hour``                   logins spent of the login budget, per ``dev_key``
``bill_login_budget``                       ``LOGIN_BUDGET_PER_HOUR``
``bill_calls_limit``                        BILL's calls per hour per developer key (20,000)
``bill_upkeep_limit``                       upkeep calls allowed per rolling hour (the share)
``bill_dev_key_paused``                     1 while BILL has paused the key (BDC_1144)
``bill_scrape_errors``                      1 when a part could not be read (the limiter down)
==========================================  ======================================================

The per-key metrics cover the developer keys with connections, the :data:`MAX_KEYS` shared by
the most connections (a project whose tenants bring their own keys may have thousands: each
would be a few series of its own).

Importing this module never fails: ``prometheus_client`` is imported when the collector is
built or the view answers, and its absence raises ``ImproperlyConfigured`` naming the extra.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db.models import Count
from django.http import HttpRequest, HttpResponse

from . import limits
from .conf import bill_settings
from .constants import MAX_CALLS_PER_HOUR
from .models import BillConnection
from .services.budget import keys_by_connections

logger = logging.getLogger("bill_integration.metrics")

#: How many developer keys (those shared by the most connections) get series of their own.
MAX_KEYS = 200
#: Characters of the fingerprint in the ``dev_key`` label (as ``bill_status`` shows it).
KEY_LABEL_LENGTH = 12
MISSING_EXTRA = (
    "bill_integration's Prometheus metrics need prometheus_client: install the extra, "
    'pip install "django-bill-integration[prometheus]".'
)


def _prometheus() -> Any:
    """The ``prometheus_client`` module, or ``ImproperlyConfigured`` naming the extra."""
    try:
        import prometheus_client
        import prometheus_client.core  # GaugeMetricFamily, for the collector
    except ImportError as exc:
        raise ImproperlyConfigured(MISSING_EXTRA) from exc
    return prometheus_client


class BillCollector:
    """Connection counts and each developer key's calls, logins and pause, read per scrape."""

    def __init__(self) -> None:
        self._core = _prometheus().core  # fails here, not at import, without the extra

    def describe(self) -> list[Any]:
        # No metrics described up front: registering must not query the database.
        return []

    def collect(self) -> Iterator[Any]:
        core = self._core
        yield from self._connections(core)
        errors = core.GaugeMetricFamily(
            "bill_scrape_errors", "1 when a part of the BILL figures could not be read."
        )
        try:
            yield from self._keys(core)
        except Exception as exc:  # noqa: BLE001 - the limiter down: say so, keep the rest
            logger.warning("bill metrics: developer keys not read: %s", type(exc).__name__)
            errors.add_metric([], 1)
        else:
            errors.add_metric([], 0)
        yield errors

    def _connections(self, core: Any) -> Iterator[Any]:
        family = core.GaugeMetricFamily(
            "bill_connections",
            "BILL connections per status and sign-in method.",
            labels=["status", "auth_method"],
        )
        rows = (
            BillConnection.objects.values_list("status", "auth_method")
            .annotate(n=Count("id"))
            .order_by()
        )
        for status, method, n in rows:
            family.add_metric([status, method], n)
        yield family

    def _keys(self, core: Any) -> Iterator[Any]:
        calls = core.GaugeMetricFamily(
            "bill_calls_last_hour",
            "Calls to BILL in the rolling hour, per developer key and kind.",
            labels=["dev_key", "kind"],
        )
        deferred = core.GaugeMetricFamily(
            "bill_upkeep_deferred_last_hour",
            "Keep-alives and background logins turned away in the rolling hour (no call made).",
            labels=["dev_key"],
        )
        logins = core.GaugeMetricFamily(
            "bill_logins_last_hour",
            "Logins spent of the developer key's rolling-hour login budget.",
            labels=["dev_key"],
        )
        paused = core.GaugeMetricFamily(
            "bill_dev_key_paused",
            "1 while BILL has paused the developer key (BDC_1144), until the next hour.",
            labels=["dev_key"],
        )
        for fingerprint in keys_by_connections()[:MAX_KEYS]:
            label = fingerprint[:KEY_LABEL_LENGTH]
            hour = limits.calls_last_hour(fingerprint)
            for kind in limits.CALL_KINDS:
                calls.add_metric([label, kind], getattr(hour, kind))
            deferred.add_metric([label], hour.deferred)
            state = limits.status(fingerprint)
            logins.add_metric([label], state.logins_used)
            paused.add_metric([label], 1 if state.paused_until else 0)
        yield from (calls, deferred, logins, paused)
        yield core.GaugeMetricFamily(
            "bill_login_budget",
            "Logins per developer key per rolling hour (LOGIN_BUDGET_PER_HOUR).",
            value=int(bill_settings.LOGIN_BUDGET_PER_HOUR),
        )
        yield core.GaugeMetricFamily(
            "bill_calls_limit",
            "BILL's calls per hour per developer key.",
            value=MAX_CALLS_PER_HOUR,
        )
        yield core.GaugeMetricFamily(
            "bill_upkeep_limit",
            "Upkeep calls (keep-alives, background logins) allowed per rolling hour.",
            value=limits.upkeep_limit(),
        )


def register(registry: Any = None) -> BillCollector:
    """Add a :class:`BillCollector` to ``registry`` (``prometheus_client.REGISTRY``)."""
    prometheus = _prometheus()
    collector = BillCollector()
    (registry or prometheus.REGISTRY).register(collector)
    return collector


def metrics_view(request: HttpRequest) -> HttpResponse:
    """The collector's metrics in Prometheus' text format (a registry of its own)."""
    prometheus = _prometheus()
    registry = prometheus.CollectorRegistry(auto_describe=False)
    registry.register(BillCollector())
    return HttpResponse(
        prometheus.generate_latest(registry), content_type=prometheus.CONTENT_TYPE_LATEST
    )
