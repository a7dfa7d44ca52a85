"""The seed's random trade: one market, one user, 10-100 whole shares, BUY or SELL of YES or NO.

Shared by ``simulate`` and the bench's peers so every figure comes from the same
workload. A sell is only of shares the simulated user holds (reserved at once,
so concurrent sells cannot oversell); otherwise the order becomes a buy.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from predmarket.engine.models import Outcome, Side
from predmarket.engine.units import MICRO

Slot = tuple[str, str, Outcome]  # (user, market, outcome)


@dataclass(frozen=True, slots=True)
class SeedOrder:
    user: str
    market: str
    side: Side
    outcome: Outcome
    shares: int  # micro-units

    @property
    def slot(self) -> Slot:
        return (self.user, self.market, self.outcome)


@dataclass
class RandomTrades:
    rng: random.Random
    users: list[str]
    markets: list[str]
    held: dict[Slot, int] = field(default_factory=dict)

    def next(self) -> SeedOrder:
        user, market = self.rng.choice(self.users), self.rng.choice(self.markets)
        outcome = self.rng.choice((Outcome.YES, Outcome.NO))
        shares = self.rng.randint(10, 100) * MICRO
        side = self.rng.choice((Side.BUY, Side.SELL))
        order = SeedOrder(user, market, side, outcome, shares)
        if side is Side.SELL:
            if self.held.get(order.slot, 0) >= shares:
                self.held[order.slot] -= shares
            else:
                order = SeedOrder(user, market, Side.BUY, outcome, shares)
        return order

    def done(self, order: SeedOrder, executed: bool) -> None:
        """Record the outcome: a bought position grows, a refused sell gives its reservation back."""
        if order.side is Side.BUY and executed:
            self.held[order.slot] = self.held.get(order.slot, 0) + order.shares
        elif order.side is Side.SELL and not executed:
            self.held[order.slot] += order.shares
