"""What ``predmarket bench`` runs and how much work each workload does."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from predmarket.engine.settings import Settings

SECTIONS = ("engine", "policy", "http", "persister", "peers", "hotset", "streams", "shards", "views")
#: What runs without --only: views generates a 10-million-trade record (~10 GB, many minutes the first time).
DEFAULT_SECTIONS = tuple(s for s in SECTIONS if s != "views")


def _engine_trades() -> dict[int, int]:
    # Sized so each run takes ~1.5-3 s at today's rates: long enough that the
    # ramp-up (first connection, script load) is noise, short enough for the budget.
    return {1: 5_000, 8: 20_000, 32: 80_000, 128: 80_000}


@dataclass(frozen=True)
class Sizes:
    """Work per workload; :data:`FULL` for the real run, :data:`QUICK` for a smoke test."""

    users: int = 100
    engine_processes: tuple[int, ...] = (1, 2)
    engine_markets: tuple[int, ...] = (1, 100)
    engine_concurrency: tuple[int, ...] = (1, 8, 32, 128)
    #: trades per run by tasks per process; concurrencies not listed use the largest count
    engine_trades: dict[int, int] = field(default_factory=_engine_trades)
    #: labels per market of the engine's labelled rows (one process, every engine_markets, 32 tasks or
    #: the largest engine_concurrency), run beside the YES/NO rows; empty: none
    engine_outcomes: tuple[int, ...] = (4, 16)
    http_markets: tuple[int, ...] = (1, 100)
    http_connections: int = 64
    http_seconds: float = 5.0
    #: trades before the clock starts: connections opened, API key caches and scripts warm
    http_warmup_s: float = 0.5
    persister_trades: int = 100_000
    persister_markets: int = 100
    #: also drain a burst with two persister processes
    persister_pair: bool = True
    #: give up (and fail) if the persister has not caught up by then
    persister_timeout_s: float = 120.0
    peer_markets: tuple[int, ...] = (1, 100)
    peer_concurrency: tuple[int, ...] = (1, 8, 32, 128)
    #: the peers run for a fixed time, not a fixed count: the naive CAS on one hot
    #: market is ~50x slower than on 100 markets, so a count would be either too
    #: small for one or minutes long for the other
    peer_seconds: float = 2.0
    #: PostgreSQL connections of the PostgreSQL-only peer, at most (max_connections is 100 here)
    pg_pool_max: int = 32
    #: the hot set (issue 7): a large population, a small active part
    hotset_users: int = 200_000
    hotset_markets: int = 5_000
    hotset_hot: int = 1_000
    #: round trips (a buy and its sell) by the hot users
    hotset_trades: int = 10_000
    #: idle live-stream subscribers on one replica during the HTTP load (``--stream-sse``/``--stream-ws``)
    stream_sse: int = 1_000
    stream_websockets: int = 100
    #: trades in the subscribers' market whose entries each subscriber must receive
    stream_markers: int = 20
    #: load runs with the subscribers, each between two without them (they connect before it and leave after);
    #: five, not three: single pairs on a 2-core machine spread over ±15 %, and the spread of their median
    #: shrinks as 1/√pairs (a quarter less than with three), for about a minute more (~135 s in all)
    stream_pairs: int = 5
    #: the trader's views (issue 16): the generated record (bench/views_record.py) ...
    views_trades: int = 10_000_000
    views_markets: int = 1_000
    views_users: int = 100_000
    #: ... its concurrent HTTP readers of one replica, and how long they read alone
    views_readers: int = 32
    views_seconds: float = 20.0
    views_warmup_s: float = 2.0
    #: ... then the readers at fixed total rates (requests/s), each this long
    views_paced_rates: tuple[float, ...] = (50.0, 100.0, 200.0)
    views_paced_seconds: float = 10.0
    #: the readers during ingest: closed loop, and at this total rate
    views_ingest_rate: float = 100.0
    #: each persister ingest run: a burst of this many trades over this many new markets
    views_ingest_trades: int = 40_000
    views_ingest_markets: int = 100
    #: ingest runs without and with readers (alternated), and rollup off/on pairs
    views_ingest_runs: int = 2
    views_rollup_runs: int = 1
    views_ingest_timeout_s: float = 300.0
    #: check the invariants on the recovered record and after the ingest (reads all of Redis's state)
    views_check_state: bool = True
    #: the engine over shards (issue 14): users, markets and measured trades per layout
    shards_users: int = 200
    shards_markets: int = 64
    shards_trades: int = 20_000

    def trades_for(self, concurrency: int) -> int:
        if concurrency in self.engine_trades:
            return self.engine_trades[concurrency]
        return max(self.engine_trades.values())


FULL = Sizes()
QUICK = Sizes(
    users=20, engine_processes=(1,), engine_concurrency=(1, 32), engine_trades={1: 300, 32: 3_000},
    http_seconds=1.5, http_warmup_s=0.2, persister_trades=5_000, peer_concurrency=(32,), peer_seconds=0.5,
    hotset_users=2_000, hotset_markets=100, hotset_hot=100, hotset_trades=500,
    stream_sse=200, stream_websockets=20, stream_markers=5, stream_pairs=1,
    views_trades=20_000, views_markets=50, views_users=300, views_seconds=2.0, views_warmup_s=0.5,
    views_paced_rates=(50.0,), views_paced_seconds=1.0, views_ingest_rate=50.0,
    views_ingest_trades=2_000, views_ingest_markets=5, views_ingest_runs=1, views_rollup_runs=1,
    shards_users=20, shards_markets=16, shards_trades=1_000,
)


@dataclass(frozen=True)
class BenchOptions:
    settings: Settings
    sections: tuple[str, ...] = DEFAULT_SECTIONS
    sizes: Sizes = FULL
    #: where the JSON and the chart go; None writes nothing (tests)
    out: Path | None = None
    quick: bool = False
    seed: int | None = None
    #: views: generate the record again even if a kept one matches
    rebuild_views: bool = False


def parse_sections(text: str) -> tuple[str, ...]:
    """``"engine,peers"`` -> ("engine", "peers") in run order; rejects unknown names."""
    names = {part.strip() for part in text.split(",") if part.strip()}
    unknown = names - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    if not names:
        raise ValueError("no section named")
    return tuple(s for s in SECTIONS if s in names)
