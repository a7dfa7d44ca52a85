"""The event stream written by the Lua scripts: types, fields, order, number formats and Lua's number edges."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pytest
from predmarket.engine import pricing
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import HOUSE, Account, Market, Order, Outcome, Side, Trade
from predmarket.engine.state import check_invariants, read_redis_state
from predmarket.engine.units import MAX_LIQUIDITY, MAX_QUANTITY, MICRO, format_micro

from tests.support.factories import MarketFactory, UserFactory
from tests.support.orders import OrderFields
from tests.support.redis_data import stream_entries

YES, NO = Outcome.YES, Outcome.NO
BUY, SELL = Side.BUY, Side.SELL
MONEY_RE = re.compile(r"^[0-9]+\.[0-9]{6}$")

#: The contract's fields per event type (beyond ``type`` and ``ts``).
CONTRACT_FIELDS: dict[str, set[str]] = {
    "UserCreated": {"user_id", "username"},
    "Deposit": {"user_id", "amount", "available"},
    "Withdrawal": {"user_id", "amount", "available"},
    "MarketCreated": {"market_id", "name", "liquidity_b", "pool"},
    "MarketOpened": {"market_id"},
    "TradeExecuted": {
        "trade_id", "market_id", "user_id", "side", "outcome", "shares", "cost", "price_yes", "price_no",
        "yes_shares", "no_shares", "pool", "available",
    },
    "PriceUpdated": {"market_id", "price_yes", "price_no", "yes_shares", "no_shares", "prices", "shares"},
    "MarketResolved": {"market_id", "outcome"},
    "Payout": {"market_id", "user_id", "shares", "amount"},
    "MarketSettled": {"market_id", "payouts_total", "house_return"},
}
#: Fields that are JSON text {label: decimal} (the contract's "Event stream", markets of more outcomes).
JSON_FIELDS: dict[str, set[str]] = {"PriceUpdated": {"prices", "shares"}, "TradeExecuted": {"prices", "outstanding"}}
MONEY_FIELDS = {
    "amount", "available", "liquidity_b", "pool", "shares", "cost", "price_yes", "price_no", "yes_shares",
    "no_shares", "payouts_total", "house_return", "position", "avg_price",
}


async def stream(engine: MarketEngine) -> list[dict[str, str]]:
    return [fields for _, fields in await stream_entries(engine.redis, engine.keys.events)]


async def assert_invariants(engine: MarketEngine) -> None:
    assert check_invariants(await read_redis_state(engine.redis, engine.keys)) == []


def assert_well_formed(events: list[dict[str, str]]) -> None:
    """Every event carries its contract fields; every money field is a 6-decimal string."""
    for event in events:
        assert event["type"] in CONTRACT_FIELDS, event
        assert {"type", "ts"} | CONTRACT_FIELDS[event["type"]] <= set(event), event
        assert event["ts"].isdigit(), event
        json_fields = JSON_FIELDS.get(event["type"], set())
        for name in MONEY_FIELDS & set(event) - json_fields:
            assert MONEY_RE.match(event[name]), (name, event)
        for name in json_fields & set(event):  # {label: 6-decimal string}
            values = json.loads(event[name])
            assert values and all(MONEY_RE.match(v) for v in values.values()), (name, event)


def trade_event(trade: Trade, market: Market, user: Account, available: int) -> dict[str, str]:
    """The TradeExecuted fields the contract fixes, as the trade and the market after it say."""
    return {
        "type": "TradeExecuted", "trade_id": str(trade.trade_id), "market_id": market.market_id,
        "user_id": user.user_id, "side": trade.side.value, "outcome": trade.outcome,
        "shares": format_micro(trade.shares), "cost": format_micro(trade.cost),
        "price_yes": format_micro(trade.price_yes), "price_no": format_micro(trade.price_no),
        "yes_shares": format_micro(market.yes_shares), "no_shares": format_micro(market.no_shares),
        "pool": format_micro(market.pool), "available": format_micro(available),
    }


def contract_part(event: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in event.items() if k == "type" or k in CONTRACT_FIELDS[event["type"]]}


@pytest.mark.parametrize(
    ("side", "outcome", "fields"),
    [
        (BUY, YES, {"shares": 10 * MICRO}),
        (BUY, NO, {"amount": 12_345_678}),
        (SELL, YES, {"shares": 4_500_001}),
        (SELL, NO, {"shares": 20 * MICRO}),  # the whole holding
    ],
)
async def test_trade_emits_trade_executed_then_price_updated(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory,
    side: Side, outcome: Outcome, fields: OrderFields,
) -> None:
    market = await make_market(100)
    user = await make_user(1_000)
    await engine.execute_trade(Order(user.user_id, market.market_id, BUY, YES, shares=10 * MICRO))
    await engine.execute_trade(Order(user.user_id, market.market_id, BUY, NO, shares=20 * MICRO))
    count = len(await stream(engine))

    trade = await engine.execute_trade(Order(user.user_id, market.market_id, side, outcome, **fields))

    new = (await stream(engine))[count:]
    assert [e["type"] for e in new] == ["TradeExecuted", "PriceUpdated"]
    executed, updated = new
    after = await engine.markets.get(market.market_id)
    account = await engine.accounts.get(user.user_id)
    assert trade.available == account.available
    assert contract_part(executed) == trade_event(trade, after, user, account.available)
    assert contract_part(updated) == {
        "type": "PriceUpdated", "market_id": market.market_id,
        "price_yes": executed["price_yes"], "price_no": executed["price_no"],
        "yes_shares": executed["yes_shares"], "no_shares": executed["no_shares"],
        "prices": f'{{"YES":"{executed["price_yes"]}","NO":"{executed["price_no"]}"}}',
        "shares": f'{{"YES":"{executed["yes_shares"]}","NO":"{executed["no_shares"]}"}}',
    }
    assert executed["ts"] == updated["ts"]
    assert Decimal(updated["price_yes"]) + Decimal(updated["price_no"]) == 1
    assert (after.price_yes, after.price_no) == (trade.price_yes, trade.price_no)
    held = {p.outcome: p.shares for p in account.positions if p.market_id == market.market_id}
    if "position" in executed:
        assert executed["position"] == format_micro(held.get(outcome, 0))
    if side is SELL and outcome is NO:
        assert NO not in held  # a position sold out is dropped, not kept at zero
        assert await engine.redis.hget(engine.keys.market_positions(market.market_id), f"{user.user_id}:NO") is None
    assert_well_formed(new)
    await assert_invariants(engine)


async def test_trade_ids_strictly_increase_in_execution_order(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory
) -> None:
    markets = [await make_market(100), await make_market(50)]
    users = [await make_user(1_000), await make_user(1_000)]
    trades: list[Trade] = []
    for i in range(12):
        market, user = markets[i % 2], users[i // 2 % 2]
        side = BUY if i % 3 else SELL
        shares = MICRO if side is SELL else 3 * MICRO
        positions = (await engine.accounts.get(user.user_id)).positions
        if side is SELL and not any(p.market_id == market.market_id and p.outcome is YES for p in positions):
            side, shares = BUY, 2 * MICRO
        trades.append(await engine.execute_trade(Order(user.user_id, market.market_id, side, YES, shares=shares)))
    ids = [t.trade_id for t in trades]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    executed = [e for e in await stream(engine) if e["type"] == "TradeExecuted"]
    assert [int(e["trade_id"]) for e in executed] == ids
    assert await engine.redis.get(engine.keys.trade_seq) == str(ids[-1])
    await assert_invariants(engine)


async def test_every_event_of_a_full_scenario_is_well_formed(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory
) -> None:
    alice, bob = await make_user(500), await make_user(500)
    await engine.accounts.withdraw(bob.user_id, 100 * MICRO)
    market = await make_market(100)
    mid = market.market_id
    await engine.execute_trade(Order(alice.user_id, mid, BUY, YES, shares=25 * MICRO))
    await engine.execute_trade(Order(bob.user_id, mid, BUY, NO, amount=40 * MICRO))
    await engine.execute_trade(Order(alice.user_id, mid, SELL, YES, shares=5 * MICRO))
    await engine.markets.resolve(mid, YES)
    await engine.markets.settle(mid)

    events = await stream(engine)
    assert_well_formed(events)
    assert {e["type"] for e in events} == set(CONTRACT_FIELDS)
    # Within a trade the order is fixed: each TradeExecuted is followed directly by its PriceUpdated.
    kinds = [e["type"] for e in events]
    for i, kind in enumerate(kinds):
        if kind == "TradeExecuted":
            assert kinds[i + 1] == "PriceUpdated"
    assert kinds.count("TradeExecuted") == kinds.count("PriceUpdated") == 3
    await assert_invariants(engine)


async def test_amounts_of_1e14_micro_and_more_keep_their_digits(
    engine: MarketEngine, make_user: UserFactory
) -> None:
    """Lua prints integers >= 1e14 in exponent form unless formatted explicitly; HINCRBY refuses those."""
    whale = await make_user(0)
    for _ in range(3):
        await engine.accounts.deposit(whale.user_id, MAX_QUANTITY)
    await engine.accounts.deposit(HOUSE, MAX_QUANTITY)
    market = await engine.markets.create("big", MAX_LIQUIDITY)
    await engine.markets.open(market.market_id)
    mid = market.market_id

    bought = await engine.execute_trade(Order(whale.user_id, mid, BUY, YES, shares=MAX_QUANTITY))
    assert bought.cost >= 100_000_000 * MICRO
    sold = await engine.execute_trade(Order(whale.user_id, mid, SELL, YES, shares=123_456_789_123_456))
    await engine.execute_trade(Order(whale.user_id, mid, BUY, NO, amount=300_000_000 * MICRO))
    await engine.markets.resolve(mid, YES)
    resolved = await engine.markets.get(mid)
    settlement = await engine.markets.settle(mid)

    events = await stream(engine)
    assert_well_formed(events)
    text = " ".join(v for e in events for v in e.values())
    assert "e+" not in text and "E+" not in text
    trades = [e for e in events if e["type"] == "TradeExecuted"]
    assert trades[0]["shares"] == "1000000000.000000"
    assert trades[0]["cost"] == format_micro(bought.cost)
    assert trades[0]["yes_shares"] == "1000000000.000000"
    assert trades[1]["cost"] == format_micro(sold.cost)
    assert trades[1]["yes_shares"] == format_micro(MAX_QUANTITY - 123_456_789_123_456)
    [payout] = [e for e in events if e["type"] == "Payout"]
    assert payout["amount"] == format_micro(MAX_QUANTITY - 123_456_789_123_456)
    [settled] = [e for e in events if e["type"] == "MarketSettled"]
    assert settled["house_return"] == format_micro(resolved.pool - resolved.yes_shares)
    assert settlement.house_return == resolved.pool - resolved.yes_shares
    await assert_invariants(engine)


@pytest.mark.parametrize("b_units", [100, 1_000_000, 1_000_000_000])
@pytest.mark.parametrize("outcome", [YES, NO])
async def test_sell_with_zero_proceeds(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory, b_units: int, outcome: Outcome
) -> None:
    """Selling one micro-share at a price below 1 pays floor(< 1) = 0: allowed, and no "-0" reaches HINCRBY."""
    market = await make_market(b_units)
    user = await make_user(10)
    mid = market.market_id
    bought = await engine.execute_trade(Order(user.user_id, mid, BUY, outcome, shares=1))
    assert bought.cost == pricing.buy_cost(0, 0, 1, b_units * MICRO) == 1
    before = await engine.markets.get(mid)
    available = (await engine.accounts.get(user.user_id)).available

    sold = await engine.execute_trade(Order(user.user_id, mid, SELL, outcome, shares=1, min_proceeds=0))

    assert (sold.cost, sold.avg_price, sold.position) == (0, 0, 0)
    after = await engine.markets.get(mid)
    assert after.pool == before.pool
    assert (after.yes_shares, after.no_shares) == (0, 0)
    account = await engine.accounts.get(user.user_id)
    assert account.available == available == sold.available
    assert account.positions == []
    executed = [e for e in await stream(engine) if e["type"] == "TradeExecuted"][-1]
    assert executed["cost"] == "0.000000"
    assert executed[f"{outcome.value.lower()}_shares"] == "0.000000"
    assert all(not v.startswith("-") for v in executed.values())
    await assert_invariants(engine)


async def test_lifecycle_events_carry_their_fields(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory
) -> None:
    market = await make_market(64, open=False, name="Élection: «oui» | non?")
    mid = market.market_id
    await engine.markets.open(mid)
    user = await make_user(100)
    trade = await engine.execute_trade(Order(user.user_id, mid, BUY, NO, shares=8 * MICRO))
    await engine.markets.resolve(mid, NO)
    settlement = await engine.markets.settle(mid)

    events = [contract_part(e) for e in await stream(engine) if e.get("market_id") == mid]
    assert events == [
        {"type": "MarketCreated", "market_id": mid, "name": "Élection: «oui» | non?",
         "liquidity_b": "64.000000", "pool": format_micro(pricing.subsidy(64 * MICRO))},
        {"type": "MarketOpened", "market_id": mid},
        events[2],  # TradeExecuted: see test_trade_emits_trade_executed_then_price_updated
        events[3],
        {"type": "MarketResolved", "market_id": mid, "outcome": "NO"},
        {"type": "Payout", "market_id": mid, "user_id": user.user_id, "shares": "8.000000", "amount": "8.000000"},
        {"type": "MarketSettled", "market_id": mid, "payouts_total": "8.000000",
         "house_return": format_micro(settlement.house_return)},
    ]
    assert (events[2]["type"], events[2]["trade_id"], events[3]["type"]) == (
        "TradeExecuted", str(trade.trade_id), "PriceUpdated",
    )
    assert settlement.house_return == pricing.subsidy(64 * MICRO) + trade.cost - 8 * MICRO
    await assert_invariants(engine)
