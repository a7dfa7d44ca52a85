"""The seed's random trade: one market, one user, 10-100 whole shares, BUY or SELL of a random label.

Shared by ``simulate`` and the bench's peers so every figure comes from the same
workload. A sell is only of shares the simulated user holds (reserved at once,
so concurrent sells cannot oversell); otherwise the order becomes a buy.
:class:`RandomTrades` trades YES/NO markets (the seed's); :class:`LabelTrades` any
markets sharing one list of labels (``simulate --outcomes N``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from predmarket.engine.labels import MAX_OUTCOMES, MIN_OUTCOMES, YES_NO
from predmarket.engine.models import Outcome, Side
from predmarket.engine.units import MICRO


def outcome_labels(n: int) -> tuple[str, ...]:
    """The labels of a simulated market of ``n`` outcomes: YES/NO for 2, O1..ON otherwise."""
    if not MIN_OUTCOMES <= n <= MAX_OUTCOMES:
        raise ValueError(f"a market has {MIN_OUTCOMES} to {MAX_OUTCOMES} outcomes, not {n}")
    return YES_NO if n == 2 else tuple(f"O{i}" for i in range(1, n + 1))


Slot = tuple[str, str, str]  # (user, market, label)
L = TypeVar("L", bound=str)


@dataclass(frozen=True, slots=True)
class SeedOrder(Generic[L]):
    user: str
    market: str
    side: Side
    outcome: L
    shares: int  # micro-units

    @property
    def slot(self) -> Slot:
        return (self.user, self.market, self.outcome)


@dataclass
class LabelTrades(Generic[L]):
    rng: random.Random
    users: list[str]
    markets: list[str]
    #: every market's labels (the same for all); each trade picks one uniformly
    labels: Sequence[L]
    held: dict[Slot, int] = field(default_factory=dict)

    def next(self) -> SeedOrder[L]:
        user, market = self.rng.choice(self.users), self.rng.choice(self.markets)
        outcome = self.rng.choice(self.labels)
        shares = self.rng.randint(10, 100) * MICRO
        side = self.rng.choice((Side.BUY, Side.SELL))
        order = SeedOrder(user, market, side, outcome, shares)
        if side is Side.SELL:
            if self.held.get(order.slot, 0) >= shares:
                self.held[order.slot] -= shares
            else:
                order = SeedOrder(user, market, Side.BUY, outcome, shares)
        return order

    def done(self, order: SeedOrder[L], executed: bool) -> None:
        """Record the outcome: a bought position grows, a refused sell gives its reservation back."""
        if order.side is Side.BUY and executed:
            self.held[order.slot] = self.held.get(order.slot, 0) + order.shares
        elif order.side is Side.SELL and not executed:
            self.held[order.slot] += order.shares


class RandomTrades(LabelTrades[Outcome]):
    """The seed's workload on YES/NO markets (the same choices, seed for seed, as before labels)."""

    def __init__(self, rng: random.Random, users: list[str], markets: list[str]) -> None:
        super().__init__(rng, users, markets, (Outcome.YES, Outcome.NO))
