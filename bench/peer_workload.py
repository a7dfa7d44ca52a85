"""The seed's random trades against a reference peer, for a fixed time, from N tasks of one process.

The same choices as ``predmarket.simulate`` (predmarket.workload): a random user and market, 10-100
whole shares, a random BUY or SELL of YES or NO, a sell only of shares the
user holds (else a buy). A peer is just an async function that executes one
trade and returns how many times it had to retry.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from predmarket.engine.errors import EngineError
from predmarket.engine.models import Outcome, Side

from predmarket.workload import RandomTrades

#: (user_id, market_id, side, outcome, micro-shares) -> retries needed
TradeFn = Callable[[str, str, Side, Outcome, int], Awaitable[int]]


@dataclass
class PeerRun:
    trades: int = 0
    retries: int = 0
    elapsed_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)


async def drive(trade: TradeFn, users: list[str], markets: list[str], concurrency: int, seconds: float,
                seed: int | None = None) -> PeerRun:
    """Trade from ``concurrency`` tasks until ``seconds`` have passed; trades in flight then still finish."""
    trades = RandomTrades(random.Random(seed), users, markets)
    run = PeerRun()
    start = time.perf_counter()
    deadline = start + seconds

    async def one() -> None:
        while time.perf_counter() < deadline:
            o = trades.next()
            began = time.perf_counter()
            try:
                retries = await trade(o.user, o.market, o.side, o.outcome, o.shares)
            except EngineError as exc:
                run.rejected[exc.code] = run.rejected.get(exc.code, 0) + 1
                trades.done(o, executed=False)
                continue
            run.latencies.append(time.perf_counter() - began)
            run.trades += 1
            run.retries += retries
            trades.done(o, executed=True)

    await asyncio.gather(*(one() for _ in range(concurrency)))
    run.elapsed_s = time.perf_counter() - start
    return run
