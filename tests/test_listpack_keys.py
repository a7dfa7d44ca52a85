"""Positions, net costs and the dirty set leave Redis's listpack encoding once they grow (lua/lib.lua's
keep_hashed and keep_sorted): a listpack is searched by a linear scan, the trade script's largest cost
in a market of a few hundred holdings. The conversion must change nothing a reader sees."""

from __future__ import annotations

import asyncio

from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.units import MICRO

from tests.support.factories import MarketFactory, UserFactory
from tests.support.orders import NO, YES, buy, sell
from tests.support.replay import assert_replay_matches

#: lua/lib.lua's LISTPACK_MOST: a key with this many entries or more is converted as the next one joins.
LISTPACK_MOST = 64


async def _encoding(engine: MarketEngine, key: str) -> str:
    return str(await engine.redis.object("encoding", key))


async def test_a_market_with_many_holders_keeps_its_positions_and_net_costs_in_hash_tables(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory
) -> None:
    market = (await make_market(100)).market_id
    small = (await make_market(100)).market_id
    users = [(await make_user(1_000)).user_id for _ in range(LISTPACK_MOST + 6)]
    await asyncio.gather(*(engine.execute_trade(buy(u, market, YES, 1)) for u in users))
    await engine.execute_trade(buy(users[0], small, NO, 2))
    # A holder who sells out leaves the positions hash but keeps a net cost.
    await engine.execute_trade(sell(users[1], market, YES, 1))
    k = engine.keys

    assert await _encoding(engine, k.market_positions(market)) == "hashtable"
    assert await _encoding(engine, k.market_costs(market)) == "hashtable"
    assert await _encoding(engine, k.market_positions(small)) == "listpack"  # small keys stay compact
    # Exactly the holdings and net costs, nothing left of the conversion.
    positions = await engine.redis.hgetall(k.market_positions(market))
    costs = await engine.redis.hgetall(k.market_costs(market))
    holders = {f"{u}:YES" for u in users} - {f"{users[1]}:YES"}
    assert {name: int(v) for name, v in positions.items()} == {name: MICRO for name in holders}
    assert set(costs) == {f"{u}:YES" for u in users}
    assert all(int(v) > 0 for name, v in costs.items() if name != f"{users[1]}:YES")
    account = await engine.accounts.get(users[2])
    assert [(p.market_id, p.shares) for p in account.positions] == [(market, MICRO)]
    await assert_replay_matches(engine.redis, engine.keys)


async def test_a_user_in_many_markets_and_a_long_dirty_set_leave_listpacks(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory
) -> None:
    markets = [(await make_market(100)).market_id for _ in range(LISTPACK_MOST + 6)]
    user = (await make_user(10_000)).user_id
    await asyncio.gather(*(engine.execute_trade(buy(user, m, YES, 1)) for m in markets))
    k = engine.keys

    assert await _encoding(engine, k.user_positions(user)) == "hashtable"
    assert await _encoding(engine, k.user_costs(user)) == "hashtable"
    assert await _encoding(engine, k.dirty) == "skiplist"
    held = await engine.redis.hgetall(k.user_positions(user))
    assert {name: int(v) for name, v in held.items()} == {f"{m}:YES": MICRO for m in markets}
    dirty = {str(m) for m in await engine.redis.zrange(k.dirty, 0, -1)}
    assert set(markets) <= dirty and not any(m.startswith("~") for m in dirty)
    account = await engine.accounts.get(user)
    assert sorted(p.market_id for p in account.positions) == sorted(markets)
    await assert_replay_matches(engine.redis, engine.keys)
