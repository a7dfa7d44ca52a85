"""Orders in whole units, as the engine tests write them; :class:`Order`'s keyword fields as a type."""

from __future__ import annotations

from typing import Any, TypedDict

from predmarket.engine.models import Order, Outcome, Side
from predmarket.engine.units import MICRO

YES, NO = Outcome.YES, Outcome.NO


class OrderFields(TypedDict, total=False):
    """:class:`Order`'s fields after the four positional ones, for tests that pass them as ``**fields``."""

    shares: int | None
    amount: int | None
    max_cost: int | None
    min_proceeds: int | None
    idempotency_key: str
    fingerprint: str
    sell_all: bool


def buy(user: str, market: str, outcome: Outcome, units: int, **kw: Any) -> Order:
    return Order(user, market, Side.BUY, outcome, shares=units * MICRO, **kw)


def sell(user: str, market: str, outcome: Outcome, units: int, **kw: Any) -> Order:
    return Order(user, market, Side.SELL, outcome, shares=units * MICRO, **kw)
