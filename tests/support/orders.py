"""Orders in whole units, as the engine tests write them."""

from __future__ import annotations

from typing import Any

from predmarket.engine.models import Order, Outcome, Side
from predmarket.engine.units import MICRO

YES, NO = Outcome.YES, Outcome.NO


def buy(user: str, market: str, outcome: Outcome, units: int, **kw: Any) -> Order:
    return Order(user, market, Side.BUY, outcome, shares=units * MICRO, **kw)


def sell(user: str, market: str, outcome: Outcome, units: int, **kw: Any) -> Order:
    return Order(user, market, Side.SELL, outcome, shares=units * MICRO, **kw)
