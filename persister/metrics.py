"""The persister's own Prometheus endpoint: its counters, read from the process that counts them.

Each persister serves ``/metrics`` on ``PM_PERSISTER_METRICS_PORT`` (off when
unset, so several can share a host); Prometheus scrapes each one and sums them.
Values are read from the worker at scrape time, so nothing is counted twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from predmarket.persister.worker import Persister

PREFIX = "predmarket_persister_"


class PersisterCollector(Collector):
    def __init__(self, persister: Persister) -> None:
        self.persister = persister

    def collect(self) -> Iterable[Metric]:
        c, janitor = self.persister.counters, self.persister.janitor.stats
        counters = (
            ("entries", "Stream entries written to PostgreSQL and acknowledged", c.entries),
            ("rows", "Rows written to PostgreSQL", c.rows),
            ("trades", "Trades written to PostgreSQL", c.trades),
            ("dead_letters", "Malformed stream entries set aside", c.dead),
            ("batches", "Batches committed", c.batches),
            ("rounds", "Loop rounds, idle ones included", c.rounds),
            ("market_writes", "Market snapshot rows written by the idle flush", self.persister.flusher.writes),
            ("users_evicted", "Idle users evicted from Redis", janitor.users_evicted),
            ("markets_archived", "Settled markets archived out of Redis", janitor.markets_archived),
        )
        for name, help_text, value in counters:
            # CounterMetricFamily adds the _total suffix to the sample's name.
            counter = CounterMetricFamily(PREFIX + name, help_text)
            counter.add_metric([], value)
            yield counter
        gauges = (
            ("hot_users", "Users in Redis at the janitor's last full pass", janitor.hot_users),
            ("hot_markets", "Markets in Redis at the janitor's last pass", janitor.hot_markets),
        )
        for name, help_text, value in gauges:
            gauge = GaugeMetricFamily(PREFIX + name, help_text)
            gauge.add_metric([], value)
            yield gauge


def registry_of(persister: Persister) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(PersisterCollector(persister))
    return registry


def serve_metrics(persister: Persister, host: str, port: int) -> int:
    """Serve the persister's metrics in a background thread; returns the port bound (``port`` 0: any)."""
    server, _thread = start_http_server(port, addr=host, registry=registry_of(persister))
    return int(server.server_port)
