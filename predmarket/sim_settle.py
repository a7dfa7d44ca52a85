"""``simulate --settle``: after the trades, every simulated market is resolved and settled, each kind
of resolution in turn, so one run exercises the whole lifecycle (the invariants are checked after).

Markets take turns: YES, NO, PROB (random probabilities summing to exactly 1) and CANCEL; every
other one is closed first (``POST .../close``), as a market reaching its close time would be.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import Outcome
from predmarket.engine.resolutions import Resolution
from predmarket.engine.units import MICRO

KINDS = ("YES", "NO", "PROB", "CANCEL")


@dataclass(frozen=True)
class Settled:
    market_id: str
    #: the resolution as the market shows it: a label, PROB (with its probabilities) or CANCEL
    resolution: str
    closed_first: bool
    payouts_total: int
    holders_paid: int
    house_return: int


def resolution_for(index: int, rng: random.Random) -> Resolution:
    kind = KINDS[index % len(KINDS)]
    if kind == "PROB":
        p_yes = rng.randint(0, MICRO)
        return Resolution.prob((("YES", p_yes), ("NO", MICRO - p_yes)))
    if kind == "CANCEL":
        return Resolution.cancel()
    return Resolution.of_outcome(Outcome(kind))


async def resolve_and_settle(engine: MarketEngine, market_ids: list[str], seed: int | None) -> list[Settled]:
    rng = random.Random(seed)
    done: list[Settled] = []
    for index, market_id in enumerate(market_ids):
        closed_first = index % 2 == 1
        if closed_first:
            await engine.markets.close(market_id)
        resolution = resolution_for(index, rng)
        await engine.markets.resolve(market_id, resolution)
        settlement = await engine.markets.settle(market_id)
        shown = resolution.outcome
        if resolution.probabilities is not None:
            shown += " " + " ".join(f"{label} {p / MICRO:.6f}" for label, p in resolution.probabilities)
        done.append(Settled(market_id, shown, closed_first, settlement.payouts_total, settlement.holders_paid,
                            settlement.house_return))
    return done
