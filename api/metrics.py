"""Prometheus metrics of the API: latency per route, trades, conflicts, errors, persister lag.

With several worker processes set ``PROMETHEUS_MULTIPROC_DIR`` (``predmarket
serve --workers N`` does) so a scrape sums every worker.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

LATENCY = Histogram(
    "predmarket_request_seconds", "HTTP request latency", ["method", "route", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
ERRORS = Counter("predmarket_errors_total", "Error responses by contract code", ["code"])
TRADES = Counter("predmarket_trades_total", "Trades executed through this API")
CONFLICTS = Counter("predmarket_cas_conflicts_total", "Trade script calls repeated after a version conflict")
_conflicts_seen = 0


def observe_conflicts(total: int) -> None:
    """Carry the engine's conflict count (per process) into the counter, so each worker reports its own."""
    global _conflicts_seen
    if total > _conflicts_seen:
        CONFLICTS.inc(total - _conflicts_seen)
        _conflicts_seen = total

PERSISTER_FIELDS = {
    "lag_entries": "Stream entries the persister has not acknowledged",
    "oldest_age_ms": "Age of the oldest unacknowledged entry, milliseconds",
    "events_per_s": "Entries written per second by the persister (last report)",
    "rows_per_s": "Rows written per second by the persister (last report)",
    "users_evicted": "Idle users evicted from Redis by this persister since it started",
    "markets_archived": "Settled markets archived out of Redis by this persister since it started",
    "hot_users": "Users in Redis at the janitor's last full pass",
    "hot_markets": "Markets in Redis at the janitor's last pass",
}


class PersisterLag(Collector):
    """Reads the persister's last report from Redis at scrape time."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def collect(self) -> Iterable[GaugeMetricFamily]:
        for field, help_text in PERSISTER_FIELDS.items():
            value = self.values.get(field)
            if value is not None:
                family = GaugeMetricFamily(f"predmarket_persister_{field}", help_text)
                family.add_metric([], float(value))
                yield family


def render(persister: dict[str, Any]) -> bytes:
    """The exposition text: this process's (or all workers') metrics plus the persister's lag."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    lag = PersisterLag()
    lag.values = {k: str(v) for k, v in persister.items()}
    output = generate_latest(registry)
    extra = CollectorRegistry()
    extra.register(lag)
    return output + generate_latest(extra)
