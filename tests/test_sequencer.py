"""The per-market sequencer: batches with rejections mid-batch, idempotency inside a batch,
conflicts between engines (processes), and the bound on conflict retries.

Every test checks the result against an independent replay of the event stream:
the ``TradeExecuted`` events sorted by ``trade_id``, priced again from ``q = 0`` with
:func:`engine.pricing.buy_cost` / :func:`engine.pricing.sell_proceeds`, must give each
trade's cost and, summed with deposits, withdrawals and subsidies, every balance,
position and market in Redis.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, cast

import pytest
from predmarket.engine import pricing
from predmarket.engine.errors import (
    EngineError,
    IdempotencyKeyReused,
    InsufficientFunds,
    InsufficientShares,
    NotFound,
    SlippageExceeded,
    Unavailable,
)
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import Order, Side, Trade
from predmarket.engine.units import MICRO, parse_micro

from tests.support.factories import EngineFactory, MarketFactory, UserFactory
from tests.support.orders import NO, YES, buy, sell
from tests.support.redis_data import snapshot
from tests.support.replay import assert_replay_matches


def assert_trade_is_its_event(trade: Trade, event: dict[str, str]) -> None:
    assert int(event["trade_id"]) == trade.trade_id
    assert (event["user_id"], event["market_id"]) == (trade.user_id, trade.market_id)
    assert (event["side"], event["outcome"]) == (trade.side.value, trade.outcome)
    assert (parse_micro(event["shares"]), parse_micro(event["cost"])) == (trade.shares, trade.cost)
    assert (parse_micro(event["price_yes"]), parse_micro(event["price_no"])) == (trade.price_yes, trade.price_no)


async def settle_all(engine: MarketEngine, orders: list[Order]) -> list[Trade | EngineError]:
    """Submit all ``orders`` at once (one asyncio task each) and collect trades or rejections."""
    results = await asyncio.gather(*(engine.execute_trade(o) for o in orders), return_exceptions=True)
    out: list[Trade | EngineError] = []
    for r in results:
        if not isinstance(r, Trade | EngineError):
            raise r
        out.append(r)
    return out



# --------------------------------------------------------------------------- batches with rejections


async def test_rejections_mid_batch_leave_every_other_order_exact(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory
) -> None:
    market = (await make_market(100)).market_id
    rich = [(await make_user(100_000)).user_id for _ in range(4)]
    poor = (await make_user(1)).user_id  # 1 unit: cannot pay for 30 shares
    naked = (await make_user(1_000)).user_id  # holds nothing, sells YES
    slip = (await make_user(1_000)).user_id
    # Holdings before the batch, so that sells inside it are valid (or not, for `naked`).
    for o in (buy(rich[0], market, YES, 40), buy(rich[1], market, NO, 40), buy(slip, market, NO, 10)):
        await engine.execute_trade(o)
    calls_before = engine.stats.script_calls

    rng = random.Random(7)
    expected_errors: dict[int, type[EngineError]] = {}
    orders: list[Order] = []

    def add(order: Order, error: type[EngineError] | None = None) -> None:
        if error is not None:
            expected_errors[len(orders)] = error
        orders.append(order)

    add(buy(rich[0], market, YES, 10))
    add(buy(rich[1], market, NO, 5))
    add(buy(poor, market, YES, 30), InsufficientFunds)  # rejected by the script: breaks the batch
    add(Order(rich[2], market, Side.BUY, YES, amount=7 * MICRO))  # buy by amount
    add(sell(naked, market, YES, 5), InsufficientShares)  # outstanding YES covers it, the holder does not
    add(sell(rich[0], market, YES, 20))
    add(buy(slip, market, YES, 10, max_cost=1), SlippageExceeded)  # rejected before Redis
    add(buy(rich[3], market, NO, 12, max_cost=1_000 * MICRO))
    add(sell(slip, market, NO, 5, min_proceeds=1_000 * MICRO), SlippageExceeded)
    # With an Idempotency-Key the engine's rejection goes through the script (a replay would win).
    add(buy(slip, market, YES, 10, max_cost=1, idempotency_key="k-slip", fingerprint="fp-slip"), SlippageExceeded)
    add(sell(rich[1], market, NO, 10))
    add(sell(rich[2], market, NO, 10_000), InsufficientShares)  # more than outstanding: rejected before Redis
    add(buy(poor, market, NO, 25), InsufficientFunds)
    for _ in range(30):
        add(buy(rng.choice(rich), market, rng.choice((YES, NO)), rng.randint(1, 60)))
    add(sell(rich[0], market, YES, 15))
    add(buy(naked, market, NO, 3))  # naked's failed sell changes nothing for its later buy

    results = await settle_all(engine, orders)

    for i, r in enumerate(results):
        if i in expected_errors:
            assert isinstance(r, expected_errors[i]), (i, r)
        else:
            assert isinstance(r, Trade), (i, orders[i], r)
    trades = [r for r in results if isinstance(r, Trade)]
    assert len(trades) == len(orders) - len(expected_errors)
    # One script call for many orders; each rejection inside the script re-sends the rest once.
    assert engine.stats.script_calls - calls_before <= 6

    replay = await assert_replay_matches(engine.redis, engine.keys)
    by_id = {int(e["trade_id"]): e for e in replay.trades}
    for t in trades:
        assert_trade_is_its_event(t, by_id[t.trade_id])
    assert len(replay.trades) == len(trades) + 3
    # The rejected users paid nothing; `poor` still has its unit.
    assert (await engine.accounts.get(poor)).available == 1 * MICRO
    assert (await engine.accounts.get(poor)).positions == []
    naked_account = await engine.accounts.get(naked)
    assert [(p.outcome, p.shares) for p in naked_account.positions] == [(NO, 3 * MICRO)]


async def test_batch_of_rejections_only_changes_nothing(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory
) -> None:
    market = (await make_market(100)).market_id
    holder = (await make_user(1_000)).user_id
    poor = (await make_user(1)).user_id
    await engine.execute_trade(buy(holder, market, YES, 20))
    before = await snapshot(engine.redis, engine.keys.prefix)
    results = await settle_all(engine, [
        buy(poor, market, YES, 50),
        sell(poor, market, YES, 5),
        buy(holder, market, YES, 5, max_cost=0),
        sell(holder, market, YES, 5, min_proceeds=100 * MICRO),
        sell(holder, market, NO, 1),
        buy(poor, market, NO, 50, idempotency_key="k1", fingerprint="f1"),
    ])
    assert [type(r) for r in results] == [
        InsufficientFunds, InsufficientShares, SlippageExceeded, SlippageExceeded, InsufficientShares,
        InsufficientFunds,
    ]
    assert await snapshot(engine.redis, engine.keys.prefix) == before
    # The key of a rejected order was not recorded: the same request can still execute later.
    await engine.accounts.deposit(poor, 1_000 * MICRO)
    trade = await engine.execute_trade(buy(poor, market, NO, 50, idempotency_key="k1", fingerprint="f1"))
    assert not trade.replayed


async def test_batches_are_cut_at_max_batch(
    engines: EngineFactory, make_user: UserFactory, make_market: MarketFactory
) -> None:
    small = engines(max_batch=4)
    market = (await make_market(100)).market_id
    users = [(await make_user(10_000)).user_id for _ in range(5)]
    orders = [buy(users[i % 5], market, (YES, NO)[i % 2], 1 + i) for i in range(21)]
    results = await settle_all(small, orders)
    assert all(isinstance(r, Trade) for r in results)
    assert small.stats.script_calls == 6  # ceil(21 / 4)
    assert small.stats.trades == 21
    await assert_replay_matches(small.redis, small.keys)


async def test_unknown_market_and_user(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory
) -> None:
    market = (await make_market(100)).market_id
    user = (await make_user(100)).user_id
    results = await settle_all(engine, [
        buy(user, "no-such-market", YES, 1),
        buy("no-such-user", market, YES, 1),
        buy(user, market, YES, 1),
    ])
    assert isinstance(results[0], NotFound)
    assert isinstance(results[1], NotFound)
    assert isinstance(results[2], Trade)
    await assert_replay_matches(engine.redis, engine.keys)


# --------------------------------------------------------------------------- idempotency inside one batch


async def test_same_key_many_times_in_one_batch_executes_once(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory
) -> None:
    market = (await make_market(100)).market_id
    user = (await make_user(1_000)).user_id
    other = (await make_user(1_000)).user_id
    keyed = buy(user, market, YES, 10, idempotency_key="k-1", fingerprint="fp-1")
    orders = [keyed] * 25
    orders[5:5] = [buy(other, market, NO, 3)]  # an unrelated order among them
    orders.append(buy(other, market, YES, 2))
    results = await settle_all(engine, orders)
    assert all(isinstance(r, Trade) for r in results), results
    keyed_results = [r for r, o in zip(results, orders, strict=True) if o is keyed]
    assert isinstance(keyed_results[0], Trade)
    first = keyed_results[0]
    assert len({r.trade_id for r in keyed_results if isinstance(r, Trade)}) == 1
    assert sum(not r.replayed for r in keyed_results if isinstance(r, Trade)) == 1
    for r in keyed_results:
        assert isinstance(r, Trade)
        assert (r.shares, r.cost, r.avg_price, r.price_yes, r.price_no, r.created_ms) == (
            first.shares, first.cost, first.avg_price, first.price_yes, first.price_no, first.created_ms)

    replay = await assert_replay_matches(engine.redis, engine.keys)
    mine = [e for e in replay.trades if e["user_id"] == user]
    assert len(mine) == 1 and int(mine[0]["trade_id"]) == first.trade_id
    assert (await engine.accounts.get(user)).available == 1_000 * MICRO - first.cost
    # A later retry still replays.
    again = await engine.execute_trade(keyed)
    assert again.replayed and again.trade_id == first.trade_id


async def test_same_key_different_request_is_refused_in_one_batch(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory
) -> None:
    market = (await make_market(100)).market_id
    user = (await make_user(1_000)).user_id
    first = buy(user, market, YES, 10, idempotency_key="k-2", fingerprint="fp-a")
    different = buy(user, market, YES, 11, idempotency_key="k-2", fingerprint="fp-b")
    orders = [first, different, first, different, first]
    results = await settle_all(engine, orders)
    executed = [r for r in results if isinstance(r, Trade)]
    refused = [r for r in results if isinstance(r, IdempotencyKeyReused)]
    # The queue is FIFO: the first request with the key wins, the other body is refused.
    assert len(executed) == 3 and len(refused) == 2
    assert len({t.trade_id for t in executed}) == 1
    assert all(t.shares == 10 * MICRO for t in executed)
    replay = await assert_replay_matches(engine.redis, engine.keys)
    assert len(replay.trades) == 1
    with pytest.raises(IdempotencyKeyReused):
        await engine.execute_trade(different)


# --------------------------------------------------------------------------- conflicts between engines


async def test_conflict_is_forced_and_repriced_on_the_fresh_state(
    engine: MarketEngine, engines: EngineFactory, make_user: UserFactory, make_market: MarketFactory
) -> None:
    a, b = engine, engines()
    market = (await make_market(100)).market_id
    user = (await make_user(1_000)).user_id
    await a.execute_trade(buy(user, market, YES, 10))  # a caches the state after its trade
    await b.execute_trade(buy(user, market, YES, 30))  # b moves the market behind a's back
    assert (a.stats.conflicts, b.stats.conflicts) == (0, 0)
    fresh = await a.markets.get(market)
    trade = await a.execute_trade(buy(user, market, YES, 10))
    assert a.stats.conflicts == 1
    assert a.stats.script_calls == 3  # the conflict reply carried the state: no extra read, one resend
    assert trade.cost == pricing.buy_cost(fresh.yes_shares, fresh.no_shares, 10 * MICRO, fresh.liquidity_b)
    # a's cached state is the state its trade produced: no conflict on the next one.
    await a.execute_trade(sell(user, market, YES, 5))
    assert a.stats.conflicts == 1
    await assert_replay_matches(a.redis, a.keys)


async def test_two_engines_trading_one_market_concurrently(
    engine: MarketEngine, engines: EngineFactory, make_user: UserFactory, make_market: MarketFactory
) -> None:
    a, b = engine, engines()
    markets = [(await make_market(50)).market_id for _ in range(2)]
    users = [(await make_user(100_000)).user_id for _ in range(8)]
    rng = random.Random(11)

    def orders_for(who: list[str]) -> list[Order]:
        return [
            buy(rng.choice(who), rng.choice(markets), rng.choice((YES, NO)), rng.randint(1, 40))
            for _ in range(300)
        ]

    # Each engine's users are its own (as in `predmarket simulate`), the markets are shared.
    results_a, results_b = await asyncio.gather(
        settle_all(a, orders_for(users[:4])), settle_all(b, orders_for(users[4:]))
    )
    trades = [r for r in (*results_a, *results_b) if isinstance(r, Trade)]
    assert len(trades) == 600, [r for r in (*results_a, *results_b) if not isinstance(r, Trade)]
    # Both sequencers batch against the same versions, so they must collide.
    assert a.stats.conflicts + b.stats.conflicts > 0
    assert a.stats.trades + b.stats.trades == 600
    replay = await assert_replay_matches(a.redis, a.keys)
    by_id = {int(e["trade_id"]): e for e in replay.trades}
    assert sorted(by_id) == sorted(t.trade_id for t in trades)
    for t in trades:
        assert_trade_is_its_event(t, by_id[t.trade_id])


# --------------------------------------------------------------------------- bounded retries


async def test_bounded_conflict_retries_give_unavailable_and_apply_nothing(
    engines: EngineFactory, make_user: UserFactory, make_market: MarketFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    eng = engines(max_conflict_retries=1)
    market = (await make_market(100)).market_id
    user = (await make_user(1_000)).user_id
    await eng.execute_trade(buy(user, market, YES, 5))
    market_key = eng.keys.market(market)
    trader = eng._trader
    run = trader._trade
    calls = 0

    class AlwaysBehind:
        """Another process trades the market just before each of our trade scripts."""

        def call_now(self, keys: list[str], args: list[str | int], on_reply: Any) -> bool:
            return False  # every call through __call__, which moves the market first

        async def __call__(self, keys: list[str], args: list[str | int]) -> Any:
            nonlocal calls
            calls += 1
            await eng.redis.hincrby(market_key, "version", 1)
            return await run(keys, args)

    monkeypatch.setattr(trader, "_trade", AlwaysBehind())
    before = await snapshot(eng.redis, eng.keys.prefix)
    version_before = int(cast(str, await eng.redis.hget(market_key, "version")))  # decoded: a str
    with pytest.raises(Unavailable, match="contended"):
        await asyncio.wait_for(eng.execute_trade(buy(user, market, YES, 5)), timeout=10)
    assert calls == 2  # the first try and max_conflict_retries=1 retry
    assert eng.stats.conflicts == 2
    after = await snapshot(eng.redis, eng.keys.prefix)
    assert int(cast(str, await eng.redis.hget(market_key, "version"))) == version_before + 2  # decoded: a str
    after[market_key]["version"] = str(version_before)  # type: ignore[index]  # snapshot's values are object
    assert after == before  # nothing applied, no event

    monkeypatch.setattr(trader, "_trade", run)
    trade = await eng.execute_trade(buy(user, market, YES, 5))
    assert trade.trade_id == 2
    await assert_replay_matches(eng.redis, eng.keys)


# --------------------------------------------------------------------------- callers giving up, idle sequencers


async def test_orders_whose_callers_gave_up_before_the_batch_are_not_sent(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory
) -> None:
    market = (await make_market(100)).market_id
    user = (await make_user(1_000)).user_id
    await engine.execute_trade(buy(user, market, YES, 1))  # the market's book exists and is idle
    book = engine._trader.books[market]
    tasks = [asyncio.create_task(engine.execute_trade(buy(user, market, NO, 1 + i))) for i in range(12)]
    for _ in range(100):  # let every task queue its order; the trader's loop runs after them
        if len(book.queue) == len(tasks):
            break
        await asyncio.sleep(0)
    assert len(book.queue) == len(tasks)
    for t in tasks[::3]:
        t.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    cancelled = [r for r in results if isinstance(r, asyncio.CancelledError)]
    trades = [r for r in results if isinstance(r, Trade)]
    assert (len(cancelled), len(trades)) == (4, 8)
    replay = await assert_replay_matches(engine.redis, engine.keys)
    assert sorted(int(e["trade_id"]) for e in replay.trades[1:]) == sorted(t.trade_id for t in trades)


async def test_idle_books_are_dropped_and_recreated(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import predmarket.engine.trader as trader_module

    monkeypatch.setattr(trader_module, "MAX_IDLE_BOOKS", 2)
    markets = [(await make_market(20)).market_id for _ in range(5)]
    user = (await make_user(1_000)).user_id
    for _ in range(2):
        trades = await settle_all(engine, [buy(user, m, YES, 2) for m in markets])
        assert all(isinstance(t, Trade) for t in trades)
    assert len(engine._trader.books) <= 5
    await assert_replay_matches(engine.redis, engine.keys)
