"""``simulate --settle``: after the trades, every simulated market is resolved and settled, each kind
of resolution in turn, so one run exercises the whole lifecycle (the invariants are checked after).

Markets take turns: a label, another label, PROB (random probabilities over every label summing to
exactly 1) and CANCEL; the labels taken go round the market's labels (YES then NO for a YES/NO
market; O1, O2, O3, ... for ``--outcomes N``). Every other market is closed first (``POST .../close``),
as a market reaching its close time would be.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass

from predmarket.engine.deployment import Engine
from predmarket.engine.resolutions import Resolution
from predmarket.engine.units import MICRO, format_micro

#: the turns: LABEL is the next of the market's labels (YES, NO, YES, ... for a YES/NO market)
KINDS = ("LABEL", "LABEL", "PROB", "CANCEL")


@dataclass(frozen=True)
class Settled:
    market_id: str
    #: the resolution as the market shows it: a label, PROB (with its probabilities) or CANCEL
    resolution: str
    closed_first: bool
    payouts_total: int
    holders_paid: int
    house_return: int


def resolution_for(index: int, rng: random.Random, labels: Sequence[str]) -> Resolution:
    """The ``index``-th market's resolution: its turn in :data:`KINDS`, over the market's ``labels``."""
    kind = KINDS[index % len(KINDS)]
    if kind == "PROB":
        return Resolution.prob(tuple(zip(labels, random_probabilities(rng, len(labels)), strict=True)))
    if kind == "CANCEL":
        return Resolution.cancel()
    turn = 2 * (index // len(KINDS)) + index % len(KINDS)  # how many label resolutions came before
    return Resolution.of_outcome(labels[turn % len(labels)])


def closes_first(index: int) -> bool:
    """Whether the ``index``-th market resolved is closed first (every other one, as a close time would)."""
    return index % 2 == 1


def random_probabilities(rng: random.Random, n: int) -> list[int]:
    """``n`` random probabilities in micro-units summing to exactly ``MICRO`` (cuts of [0, 1])."""
    cuts = sorted(rng.randint(0, MICRO) for _ in range(n - 1))
    edges = [0, *cuts, MICRO]
    return [high - low for low, high in itertools.pairwise(edges)]


async def resolve_and_settle(engine: Engine, market_ids: list[str], seed: int | None) -> list[Settled]:
    rng = random.Random(seed)
    done: list[Settled] = []
    for index, market_id in enumerate(market_ids):
        closed_first = closes_first(index)
        if closed_first:
            await engine.markets.close(market_id)
        market = await engine.markets.get(market_id)
        resolution = resolution_for(index, rng, market.outcomes)
        await engine.markets.resolve(market_id, resolution)
        settlement = await engine.markets.settle(market_id)
        shown = resolution.outcome
        if resolution.probabilities is not None:
            shown += " " + " ".join(f"{label}={format_micro(p)}" for label, p in resolution.probabilities)
        done.append(Settled(market_id, shown, closed_first, settlement.payouts_total, settlement.holders_paid,
                            settlement.house_return))
    return done
