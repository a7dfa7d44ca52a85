"""The persister's own Prometheus endpoint: its counters, read from the process that counts them.

Each persister serves ``/metrics`` on ``PM_PERSISTER_METRICS_PORT`` (off when
unset, so several can share a host); Prometheus scrapes each one and sums them.
Values are read from the worker at scrape time, so nothing is counted twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from predmarket.persister.sharded import ShardedPersister
    from predmarket.persister.worker import Persister

PREFIX = "predmarket_persister_"


class PersisterCollector(Collector):
    def __init__(self, persister: Persister | ShardedPersister) -> None:
        self.persister = persister

    def collect(self) -> Iterable[Metric]:
        loops = self.persister.parts  # one per shard: their sums

        def total(count: Callable[[Persister], int]) -> int:
            return sum(count(loop) for loop in loops)

        counters = (
            ("entries", "Stream entries written to PostgreSQL and acknowledged", total(lambda p: p.counters.entries)),
            ("rows", "Rows written to PostgreSQL", total(lambda p: p.counters.rows)),
            ("trades", "Trades written to PostgreSQL", total(lambda p: p.counters.trades)),
            ("dead_letters", "Malformed stream entries set aside", total(lambda p: p.counters.dead)),
            ("batches", "Batches committed", total(lambda p: p.counters.batches)),
            ("rounds", "Loop rounds, idle ones included", total(lambda p: p.counters.rounds)),
            ("market_writes", "Market snapshot rows written by the idle flush", total(lambda p: p.flusher.writes)),
            ("users_evicted", "Idle users evicted from Redis", total(lambda p: p.janitor.stats.users_evicted)),
            ("markets_archived", "Settled markets archived out of Redis",
             total(lambda p: p.janitor.stats.markets_archived)),
            ("eviction_marks_forgotten", "Eviction marks forgotten once past the reload window's keep time",
             total(lambda p: p.janitor.stats.marks_forgotten)),
        )
        for name, help_text, value in counters:
            # CounterMetricFamily adds the _total suffix to the sample's name.
            counter = CounterMetricFamily(PREFIX + name, help_text)
            counter.add_metric([], value)
            yield counter
        gauges = (
            ("hot_users", "Users in Redis at the janitor's last full pass", total(lambda p: p.janitor.stats.hot_users)),
            ("hot_markets", "Markets in Redis at the janitor's last pass",
             total(lambda p: p.janitor.stats.hot_markets)),
        )
        for name, help_text, value in gauges:
            gauge = GaugeMetricFamily(PREFIX + name, help_text)
            gauge.add_metric([], value)
            yield gauge


def registry_of(persister: Persister | ShardedPersister) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(PersisterCollector(persister))
    return registry


def serve_metrics(persister: Persister | ShardedPersister, host: str, port: int) -> int:
    """Serve the persister's metrics in a background thread; returns the port bound (``port`` 0: any)."""
    server, _thread = start_http_server(port, addr=host, registry=registry_of(persister))
    return int(server.server_port)
