"""Markets: creation and subsidy, the CREATED→OPEN→RESOLVED→SETTLED lifecycle, and every trade rejection.

Each rejection is checked to leave every key of the deployment exactly as it
was (``snapshot``), and each scenario ends with the invariants holding.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Unpack, cast

import pytest
from predmarket.engine import pricing
from predmarket.engine.errors import (
    AlreadyExists,
    EngineError,
    IdempotencyKeyReused,
    InsufficientFunds,
    InsufficientShares,
    InvalidState,
    MarketNotOpen,
    NotFound,
    SlippageExceeded,
    ValidationError,
)
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import HOUSE, Account, Market, MarketStatus, Order, Outcome, Side, Trade
from predmarket.engine.state import check_invariants, read_redis_state
from predmarket.engine.units import MAX_LIQUIDITY, MAX_QUANTITY, MICRO, MIN_LIQUIDITY

from tests.support.factories import MarketFactory, UserFactory
from tests.support.orders import OrderFields
from tests.support.redis_data import snapshot, stream_entries

ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
YES, NO = Outcome.YES, Outcome.NO
BUY, SELL = Side.BUY, Side.SELL


def order(user: Account, market: Market, side: Side, outcome: Outcome = YES, **fields: Unpack[OrderFields]) -> Order:
    return Order(user.user_id, market.market_id, side, outcome, **fields)


async def events(engine: MarketEngine, kind: str | None = None) -> list[dict[str, str]]:
    entries = await stream_entries(engine.redis, engine.keys.events)
    return [fields for _, fields in entries if kind is None or fields["type"] == kind]


async def assert_invariants(engine: MarketEngine) -> None:
    assert check_invariants(await read_redis_state(engine.redis, engine.keys)) == []


async def assert_rejected(engine: MarketEngine, error: type[EngineError], action: Awaitable[object]) -> None:
    """``action`` fails with ``error`` and changes no key of the deployment."""
    before = await snapshot(engine.redis, engine.keys.prefix)
    with pytest.raises(error):
        await action
    assert await snapshot(engine.redis, engine.keys.prefix) == before
    await assert_invariants(engine)


@pytest.fixture
def market_in(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory
) -> Callable[..., Awaitable[Market]]:
    """``await market_in(status, traded=True)``: a market driven to ``status``; traded ones have holders."""

    async def make(status: MarketStatus, traded: bool = True) -> Market:
        market = await make_market(100, open=status is not MarketStatus.CREATED)
        if status is MarketStatus.CREATED:
            return market
        if traded:
            holder = await make_user(100)
            await engine.execute_trade(order(holder, market, BUY, YES, shares=10 * MICRO))
            await engine.execute_trade(order(holder, market, BUY, NO, shares=4 * MICRO))
        if status is not MarketStatus.OPEN:
            await engine.markets.resolve(market.market_id, YES)
        if status is MarketStatus.SETTLED:
            await engine.markets.settle(market.market_id)
        return await engine.markets.get(market.market_id)

    return make


MarketIn = Callable[..., Awaitable[Market]]


# --------------------------------------------------------------------------- create_market


@pytest.mark.parametrize("b", [MIN_LIQUIDITY, 100 * MICRO, 123_456_789, MAX_LIQUIDITY])
async def test_create_market_takes_the_subsidy_from_house(engine: MarketEngine, b: int) -> None:
    subsidy = pricing.subsidy(b)
    await engine.accounts.deposit(HOUSE, subsidy + 7)
    market = await engine.markets.create("Will it rain?", b, "rain-1")
    assert (market.market_id, market.name, market.status, market.outcome) == (
        "rain-1", "Will it rain?", MarketStatus.CREATED, None,
    )
    assert (market.liquidity_b, market.yes_shares, market.no_shares, market.pool) == (b, 0, 0, subsidy)
    assert (market.price_yes, market.price_no) == (500_000, 500_000)
    assert (await engine.accounts.get(HOUSE)).available == 7
    assert await engine.redis.zrange(engine.keys.markets, 0, -1) == ["rain-1"]

    [event] = await events(engine, "MarketCreated")
    assert event["market_id"] == "rain-1" and event["name"] == "Will it rain?"
    assert event["liquidity_b"] == f"{b // MICRO}.{b % MICRO:06d}"
    assert event["pool"] == f"{subsidy // MICRO}.{subsidy % MICRO:06d}"
    assert event["ts"].isdigit()
    await assert_invariants(engine)


def test_subsidy_is_b_ln2_rounded_up() -> None:
    assert pricing.subsidy(MICRO) == 693_148  # 0.693147180... units
    assert pricing.subsidy(100 * MICRO) == 69_314_719  # 69.314718056
    assert pricing.subsidy(MAX_LIQUIDITY) == 693_147_180_559_946  # 693147180.5599453...


async def test_house_paying_its_whole_balance(engine: MarketEngine) -> None:
    b = 50 * MICRO
    await engine.accounts.deposit(HOUSE, pricing.subsidy(b))
    market = await engine.markets.create("exact", b)
    assert market.pool == pricing.subsidy(b)
    assert (await engine.accounts.get(HOUSE)).available == 0
    await assert_invariants(engine)


async def test_generated_market_ids_match_the_contract(engine: MarketEngine) -> None:
    await engine.accounts.deposit(HOUSE, 10 * pricing.subsidy(MICRO))
    ids = [(await engine.markets.create(f"m{i}", MICRO)).market_id for i in range(10)]
    assert all(ID_RE.match(market_id) for market_id in ids)
    assert len(set(ids)) == 10
    assert sorted(await engine.redis.zrange(engine.keys.markets, 0, -1)) == sorted(ids)


@pytest.mark.parametrize("house_funds", [0, 1, "subsidy-1"])
async def test_house_that_cannot_pay_the_subsidy(engine: MarketEngine, house_funds: int | str) -> None:
    b = 100 * MICRO
    funds = pricing.subsidy(b) - 1 if house_funds == "subsidy-1" else int(house_funds)
    if funds:
        await engine.accounts.deposit(HOUSE, funds)
    await assert_rejected(engine, InsufficientFunds, engine.markets.create("poor", b, "poor"))
    with pytest.raises(NotFound):
        await engine.markets.get("poor")


async def test_taken_market_id(engine: MarketEngine, make_market: MarketFactory) -> None:
    market = await make_market(10, open=False)
    await engine.accounts.deposit(HOUSE, 100 * MICRO)
    await assert_rejected(engine, AlreadyExists, engine.markets.create("again", 10 * MICRO, market.market_id))


@pytest.mark.parametrize("b", [0, -MICRO, 1, MIN_LIQUIDITY - 1, MAX_LIQUIDITY + 1, 10 * MAX_LIQUIDITY])
async def test_liquidity_out_of_bounds(engine: MarketEngine, b: int) -> None:
    await engine.accounts.deposit(HOUSE, MAX_QUANTITY)
    await assert_rejected(engine, ValidationError, engine.markets.create("bad b", b))


@pytest.mark.parametrize("market_id", ["", "m" * 65, "with space", "a:b", "{m:x}", "m\n"])
async def test_invalid_market_id(engine: MarketEngine, market_id: str) -> None:
    await engine.accounts.deposit(HOUSE, 100 * MICRO)
    await assert_rejected(engine, ValidationError, engine.markets.create("bad id", 10 * MICRO, market_id))


# --------------------------------------------------------------------------- lifecycle


async def test_lifecycle_created_open_resolved_settled(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory
) -> None:
    market = await make_market(100, open=False)
    assert market.status is MarketStatus.CREATED
    mid = market.market_id

    opened = await engine.markets.open(mid)
    assert opened.status is MarketStatus.OPEN and opened.outcome is None

    user = await make_user(100)
    trade = await engine.execute_trade(order(user, opened, BUY, YES, shares=10 * MICRO))

    resolved = await engine.markets.resolve(mid, NO)
    assert resolved.status is MarketStatus.RESOLVED and resolved.outcome is NO
    assert resolved.pool == market.pool + trade.cost

    settlement = await engine.markets.settle(mid)
    assert settlement.market.status is MarketStatus.SETTLED and settlement.market.outcome is NO
    assert (settlement.payouts_total, settlement.holders_paid) == (0, 0)
    assert settlement.house_return == resolved.pool
    assert settlement.market.pool == 0
    # The settled market keeps its final shares and prices as a record.
    assert (settlement.market.yes_shares, settlement.market.no_shares) == (10 * MICRO, 0)
    assert settlement.market.price_yes == resolved.price_yes
    assert [m.status for m in await engine.markets.list_all()] == [MarketStatus.SETTLED]

    [opened_event] = await events(engine, "MarketOpened")
    assert opened_event["market_id"] == mid and opened_event["ts"].isdigit()
    [resolved_event] = await events(engine, "MarketResolved")
    assert (resolved_event["market_id"], resolved_event["outcome"]) == (mid, "NO")
    [settled_event] = await events(engine, "MarketSettled")
    assert settled_event["market_id"] == mid
    assert settled_event["payouts_total"] == "0.000000"
    house_return = resolved.pool
    assert settled_event["house_return"] == f"{house_return // MICRO}.{house_return % MICRO:06d}"
    lifecycle = [e["type"] for e in await events(engine) if e.get("market_id") == mid]
    assert lifecycle == [
        "MarketCreated", "MarketOpened", "TradeExecuted", "PriceUpdated", "MarketResolved", "MarketSettled",
    ]
    await assert_invariants(engine)


async def test_list_by_status(engine: MarketEngine, market_in: MarketIn) -> None:
    created = await market_in(MarketStatus.CREATED)
    opened = await market_in(MarketStatus.OPEN)
    assert [m.market_id for m in await engine.markets.list_all(MarketStatus.OPEN)] == [opened.market_id]
    assert [m.market_id for m in await engine.markets.list_all(MarketStatus.CREATED)] == [created.market_id]
    assert len(await engine.markets.list_all()) == 2


WRONG_TRANSITIONS = [
    ("open", MarketStatus.OPEN, False),
    ("open", MarketStatus.RESOLVED, True),
    ("open", MarketStatus.SETTLED, True),
    ("resolve", MarketStatus.CREATED, False),
    ("resolve", MarketStatus.RESOLVED, True),
    ("resolve", MarketStatus.SETTLED, True),
    ("resolve", MarketStatus.SETTLED, False),
    ("settle", MarketStatus.CREATED, False),
    ("settle", MarketStatus.OPEN, False),
    ("settle", MarketStatus.OPEN, True),  # holders present: the batch script refuses
    ("settle", MarketStatus.SETTLED, True),
    ("settle", MarketStatus.SETTLED, False),
]


@pytest.mark.parametrize(("action", "status", "traded"), WRONG_TRANSITIONS)
async def test_wrong_transition_is_invalid_state(
    engine: MarketEngine, market_in: MarketIn, action: str, status: MarketStatus, traded: bool
) -> None:
    market = await market_in(status, traded=traded)
    mid = market.market_id
    steps: dict[str, Callable[[], Awaitable[object]]] = {
        "open": lambda: engine.markets.open(mid),
        "resolve": lambda: engine.markets.resolve(mid, NO),
        "settle": lambda: engine.markets.settle(mid),
    }
    step = steps[action]()
    await assert_rejected(engine, InvalidState, step)
    assert (await engine.markets.get(mid)).status is status


async def test_unknown_market_is_not_found(engine: MarketEngine, make_user: UserFactory) -> None:
    user = await make_user(10)
    ghost = "no-such-market"
    actions: list[Callable[[], Awaitable[object]]] = [
        lambda: engine.markets.get(ghost),
        lambda: engine.markets.open(ghost),
        lambda: engine.markets.resolve(ghost, YES),
        lambda: engine.markets.settle(ghost),
        lambda: engine.markets.quote(ghost, BUY, YES, shares=MICRO),
        lambda: engine.execute_trade(Order(user.user_id, ghost, BUY, YES, shares=MICRO)),
        lambda: engine.execute_trade(
            Order(user.user_id, ghost, SELL, NO, shares=MICRO, idempotency_key="k", fingerprint="f")
        ),
    ]
    for action in actions:
        await assert_rejected(engine, NotFound, action())


@pytest.mark.parametrize("status", [MarketStatus.CREATED, MarketStatus.RESOLVED, MarketStatus.SETTLED])
async def test_trading_a_market_that_is_not_open(
    engine: MarketEngine, market_in: MarketIn, make_user: UserFactory, status: MarketStatus
) -> None:
    market = await market_in(status)
    user = await make_user(100)
    orders = [
        order(user, market, BUY, YES, shares=MICRO),
        order(user, market, BUY, NO, amount=MICRO),
        order(user, market, SELL, YES, shares=MICRO),
        order(user, market, BUY, YES, shares=MICRO, idempotency_key="k1", fingerprint="buy-1"),
        order(user, market, SELL, NO, shares=MICRO, min_proceeds=0, idempotency_key="k2", fingerprint="sell-1"),
    ]
    for o in orders:
        await assert_rejected(engine, MarketNotOpen, engine.execute_trade(o))
    for side in (BUY, SELL):
        await assert_rejected(engine, MarketNotOpen, engine.markets.quote(market.market_id, side, YES, shares=MICRO))


async def test_trading_stops_when_a_traded_market_resolves(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory
) -> None:
    """The sequencer's cached state goes stale on resolve; the version check catches it."""
    market = await make_market(100)
    user = await make_user(100)
    await engine.execute_trade(order(user, market, BUY, YES, shares=MICRO))
    await engine.markets.resolve(market.market_id, YES)
    await assert_rejected(engine, MarketNotOpen, engine.execute_trade(order(user, market, BUY, YES, shares=MICRO)))


async def test_trading_starts_when_a_market_opens(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory
) -> None:
    market = await make_market(100, open=False)
    user = await make_user(100)
    await assert_rejected(engine, MarketNotOpen, engine.execute_trade(order(user, market, BUY, YES, shares=MICRO)))
    await engine.markets.open(market.market_id)
    trade = await engine.execute_trade(order(user, market, BUY, YES, shares=MICRO))
    assert trade.shares == MICRO
    await assert_invariants(engine)


# --------------------------------------------------------------------------- quotes


async def test_quote_changes_nothing_and_matches_the_trade(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory
) -> None:
    market = await make_market(100)
    user = await make_user(1_000)
    before = await snapshot(engine.redis, engine.keys.prefix)
    quote = await engine.markets.quote(market.market_id, BUY, NO, amount=250 * MICRO)
    assert await snapshot(engine.redis, engine.keys.prefix) == before
    trade = await engine.execute_trade(order(user, market, BUY, NO, amount=250 * MICRO))
    assert (trade.shares, trade.cost, trade.avg_price, trade.price_yes, trade.price_no) == (
        quote.shares, quote.cost, quote.avg_price, quote.price_yes, quote.price_no,
    )
    sell_quote = await engine.markets.quote(market.market_id, SELL, NO, shares=trade.shares)
    sold = await engine.execute_trade(order(user, market, SELL, NO, shares=trade.shares))
    assert sold.cost == sell_quote.cost <= trade.cost


@pytest.mark.parametrize(
    ("side", "fields"),
    [
        (BUY, {}),
        (SELL, {}),
        (BUY, {"shares": MICRO, "amount": MICRO}),
        (SELL, {"amount": MICRO}),
        (BUY, {"shares": 0}),
        (BUY, {"amount": MAX_QUANTITY + 1}),
    ],
)
async def test_malformed_quote(
    engine: MarketEngine, make_market: MarketFactory, side: Side, fields: dict[str, int]
) -> None:
    market = await make_market(100)
    await assert_rejected(engine, ValidationError, engine.markets.quote(market.market_id, side, YES, **fields))
    # The request's shape is checked before the market's existence.
    await assert_rejected(engine, ValidationError, engine.markets.quote("no-such-market", side, YES, **fields))


async def test_quote_to_sell_more_than_outstanding(engine: MarketEngine, make_market: MarketFactory) -> None:
    market = await make_market(100)
    await assert_rejected(engine, InsufficientShares, engine.markets.quote(market.market_id, SELL, YES, shares=1))


# --------------------------------------------------------------------------- trade rejections


async def test_insufficient_funds(engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory) -> None:
    market = await make_market(100)
    user = await make_user(1)
    for o in (
        order(user, market, BUY, YES, shares=10 * MICRO),
        order(user, market, BUY, NO, amount=2 * MICRO),
        order(user, market, BUY, YES, shares=10 * MICRO, idempotency_key="k", fingerprint="f"),
    ):
        await assert_rejected(engine, InsufficientFunds, engine.execute_trade(o))


async def test_spending_the_whole_balance(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory
) -> None:
    market = await make_market(100)
    quote = await engine.markets.quote(market.market_id, BUY, YES, shares=10 * MICRO)
    user = await make_user(0)
    await engine.accounts.deposit(user.user_id, quote.cost - 1)
    await assert_rejected(
        engine, InsufficientFunds, engine.execute_trade(order(user, market, BUY, YES, shares=10 * MICRO))
    )
    await engine.accounts.deposit(user.user_id, 1)
    trade = await engine.execute_trade(order(user, market, BUY, YES, shares=10 * MICRO))
    assert trade.cost == quote.cost and trade.available == 0
    await assert_invariants(engine)


async def test_selling_more_than_outstanding_is_rejected_before_the_script(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory
) -> None:
    market = await make_market(100)
    holder = await make_user(100)
    await engine.execute_trade(order(holder, market, BUY, YES, shares=5 * MICRO))
    for o in (
        order(holder, market, SELL, YES, shares=5 * MICRO + 1),
        order(holder, market, SELL, NO, shares=1),
        order(holder, market, SELL, YES, shares=6 * MICRO, idempotency_key="k", fingerprint="f"),
    ):
        await assert_rejected(engine, InsufficientShares, engine.execute_trade(o))


async def test_selling_more_than_held_while_others_hold_enough(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory
) -> None:
    """The market has enough outstanding shares, so only the script's per-user check can refuse."""
    market = await make_market(100)
    whale, small, empty, no_holder = [await make_user(1_000) for _ in range(4)]
    await engine.execute_trade(order(whale, market, BUY, YES, shares=50 * MICRO))
    await engine.execute_trade(order(small, market, BUY, YES, shares=2 * MICRO))
    await engine.execute_trade(order(no_holder, market, BUY, NO, shares=20 * MICRO))
    for o in (
        order(small, market, SELL, YES, shares=2 * MICRO + 1),
        order(small, market, SELL, YES, shares=5 * MICRO),
        order(empty, market, SELL, YES, shares=1),
        order(no_holder, market, SELL, YES, shares=MICRO),  # holds NO, sells YES
        order(small, market, SELL, YES, shares=3 * MICRO, idempotency_key="k", fingerprint="f"),
    ):
        await assert_rejected(engine, InsufficientShares, engine.execute_trade(o))
    # Exactly the holding can be sold.
    trade = await engine.execute_trade(order(small, market, SELL, YES, shares=2 * MICRO))
    assert trade.position == 0
    assert all(p.market_id != market.market_id for p in (await engine.accounts.get(small.user_id)).positions)
    await assert_invariants(engine)


async def test_unknown_user_cannot_trade(engine: MarketEngine, make_market: MarketFactory) -> None:
    market = await make_market(100)
    ghost = Order("ghost", market.market_id, BUY, YES, shares=MICRO)
    await assert_rejected(engine, NotFound, engine.execute_trade(ghost))


async def test_max_cost(engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory) -> None:
    market = await make_market(100)
    user = await make_user(100)
    cost = (await engine.markets.quote(market.market_id, BUY, YES, shares=10 * MICRO)).cost
    for max_cost in (0, 1, cost - 1):
        for key, fingerprint in (("", ""), (f"k{max_cost}", f"f{max_cost}")):  # no Idempotency-Key (""), then one
            o = order(user, market, BUY, YES, shares=10 * MICRO, max_cost=max_cost,
                      idempotency_key=key, fingerprint=fingerprint)
            await assert_rejected(engine, SlippageExceeded, engine.execute_trade(o))
    amount_order = order(user, market, BUY, YES, amount=10 * MICRO, max_cost=0)
    await assert_rejected(engine, SlippageExceeded, engine.execute_trade(amount_order))
    trade = await engine.execute_trade(order(user, market, BUY, YES, shares=10 * MICRO, max_cost=cost))
    assert trade.cost == cost
    await assert_invariants(engine)


async def test_min_proceeds(engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory) -> None:
    market = await make_market(100)
    user = await make_user(100)
    await engine.execute_trade(order(user, market, BUY, NO, shares=30 * MICRO))
    proceeds = (await engine.markets.quote(market.market_id, SELL, NO, shares=10 * MICRO)).cost
    for min_proceeds in (proceeds + 1, MAX_QUANTITY):
        for key, fingerprint in (("", ""), (f"k{min_proceeds}", "f")):  # no Idempotency-Key (""), then one
            o = order(user, market, SELL, NO, shares=10 * MICRO, min_proceeds=min_proceeds,
                      idempotency_key=key, fingerprint=fingerprint)
            await assert_rejected(engine, SlippageExceeded, engine.execute_trade(o))
    exact = await engine.execute_trade(order(user, market, SELL, NO, shares=10 * MICRO, min_proceeds=proceeds))
    assert exact.cost == proceeds
    anything = await engine.execute_trade(order(user, market, SELL, NO, shares=10 * MICRO, min_proceeds=0))
    assert 0 < anything.cost < proceeds
    await assert_invariants(engine)


@pytest.mark.parametrize(
    "fields",
    [
        {"side": BUY},  # neither shares nor amount
        {"side": BUY, "shares": MICRO, "amount": MICRO},
        {"side": SELL, "amount": MICRO},
        {"side": BUY, "shares": 0},
        {"side": BUY, "shares": -MICRO},
        {"side": BUY, "shares": MAX_QUANTITY + 1},
        {"side": BUY, "amount": 0},
        {"side": BUY, "amount": MAX_QUANTITY + 1},
        {"side": BUY, "shares": MICRO, "max_cost": -1},
        {"side": BUY, "shares": MICRO, "min_proceeds": 0},
        {"side": SELL, "shares": MICRO, "max_cost": 0},
        {"side": SELL, "shares": MICRO, "min_proceeds": -1},
        {"side": SELL, "shares": MICRO, "min_proceeds": MAX_QUANTITY + 1},
    ],
)
async def test_malformed_orders(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory, fields: dict[str, object]
) -> None:
    market = await make_market(100)
    user = await make_user(100)
    await engine.execute_trade(order(user, market, BUY, YES, shares=MICRO))
    side = fields.pop("side")
    assert isinstance(side, Side)
    # The cases above hold nothing but Order's fields once the side is out.
    o = Order(user.user_id, market.market_id, side, YES, **cast(OrderFields, fields))
    await assert_rejected(engine, ValidationError, engine.execute_trade(o))


# --------------------------------------------------------------------------- idempotency


def keyed(user: Account, market: Market, key: str, fingerprint: str, shares: int = 10 * MICRO) -> Order:
    return order(user, market, BUY, YES, shares=shares, idempotency_key=key, fingerprint=fingerprint)


def same_trade(a: Trade, b: Trade) -> bool:
    fields = ("trade_id", "market_id", "user_id", "side", "outcome", "shares", "cost", "avg_price",
              "price_yes", "price_no", "created_ms")
    return all(getattr(a, f) == getattr(b, f) for f in fields)


async def test_idempotent_replay(engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory) -> None:
    market = await make_market(100)
    user = await make_user(100)
    first = await engine.execute_trade(keyed(user, market, "key-1", "body-1"))
    assert not first.replayed
    before = await snapshot(engine.redis, engine.keys.prefix)
    for _ in range(3):
        again = await engine.execute_trade(keyed(user, market, "key-1", "body-1"))
        assert again.replayed and same_trade(first, again)
    assert await snapshot(engine.redis, engine.keys.prefix) == before  # no event, no money moved
    assert await engine.redis.ttl(engine.keys.idempotency(user.user_id, "key-1")) > 86_000
    await assert_invariants(engine)


async def test_idempotency_key_reused_with_another_body(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory
) -> None:
    market = await make_market(100)
    user = await make_user(100)
    await engine.execute_trade(keyed(user, market, "key-1", "body-1"))
    for o in (
        keyed(user, market, "key-1", "body-2"),
        keyed(user, market, "key-1", "body-"),  # a prefix of the first fingerprint
        keyed(user, market, "key-1", "body-1 "),
        order(user, market, SELL, YES, shares=MICRO, idempotency_key="key-1", fingerprint="sell"),
    ):
        await assert_rejected(engine, IdempotencyKeyReused, engine.execute_trade(o))


async def test_fingerprints_containing_the_separator(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory
) -> None:
    """A fingerprint is any string; ``|`` separates the fields of the stored response."""
    market = await make_market(100)
    user = await make_user(100)
    first = await engine.execute_trade(keyed(user, market, "k", "BUY|YES|10"))
    replay = await asyncio.wait_for(engine.execute_trade(keyed(user, market, "k", "BUY|YES|10")), 5)
    assert replay.replayed and same_trade(first, replay)
    for other in ("BUY", "BUY|YES", "BUY|YES|1"):
        o = keyed(user, market, "k", other)
        await assert_rejected(engine, IdempotencyKeyReused, asyncio.wait_for(engine.execute_trade(o), 5))


async def test_idempotency_keys_are_per_user(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory
) -> None:
    market = await make_market(100)
    alice, bob = await make_user(100), await make_user(100)
    a = await engine.execute_trade(keyed(alice, market, "same-key", "body"))
    b = await engine.execute_trade(keyed(bob, market, "same-key", "other body"))
    assert not a.replayed and not b.replayed and b.trade_id > a.trade_id


async def test_replay_wins_over_a_closed_market_and_a_moved_price(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory
) -> None:
    market = await make_market(100)
    user, other = await make_user(100), await make_user(1_000)
    cost = (await engine.markets.quote(market.market_id, BUY, YES, shares=10 * MICRO)).cost
    capped = order(user, market, BUY, YES, shares=10 * MICRO, max_cost=cost, idempotency_key="k", fingerprint="f")
    first = await engine.execute_trade(capped)
    await engine.execute_trade(order(other, market, BUY, YES, shares=100 * MICRO))  # the price moves up
    before = await snapshot(engine.redis, engine.keys.prefix)
    assert same_trade(first, await engine.execute_trade(capped))  # priced now it would exceed max_cost
    await engine.markets.resolve(market.market_id, YES)
    assert same_trade(first, await engine.execute_trade(capped))
    after = await snapshot(engine.redis, engine.keys.prefix)
    market_key = engine.keys.market(market.market_id)
    assert {k: v for k, v in after.items() if k not in (market_key, engine.keys.events, engine.keys.dirty)} == {
        k: v for k, v in before.items() if k not in (market_key, engine.keys.events, engine.keys.dirty)
    }
    assert [e["type"] for e in await events(engine)][-1] == "MarketResolved"


async def test_concurrent_requests_with_one_key_execute_once(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory
) -> None:
    market = await make_market(100)
    user = await make_user(100)
    trades = await asyncio.gather(*(engine.execute_trade(keyed(user, market, "k", "f")) for _ in range(8)))
    assert len({t.trade_id for t in trades}) == 1
    assert sum(not t.replayed for t in trades) == 1
    assert len(await events(engine, "TradeExecuted")) == 1
    assert (await engine.accounts.get(user.user_id)).available == 100 * MICRO - trades[0].cost
    await assert_invariants(engine)


async def test_rejected_order_leaves_its_key_unused(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory
) -> None:
    market = await make_market(100)
    user = await make_user(1)
    await assert_rejected(engine, InsufficientFunds, engine.execute_trade(keyed(user, market, "k", "f")))
    assert await engine.redis.exists(engine.keys.idempotency(user.user_id, "k")) == 0


# --------------------------------------------------------------------------- buy by amount


@pytest.mark.parametrize("amount", [1, 999, MICRO, 37_123_456, 500 * MICRO, 5_000 * MICRO])
@pytest.mark.parametrize(("outcome", "skew"), [(YES, 0), (YES, 80 * MICRO), (NO, 80 * MICRO)])
async def test_buy_by_amount_buys_the_most_shares_it_can_pay(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory,
    amount: int, outcome: Outcome, skew: int,
) -> None:
    market = await make_market(100)
    if skew:  # someone moved the market towards YES first
        await engine.execute_trade(order(await make_user(1_000), market, BUY, YES, shares=skew))
    market = await engine.markets.get(market.market_id)
    q_self, q_other = (market.yes_shares, market.no_shares) if outcome is YES else (market.no_shares, market.yes_shares)
    user = await make_user(10_000)

    trade = await engine.execute_trade(order(user, market, BUY, outcome, amount=amount))

    b = market.liquidity_b
    assert trade.shares > 0
    assert trade.cost == pricing.buy_cost(q_self, q_other, trade.shares, b) <= amount
    assert pricing.buy_cost(q_self, q_other, trade.shares + 1, b) > amount
    assert trade.available == 10_000 * MICRO - trade.cost
    assert trade.position == trade.shares
    await assert_invariants(engine)
