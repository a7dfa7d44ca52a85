from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import Order, Outcome, Side
from predmarket.engine.units import MICRO

from tests.support.factories import MarketFactory, UserFactory


async def test_buy_then_sell_round_trip(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory
) -> None:
    user = await make_user(100)
    market = await make_market(100)
    bought = await engine.execute_trade(Order(user.user_id, market.market_id, Side.BUY, Outcome.YES, shares=10 * MICRO))
    sold = await engine.execute_trade(Order(user.user_id, market.market_id, Side.SELL, Outcome.YES, shares=10 * MICRO))
    assert bought.cost >= sold.cost  # rounding favours the pool
    account = await engine.accounts.get(user.user_id)
    assert account.available == 100 * MICRO - bought.cost + sold.cost
    assert account.positions == []
