"""Positions, net costs and the dirty set leave Redis's listpack encoding once they grow (lua/lib.lua's
keep_hashed and keep_sorted), and a market's own hash is a hash table from its creation: a listpack is
searched by a linear scan and rewritten by every write, the trade script's largest cost in a market of
a few hundred holdings. The conversion must change nothing a reader sees."""

from __future__ import annotations

import asyncio
from typing import cast

from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.units import MICRO
from redis.typing import EncodableT, FieldT

from tests.support.factories import MarketFactory, UserFactory
from tests.support.orders import NO, YES, buy, sell
from tests.support.replay import assert_replay_matches

#: lua/lib.lua's LISTPACK_MOST: a key with this many entries or more is converted as the next one joins.
LISTPACK_MOST = 64
#: lua/lib.lua's HOLDING_CHECK_EVERY: the new holdings of every this-many-th trade check their hashes' size.
HOLDING_CHECK_EVERY = 8
#: lua/lib.lua's MARKET_RECHECK: a market's hash is turned back into a table as its version passes a multiple.
MARKET_RECHECK = 128
#: Enough entries past LISTPACK_MOST that a sampled check falls among them, whatever the trade counter was.
PAST_THE_LIMIT = LISTPACK_MOST + HOLDING_CHECK_EVERY + 2


async def _encoding(engine: MarketEngine, key: str) -> str:
    return str(await engine.redis.object("encoding", key))


async def test_a_market_with_many_holders_keeps_its_positions_and_net_costs_in_hash_tables(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory
) -> None:
    market = (await make_market(100)).market_id
    small = (await make_market(100)).market_id
    users = [(await make_user(1_000)).user_id for _ in range(PAST_THE_LIMIT)]
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
    markets = [(await make_market(100)).market_id for _ in range(PAST_THE_LIMIT)]
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


async def test_a_market_hash_is_a_hash_table_from_creation_and_again_after_a_restart_loads_it_as_a_listpack(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory
) -> None:
    market = (await make_market(100)).market_id
    key = engine.keys.market(market)
    assert await _encoding(engine, key) == "hashtable"
    user = (await make_user(1_000)).user_id
    assert await _encoding(engine, engine.keys.user(user)) == "listpack"  # users stay compact

    # A restart loads a small hash as a listpack: the same fields written afresh do too.
    fields = cast(dict[FieldT, EncodableT], await engine.redis.hgetall(key))
    async with engine.redis.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        pipe.hset(key, mapping=fields)
        await pipe.execute()
    assert await _encoding(engine, key) == "listpack"
    await engine.execute_trade(buy(user, market, YES, 1))
    assert await _encoding(engine, key) == "listpack"  # checked only now and then, not on every batch

    for _ in range(MARKET_RECHECK // 16):
        await asyncio.gather(*(engine.execute_trade(buy(user, market, NO, 1)) for _ in range(16)))
    assert int(cast(str, await engine.redis.hget(key, "version"))) > MARKET_RECHECK
    assert await _encoding(engine, key) == "hashtable"
    assert not any(name.startswith("~") for name in cast(list[str], await engine.redis.hkeys(key)))
    await assert_replay_matches(engine.redis, engine.keys)
