"""Prometheus metrics of the API: latency per route, trades, conflicts, errors, persister lag.

With several worker processes set ``PROMETHEUS_MULTIPROC_DIR`` (``predmarket
serve --workers N`` does) so a scrape sums every worker. Names follow
Prometheus' conventions: counters end in ``_total``, durations are in seconds,
rates are left to PromQL's ``rate()``. The persister's own counters are served
by each persister (persister.metrics); only the group's lag, a property of the
stream, is exported here.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
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

#: Gauge name (after predmarket_persister_) -> (field of the persister's report, scale, help).
PERSISTER_FIELDS = {
    "lag_entries": ("lag_entries", 1.0, "Stream entries the persister group has not acknowledged"),
    "oldest_age_seconds": ("oldest_age_ms", 0.001, "Age of the oldest unacknowledged entry, seconds"),
}


class PersisterLag(Collector):
    """Reads the persister's last report from Redis at scrape time."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def collect(self) -> Iterable[GaugeMetricFamily]:
        for name, (field, scale, help_text) in PERSISTER_FIELDS.items():
            value = self.values.get(field)
            if value is not None:
                family = GaugeMetricFamily(f"predmarket_persister_{name}", help_text)
                family.add_metric([], float(value) * scale)
                yield family


def render(persister: dict[str, str]) -> bytes:
    """The exposition text: this process's (or all workers') metrics plus the persister's lag."""
    registry = CollectorRegistry()
    if values.ValueClass is not values.MutexValue:  # prometheus_client chose per-process files at import
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # prometheus_client leaves __init__ bare
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    lag = PersisterLag()
    lag.values = {k: str(v) for k, v in persister.items()}
    output = generate_latest(registry)
    extra = CollectorRegistry()
    extra.register(lag)
    return output + generate_latest(extra)
