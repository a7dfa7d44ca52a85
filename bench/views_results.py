"""The views section's figures (issue 16): the record, the readers' latencies per route, the persister's rates."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from statistics import mean
from typing import Any

from bench.views_readers import ROUTES, ReaderResult
from bench.views_record import RecordFacts

#: The issue's targets: p99 of each view at most this, and the persister's rate with readers within this of without.
P99_TARGET_MS = 20.0
INGEST_TARGET = 0.10
NO_READERS, CLOSED_LOOP = "none", "closed loop"


def reader_mode(rate_per_s: float | None) -> str:
    return CLOSED_LOOP if rate_per_s is None else f"{rate_per_s:g}/s"


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


@dataclass
class RouteStats:
    requests: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    #: trades per page, positions per answer, candles per answer (mean)
    items_per_answer: float
    errors: dict[int, int] = field(default_factory=dict)


@dataclass
class ReadPhase:
    """The readers over one stretch of time (or several, merged)."""

    seconds: float
    routes: dict[str, RouteStats]
    connection_errors: int

    @property
    def requests_per_s(self) -> float:
        total = sum(r.requests for r in self.routes.values())
        return total / self.seconds if self.seconds > 0 else 0.0

    @classmethod
    def of(cls, results: list[ReaderResult]) -> ReadPhase:
        routes: dict[str, RouteStats] = {}
        for route in ROUTES:
            values = sorted(v for r in results for v in r.latencies[route])
            items = sum(r.items[route] for r in results)
            errors: dict[int, int] = {}
            for r in results:
                for status, n in r.errors.get(route, {}).items():
                    errors[status] = errors.get(status, 0) + n
            routes[route] = RouteStats(
                len(values), _percentile(values, 0.50) * 1000, _percentile(values, 0.95) * 1000,
                _percentile(values, 0.99) * 1000, (values[-1] if values else 0.0) * 1000,
                items / len(values) if values else 0.0, errors)
        return cls(sum(r.elapsed_s for r in results), routes, sum(r.connection_errors for r in results))

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 2), "requests_per_s": round(self.requests_per_s, 1),
                "connection_errors": self.connection_errors,
                "routes": {name: asdict(stats) for name, stats in self.routes.items()}}


@dataclass
class IngestRun:
    """The persister draining one burst into the big record."""

    #: "none", "closed loop" or "<n>/s" (bench/views_readers.py)
    readers: str
    rollup: bool
    trades: int
    events: int
    drain_s: float
    #: one of a rollup off/on pair run back to back (what the rollup's cost is read from)
    rollup_pair: bool = False

    @property
    def events_per_s(self) -> float:
        return self.events / self.drain_s if self.drain_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "events_per_s": round(self.events_per_s, 1)}


@dataclass
class ViewsResult:
    record: RecordFacts
    #: seconds to copy the kept record for this run, and to recover Redis from it
    copy_s: float
    recover_s: float
    redis_used_mb: float
    readers: int
    #: the readers alone, closed loop
    alone: ReadPhase
    #: the readers alone at fixed total rates (requests/s -> phase)
    paced: dict[str, ReadPhase]
    #: the readers during the persister's ingest, by reader mode
    during_ingest: dict[str, ReadPhase]
    ingest: list[IngestRun]

    def _rate(self, readers: str, rollup: bool = True) -> float | None:
        rates = [r.events_per_s for r in self.ingest if r.readers == readers and r.rollup == rollup]
        return mean(rates) if rates else None

    @property
    def rate_without_readers(self) -> float | None:
        return self._rate(NO_READERS)

    def reader_modes(self) -> list[str]:
        return list(dict.fromkeys(r.readers for r in self.ingest if r.readers != NO_READERS))

    def rate_with(self, mode: str) -> float | None:
        return self._rate(mode)

    @property
    def rate_without_rollup(self) -> float | None:
        return self._rate(NO_READERS, rollup=False)

    def ingest_slowdown(self, mode: str) -> float | None:
        """1 - with/without (positive: slower with readers of ``mode``)."""
        without, with_ = self.rate_without_readers, self.rate_with(mode)
        if not without or with_ is None:
            return None
        return 1.0 - with_ / without

    @property
    def rollup_cost(self) -> float | None:
        """1 - rate with the rollup / rate without it, of the back-to-back pairs only (no readers either way):
        runs minutes apart differ by more than the rollup costs on a shared machine."""
        on = [r.events_per_s for r in self.ingest if r.rollup_pair and r.rollup]
        off = [r.events_per_s for r in self.ingest if r.rollup_pair and not r.rollup]
        if not on or not off:
            return None
        return 1.0 - mean(on) / mean(off)

    def to_dict(self) -> dict[str, Any]:
        def rounded(value: float | None, digits: int = 1) -> float | None:
            return None if value is None else round(value, digits)

        return {
            "record": asdict(self.record), "copy_s": round(self.copy_s, 1), "recover_s": round(self.recover_s, 1),
            "redis_used_mb": round(self.redis_used_mb, 1), "readers": self.readers,
            "alone": self.alone.to_dict(),
            "paced": {rate: phase.to_dict() for rate, phase in self.paced.items()},
            "during_ingest": {mode: phase.to_dict() for mode, phase in self.during_ingest.items()},
            "ingest": [r.to_dict() for r in self.ingest],
            "events_per_s_without_readers": rounded(self.rate_without_readers),
            "events_per_s_with_readers": {m: rounded(self.rate_with(m)) for m in self.reader_modes()},
            "ingest_slowdown": {m: rounded(self.ingest_slowdown(m), 4) for m in self.reader_modes()},
            "events_per_s_without_rollup": rounded(self.rate_without_rollup),
            "rollup_cost": rounded(self.rollup_cost, 4),
            "targets": {"p99_ms_at_most": P99_TARGET_MS, "ingest_slowdown_at_most": INGEST_TARGET},
        }
