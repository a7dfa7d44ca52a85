"""Settlement: winners paid 1.000000 per share, losers zeroed, house gets the rest; resumable, paying nobody twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

import pytest
from predmarket.engine.errors import InvalidState, MarketNotOpen
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import HOUSE, Account, Market, Order, Outcome, Side
from predmarket.engine.state import check_invariants, read_redis_state
from predmarket.engine.units import MICRO, format_micro

from tests.support.factories import MarketFactory, UserFactory
from tests.support.redis_data import hash_fields, snapshot, stream_entries

YES, NO = Outcome.YES, Outcome.NO


async def events(engine: MarketEngine, kind: str) -> list[dict[str, str]]:
    return [fields for _, fields in await stream_entries(engine.redis, engine.keys.events) if fields["type"] == kind]


async def assert_invariants(engine: MarketEngine) -> None:
    assert check_invariants(await read_redis_state(engine.redis, engine.keys)) == []


@dataclass
class Book:
    """A market with holders: what each user holds of it and had available before settlement."""

    market: Market
    users: list[Account]
    held: dict[tuple[str, Outcome], int]
    available: dict[str, int]


async def build_book(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory,
    holdings: list[dict[Outcome, int]], b_units: int = 100,
) -> Book:
    """One user per entry of ``holdings`` ({outcome: micro-shares}), each buying what it lists."""
    market = await make_market(b_units)
    users = [await make_user(10_000) for _ in holdings]
    held: dict[tuple[str, Outcome], int] = {}
    for user, wants in zip(users, holdings, strict=True):
        for outcome, shares in wants.items():
            await engine.execute_trade(Order(user.user_id, market.market_id, Side.BUY, outcome, shares=shares))
            held[(user.user_id, outcome)] = shares
    # Some trading back and forth, so positions are not just what was bought.
    first = users[0]
    first_outcome, first_shares = next(iter(holdings[0].items()))
    await engine.execute_trade(
        Order(first.user_id, market.market_id, Side.SELL, first_outcome, shares=first_shares // 3)
    )
    held[(first.user_id, first_outcome)] -= first_shares // 3
    available = {u.user_id: (await engine.accounts.get(u.user_id)).available for u in users}
    return Book(await engine.markets.get(market.market_id), users, held, available)


HOLDINGS = [
    {YES: 30 * MICRO},
    {NO: 12_345_678},
    {YES: 7 * MICRO, NO: 3 * MICRO},  # holds both sides
    {YES: 1},  # a single micro-share
    {NO: 55 * MICRO},
    {YES: 10 * MICRO},
]


async def assert_fully_settled(engine: MarketEngine, book: Book, outcome: Outcome) -> None:
    """Each winner paid once, every position of the market gone, house holds the rest."""
    mid = book.market.market_id
    for user in book.users:
        won = book.held.get((user.user_id, outcome), 0)
        account = await engine.accounts.get(user.user_id)
        assert account.available == book.available[user.user_id] + won
        assert [p for p in account.positions if p.market_id == mid] == []
        user_fields = await hash_fields(engine.redis, engine.keys.user_positions(user.user_id))
        assert not any(f.startswith(f"{mid}:") for f in user_fields)
    assert await engine.redis.exists(engine.keys.market_positions(mid)) == 0
    payouts = Counter(e["user_id"] for e in await events(engine, "Payout") if e["market_id"] == mid)
    winners = {user_id for (user_id, o), shares in book.held.items() if o is outcome and shares > 0}
    assert payouts == Counter({user_id: 1 for user_id in winners})
    await assert_invariants(engine)


@pytest.mark.parametrize("outcome", [YES, NO])
async def test_settlement_pays_winners_and_returns_the_rest_to_house(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory, outcome: Outcome
) -> None:
    book = await build_book(engine, make_market, make_user, HOLDINGS)
    mid = book.market.market_id
    resolved = await engine.markets.resolve(mid, outcome)
    house_before = (await engine.accounts.get(HOUSE)).available
    winning = {user_id: s for (user_id, o), s in book.held.items() if o is outcome and s > 0}
    total = sum(winning.values())
    assert total == (resolved.yes_shares if outcome is YES else resolved.no_shares)

    settlement = await engine.markets.settle(mid)

    assert settlement.payouts_total == total
    assert settlement.holders_paid == len(winning)
    assert settlement.house_return == resolved.pool - total > 0
    assert (await engine.accounts.get(HOUSE)).available == house_before + settlement.house_return
    market = settlement.market
    assert (market.status.value, market.outcome, market.pool) == ("SETTLED", outcome, 0)
    assert (market.payouts_total, market.holders_paid) == (total, len(winning))
    assert (market.yes_shares, market.no_shares) == (resolved.yes_shares, resolved.no_shares)
    assert (market.settled_yes, market.settled_no) == (resolved.yes_shares, resolved.no_shares)

    payouts = {e["user_id"]: e for e in await events(engine, "Payout")}
    assert set(payouts) == set(winning)
    for user_id, shares in winning.items():
        event = payouts[user_id]
        assert event["market_id"] == mid
        assert event["shares"] == event["amount"] == format_micro(shares)  # 1.000000 per share
    [settled] = await events(engine, "MarketSettled")
    assert settled["market_id"] == mid
    assert settled["payouts_total"] == format_micro(total)
    assert settled["house_return"] == format_micro(settlement.house_return)
    await assert_fully_settled(engine, book, outcome)


async def test_settlement_leaves_other_markets_alone(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory
) -> None:
    book = await build_book(engine, make_market, make_user, HOLDINGS[:3])
    other = await make_market(50)
    holder = book.users[0]
    await engine.execute_trade(Order(holder.user_id, other.market_id, Side.BUY, YES, shares=5 * MICRO))
    other_before = await engine.markets.get(other.market_id)
    other_positions = await engine.redis.hgetall(engine.keys.market_positions(other.market_id))
    book.available[holder.user_id] = (await engine.accounts.get(holder.user_id)).available

    await engine.markets.resolve(book.market.market_id, YES)
    await engine.markets.settle(book.market.market_id)

    assert await engine.markets.get(other.market_id) == other_before
    assert await engine.redis.hgetall(engine.keys.market_positions(other.market_id)) == other_positions
    positions = (await engine.accounts.get(holder.user_id)).positions
    assert [(p.market_id, p.outcome, p.shares) for p in positions] == [(other.market_id, YES, 5 * MICRO)]
    await assert_fully_settled(engine, book, YES)


async def test_settlement_without_holders(engine: MarketEngine, make_market: MarketFactory) -> None:
    market = await make_market(100)
    await engine.markets.resolve(market.market_id, NO)
    settlement = await engine.markets.settle(market.market_id)
    assert (settlement.payouts_total, settlement.holders_paid, settlement.house_return) == (0, 0, market.pool)
    assert await events(engine, "Payout") == []
    [settled] = await events(engine, "MarketSettled")
    assert (settled["payouts_total"], settled["house_return"]) == ("0.000000", format_micro(market.pool))
    await assert_invariants(engine)


async def test_settlement_when_only_losers_hold(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory
) -> None:
    book = await build_book(engine, make_market, make_user, [{NO: 20 * MICRO}, {NO: 5 * MICRO}])
    resolved = await engine.markets.resolve(book.market.market_id, YES)
    settlement = await engine.markets.settle(book.market.market_id)
    assert (settlement.payouts_total, settlement.holders_paid, settlement.house_return) == (0, 0, resolved.pool)
    await assert_fully_settled(engine, book, YES)


async def test_settled_market_refuses_trading_and_a_second_settlement(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory
) -> None:
    book = await build_book(engine, make_market, make_user, HOLDINGS[:2])
    mid = book.market.market_id
    await engine.markets.resolve(mid, YES)
    await engine.markets.settle(mid)
    before = await snapshot(engine.redis, engine.keys.prefix)
    with pytest.raises(InvalidState):
        await engine.markets.settle(mid)
    with pytest.raises(InvalidState):
        await engine.markets._settle_fields(mid, [f"{book.users[0].user_id}:YES"])
    with pytest.raises(MarketNotOpen):
        await engine.execute_trade(Order(book.users[0].user_id, mid, Side.BUY, YES, shares=MICRO))
    assert await snapshot(engine.redis, engine.keys.prefix) == before


async def test_settle_batch_refuses_a_market_that_is_not_resolved(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory
) -> None:
    book = await build_book(engine, make_market, make_user, HOLDINGS[:2])
    fields = await hash_fields(engine.redis, engine.keys.market_positions(book.market.market_id))
    before = await snapshot(engine.redis, engine.keys.prefix)
    with pytest.raises(InvalidState):
        await engine.markets._settle_fields(book.market.market_id, fields)
    assert await snapshot(engine.redis, engine.keys.prefix) == before


async def test_interrupted_settlement_resumes_and_pays_nobody_twice(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory
) -> None:
    book = await build_book(engine, make_market, make_user, HOLDINGS)
    mid = book.market.market_id
    resolved = await engine.markets.resolve(mid, YES)
    fields = sorted(await hash_fields(engine.redis, engine.keys.market_positions(mid)))
    # Half the winners and half the losers: user ids are random, so a plain slice of the
    # sorted fields could hold one side only.
    yes_fields = [f for f in fields if f.endswith(":YES")]
    no_fields = [f for f in fields if f.endswith(":NO")]
    first_batch = yes_fields[: len(yes_fields) // 2] + no_fields[: len(no_fields) // 2]
    rest = sorted(set(fields) - set(first_batch))
    assert any(f.endswith(":YES") for f in first_batch) and any(f.endswith(":NO") for f in first_batch)

    # A settlement that crashed after its first batch: those holders are paid, the market still RESOLVED.
    await engine.markets._settle_fields(mid, first_batch)
    # The same batch delivered again (a retry of the call whose answer was lost) pays nobody.
    await engine.markets._settle_fields(mid, first_batch)
    partial = await engine.markets.get(mid)
    assert partial.status.value == "RESOLVED"
    paid_so_far = sum(book.held[(f.rpartition(":")[0], YES)] for f in first_batch if f.endswith(":YES"))
    assert partial.payouts_total == paid_so_far
    assert partial.pool == resolved.pool - paid_so_far
    assert sorted(await engine.redis.hkeys(engine.keys.market_positions(mid))) == rest
    await assert_invariants(engine)  # conservation and solvency hold half-way too

    settlement = await engine.markets.settle(mid)
    total = resolved.yes_shares
    winners = {user_id for (user_id, o), s in book.held.items() if o is YES and s > 0}
    assert settlement.payouts_total == total
    assert settlement.holders_paid == len(winners)
    assert settlement.house_return == resolved.pool - total
    await assert_fully_settled(engine, book, YES)


@pytest.mark.parametrize("batch", [1, 2, 7])
async def test_settlement_in_small_batches_with_many_holders(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory, batch: int
) -> None:
    holdings = [{YES if i % 3 else NO: (i + 1) * 1_250_000} for i in range(40)]
    holdings[5] = {YES: 2 * MICRO, NO: 3 * MICRO}
    book = await build_book(engine, make_market, make_user, holdings, b_units=500)
    mid = book.market.market_id
    resolved = await engine.markets.resolve(mid, NO)
    settlement = await engine.markets.settle(mid, batch=batch)
    winners = {user_id for (user_id, o), s in book.held.items() if o is NO and s > 0}
    assert settlement.holders_paid == len(winners) == 15
    assert settlement.payouts_total == resolved.no_shares
    assert settlement.house_return == resolved.pool - resolved.no_shares
    await assert_fully_settled(engine, book, NO)


async def test_settle_batch_1_walks_a_large_position_hash(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past Redis' compact hash encoding (512 fields by default) HSCAN really returns small chunks."""
    market = await make_market(1_000)
    mid = market.market_id
    users: list[Account] = []
    for _ in range(6):  # in chunks: the client's connection pool is finite
        users += await asyncio.gather(*(make_user(10) for _ in range(100)))
    trades = await asyncio.gather(*(
        engine.execute_trade(Order(u.user_id, mid, Side.BUY, YES if i % 2 else NO, shares=(i % 7 + 1) * MICRO))
        for i, u in enumerate(users)
    ))
    cost = {t.user_id: t.cost for t in trades}
    resolved = await engine.markets.resolve(mid, YES)
    house_before = (await engine.accounts.get(HOUSE)).available

    calls: list[int] = []
    settle_fields = engine.markets._settle_fields

    async def counting(market_id: str, fields: list[str]) -> None:
        calls.append(len(fields))
        await settle_fields(market_id, fields)

    monkeypatch.setattr(engine.markets, "_settle_fields", counting)
    settlement = await engine.markets.settle(mid, batch=1)

    assert len(calls) > 10 and max(calls) < 600 and sum(calls) >= 600
    assert settlement.holders_paid == 300
    assert settlement.payouts_total == resolved.yes_shares
    assert (await engine.accounts.get(HOUSE)).available == house_before + resolved.pool - resolved.yes_shares
    payouts = Counter(e["user_id"] for e in await events(engine, "Payout"))
    assert payouts == Counter({u.user_id: 1 for i, u in enumerate(users) if i % 2})
    for i, u in enumerate(users):
        won = (i % 7 + 1) * MICRO if i % 2 else 0
        account = await engine.accounts.get(u.user_id)
        assert (account.available, account.positions) == (10 * MICRO - cost[u.user_id] + won, [])
    assert await engine.redis.exists(engine.keys.market_positions(mid)) == 0
    await assert_invariants(engine)
