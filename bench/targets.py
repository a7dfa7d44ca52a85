"""Issue 8's targets, checked against a run's own figures: printed, never asserted."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.results import ENGINE, HTTP, PG_ONLY, BenchResults


@dataclass(frozen=True)
class Target:
    what: str
    goal: str
    measure: Callable[[BenchResults], float | None]
    met: Callable[[float], bool]
    unit: str = ""


def _rate(system: str, markets: int, concurrency: int, processes: int = 1) -> Callable[[BenchResults], float | None]:
    def measure(r: BenchResults) -> float | None:
        row = r.find(system, markets, concurrency, processes)
        return row.trades_per_s if row else None
    return measure


def _worst_p99(system: str, concurrency: int, processes: int) -> Callable[[BenchResults], float | None]:
    def measure(r: BenchResults) -> float | None:
        rows = [row for row in r.rows if (row.system, row.concurrency, row.processes) == (system, concurrency,
                                                                                          processes)]
        return max(row.p99_ms for row in rows) if rows else None
    return measure


def _retries_hot_two_processes(r: BenchResults) -> float | None:
    row = r.find(ENGINE, 1, 32, 2)
    return row.retries_per_trade if row else None


def _vs_pg_hot(r: BenchResults) -> float | None:
    engine, peer = r.find(ENGINE, 1, 32), r.find(PG_ONLY, 1, 32)
    return engine.trades_per_s / peer.trades_per_s if engine and peer and peer.trades_per_s else None


def _worst_http_rate(r: BenchResults) -> float | None:
    rows = [row for row in r.rows if row.system == HTTP]
    return min(row.trades_per_s for row in rows) if rows else None


def _worst_http_p99(r: BenchResults) -> float | None:
    rows = [row for row in r.rows if row.system == HTTP]
    return max(row.p99_ms for row in rows) if rows else None


def _persister_rate(r: BenchResults) -> float | None:
    return r.persister.events_per_s if r.persister else None


def _persister_lag(r: BenchResults) -> float | None:
    return r.persister.drain_s if r.persister else None


PERSISTER = "persister draining a burst (100,000 trades)"

TARGETS = (
    Target("engine, 1 process, 100 markets, 32 tasks", ">= 30,000 trades/s", _rate(ENGINE, 100, 32),
           lambda v: v >= 30_000, "/s"),
    Target("engine, 1 process, 1 hot market, 32 tasks", ">= 25,000 trades/s", _rate(ENGINE, 1, 32),
           lambda v: v >= 25_000, "/s"),
    Target("engine / pg-only, 1 hot market, 32 tasks", ">= 35x", _vs_pg_hot, lambda v: v >= 35, "x"),
    Target("engine, 2 processes, 1 hot market, 32 tasks", "< 0.05 retries/trade", _retries_hot_two_processes,
           lambda v: v < 0.05, " retries/trade"),
    Target("engine, 1 process, 32 tasks, worst p99", "<= 5 ms", _worst_p99(ENGINE, 32, 1), lambda v: v <= 5, " ms"),
    Target("HTTP, 2 replicas, 64 connections, worst of hot/100", ">= 5,000 trades/s", _worst_http_rate,
           lambda v: v >= 5_000, "/s"),
    Target("HTTP, 2 replicas, 64 connections, worst p99", "<= 25 ms", _worst_http_p99, lambda v: v <= 25, " ms"),
    Target(PERSISTER, ">= 20,000 events/s", _persister_rate, lambda v: v >= 20_000, "/s"),
    Target(PERSISTER, "lag 0 within 10 s", _persister_lag, lambda v: v <= 10, " s"),
)


def evaluate(results: BenchResults) -> list[tuple[Target, float | None, bool | None]]:
    """Each target with its measured value and whether it is met (None: not measured in this run)."""
    out: list[tuple[Target, float | None, bool | None]] = []
    for target in TARGETS:
        value = target.measure(results)
        out.append((target, value, None if value is None else target.met(value)))
    return out
