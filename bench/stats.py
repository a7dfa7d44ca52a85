"""Latency percentiles, the same definition for every workload so the figures compare."""

from __future__ import annotations

from collections.abc import Iterable


def percentile(sorted_values: list[float], q: float) -> float:
    """The value below which a fraction ``q`` of ``sorted_values`` lies (nearest rank, as simulate uses)."""
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def p50_p99_ms(latencies_s: Iterable[float]) -> tuple[float, float]:
    ordered = sorted(latencies_s)
    return percentile(ordered, 0.50) * 1000, percentile(ordered, 0.99) * 1000
