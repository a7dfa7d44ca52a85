"""The seed's random trades against a reference peer, for a fixed time, from N tasks of one process.

The same choices as ``predmarket.simulate``: a random user and market, 10-100
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

from engine.errors import EngineError
from engine.models import Outcome, Side
from engine.units import MICRO

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
    rng = random.Random(seed)
    held: dict[tuple[str, str, Outcome], int] = {}
    run = PeerRun()
    start = time.perf_counter()
    deadline = start + seconds

    async def one() -> None:
        while time.perf_counter() < deadline:
            user, market = rng.choice(users), rng.choice(markets)
            outcome = rng.choice((Outcome.YES, Outcome.NO))
            shares = rng.randint(10, 100) * MICRO
            side = rng.choice((Side.BUY, Side.SELL))
            slot = (user, market, outcome)
            if side is Side.SELL:
                if held.get(slot, 0) >= shares:
                    held[slot] -= shares  # reserved now, so concurrent sells cannot oversell
                else:
                    side = Side.BUY
            began = time.perf_counter()
            try:
                retries = await trade(user, market, side, outcome, shares)
            except EngineError as exc:
                run.rejected[exc.code] = run.rejected.get(exc.code, 0) + 1
                if side is Side.SELL:
                    held[slot] += shares
                continue
            run.latencies.append(time.perf_counter() - began)
            run.trades += 1
            run.retries += retries
            if side is Side.BUY:
                held[slot] = held.get(slot, 0) + shares

    await asyncio.gather(*(one() for _ in range(concurrency)))
    run.elapsed_s = time.perf_counter() - start
    return run
