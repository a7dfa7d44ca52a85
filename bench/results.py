"""The figures of one bench run, their ratios, and their JSON form."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

ENGINE, HTTP, PG_ONLY, NAIVE_CAS = "engine", "http", "pg-only", "naive-cas"
PEERS = (PG_ONLY, NAIVE_CAS)


@dataclass
class Row:
    """One workload's throughput and latency."""

    system: str  # ENGINE, HTTP, PG_ONLY or NAIVE_CAS
    processes: int  # engine worker processes, or API replicas for HTTP
    markets: int
    concurrency: int  # tasks per process, or keep-alive connections for HTTP
    trades: int
    elapsed_s: float
    p50_ms: float
    p99_ms: float
    retries_per_trade: float | None  # None where the system has no retries (row locks, HTTP from outside)
    rejected: dict[str, int] = field(default_factory=dict)
    #: labels per market: 2 is YES/NO, the seed's markets (only engine rows in ``outcome_rows`` differ)
    outcomes: int = 2

    @property
    def trades_per_s(self) -> float:
        return self.trades / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def where(self) -> str:
        return "1 hot market" if self.markets == 1 else f"{self.markets} markets"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "trades_per_s": round(self.trades_per_s, 1)}


if TYPE_CHECKING:
    from bench.hotset_runs import HotsetResult
    from bench.policy_runs import PolicyRow
    from bench.shard_runs import ShardsResult
    from bench.stream_runs import StreamResult
    from bench.views_results import ViewsResult


@dataclass
class PersisterResult:
    trades: int
    events: int  # stream entries drained (trades write two each, plus setup events)
    drain_s: float  # persister start until lag 0 and every trade in PostgreSQL
    market_writes: int | None  # market rows the idle flush wrote during the drain (None: in other processes)
    burst_trades_per_s: float  # how fast the engine produced the burst
    pg_equals_redis: bool
    persisters: int = 1  # persister processes sharing the group

    @property
    def events_per_s(self) -> float:
        return self.events / self.drain_s if self.drain_s > 0 else 0.0

    @property
    def writes_per_trade(self) -> float | None:
        if self.market_writes is None:
            return None
        return self.market_writes / self.trades if self.trades else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "events_per_s": round(self.events_per_s, 1),
                "market_writes_per_trade": self.writes_per_trade, "market_writes_per_trade_if_per_trade": 1.0}


@dataclass(frozen=True)
class Ratio:
    peer: str
    markets: int
    concurrency: int
    engine_per_s: float
    peer_per_s: float

    @property
    def factor(self) -> float:
        return self.engine_per_s / self.peer_per_s if self.peer_per_s > 0 else float("inf")


@dataclass
class BenchResults:
    machine: dict[str, str]
    quick: bool
    started_at: str
    rows: list[Row] = field(default_factory=list)
    persister: PersisterResult | None = None
    #: the same burst drained by two persister processes
    persister_pair: PersisterResult | None = None
    hotset: HotsetResult | None = None
    streams: StreamResult | None = None
    #: the engine over shards (issue 14)
    shards: ShardsResult | None = None
    #: the trader's views on a large record (issue 16)
    views: ViewsResult | None = None
    policy: list[PolicyRow] = field(default_factory=list)
    #: the engine on markets of more labels (issue 15), beside the YES/NO rows of the same workload
    outcome_rows: list[Row] = field(default_factory=list)
    section_seconds: dict[str, float] = field(default_factory=dict)

    def find(self, system: str, markets: int, concurrency: int, processes: int = 1) -> Row | None:
        for row in self.rows:
            if (row.system, row.markets, row.concurrency, row.processes) == (system, markets, concurrency, processes):
                return row
        return None

    def ratios(self) -> list[Ratio]:
        """The one-process engine against each peer on the same workload (markets, tasks)."""
        out = []
        for peer in self.rows:
            if peer.system not in PEERS:
                continue
            engine = self.find(ENGINE, peer.markets, peer.concurrency)
            if engine is not None:
                out.append(Ratio(peer.system, peer.markets, peer.concurrency, engine.trades_per_s,
                                 peer.trades_per_s))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine, "quick": self.quick, "started_at": self.started_at,
            "section_seconds": {k: round(v, 1) for k, v in self.section_seconds.items()},
            "rows": [r.to_dict() for r in self.rows],
            "persister": self.persister.to_dict() if self.persister else None,
            "persister_pair": self.persister_pair.to_dict() if self.persister_pair else None,
            "hotset": self.hotset.to_dict() if self.hotset else None,
            "streams": self.streams.to_dict() if self.streams else None,
            "shards": self.shards.to_dict() if self.shards else None,
            "views": self.views.to_dict() if self.views else None,
            "policy": [p.to_dict() for p in self.policy],
            "outcome_rows": [r.to_dict() for r in self.outcome_rows],
            "ratios": [{**asdict(r), "factor": round(r.factor, 2)} for r in self.ratios()],
        }

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
