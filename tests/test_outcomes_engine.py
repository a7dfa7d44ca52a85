"""Markets with more outcomes than YES/NO, through the engine and the real scripts (issue 15 item 2).

Every cost is compared with engine.pricing_n (proven against a 50-digit reference in
tests/test_pricing_n.py), every hash field with engine.labels' layout, every event with the
contract's fields; conservation and each label's totals are checked after every scenario.
"""

from __future__ import annotations

import asyncio
import json
from typing import cast

import pytest
from predmarket.engine import pricing_n
from predmarket.engine.errors import InsufficientShares, MarketNotOpen, Unavailable, ValidationError
from predmarket.engine.labels import decimal_map, q_field, settled_field
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import HOUSE, Market, MarketStatus, Order, Side, Trade
from predmarket.engine.resolutions import Resolution
from predmarket.engine.units import MICRO, format_micro

from tests.support.factories import EngineFactory, UserFactory
from tests.support.redis_data import stream_entries

BUY, SELL = Side.BUY, Side.SELL
THREE = ("A", "B", "C")
SIXTEEN = tuple(f"L{i}" for i in range(16))


async def labelled_market(engine: MarketEngine, labels: tuple[str, ...], b_units: int = 100,
                          open: bool = True) -> Market:
    await engine.accounts.deposit(HOUSE, 3 * b_units * MICRO)  # ln 16 < 3
    market = await engine.markets.create("Who wins?", b_units * MICRO, outcomes=list(labels))
    return await engine.markets.open(market.market_id) if open else market


async def events_of(engine: MarketEngine, kind: str, market_id: str) -> list[dict[str, str]]:
    return [f for _, f in await stream_entries(engine.redis, engine.keys.events)
            if f["type"] == kind and f.get("market_id") == market_id]


async def held_by_label(engine: MarketEngine, market_id: str) -> dict[str, int]:
    """Each label's shares summed over the market's positions hash."""
    positions = cast(dict[str, str], await engine.redis.hgetall(engine.keys.market_positions(market_id)))
    totals: dict[str, int] = {}
    for field, shares in positions.items():
        label = field.rpartition(":")[2]
        totals[label] = totals.get(label, 0) + int(shares)
    return totals


async def assert_totals_match_holdings(engine: MarketEngine, market_id: str) -> Market:
    market = await engine.markets.get(market_id)
    held = await held_by_label(engine, market_id)
    assert dict(zip(market.outcomes, market.totals, strict=True)) == {
        label: held.get(label, 0) for label in market.outcomes}
    assert market.pool >= max(market.totals)
    return market


async def test_a_market_of_three_labels_is_created_with_its_subsidy_and_layout(engine: MarketEngine) -> None:
    await engine.accounts.deposit(HOUSE, 200 * MICRO)
    house_before = (await engine.accounts.get(HOUSE)).available
    market = await engine.markets.create("Who wins?", 100 * MICRO, outcomes=list(THREE))
    subsidy = pricing_n.subsidy_n(100 * MICRO, 3)
    assert subsidy == 109_861_229  # ceil(100 * ln 3) to the micro-unit
    assert market.pool == subsidy
    assert (await engine.accounts.get(HOUSE)).available == house_before - subsidy
    assert market.outcomes == THREE and market.totals == (0, 0, 0)
    assert market.prices == (333_333, 333_333, 333_333) and not market.is_yes_no
    assert (market.yes_shares, market.price_yes) == (0, 0)
    fields = cast(dict[str, str], await engine.redis.hgetall(engine.keys.market(market.market_id)))
    assert fields["outcomes"] == "A,B,C"
    assert all(fields[q_field(label)] == "0" == fields[settled_field(label)] for label in THREE)
    assert "q_yes" not in fields
    (created,) = await events_of(engine, "MarketCreated", market.market_id)
    assert json.loads(created["outcomes"]) == list(THREE)


async def test_a_yes_no_market_keeps_its_layout_and_its_events_gain_json_prices(
    engine: MarketEngine, make_user: UserFactory,
) -> None:
    user = (await make_user(100)).user_id
    await engine.accounts.deposit(HOUSE, 100 * MICRO)
    market = await engine.markets.open((await engine.markets.create("Yes or no", 100 * MICRO)).market_id)
    fields = cast(dict[str, str], await engine.redis.hgetall(engine.keys.market(market.market_id)))
    assert "outcomes" not in fields and fields["q_yes"] == "0" == fields["q_no"]
    trade = await engine.execute_trade(Order(user, market.market_id, BUY, "YES", shares=3 * MICRO))
    assert trade.prices == (trade.price_yes, trade.price_no) and trade.outcomes == ("YES", "NO")
    (executed,) = await events_of(engine, "TradeExecuted", market.market_id)
    assert "prices" not in executed and executed["price_yes"] == format_micro(trade.price_yes)
    (updated,) = await events_of(engine, "PriceUpdated", market.market_id)
    assert updated["price_yes"] == format_micro(trade.price_yes)
    assert json.loads(updated["prices"]) == {"YES": format_micro(trade.price_yes), "NO": format_micro(trade.price_no)}
    assert json.loads(updated["shares"]) == {"YES": "3.000000", "NO": "0.000000"}


@pytest.mark.parametrize("labels", [THREE, SIXTEEN], ids=["3", "16"])
async def test_trades_by_label_cost_what_the_n_outcome_lmsr_says(
    engine: MarketEngine, make_user: UserFactory, labels: tuple[str, ...],
) -> None:
    user = (await make_user(10_000)).user_id
    market = await labelled_market(engine, labels)
    b, totals, pool = market.liquidity_b, list(market.totals), market.pool
    steps = [(BUY, 1, 5 * MICRO), (BUY, 2, 40 * MICRO), (SELL, 1, 2 * MICRO), (BUY, 0, 1), (SELL, 2, 40 * MICRO)]
    for side, k, shares in steps:
        label = labels[k]
        if side is BUY:
            cost = pricing_n.buy_cost_n(totals, k, shares, b)
            totals[k] += shares
            pool += cost
        else:
            cost = pricing_n.sell_proceeds_n(totals, k, shares, b)
            totals[k] -= shares
            pool -= cost
        trade = await engine.execute_trade(Order(user, market.market_id, side, label, shares=shares))
        assert (trade.outcome, trade.shares, trade.cost) == (label, shares, cost)
        assert trade.prices == tuple(pricing_n.prices_n(totals, b)) and trade.outcomes == labels
        assert (trade.price_yes, trade.price_no) == (0, 0)
        executed = (await events_of(engine, "TradeExecuted", market.market_id))[-1]
        assert executed["outcome"] == label and "price_yes" not in executed and "yes_shares" not in executed
        assert executed["prices"] == decimal_map(labels, [format_micro(p) for p in trade.prices])
        assert executed["outstanding"] == decimal_map(labels, [format_micro(q) for q in totals])
        updated = (await events_of(engine, "PriceUpdated", market.market_id))[-1]
        assert updated["prices"] == executed["prices"] and updated["shares"] == executed["outstanding"]
        assert "price_yes" not in updated
    after = await assert_totals_match_holdings(engine, market.market_id)
    assert list(after.totals) == totals and after.pool == pool
    account = await engine.accounts.get(user)
    assert {p.outcome: p.shares for p in account.positions if p.market_id == market.market_id} == {
        labels[1]: 3 * MICRO, labels[0]: 1}
    assert account.available == 10_000 * MICRO - (pool - market.pool)


async def test_buy_by_amount_quote_and_sell_all_by_label(engine: MarketEngine, make_user: UserFactory) -> None:
    user = (await make_user(1_000)).user_id
    market = await labelled_market(engine, THREE)
    quote = await engine.markets.quote(market.market_id, BUY, "C", amount=10 * MICRO)
    assert quote.shares == pricing_n.shares_for_amount_n(market.totals, 2, 10 * MICRO, market.liquidity_b,
                                                          limit=1_000_000_000 * MICRO)
    assert quote.outcomes == THREE and quote.prices[2] > quote.prices[0]
    trade = await engine.execute_trade(Order(user, market.market_id, BUY, "C", amount=10 * MICRO))
    assert (trade.shares, trade.cost, trade.prices) == (quote.shares, quote.cost, quote.prices)
    everything = await engine.execute_trade(Order(user, market.market_id, SELL, "C", sell_all=True))
    assert everything.shares == trade.shares
    with pytest.raises(InsufficientShares):
        await engine.execute_trade(Order(user, market.market_id, SELL, "C", sell_all=True))
    await assert_totals_match_holdings(engine, market.market_id)


async def test_a_label_the_market_lacks_is_refused_and_changes_nothing(
    engine: MarketEngine, make_user: UserFactory,
) -> None:
    user = (await make_user(100)).user_id
    market = await labelled_market(engine, THREE)
    before = cast(dict[str, str], await engine.redis.hgetall(engine.keys.market(market.market_id)))
    for label in ("YES", "D", "a"):
        with pytest.raises(ValidationError, match="A, B, C"):
            await engine.execute_trade(Order(user, market.market_id, BUY, label, shares=MICRO))
        with pytest.raises(ValidationError):
            await engine.markets.quote(market.market_id, BUY, label, shares=MICRO)
    for bad in ("", "A:B", "A,B", "A\tB", "x" * 33):
        with pytest.raises(ValidationError, match="label"):
            await engine.execute_trade(Order(user, market.market_id, BUY, bad, shares=MICRO))
    assert await engine.redis.hgetall(engine.keys.market(market.market_id)) == before
    assert (await engine.accounts.get(user)).available == 100 * MICRO


@pytest.mark.parametrize("labels", [["A"], [f"L{i}" for i in range(17)], ["A", "A"], ["A", "CANCEL"],
                                    ["A", "PROB"], ["A", "b c"], ["A", "x" * 33]])
async def test_bad_labels_at_creation_are_refused_before_any_money_moves(
    engine: MarketEngine, labels: list[str],
) -> None:
    await engine.accounts.deposit(HOUSE, 100 * MICRO)
    before = (await engine.accounts.get(HOUSE)).available
    with pytest.raises(ValidationError):
        await engine.markets.create("Bad", 100 * MICRO, outcomes=labels)
    assert (await engine.accounts.get(HOUSE)).available == before


async def test_an_idempotent_retry_replays_every_labels_price(engine: MarketEngine, make_user: UserFactory) -> None:
    user = (await make_user(100)).user_id
    market = await labelled_market(engine, THREE)
    order = Order(user, market.market_id, BUY, "B", shares=2 * MICRO, idempotency_key="k1",
                  fingerprint=f"{market.market_id}|BUY|B|2")
    first = await engine.execute_trade(order)
    again = await engine.execute_trade(order)
    assert again.replayed and again.trade_id == first.trade_id
    assert (again.prices, again.outcomes, again.outcome, again.cost) == (
        first.prices, first.outcomes, "B", first.cost)


async def test_two_engines_trading_one_four_label_market_take_turns_exactly(
    engine: MarketEngine, engines: EngineFactory, make_user: UserFactory,
) -> None:
    """Two processes' books of one market: every conflict is re-priced on the current totals."""
    other = engines()
    labels = ("N", "E", "S", "W")
    market = await labelled_market(engine, labels)
    users = [(await make_user(1_000)).user_id for _ in range(4)]
    trades: list[Trade] = []

    async def trader(eng: MarketEngine, user_id: str, n: int) -> None:
        for i in range(12):
            label = labels[(n + i) % 4]
            side = SELL if i % 3 == 2 else BUY
            while True:
                try:
                    trades.append(await eng.execute_trade(
                        Order(user_id, market.market_id, side, label, shares=MICRO)))
                except InsufficientShares:
                    pass
                except Unavailable:
                    continue  # too contended: a 503 a client retries
                break

    await asyncio.gather(*(trader((engine, other)[n % 2], u, n) for n, u in enumerate(users) for _ in range(2)))
    after = await assert_totals_match_holdings(engine, market.market_id)
    # Replaying the trades in id order through pricing_n gives the same costs and the same pool.
    totals, pool = [0] * 4, market.pool
    for t in sorted(trades, key=lambda t: t.trade_id):
        k = labels.index(t.outcome)
        if t.side is BUY:
            assert t.cost == pricing_n.buy_cost_n(totals, k, t.shares, market.liquidity_b)
            totals[k] += t.shares
            pool += t.cost
        else:
            assert t.cost == pricing_n.sell_proceeds_n(totals, k, t.shares, market.liquidity_b)
            totals[k] -= t.shares
            pool -= t.cost
    assert tuple(totals) == after.totals and pool == after.pool


async def test_a_label_wins_and_settlement_pays_its_holders_only(engine: MarketEngine, make_user: UserFactory) -> None:
    a, c = (await make_user(100)).user_id, (await make_user(100)).user_id
    market = await labelled_market(engine, THREE)
    await engine.execute_trade(Order(a, market.market_id, BUY, "A", shares=5 * MICRO))
    await engine.execute_trade(Order(c, market.market_id, BUY, "C", shares=7 * MICRO))
    before = {u: (await engine.accounts.get(u)).available for u in (a, c)}
    house_before = (await engine.accounts.get(HOUSE)).available
    pool = (await engine.markets.get(market.market_id)).pool
    with pytest.raises(ValidationError):
        await engine.markets.resolve(market.market_id, "YES")
    resolved = await engine.markets.resolve(market.market_id, "C")
    assert resolved.status is MarketStatus.RESOLVED and resolved.outcome == "C"
    settlement = await engine.markets.settle(market.market_id)
    assert (settlement.payouts_total, settlement.holders_paid) == (7 * MICRO, 1)
    assert (await engine.accounts.get(c)).available == before[c] + 7 * MICRO
    assert (await engine.accounts.get(a)).available == before[a]
    assert (await engine.accounts.get(HOUSE)).available == house_before + pool - 7 * MICRO
    settled = await engine.markets.get(market.market_id)
    assert settled.status is MarketStatus.SETTLED and settled.settled == (5 * MICRO, 0, 7 * MICRO)
    assert settled.totals == (5 * MICRO, 0, 7 * MICRO)  # kept as the record
    (payout,) = await events_of(engine, "Payout", market.market_id)
    assert (payout["user_id"], payout["outcome"], payout["amount"]) == (c, "C", "7.000000")


async def test_prob_and_cancel_pay_by_label(engine: MarketEngine, make_user: UserFactory) -> None:
    a, b = (await make_user(100)).user_id, (await make_user(100)).user_id
    prob = await labelled_market(engine, THREE)
    await engine.execute_trade(Order(a, prob.market_id, BUY, "A", shares=4 * MICRO))
    await engine.execute_trade(Order(a, prob.market_id, BUY, "B", shares=2 * MICRO))
    await engine.execute_trade(Order(b, prob.market_id, BUY, "C", shares=10 * MICRO))
    start = {u: (await engine.accounts.get(u)).available for u in (a, b)}
    await engine.markets.resolve(prob.market_id, Resolution.prob([("A", 500_000), ("B", 250_000), ("C", 250_000)]))
    await engine.markets.settle(prob.market_id)
    assert (await engine.accounts.get(a)).available == start[a] + 2 * MICRO + MICRO // 2
    assert (await engine.accounts.get(b)).available == start[b] + 2 * MICRO + MICRO // 2

    cancel = await labelled_market(engine, THREE)
    paid = (await engine.execute_trade(Order(a, cancel.market_id, BUY, "B", shares=3 * MICRO))).cost
    got = (await engine.execute_trade(Order(a, cancel.market_id, SELL, "B", shares=MICRO))).cost
    before = (await engine.accounts.get(a)).available
    await engine.markets.resolve(cancel.market_id, Resolution.cancel())
    await engine.markets.settle(cancel.market_id)
    assert (await engine.accounts.get(a)).available == before + paid - got
    (refund,) = await events_of(engine, "Refund", cancel.market_id)
    assert refund["outcomes"] == "B"


async def test_a_labelled_market_closes_at_its_close_time(engine: MarketEngine, make_user: UserFactory) -> None:
    user = (await make_user(100)).user_id
    market = await labelled_market(engine, THREE)
    await engine.execute_trade(Order(user, market.market_id, BUY, "B", shares=MICRO))
    await engine.markets.close(market.market_id)
    with pytest.raises(MarketNotOpen):
        await engine.execute_trade(Order(user, market.market_id, BUY, "B", shares=MICRO))
    with pytest.raises(MarketNotOpen):
        await engine.markets.quote(market.market_id, BUY, "B", shares=MICRO)
    await assert_totals_match_holdings(engine, market.market_id)
