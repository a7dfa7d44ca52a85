"""The engine over S shards (engine/sharded.py): users' money in per-shard sub-wallets, moved by the
transfer saga to wherever a trade needs it; on one Redis with 8 shards and on a 3-master cluster.

After every scenario the invariants hold shard by shard and across shards
(:meth:`ShardedEngine.invariants`: conservation with transfers, solvency, shares, every credit
answering its debit), and the accounts are what their deposits and trades make of them.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from typing import cast

import pytest
from predmarket.engine.channel import Channels
from predmarket.engine.connection import connect
from predmarket.engine.errors import (
    AlreadyExists,
    IdempotencyKeyReused,
    InsufficientFunds,
    InsufficientShares,
    ValidationError,
)
from predmarket.engine.models import HOUSE, Order, Outcome, Side
from predmarket.engine.resolutions import Resolution
from predmarket.engine.settings import Settings
from predmarket.engine.sharded import FLOAT_SHARE, ShardedEngine
from predmarket.engine.shards import shard_prefix
from predmarket.engine.transfers import Transfer
from predmarket.engine.units import MAX_EXACT, MAX_TOTAL, MICRO, format_micro

from tests.support.cluster import PrivateCluster
from tests.support.redis_data import delete_prefix, delete_prefix_async
from tests.support.services import REDIS_URL, new_redis
from tests.support.waiting import wait_until_async

SHARDS = 8


def sharded(prefix: str, redis_url: str = REDIS_URL) -> ShardedEngine:
    client = new_redis() if redis_url == REDIS_URL else connect(redis_url)
    return ShardedEngine(client, Settings(key_prefix=prefix, redis_url=redis_url, shards=SHARDS))


@pytest.fixture
async def engine(prefix: str) -> AsyncIterator[ShardedEngine]:
    eng = sharded(prefix)
    await eng.start()
    try:
        yield eng
    finally:
        for k in range(SHARDS):
            await delete_prefix_async(eng.redis, shard_prefix(prefix, k, SHARDS))
        await delete_prefix_async(eng.redis, prefix)
        await eng.close()


async def fund_house(engine: ShardedEngine, units: int = 10_000) -> None:
    await engine.deposit(HOUSE, units * MICRO)


async def market_in(engine: ShardedEngine, avoid: set[int] | None = None, only: int | None = None) -> str:
    """An OPEN market whose shard is ``only`` (or not in ``avoid``): new ones until one lands there."""
    for _ in range(500):
        market = await engine.create_market("will it rain", 100 * MICRO)
        shard = engine.market_shard(market.market_id)
        if (only is None or shard == only) and shard not in (avoid or set()):
            await engine.market_engine(market.market_id).markets.open(market.market_id)
            return market.market_id
    raise AssertionError("no market landed in the shard wanted")


async def assert_invariants(engine: ShardedEngine) -> None:
    breaches = await engine.invariants()
    assert breaches == [], [str(b) for b in breaches]


async def test_a_trade_in_another_shard_brings_what_it_needs_and_a_float_from_home(engine: ShardedEngine) -> None:
    await fund_house(engine)
    alice = await engine.create_user("alice")
    await engine.deposit(alice.user_id, 100 * MICRO)
    home = engine.home(alice.user_id)
    market = await market_in(engine, avoid={home})
    shard = engine.market_shard(market)

    trade = await engine.execute_trade(Order(alice.user_id, market, Side.BUY, Outcome.YES, shares=10 * MICRO))
    account = await engine.account(alice.user_id)
    assert account.available == 100 * MICRO - trade.cost  # one balance, across sub-wallets
    assert [(p.market_id, p.shares) for p in account.positions] == [(market, 10 * MICRO)]
    # The quoted cost was moved, with a tenth more as a margin, and a float: a quarter of what home
    # held beyond that, for the trades to come there.
    need = trade.cost + trade.cost // 10
    brought = need + (100 * MICRO - need) // FLOAT_SHARE
    balances = await engine.balances(alice.user_id)
    assert balances[shard] == brought - trade.cost
    assert balances[home] == 100 * MICRO - brought

    # The next trades there are paid from the float, no transfer (home unchanged); a sale pays into the
    # shard's sub-wallet.
    more = await engine.execute_trade(Order(alice.user_id, market, Side.BUY, Outcome.NO, shares=5 * MICRO))
    sale = await engine.execute_trade(Order(alice.user_id, market, Side.SELL, Outcome.YES, shares=4 * MICRO))
    balances = await engine.balances(alice.user_id)
    assert balances[home] == 100 * MICRO - brought
    assert balances[shard] == brought - trade.cost - more.cost + sale.cost
    assert sum(balances) == 100 * MICRO - trade.cost - more.cost + sale.cost
    await assert_invariants(engine)


async def test_a_users_first_orders_in_a_shard_at_once_all_execute(engine: ShardedEngine) -> None:
    """Several first orders of one user in a shard where it has no sub-wallet, sent together: each
    meets NOT_FOUND, the first one's transfer makes the sub-wallet, and the others are sent again
    rather than answered NOT_FOUND (they were, before: the bench's 64 concurrent orders found it)."""
    await fund_house(engine)
    bob = await engine.create_user("bob")
    await engine.deposit(bob.user_id, 500 * MICRO)
    market = await market_in(engine, avoid={engine.home(bob.user_id)})
    orders = [Order(bob.user_id, market, Side.BUY, Outcome.YES, shares=MICRO) for _ in range(12)]
    trades = await asyncio.gather(*(engine.execute_trade(order) for order in orders))
    assert len({t.trade_id for t in trades}) == 12
    account = await engine.account(bob.user_id)
    assert account.available == 500 * MICRO - sum(t.cost for t in trades)
    await assert_invariants(engine)


async def test_copies_of_one_keyed_first_order_in_a_shard_all_answer_its_trade(engine: ShardedEngine) -> None:
    """Twenty copies of one order (one Idempotency-Key) sent at once into a shard where the user has no
    sub-wallet: each brings money from home and a float, so home runs dry before the first transfer
    lands; a copy that then finds nothing to move was answered INSUFFICIENT_FUNDS although the money
    was on its way (the HTTP suite on a cluster found it). Now it is sent again and replays the trade.
    Each credit is made 50 ms slow, as across masters under load, so that home runs dry first."""
    finish = engine.transfers.finish

    async def slow_finish(transfer: Transfer) -> None:
        await asyncio.sleep(0.05)  # injected latency, not a wait for anything
        await finish(transfer)

    engine.transfers.finish = slow_finish  # type: ignore[method-assign]
    await fund_house(engine)
    dora = await engine.create_user("dora")
    await engine.deposit(dora.user_id, 100 * MICRO)
    market = await market_in(engine, avoid={engine.home(dora.user_id)})
    order = Order(dora.user_id, market, Side.BUY, Outcome.YES, shares=3 * MICRO,
                  idempotency_key="race-1", fingerprint=f"{market}|BUY|YES|3")
    trades = await asyncio.gather(*(engine.execute_trade(order) for _ in range(20)))
    assert len({t.trade_id for t in trades}) == 1
    assert (await engine.account(dora.user_id)).available == 100 * MICRO - trades[0].cost
    await assert_invariants(engine)


async def test_a_rejection_for_funds_is_final_only_when_no_sub_wallet_can_pay(engine: ShardedEngine) -> None:
    await fund_house(engine)
    bob = await engine.create_user("bob")
    await engine.deposit(bob.user_id, 30 * MICRO)
    first, second = await market_in(engine), None
    second = await market_in(engine, avoid={engine.market_shard(first)})
    await engine.execute_trade(Order(bob.user_id, first, Side.BUY, Outcome.YES, amount=10 * MICRO))
    # Money now sits in two sub-wallets; an order the two together can pay goes through.
    trade = await engine.execute_trade(Order(bob.user_id, second, Side.BUY, Outcome.YES, amount=19 * MICRO))
    assert trade.cost <= 19 * MICRO
    left = (await engine.account(bob.user_id)).available
    with pytest.raises(InsufficientFunds):
        await engine.execute_trade(Order(bob.user_id, second, Side.BUY, Outcome.YES, shares=1_000 * MICRO))
    assert (await engine.account(bob.user_id)).available == left  # refused: nothing lost on the way
    with pytest.raises(InsufficientShares):  # no sub-wallet, so no shares, in a third shard
        third = await market_in(engine, avoid={engine.market_shard(m) for m in (first, second)}
                                | {engine.home(bob.user_id)})
        await engine.execute_trade(Order(bob.user_id, third, Side.SELL, Outcome.YES, shares=MICRO))
    await assert_invariants(engine)


async def test_withdrawing_everything_brings_every_sub_wallet_home(engine: ShardedEngine) -> None:
    await fund_house(engine)
    carol = await engine.create_user("carol")
    await engine.deposit(carol.user_id, 50 * MICRO)
    markets = [await market_in(engine, avoid={engine.home(carol.user_id)}) for _ in range(3)]
    for market in markets:
        await engine.execute_trade(Order(carol.user_id, market, Side.BUY, Outcome.YES, shares=5 * MICRO))
        await engine.execute_trade(Order(carol.user_id, market, Side.SELL, Outcome.YES, shares=5 * MICRO))
    total = (await engine.account(carol.user_id)).available
    assert sum(1 for b in await engine.balances(carol.user_id) if b) > 1  # spread over shards
    with pytest.raises(InsufficientFunds):
        await engine.withdraw(carol.user_id, total + 1)
    assert (await engine.withdraw(carol.user_id, total)).available == 0
    assert await engine.balances(carol.user_id) == [0] * SHARDS
    await assert_invariants(engine)


async def test_a_username_is_taken_across_shards(engine: ShardedEngine) -> None:
    await engine.create_user("dave")
    for _ in range(5):  # other ids, other home shards: the name is still taken
        with pytest.raises(AlreadyExists):
            await engine.create_user("dave")
    homes = {engine.home(f"u_{i:016x}") for i in range(40)}
    assert len(homes) == SHARDS


async def test_markets_are_funded_in_their_shard_and_settle_into_sub_wallets(engine: ShardedEngine) -> None:
    await fund_house(engine, 1_000)
    house_home, pools = engine.home(HOUSE), 0
    while True:  # markets until one lands outside the house's home shard
        market = await engine.create_market("will it rain", 100 * MICRO)
        pools += market.pool
        if engine.market_shard(market.market_id) != house_home:
            break
    market_id = market.market_id
    market_engine = engine.market_engine(market_id)
    await market_engine.markets.open(market_id)
    house = await engine.balances(HOUSE)
    assert house[engine.market_shard(market_id)] == 0  # the subsidy was moved there and spent on the pool
    assert sum(house) == 1_000 * MICRO - pools

    erin = await engine.create_user("erin")
    await engine.deposit(erin.user_id, 100 * MICRO)
    await engine.execute_trade(Order(erin.user_id, market_id, Side.BUY, Outcome.YES, shares=20 * MICRO))
    before = await engine.balances(erin.user_id)  # the first trade's margin is left in the market's shard
    await market_engine.markets.close(market_id)
    await market_engine.markets.resolve(market_id, "YES")
    await market_engine.markets.settle(market_id)
    balances = await engine.balances(erin.user_id)
    shard = engine.market_shard(market_id)
    assert balances[shard] - before[shard] == 20 * MICRO  # the payout, in the market's shard
    await assert_invariants(engine)


async def test_random_trading_from_two_engines_taking_turns(engine: ShardedEngine, prefix: str) -> None:
    """Two engines (two clients and caches, as two API processes would be) take turns on the same
    markets and users: funding, trading and withdrawals interleave; nothing is created or lost."""
    other = sharded(prefix)
    rng = random.Random(11)
    try:
        await fund_house(engine)
        users = [(await engine.create_user(f"user{i}")).user_id for i in range(6)]
        deposited = 0
        for user in users:
            await engine.deposit(user, 200 * MICRO)
            deposited += 200 * MICRO
        markets = [await market_in(engine) for _ in range(6)]
        withdrawn = 0
        refusals = 0
        for step in range(200):
            eng = (engine, other)[step % 2]
            user, market = rng.choice(users), rng.choice(markets)
            side = rng.choice((Side.BUY, Side.SELL))
            try:
                if rng.random() < 0.05:
                    amount = rng.randint(1, 30) * MICRO
                    await eng.withdraw(user, amount)
                    withdrawn += amount
                else:
                    await eng.execute_trade(Order(user, market, side, rng.choice((Outcome.YES, Outcome.NO)),
                                                  shares=rng.randint(1, 20) * MICRO))
            except (InsufficientFunds, InsufficientShares):
                refusals += 1
        assert refusals < 150
        accounts = [await engine.account(user) for user in users]
        held = sum(a.available for a in accounts)
        pools = 0
        for market in markets:
            pools += (await engine.market_engine(market).markets.get(market)).pool
        house_spent = 10_000 * MICRO - (await engine.account(HOUSE)).available
        assert held + pools == deposited - withdrawn + house_spent
        await assert_invariants(engine)
    finally:
        await other.close()


async def test_the_same_contract_on_a_3_master_cluster(redis_cluster: PrivateCluster) -> None:
    """Every step stays in one slot (the cluster refuses anything else): users, deposits, markets in
    shards on different masters, trades funded across them, settlement, withdrawal."""
    prefix = f"pmsh{uuid.uuid4().hex[:8]}"
    engine = sharded(prefix, redis_cluster.url)
    try:
        await engine.start()
        owners = {redis_cluster.master_for_key(engine.wallet_keys(k).events).port for k in range(SHARDS)}
        assert len(owners) == 3
        await fund_house(engine)
        frank = await engine.create_user("frank")
        await engine.deposit(frank.user_id, 100 * MICRO)
        markets = [await market_in(engine, only=k) for k in range(SHARDS)
                   if redis_cluster.master_for_key(engine.wallet_keys(k).events).port
                   != redis_cluster.master_for_key(engine.wallet_keys(engine.home(frank.user_id)).events).port][:3]
        trades = await asyncio.gather(*(engine.execute_trade(Order(frank.user_id, m, Side.BUY, Outcome.YES,
                                                                   shares=5 * MICRO)) for m in markets))
        assert (await engine.account(frank.user_id)).available == 100 * MICRO - sum(t.cost for t in trades)
        # The shards' engines send their trades over one ordered connection per master, not one per shard.
        channels = Channels.shared(engine.redis)
        assert channels is not None
        assert {c.node.port for c in channels.open if c.node is not None} == {
            redis_cluster.master_for_key(engine.wallet_keys(engine.market_shard(m)).events).port for m in markets}
        await assert_invariants(engine)
        left = (await engine.account(frank.user_id)).available
        assert (await engine.withdraw(frank.user_id, left)).available == 0
        await assert_invariants(engine)
    finally:
        await engine.close()
        for k in range(SHARDS):
            delete_prefix(shard_prefix(prefix, k, SHARDS), redis_cluster.url)
        delete_prefix(prefix, redis_cluster.url)


async def test_the_shards_share_one_ordered_connection_to_their_primary(engine: ShardedEngine) -> None:
    """Orders stay grouped per shard (each shard's engine batches its markets), and every shard's engine
    sends them over the one ordered connection its client holds to the primary: 8 shards, 1 connection."""
    await fund_house(engine)
    gina = await engine.create_user("gina")
    await engine.deposit(gina.user_id, 500 * MICRO)
    markets = [await market_in(engine, only=k) for k in range(SHARDS)]
    trades = await asyncio.gather(*(engine.execute_trade(Order(gina.user_id, m, Side.BUY, Outcome.YES, shares=MICRO))
                                    for m in markets for _ in range(4)))
    assert len({t.trade_id for t in trades}) == 4 * SHARDS
    channels = Channels.shared(engine.redis)
    assert channels is not None and len(channels.open) == 1
    await assert_invariants(engine)


async def test_trade_ids_are_unique_across_shards(engine: ShardedEngine) -> None:
    await fund_house(engine)
    grace = await engine.create_user("grace")
    await engine.deposit(grace.user_id, 1_000 * MICRO)
    markets = [await market_in(engine, only=k) for k in range(3)]
    trades = [await engine.execute_trade(Order(grace.user_id, m, Side.BUY, Outcome.YES, shares=MICRO))
              for m in markets for _ in range(3)]
    assert len({t.trade_id for t in trades}) == len(trades)
    for trade in trades:  # shard k of S numbers its n-th trade n * S + k
        assert trade.trade_id % SHARDS == engine.market_shard(trade.market_id) and trade.trade_id >= SHARDS
    assert sorted(t.trade_id for t in trades if t.market_id == markets[1]) == [SHARDS + 1, 2 * SHARDS + 1,
                                                                              3 * SHARDS + 1]


def test_the_rejection_names_the_shortfall() -> None:
    from predmarket.engine.sharded import shortfall

    assert shortfall(InsufficientFunds("available 5.000000 < cost 7.250000")) == 2_250_000
    assert shortfall(InsufficientFunds("available 5.000000 < cost 7.250000"), 2) == 2_250_000 + 1_450_000
    assert shortfall(InsufficientFunds("something else")) is None


async def test_an_idempotency_key_is_the_users_across_shards(engine: ShardedEngine) -> None:
    await fund_house(engine)
    hank = await engine.create_user("hank")
    await engine.deposit(hank.user_id, 100 * MICRO)
    first = await market_in(engine)
    second = await market_in(engine, avoid={engine.market_shard(first)})

    def order(market: str) -> Order:
        return Order(hank.user_id, market, Side.BUY, Outcome.YES, shares=2 * MICRO, idempotency_key="k1",
                     fingerprint=f"POST /v1/markets/{market}/trades BUY YES 2")

    trade = await engine.execute_trade(order(first))
    again = await engine.execute_trade(order(first))  # the same request: replayed, nothing runs twice
    assert again.trade_id == trade.trade_id and again.replayed
    # The same key for a market in another shard: refused, though that shard never saw the key.
    with pytest.raises(IdempotencyKeyReused):
        await engine.execute_trade(order(second))
    account = await engine.account(hank.user_id)
    assert [(p.market_id, p.shares) for p in account.positions] == [(first, 2 * MICRO)]
    await assert_invariants(engine)


class SlowReader(ShardedEngine):
    """Sub-wallets read one round trip each, other tasks let run in between, a random number of turns
    (on a cluster the shards' reads go to different masters one after the other, and transfers land
    between them)."""

    rng = random.Random(5)

    async def _collect(self, user_id: str) -> list[tuple[str | None, int, int]]:
        out = []
        for shard in range(self.count):
            fields = await self.redis.hmget(self.wallet_keys(shard).user(user_id),
                                            ["available", "moved_in", "moved_out"])
            out.append((cast(str | None, fields[0]), int(fields[1] or 0), int(fields[2] or 0)))
            for _ in range(self.rng.randrange(4)):
                await asyncio.sleep(0)
        return out


async def test_the_account_never_counts_money_in_flight_twice(engine: ShardedEngine, prefix: str) -> None:
    """One client moves a user's money back and forth between two sub-wallets as fast as it can;
    another reads the account meanwhile: every read is at most the money the user has (a transfer
    in flight is counted nowhere, never in both sub-wallets), and the last, at rest, all of it."""
    ivan = await engine.create_user("ivan", user_id=next(f"u_{i:016x}" for i in range(1000)
                                                        if engine.home(f"u_{i:016x}") == 0))
    await engine.deposit(ivan.user_id, 100 * MICRO)
    home, away = 0, SHARDS - 1  # read first and last: room for a whole transfer between the two reads
    reader = SlowReader(new_redis(), Settings(key_prefix=prefix, redis_url=REDIS_URL, shards=SHARDS))
    stop = asyncio.Event()

    async def bounce() -> int:
        moves = 0
        while not stop.is_set():
            source, dest = (home, away) if moves % 2 == 0 else (away, home)
            await engine.transfers.move(ivan.user_id, source, dest, 60 * MICRO)
            moves += 1
        return moves

    try:
        mover = asyncio.create_task(bounce())
        reads = []
        for _ in range(300):
            reads.append((await reader.account(ivan.user_id)).available)
        stop.set()
        assert await mover > 20
        assert max(reads) <= 100 * MICRO, sorted(set(reads))[-3:]
        assert (await reader.account(ivan.user_id)).available == 100 * MICRO
    finally:
        await reader.close()


@pytest.mark.parametrize("resolution", [Resolution.of_outcome("Lions"),
                                        Resolution.prob([("Lions", 500_000), ("Tigers", 300_000),
                                                         ("Bears", 200_000)]),
                                        Resolution.cancel()], ids=lambda r: r.outcome)
async def test_every_resolution_of_a_labelled_market_pays_into_the_markets_shard(
        engine: ShardedEngine, resolution: Resolution) -> None:
    """A 3-label market in a shard none of its traders calls home: every resolution type pays into
    their sub-wallets there, the house gets the rest of the pool there, and the shards balance."""
    await fund_house(engine, 1_000)
    traders = [(await engine.create_user(f"fan{i}")).user_id for i in range(3)]
    homes = {engine.home(t) for t in traders} | {engine.home(HOUSE)}
    while True:
        market = await engine.create_market("cup final", 100 * MICRO, outcomes=["Lions", "Tigers", "Bears"])
        if engine.market_shard(market.market_id) not in homes:
            break
    market_id, shard = market.market_id, engine.market_shard(market.market_id)
    market_engine = engine.market_engine(market_id)
    await market_engine.markets.open(market_id)
    for trader in traders:
        await engine.deposit(trader, 200 * MICRO)
    for trader, label in zip(traders, ("Lions", "Tigers", "Bears"), strict=True):
        await engine.execute_trade(Order(trader, market_id, Side.BUY, label, shares=30 * MICRO))
    # One exits at a loss or a profit: its net cost stays (a CANCEL refunds by net cost).
    await engine.execute_trade(Order(traders[0], market_id, Side.SELL, "Lions", shares=10 * MICRO))
    before = [await engine.balances(t) for t in traders]
    await market_engine.markets.close(market_id)
    await market_engine.markets.resolve(market_id, resolution)
    settled = await market_engine.markets.settle(market_id)
    paid = 0
    for trader, earlier in zip(traders, before, strict=True):
        after = await engine.balances(trader)
        assert [a - b for a, b in zip(after, earlier, strict=True) if a != b] in ([], [after[shard] - earlier[shard]])
        paid += after[shard] - earlier[shard]
    assert paid == settled.payouts_total  # every payout or refund landed in the market's shard
    await assert_invariants(engine)


async def test_a_username_left_claimed_by_a_dead_creation_is_taken_over(engine: ShardedEngine) -> None:
    # A process claimed the name and died before making the account (claimed at ms 1: long ago).
    await engine.redis.hset(engine.keys.usernames, "judy", "u_00000000deadbeef|1")
    judy = await engine.create_user("judy")
    assert (await engine.account(judy.user_id)).username == "judy"
    held = await engine.redis.hget(engine.keys.usernames, "judy")
    assert str(held).startswith(f"{judy.user_id}|")
    # A claim just made, its account not (yet) there: a creation in flight, never taken over.
    seconds, _ = await engine.redis.time()
    await engine.redis.hset(engine.keys.usernames, "kate", f"u_00000000cafef00d|{seconds * 1000}")
    with pytest.raises(AlreadyExists):
        await engine.create_user("kate")
    # And a name whose account exists is taken, however old its claim.
    await engine.redis.hset(engine.keys.usernames, "judy", f"{judy.user_id}|1")
    with pytest.raises(AlreadyExists):
        await engine.create_user("judy")


async def test_the_engines_sweeper_finishes_a_transfer_a_dead_process_left(prefix: str) -> None:
    engine = ShardedEngine(new_redis(), Settings(key_prefix=prefix, redis_url=REDIS_URL, shards=SHARDS),
                           sweep_every_s=0.05, sweep_after_ms=0)
    try:
        await engine.start()
        lena = await engine.create_user("lena")
        await engine.deposit(lena.user_id, 10 * MICRO)
        home = engine.home(lena.user_id)
        # Another process took the money out of home and died before crediting it anywhere.
        await engine.transfers.take_out(Transfer("t-dead", lena.user_id, home, (home + 3) % SHARDS, 4 * MICRO))
        assert await engine.transfers.in_transit() == {lena.user_id: 4 * MICRO}

        async def finished() -> bool:
            return await engine.transfers.in_transit() == {} and not await engine.transfers.pending(home)

        await wait_until_async(finished, 10, "the sweeper to finish the transfer")
        assert (await engine.account(lena.user_id)).available == 10 * MICRO
        await assert_invariants(engine)
    finally:
        await engine.close()
        redis = new_redis()
        await delete_prefix_async(redis, prefix)  # the shards' keys are under it
        await redis.aclose()


async def test_the_balance_bound_is_on_the_whole_balance_in_transit_and_concurrent_deposits_included(
        engine: ShardedEngine) -> None:
    """Deposits land at home, but the bound (contract: 9,000,000,000 units) is on the user's whole
    balance: money in other sub-wallets and in transit counts, and deposits sent at once cannot pass it
    together (lua/deposit.lua adds each sub-wallet's own money, which transfers do not move)."""
    bound, most = MAX_TOTAL, 1_000_000_000 * MICRO  # the bound, and the largest single deposit
    bob = await engine.create_user("bob")
    for _ in range(bound // most):
        await engine.accounts.deposit(bob.user_id, most)
    home = engine.home(bob.user_id)
    await engine.transfers.move(bob.user_id, home, (home + 1) % SHARDS, 4 * most)
    stuck = Transfer(uuid.uuid4().hex, bob.user_id, home, (home + 2) % SHARDS, most)
    await engine.transfers.take_out(stuck)  # debited, not yet credited: in no sub-wallet
    assert sum(await engine.balances(bob.user_id)) == bound - most

    with pytest.raises(ValidationError, match="balance would exceed 9000000000"):
        await engine.accounts.deposit(bob.user_id, 1)
    for _ in range(2):  # room for two more deposits of the largest
        await engine.accounts.withdraw(bob.user_id, most)
    answers = await asyncio.gather(*(engine.accounts.deposit(bob.user_id, most) for _ in range(5)),
                                   return_exceptions=True)
    assert sum(isinstance(a, ValidationError) for a in answers) == 3, answers
    await engine.transfers.finish(stuck)
    assert sum(await engine.balances(bob.user_id)) == bound
    await assert_invariants(engine)


async def test_each_shard_takes_its_share_of_the_deposits_bound(engine: ShardedEngine) -> None:
    """A sub-wallet may hold money deposited in every shard (transfers take it anywhere), so all shards'
    deposits together stay within int64: each shard takes floor((2^63 - 1) / S). Reaching that honestly
    takes ~1,150 deposits of 1e9, so the home shard's counter is set near it."""
    carol = await engine.create_user("carol")
    totals = engine.wallet_keys(engine.home(carol.user_id)).totals
    share = MAX_EXACT // SHARDS
    await engine.redis.hset(totals, "deposits", share - 5)
    with pytest.raises(ValidationError, match=f"total deposits would exceed {format_micro(share)}"):
        await engine.accounts.deposit(carol.user_id, 6)
    assert (await engine.accounts.deposit(carol.user_id, 5)).available == 5
    assert int(cast(str, await engine.redis.hget(totals, "deposits"))) == share


async def test_a_refused_market_creation_moves_none_of_the_houses_money(engine: ShardedEngine) -> None:
    """Refused in the script after the subsidy was brought to the market's shard, a creation had already
    written the transfer's events and moved the house's money: a refusal changes nothing, stream included."""
    await fund_house(engine, 150)
    away = next(f"m-away-{i}" for i in range(100) if engine.market_shard(f"m-away-{i}") != engine.home(HOUSE))
    market = await engine.create_market("will it rain", 100 * MICRO, market_id=away)
    shard = engine.market_shard(market.market_id)
    assert (await engine.balances(HOUSE))[shard] == 0  # the next creation there must bring the subsidy

    async def state() -> tuple[list[int], list[object]]:  # the house's sub-wallets, each shard's stream end
        ends: list[object] = [await e.redis.xrevrange(e.keys.events, count=1) for e in engine.engines]
        return await engine.balances(HOUSE), ends

    before = await state()
    with pytest.raises(AlreadyExists, match="is taken"):
        await engine.create_market("again", 10 * MICRO, market_id=market.market_id)
    past = (await engine.redis.time())[0] * 1000 - 1_000
    with pytest.raises(ValidationError, match="close_time must lie in the future"):
        await engine.create_market("closed already", 10 * MICRO, close_ms=past)
    with pytest.raises(InsufficientFunds, match="house cannot pay the subsidy"):
        await engine.create_market("too rich", 1_000 * MICRO)
    assert await state() == before
    created = await engine.create_market("fine", 10 * MICRO)  # and what is not refused still is created
    assert created.pool == (await engine.market_engine(created.market_id).markets.get(created.market_id)).pool
    await assert_invariants(engine)
