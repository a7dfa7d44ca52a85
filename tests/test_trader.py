"""The trader loop's edges: a bug while pricing one market, and closing with orders waiting or in flight."""

from __future__ import annotations

import asyncio
from typing import Any

import predmarket.engine.sequencer as sequencer_module
import pytest
from predmarket.engine.errors import Unavailable
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import Side, Trade
from predmarket.engine.orders import fill

from tests.support.factories import EngineFactory, MarketFactory, UserFactory
from tests.support.orders import YES, buy
from tests.support.replay import assert_replay_matches


async def test_a_bug_while_pricing_one_market_fails_its_orders_only(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    poisoned, healthy = (await make_market(100)).market_id, (await make_market(100)).market_id
    user = (await make_user(1_000)).user_id

    def buggy_fill(totals: tuple[int, ...], b: int, side: Side, k: int, shares: int | None, *args: Any) -> Any:
        if shares == 7_000_000:  # the 7-share order only
            raise RuntimeError("a bug in pricing")
        return fill(totals, b, side, k, shares, *args)

    monkeypatch.setattr(sequencer_module, "fill", buggy_fill)
    results = await asyncio.wait_for(asyncio.gather(
        engine.execute_trade(buy(user, poisoned, YES, 7)),
        engine.execute_trade(buy(user, healthy, YES, 8)),
        return_exceptions=True,
    ), timeout=10)
    assert isinstance(results[0], RuntimeError)
    assert isinstance(results[1], Trade)  # the same script call's other market is untouched
    monkeypatch.setattr(sequencer_module, "fill", fill)
    trade = await asyncio.wait_for(engine.execute_trade(buy(user, poisoned, YES, 7)), timeout=10)
    assert trade.market_id == poisoned
    await assert_replay_matches(engine.redis, engine.keys)


async def test_closing_answers_every_waiting_order(
    engine: MarketEngine, engines: EngineFactory, make_user: UserFactory, make_market: MarketFactory
) -> None:
    eng = engines()
    markets = [(await make_market(100)).market_id for _ in range(3)]
    user = (await make_user(10_000)).user_id
    tasks = [asyncio.create_task(eng.execute_trade(buy(user, markets[i % 3], YES, 1 + i))) for i in range(60)]
    await asyncio.sleep(0)  # queued, some perhaps sent
    await eng.close()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=10)
    assert all(isinstance(r, Trade | Unavailable) for r in results), results
    assert any(isinstance(r, Unavailable) for r in results)
    with pytest.raises(Unavailable, match="closed"):
        await asyncio.wait_for(eng.execute_trade(buy(user, markets[0], YES, 1)), timeout=10)
    # What executed is in the stream exactly as answered; nothing else is.
    replay = await assert_replay_matches(engine.redis, engine.keys)
    assert sorted(int(e["trade_id"]) for e in replay.trades) == sorted(
        r.trade_id for r in results if isinstance(r, Trade))


async def test_a_lone_order_is_sent_and_answered_without_a_task_to_send_it(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory
) -> None:
    """The trade call is written as the loop builds it, and its reply settles the orders as it is read:
    the loop's task waits for orders rather than ending, so a lone order makes one task, the channel's
    reader (it made three: the loop, the sender awaiting the call, the reader)."""
    market = (await make_market(100)).market_id
    user = (await make_user(10_000)).user_id
    await engine.execute_trade(buy(user, market, YES, 1))  # connects and loads the script
    loop = asyncio.get_running_loop()
    made: list[str] = []

    def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        made.append(coro.__qualname__)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(counting)
    try:
        trades = [await engine.execute_trade(buy(user, market, YES, 1 + i)) for i in range(20)]
    finally:
        loop.set_task_factory(None)
    assert [t.trade_id for t in trades] == list(range(2, 22))
    # One reader a call. The connection's health check (a PING once it sat idle a second, under
    # redis-py's wait_for) may add a task or two on a stalled machine; a sender per call adds twenty.
    assert made.count("Channel._read") == 20
    assert len(made) < 30, made
    await assert_replay_matches(engine.redis, engine.keys)
