"""A buy by amount that could afford more than 1,000,000,000 shares buys exactly that many (the contract's cap)."""

from __future__ import annotations

import pytest
from predmarket.engine import pricing
from predmarket.engine.errors import ValidationError
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import Order, Outcome, Side
from predmarket.engine.units import MAX_QUANTITY, MAX_TOTAL, MICRO

from tests.support.factories import MarketFactory, UserFactory
from tests.support.fills import yes_no_fill

BILLION = 1_000_000_000 * MICRO


async def test_an_amount_affording_more_than_the_cap_buys_exactly_the_cap(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory,
) -> None:
    # b = 1: a billion shares cost a little under a billion, so a billion can afford more.
    market = await make_market(b_units=1)
    user = await make_user(balance_units=1_000_000_000)
    quote = await engine.markets.quote(market.market_id, Side.BUY, Outcome.YES, amount=BILLION)
    assert quote.shares == MAX_QUANTITY
    assert quote.cost == pricing.buy_cost(0, 0, MAX_QUANTITY, MICRO) < BILLION
    trade = await engine.execute_trade(Order(user.user_id, market.market_id, Side.BUY, Outcome.YES,
                                             amount=BILLION))
    assert (trade.shares, trade.cost) == (MAX_QUANTITY, quote.cost)
    account = await engine.accounts.get(user.user_id)
    assert account.available == BILLION - trade.cost


def test_the_outstanding_bound_is_named_when_it_is_the_one_hit() -> None:
    near_full = MAX_TOTAL - 10 * MICRO
    with pytest.raises(ValidationError, match="9000000000"):
        yes_no_fill(near_full, 0, MICRO, Side.BUY, Outcome.YES, amount=BILLION)
    with pytest.raises(ValidationError, match="9000000000"):
        yes_no_fill(0, near_full, MICRO, Side.BUY, Outcome.NO, shares=11 * MICRO)
    assert yes_no_fill(0, near_full, MICRO, Side.BUY, Outcome.NO, shares=10 * MICRO).totals[1] == MAX_TOTAL
