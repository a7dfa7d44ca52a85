"""Balances past 2^53 micro-units: money owed is credited without bound and stays exact (issue 11, item 2).

Deposits and trades keep the contract's 9,000,000,000 bound; sale proceeds, payouts and the
house's return are credited past it. Past 2^53 a double no longer holds every integer, so each
credit and debit path is driven here to a balance above 2^53 by the contract's own paths (a
payout to a holder whose account is already at the deposit bound, the house's return on top of a
house at the bound) and checked to the micro-unit: the engine's answer, Redis, the stream's
``available`` field, PostgreSQL (via the persister) and ``predmarket audit``'s conservation.

Each test picks its amounts so the exact result is odd: a double above 2^53 holds only even
integers, so an arithmetic that went through one is off by a micro-unit and the test fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import cast

import pytest
import redis as sync_redis
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from predmarket.engine import pricing
from predmarket.engine.errors import InsufficientFunds, ValidationError
from predmarket.engine.keys import Keys
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import HOUSE, Order, Outcome, Side, Trade
from predmarket.engine.settings import Settings
from predmarket.engine.state import MarketRecord, State, UserRecord
from predmarket.engine.units import MAX_EXACT, MAX_QUANTITY, MAX_TOTAL, MICRO, format_micro, micro_from_decimal
from predmarket.lua import SCRIPT_DIR
from predmarket.persister.audit import AuditReport, audit, exact_range_breaches
from predmarket.persister.recover import recover

from predmarket.commands.stores import stores
from tests.support.factories import MarketFactory, UserFactory
from tests.support.persister import catch_up, persister
from tests.support.redis_data import snapshot, stream_entries
from tests.support.services import REAL_REDIS, REDIS_URL

pytestmark = pytest.mark.skipif(not REAL_REDIS, reason="exactness is Redis's own Lua and HINCRBY: real Redis only")

YES, NO = Outcome.YES, Outcome.NO
BUY, SELL = Side.BUY, Side.SELL
TWO_53 = 2**53
B = 1_000 * MICRO  # liquidity of every market here
WON = 10_000_000 * MICRO  # winning shares: the payout that takes a balance at the bound past 2^53
assert MAX_TOTAL + WON > TWO_53 and MAX_EXACT == 2**63 - 1


@dataclass
class Rich:
    """A holder paid past 2^53, the house past it too, and a market both still trade in."""

    user_id: str
    market_id: str  # OPEN: the holder holds YES shares here
    held: int


async def deposit_up_to(engine: MarketEngine, user_id: str, target: int) -> None:
    """Deposit until ``available`` is exactly ``target`` (each deposit at most MAX_QUANTITY)."""
    available = (await engine.accounts.get(user_id)).available
    while available < target:
        available = (await engine.accounts.deposit(user_id, min(MAX_QUANTITY, target - available))).available
    assert available == target


async def stream(engine: MarketEngine, kind: str) -> list[dict[str, str]]:
    return [fields for _, fields in await stream_entries(engine.redis, engine.keys.events) if fields["type"] == kind]


async def available_in_redis(engine: MarketEngine, user_id: str) -> int:
    return int(cast(str, await engine.redis.hget(engine.keys.user(user_id), "available")))  # decoded: a str


async def trade(engine: MarketEngine, user_id: str, market_id: str, side: Side, outcome: Outcome,
                shares: int, idempotency_key: str = "", fingerprint: str = "") -> Trade:
    return await engine.execute_trade(Order(user_id, market_id, side, outcome, shares=shares,
                                            idempotency_key=idempotency_key, fingerprint=fingerprint))


async def shares_with_parity(engine: MarketEngine, market_id: str, side: Side, outcome: Outcome,
                             start: int, balance: int) -> int:
    """The first quantity from ``start`` whose cost (or proceeds) leaves ``balance`` odd."""
    market = await engine.markets.get(market_id)
    q_self, q_other = (market.yes_shares, market.no_shares) if outcome is YES else (market.no_shares, market.yes_shares)
    price = pricing.buy_cost if side is BUY else pricing.sell_proceeds
    for shares in range(start, start + 100):
        if (balance - price(q_self, q_other, shares, B)) % 2:
            return shares
    raise AssertionError("no quantity of the wanted parity")


@pytest.fixture
async def rich(engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory) -> Rich:
    """Holder at MAX_TOTAL + WON (paid WON), house past 2^53 by market A's return.

    Every step is a contract path: deposits up to the bound, trades, a resolution and a settlement.
    """
    paid, open_market = await make_market(1_000), await make_market(1_000)
    holder, loser = await make_user(0), await make_user(0)
    await engine.accounts.deposit(holder.user_id, MAX_QUANTITY)
    await engine.accounts.deposit(loser.user_id, MAX_QUANTITY)
    # The loser's NO shares first: they cost about 2 * WON, the holder's YES after them next to nothing, so
    # the pool keeps about WON once the holder is paid: the house's return takes the house past 2^53.
    await trade(engine, loser.user_id, paid.market_id, BUY, NO, 2 * WON)
    await trade(engine, holder.user_id, paid.market_id, BUY, YES, WON)
    held = (await trade(engine, holder.user_id, open_market.market_id, BUY, YES, 1_000 * MICRO)).position
    assert held is not None  # a trade just executed (not a replay) knows the holding
    await deposit_up_to(engine, holder.user_id, MAX_TOTAL)
    await deposit_up_to(engine, HOUSE, MAX_TOTAL)
    await engine.markets.resolve(paid.market_id, YES)
    settlement = await engine.markets.settle(paid.market_id)
    assert settlement.payouts_total == WON and settlement.house_return > TWO_53 - MAX_TOTAL
    return Rich(holder.user_id, open_market.market_id, held)


def run_audit(settings: Settings) -> AuditReport:
    with persister(settings) as p:
        catch_up(p)
    with stores(settings) as (client, pg):
        return audit(pg, client, settings.redis_url, Keys(settings.key_prefix), wait_s=10.0)


async def assert_audit_passes(settings: Settings) -> None:
    """The persister drained, then ``predmarket audit``: Redis = PostgreSQL, conservation, exact range."""
    report = await asyncio.to_thread(run_audit, settings)
    assert report.ok, "\n".join(map(str, report.breaches))


# --------------------------------------------------------------------------- credits


async def test_payout_past_2_53_is_exact(engine: MarketEngine, rich: Rich, pg_settings: Settings) -> None:
    expected = MAX_TOTAL + WON
    assert (await engine.accounts.get(rich.user_id)).available == expected
    assert await available_in_redis(engine, rich.user_id) == expected
    payout = next(p for p in await stream(engine, "Payout") if p["user_id"] == rich.user_id)
    assert payout["available"] == format_micro(expected) == "9010000000.000000"
    await assert_audit_passes(pg_settings)


async def test_house_return_past_2_53_is_exact_and_the_next_subsidy_debits_it_exactly(
        engine: MarketEngine, rich: Rich, pg_settings: Settings) -> None:
    settled = (await stream(engine, "MarketSettled"))[-1]
    house = (await engine.accounts.get(HOUSE)).available
    assert house > TWO_53
    assert settled["available"] == format_micro(house)
    assert house == MAX_TOTAL + int(settled["house_return"].replace(".", ""))
    # A market whose subsidy leaves the house's balance odd: a double would round it.
    b = next(b for b in range(B, B + 100) if (house - pricing.subsidy(b)) % 2)
    market = await engine.markets.create("Past 2^53", b)
    after = house - pricing.subsidy(b)
    assert after % 2 and after > TWO_53
    assert await available_in_redis(engine, HOUSE) == after
    created = next(c for c in await stream(engine, "MarketCreated") if c["market_id"] == market.market_id)
    assert created["available"] == format_micro(after)
    await assert_audit_passes(pg_settings)


async def test_sale_proceeds_past_the_bound_are_credited_exactly(
        engine: MarketEngine, rich: Rich, pg_settings: Settings) -> None:
    """A sell is never refused for the balance it credits (it was: 'balance would exceed 9000000000')."""
    before = (await engine.accounts.get(rich.user_id)).available
    shares = await shares_with_parity(engine, rich.market_id, SELL, YES, 3 * MICRO, before)
    sold = await trade(engine, rich.user_id, rich.market_id, SELL, YES, shares)
    expected = before + sold.cost
    assert expected % 2 and expected > TWO_53
    assert sold.available == expected == await available_in_redis(engine, rich.user_id)
    assert (await stream(engine, "TradeExecuted"))[-1]["available"] == format_micro(expected)
    await assert_audit_passes(pg_settings)


# --------------------------------------------------------------------------- debits


async def test_buy_past_2_53_debits_exactly(engine: MarketEngine, rich: Rich, pg_settings: Settings) -> None:
    before = (await engine.accounts.get(rich.user_id)).available
    shares = await shares_with_parity(engine, rich.market_id, BUY, NO, 5 * MICRO, before)
    bought = await trade(engine, rich.user_id, rich.market_id, BUY, NO, shares,
                         idempotency_key="big-buy", fingerprint="big-buy")
    expected = before - bought.cost
    assert expected % 2 and expected > TWO_53
    assert bought.available == expected == await available_in_redis(engine, rich.user_id)
    assert (await stream(engine, "TradeExecuted"))[-1]["available"] == format_micro(expected)
    # The stored first answer replays the same trade and moves nothing.
    replayed = await trade(engine, rich.user_id, rich.market_id, BUY, NO, shares,
                           idempotency_key="big-buy", fingerprint="big-buy")
    assert replayed.replayed and (replayed.trade_id, replayed.cost) == (bought.trade_id, bought.cost)
    assert await available_in_redis(engine, rich.user_id) == expected
    await assert_audit_passes(pg_settings)


async def test_thirty_trades_past_2_53_create_no_money(engine: MarketEngine, rich: Rich,
                                                       pg_settings: Settings) -> None:
    """The issue's case: trading back and forth above 2^53, each trade exact, nothing created."""
    expected = (await engine.accounts.get(rich.user_id)).available
    for i in range(30):
        side = BUY if i % 2 == 0 else SELL
        done = await trade(engine, rich.user_id, rich.market_id, side, NO, 1_000_003 + 7 * (i // 2))
        expected += -done.cost if side is BUY else done.cost
        assert done.available == expected
    assert await available_in_redis(engine, rich.user_id) == expected
    await assert_audit_passes(pg_settings)


async def test_withdrawals_at_and_past_2_53_are_exact(engine: MarketEngine, rich: Rich,
                                                      pg_settings: Settings) -> None:
    before = (await engine.accounts.get(rich.user_id)).available
    for target in (TWO_53 + 3, TWO_53 + 1, TWO_53):
        account = await engine.accounts.withdraw(rich.user_id, before - target)
        assert account.available == target == await available_in_redis(engine, rich.user_id)
        assert (await stream(engine, "Withdrawal"))[-1]["available"] == format_micro(target)
        before = target
    await assert_audit_passes(pg_settings)


async def test_recover_restores_balances_past_2_53_exactly(engine: MarketEngine, rich: Rich,
                                                            pg_settings: Settings) -> None:
    """PostgreSQL's NUMERIC(20,6) holds them (2^63 - 1 micro-units is 13 digits before the point) and
    ``predmarket recover`` writes them back without a float in between."""
    await engine.accounts.withdraw(rich.user_id, MAX_TOTAL + WON - (TWO_53 + 1))
    expected = {rich.user_id: TWO_53 + 1, HOUSE: await available_in_redis(engine, HOUSE)}

    def rebuild() -> None:
        with persister(pg_settings) as p:
            catch_up(p)
        with stores(pg_settings) as (client, pg):
            recover(pg, client, Keys(pg_settings.key_prefix), force=True)

    await asyncio.to_thread(rebuild)
    assert {u: await available_in_redis(engine, u) for u in expected} == expected
    await assert_audit_passes(pg_settings)


def test_numeric_sums_convert_without_rounding() -> None:
    """The audit's ledger sums come back as NUMERIC of any length: converted exactly, never to 28 digits."""
    huge = Decimal(f"{2**130}.000001")  # as psycopg builds it: from the text, unrounded
    assert micro_from_decimal(huge) == 2**130 * MICRO + 1
    assert micro_from_decimal(Decimal("9223372036854.775807")) == MAX_EXACT


# --------------------------------------------------------------------------- bounds that stay


async def test_deposit_past_the_bound_is_refused_and_changes_nothing(engine: MarketEngine, rich: Rich) -> None:
    """The payout took the balance past 9e9; a deposit still may not add to it."""
    before = await snapshot(engine.redis, engine.keys.prefix)
    for amount in (1, MAX_QUANTITY):
        with pytest.raises(ValidationError):
            await engine.accounts.deposit(rich.user_id, amount)
    assert await snapshot(engine.redis, engine.keys.prefix) == before


async def test_refused_withdrawals_change_nothing(engine: MarketEngine, rich: Rich,
                                                  make_user: UserFactory) -> None:
    """Past 2^53 only the amount's own bound can refuse a withdrawal (any amount up to 1e9 is covered);
    at the funds boundary the string comparison refuses one micro-unit too many."""
    poor = await make_user(0)
    await engine.accounts.deposit(poor.user_id, MAX_QUANTITY - 1)
    before = await snapshot(engine.redis, engine.keys.prefix)
    with pytest.raises(ValidationError):
        await engine.accounts.withdraw(rich.user_id, MAX_QUANTITY + 1)
    with pytest.raises(InsufficientFunds):
        await engine.accounts.withdraw(poor.user_id, MAX_QUANTITY)
    assert await snapshot(engine.redis, engine.keys.prefix) == before
    assert (await engine.accounts.withdraw(poor.user_id, MAX_QUANTITY - 1)).available == 0


async def test_total_deposits_stay_within_int64(engine: MarketEngine, make_user: UserFactory) -> None:
    """Every balance is money deposited, so capping the ledger's total deposits at 2^63 - 1 keeps every
    credit within HINCRBY's range. Reaching that total honestly takes ~9,200 deposits of 1e9 (withdrawn
    in between), so the counter is set near it in this test's own prefix."""
    user = await make_user(0)
    await engine.redis.hset(engine.keys.totals, "deposits", MAX_EXACT - 5)
    before = await snapshot(engine.redis, engine.keys.prefix)
    with pytest.raises(ValidationError, match="total deposits"):
        await engine.accounts.deposit(user.user_id, 6)
    assert await snapshot(engine.redis, engine.keys.prefix) == before
    assert (await engine.accounts.deposit(user.user_id, 5)).available == 5
    assert int(cast(str, await engine.redis.hget(engine.keys.totals, "deposits"))) == MAX_EXACT  # decoded: a str


# --------------------------------------------------------------------------- audit names what is out of range


def test_exact_range_names_every_value_outside_it() -> None:
    state = State(
        users={"ok": UserRecord("ok", MAX_EXACT, 0), "over": UserRecord("over", MAX_EXACT + 1, 0),
               "neg": UserRecord("neg", -1, 0)},
        markets={"m": MarketRecord("OPEN", "", B, 0, 0, MAX_EXACT + 1)},
        positions={("ok", "m", "YES"): 2**64},
        deposits=2**63, withdrawals=-1,
    )
    found = {b.subject for b in exact_range_breaches(state)}
    assert found == {"user over available", "user neg available", "market m pool", "position ok m YES",
                     "total deposits", "total withdrawals"}


async def test_audit_names_a_balance_past_2_63(engine: MarketEngine, rich: Rich, pg_settings: Settings) -> None:
    await engine.redis.hset(engine.keys.user(rich.user_id), "available", 2**63)
    report = await asyncio.to_thread(run_audit, pg_settings)
    assert any(b.invariant == "redis: exact range" and b.subject == f"user {rich.user_id} available"
               for b in report.breaches), report.breaches


# --------------------------------------------------------------------------- the Lua helpers themselves


@pytest.fixture(scope="module")
def lua_client() -> Iterator[sync_redis.Redis]:
    client = sync_redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


ARITHMETIC = (SCRIPT_DIR / "lib.lua").read_text() + """
local a, b = ARGV[1], ARGV[2]  -- a >= b
return {add_int(a, b), sub_int(a, b), lt_int(a, b) and 1 or 0, lt_int(b, a) and 1 or 0}
"""
# 10**15 - 1 and 10**15: the last value of 15 digits (plain doubles) and the first split in two parts.
EDGES = [0, 1, 999_999_999, 1_000_000_000, 10**15 - 1, 10**15, MAX_TOTAL, TWO_53 - 1, TWO_53, TWO_53 + 1,
         MAX_EXACT - 1, MAX_EXACT]
AMOUNTS = st.one_of(st.sampled_from(EDGES), st.integers(0, MAX_EXACT), st.integers(0, 10**15))


@hypothesis_settings(max_examples=300, deadline=None)
@given(AMOUNTS, AMOUNTS)
def test_lua_integer_arithmetic_is_exact(lua_client: sync_redis.Redis, x: int, y: int) -> None:
    a, b = max(x, y), min(x, y)
    added, subtracted, a_less, b_less = lua_client.eval(ARITHMETIC, 0, a, b)
    assert (int(added), int(subtracted), a_less, b_less) == (a + b, a - b, 0, int(b < a))
