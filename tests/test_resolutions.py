"""PROB and CANCEL resolutions in the engine: what each user is paid, to the micro-unit, and that
settlement stays resumable and pays nobody twice.

Every book has holders of both outcomes (one of both at once), a user who exited at a loss and one
who exited at a profit. Expected amounts are computed here from the positions and net costs read
before resolution, with plain integer arithmetic written out in each test (not the engine's own
helpers): PROB ``floor(sum_i p_i * s_i / 10^6)``, CANCEL ``max(0, sum of net costs)``, scaled by
``pool / total`` and floored when the refunds exceed the pool.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import pytest
import redis as sync_redis
from predmarket.engine.errors import InvalidState, Unavailable, ValidationError
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import HOUSE, Market, MarketStatus, Order, Outcome, Side
from predmarket.engine.resolutions import Resolution
from predmarket.engine.settings import Settings
from predmarket.engine.settlement import UserSettler
from predmarket.engine.state import check_invariants, read_redis_state
from predmarket.engine.units import MICRO, format_micro
from predmarket.persister.events import Batch, MalformedEvent
from sqlalchemy import text

from tests.support.factories import MarketFactory, UserFactory
from tests.support.faults import diff, full_snapshot
from tests.support.persister import (
    catch_up,
    ledger_breaches,
    micro,
    persister,
    persister_env,
    pg_connection,
    pg_state,
    redis_state,
)
from tests.support.processes import run_predmarket
from tests.support.redis_data import delete_prefix_async, hash_all, hash_fields, snapshot, stream_entries
from tests.support.services import REAL_REDIS

YES, NO = Outcome.YES, Outcome.NO
BUY, SELL = Side.BUY, Side.SELL


@dataclass
class Book:
    """A traded market: who holds what, each user's net costs and balance before resolution."""

    market: Market
    users: dict[str, str]  # role -> user id
    held: dict[str, dict[str, int]]  # user id -> label -> shares (non-zero only)
    net: dict[str, dict[str, int]]  # user id -> label -> net cost (every position ever traded)
    available: dict[str, int]


async def trade(engine: MarketEngine, user_id: str, market_id: str, side: Side, outcome: Outcome,
                shares: int) -> None:
    await engine.execute_trade(Order(user_id, market_id, side, outcome, shares=shares))


async def read_book(engine: MarketEngine, market_id: str, users: dict[str, str]) -> Book:
    held: dict[str, dict[str, int]] = {u: {} for u in users.values()}
    for field, shares in (await hash_all(engine.redis, engine.keys.market_positions(market_id))).items():
        user_id, _, label = field.rpartition(":")
        held[user_id][label] = int(shares)
    net: dict[str, dict[str, int]] = {u: {} for u in users.values()}
    for field, cost in (await hash_all(engine.redis, engine.keys.market_costs(market_id))).items():
        user_id, _, label = field.rpartition(":")
        net[user_id][label] = int(cost)
    available = {u: (await engine.accounts.get(u)).available for u in users.values()}
    return Book(await engine.markets.get(market_id), users, held, net, available)


async def build_book(engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory,
                     b_units: int = 20, cycles: int = 1) -> Book:
    """Holders of YES, of NO and of both; ``loss`` bought NO and sold it after YES rose (a loss);
    ``profit`` bought YES cheap and sold it dear ``cycles`` times, while ``whale`` pushed YES up and back
    down each time (so the whale's net cost is the profit's other side)."""
    market = await make_market(b_units)
    mid = market.market_id
    roles = ("yes", "no", "both", "loss", "profit", "whale")
    users = {role: (await make_user(100_000)).user_id for role in roles}
    await trade(engine, users["loss"], mid, BUY, NO, 15 * MICRO)
    for _ in range(cycles):
        await trade(engine, users["profit"], mid, BUY, YES, 12 * MICRO)
        await trade(engine, users["whale"], mid, BUY, YES, 40 * MICRO)
        await trade(engine, users["profit"], mid, SELL, YES, 12 * MICRO)
        await trade(engine, users["whale"], mid, SELL, YES, 40 * MICRO)
    await trade(engine, users["yes"], mid, BUY, YES, 30 * MICRO)
    await trade(engine, users["both"], mid, BUY, YES, 10 * MICRO + 123_457)
    await trade(engine, users["both"], mid, BUY, NO, 7 * MICRO + 1)
    await trade(engine, users["loss"], mid, SELL, NO, 15 * MICRO)
    await trade(engine, users["no"], mid, BUY, NO, 25 * MICRO + 333_333)
    book = await read_book(engine, mid, users)
    assert book.held[users["loss"]] == {} and book.net[users["loss"]]["NO"] > 0  # exited at a loss
    assert book.held[users["profit"]] == {} and book.net[users["profit"]]["YES"] < 0  # at a profit
    assert set(book.held[users["both"]]) == {"YES", "NO"}
    return book


async def events(engine: MarketEngine, kind: str, market_id: str) -> list[dict[str, str]]:
    return [f for _, f in await stream_entries(engine.redis, engine.keys.events)
            if f["type"] == kind and f.get("market_id") == market_id]


async def assert_invariants(engine: MarketEngine) -> None:
    assert check_invariants(await read_redis_state(engine.redis, engine.keys)) == []


async def assert_settled(engine: MarketEngine, book: Book, paid: dict[str, int], kind: str,
                         wiped: frozenset[str] = frozenset()) -> None:
    """Every user got exactly ``paid`` (one event each for non-zero amounts; ``wiped``: users whose event
    went with a deleted stream), no position of the market is left anywhere, house got the rest of the
    pool, every invariant holds."""
    mid = book.market.market_id
    for user_id in book.users.values():
        account = await engine.accounts.get(user_id)
        assert account.available == book.available[user_id] + paid.get(user_id, 0), user_id
        assert [p for p in account.positions if p.market_id == mid] == []
    assert await engine.redis.exists(engine.keys.market_positions(mid), engine.keys.market_refunded(mid)) == 0
    got = await events(engine, kind, mid)
    assert Counter(e["user_id"] for e in got) == Counter({u: 1 for u, a in paid.items() if a > 0 and u not in wiped})
    for e in got:
        assert e["amount"] == format_micro(paid[e["user_id"]])
    market = await engine.markets.get(mid)
    total = sum(paid.values())
    [settled] = await events(engine, "MarketSettled", mid)
    assert (market.status, market.pool, market.payouts_total) == (MarketStatus.SETTLED, 0, total)
    assert market.holders_paid == sum(1 for a in paid.values() if a > 0)
    assert settled["payouts_total"] == format_micro(total)
    assert settled["house_return"] == format_micro(book.market.pool - total)
    assert (market.settled_yes, market.settled_no) == (market.yes_shares, market.no_shares)
    # Net costs are kept through settlement (P&L and the record need them).
    costs = await engine.redis.hgetall(engine.keys.market_costs(mid))
    assert {f: int(v) for f, v in costs.items()} == {
        f"{u}:{label}": c for u, by_label in book.net.items() for label, c in by_label.items()}
    await assert_invariants(engine)


def prob_expected(book: Book, p_yes: int) -> dict[str, int]:
    p = {"YES": p_yes, "NO": MICRO - p_yes}
    return {u: sum(p[label] * s for label, s in held.items()) // MICRO for u, held in book.held.items() if held}


def cancel_expected(book: Book) -> tuple[dict[str, int], bool]:
    due = {u: max(0, sum(by_label.values())) for u, by_label in book.net.items() if by_label}
    total, pool = sum(due.values()), book.market.pool
    if total <= pool:
        return due, False
    return {u: r * pool // total for u, r in due.items()}, True


# --------------------------------------------------------------------------- PROB

@pytest.mark.parametrize("p_yes", [250_000, 333_333, MICRO, 0])
async def test_prob_pays_each_holder_the_floor_of_its_weighted_shares_once(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory, p_yes: int,
) -> None:
    book = await build_book(engine, make_market, make_user)
    mid = book.market.market_id
    house = (await engine.accounts.get(HOUSE)).available
    resolution = Resolution.prob([("YES", p_yes), ("NO", MICRO - p_yes)])
    resolved = await engine.markets.resolve(mid, resolution)
    assert (resolved.status, resolved.outcome) == (MarketStatus.RESOLVED, "PROB")
    assert resolved.probabilities == (("YES", p_yes), ("NO", MICRO - p_yes))
    [event] = await events(engine, "MarketResolved", mid)
    assert event["outcome"] == "PROB"
    assert event["probabilities"] == (
        f'{{"YES":"{format_micro(p_yes)}","NO":"{format_micro(MICRO - p_yes)}"}}')
    await assert_invariants(engine)

    settlement = await engine.markets.settle(mid, batch=2)

    paid = prob_expected(book, p_yes)
    assert settlement.payouts_total == sum(paid.values())
    assert settlement.house_return == book.market.pool - sum(paid.values())
    assert (await engine.accounts.get(HOUSE)).available == house + settlement.house_return
    both = book.users["both"]
    payouts: list[dict[str, str] | None] = [e for e in await events(engine, "Payout", mid) if e["user_id"] == both]
    [payout] = payouts or [None]
    if paid[both]:
        assert payout is not None
        assert payout["shares"] == format_micro(sum(book.held[both].values()))  # all of its shares, one payout
        assert (payout["outcome"], payout["outcomes"]) == ("PROB", "YES,NO")
    await assert_settled(engine, book, paid, "Payout")


# --------------------------------------------------------------------------- CANCEL

async def test_cancel_refunds_net_costs_also_to_users_who_sold_out(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory,
) -> None:
    book = await build_book(engine, make_market, make_user)
    mid = book.market.market_id
    refunds, pro_rata = cancel_expected(book)
    assert not pro_rata, "the pool covers every refund in this book"
    assert refunds[book.users["profit"]] == 0
    assert refunds[book.users["loss"]] == book.net[book.users["loss"]]["NO"] > 0  # no shares, still refunded
    resolved = await engine.markets.resolve(mid, Resolution.cancel())
    assert (resolved.outcome, resolved.probabilities) == ("CANCEL", None)
    [event] = await events(engine, "MarketResolved", mid)
    assert event["outcome"] == "CANCEL" and "probabilities" not in event

    settlement = await engine.markets.settle(mid)

    assert settlement.payouts_total == sum(refunds.values())
    assert settlement.holders_paid == sum(1 for a in refunds.values() if a > 0)
    for e in await events(engine, "Refund", mid):
        held = book.held[e["user_id"]]
        assert e["outcomes"] == ",".join(label for label in ("YES", "NO") if label in held)
    assert await events(engine, "Payout", mid) == []
    await assert_settled(engine, book, refunds, "Refund")


async def test_cancel_scales_refunds_to_the_pool_when_profitable_exits_left_it_short(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory,
) -> None:
    book = await build_book(engine, make_market, make_user, b_units=10, cycles=4)
    mid = book.market.market_id
    refunds, pro_rata = cancel_expected(book)
    due = sum(max(0, sum(c.values())) for c in book.net.values())
    assert pro_rata and due > book.market.pool, (format_micro(due), format_micro(book.market.pool))
    await engine.markets.resolve(mid, Resolution.cancel())

    settlement = await engine.markets.settle(mid, batch=1)

    assert settlement.payouts_total == sum(refunds.values()) <= book.market.pool
    assert settlement.house_return == book.market.pool - sum(refunds.values())
    assert settlement.house_return < len(refunds)  # only the floors' remainders are left
    await assert_settled(engine, book, refunds, "Refund")


async def test_a_closed_market_resolves_and_settles(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory,
) -> None:
    book = await build_book(engine, make_market, make_user)
    mid = book.market.market_id
    assert (await engine.markets.close(mid)).status is MarketStatus.CLOSED
    await engine.markets.resolve(mid, Resolution.cancel())
    await engine.markets.settle(mid)
    await assert_settled(engine, book, cancel_expected(book)[0], "Refund")


# --------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("resolution", [
    Resolution.prob([("YES", 500_000), ("NO", 499_999)]),
    Resolution.prob([("YES", 500_000), ("NO", 500_001)]),
    Resolution.prob([("YES", MICRO)]),
    Resolution.prob([("YES", 500_000), ("NO", 250_000), ("MAYBE", 250_000)]),
    Resolution.prob([("YES", 500_000), ("YES", 500_000)]),
    Resolution.prob([("YES", MICRO + 1), ("NO", -1)]),
    Resolution.of_outcome("MAYBE"),
    Resolution.of_outcome("PROB"),
], ids=["sum-low", "sum-high", "label-missing", "label-unknown", "label-twice", "out-of-range", "no-such-label",
        "prob-as-label"])
async def test_an_invalid_resolution_changes_nothing(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory, resolution: Resolution,
) -> None:
    book = await build_book(engine, make_market, make_user)
    before = await snapshot(engine.redis, engine.keys.prefix)
    with pytest.raises(ValidationError):
        await engine.markets.resolve(book.market.market_id, resolution)
    assert await snapshot(engine.redis, engine.keys.prefix) == before


@pytest.mark.parametrize("status", [MarketStatus.CREATED, MarketStatus.RESOLVED, MarketStatus.SETTLED])
async def test_only_an_open_or_closed_market_resolves(
    engine: MarketEngine, make_market: MarketFactory, status: MarketStatus,
) -> None:
    market = await make_market(10, open=status is not MarketStatus.CREATED)
    if status is not MarketStatus.CREATED:
        await engine.markets.resolve(market.market_id, Resolution.cancel())
    if status is MarketStatus.SETTLED:
        await engine.markets.settle(market.market_id)
    before = await snapshot(engine.redis, engine.keys.prefix)
    with pytest.raises(InvalidState):
        await engine.markets.resolve(market.market_id, Resolution.prob([("YES", MICRO), ("NO", 0)]))
    assert await snapshot(engine.redis, engine.keys.prefix) == before


async def test_the_per_position_settlement_refuses_prob_and_cancel_markets(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory,
) -> None:
    """settle_batch pays a label's holders; sent a PROB or CANCEL market's fields it would zero them unpaid."""
    book = await build_book(engine, make_market, make_user)
    mid = book.market.market_id
    await engine.markets.resolve(mid, Resolution.prob([("YES", 400_000), ("NO", 600_000)]))
    fields = await hash_fields(engine.redis, engine.keys.market_positions(mid))
    before = await snapshot(engine.redis, engine.keys.prefix)
    with pytest.raises(InvalidState):
        await engine.markets._settle_fields(mid, fields)
    assert await snapshot(engine.redis, engine.keys.prefix) == before


# --------------------------------------------------------------------------- interrupted settlements

async def settler(engine: MarketEngine, market_id: str) -> UserSettler:
    fields = await hash_all(engine.redis, engine.keys.market(market_id))
    return UserSettler(engine.redis, engine.scripts, engine.keys, engine.hotset, market_id, fields, 100)


async def test_an_interrupted_cancel_settlement_resumes_and_refunds_nobody_twice(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory,
) -> None:
    book = await build_book(engine, make_market, make_user, b_units=10, cycles=4)  # pro-rata: scaling too
    mid = book.market.market_id
    refunds, pro_rata = cancel_expected(book)
    assert pro_rata
    await engine.markets.resolve(mid, Resolution.cancel())
    u = book.users
    first = [u["loss"], u["both"], u["profit"]]  # no shares, both outcomes, a zero refund

    # A run that stopped after its first call: run the same call again (its answer lost), then resume.
    s = await settler(engine, mid)
    sent: list[tuple[str, list[object]]] = []
    real_call = s._call

    async def first_only(mode: str, head: list[object], chunk: Sequence[tuple[str, list[object]]]) -> list[str]:
        chosen = [g for g in chunk if g[0] in first]
        sent.extend(chosen)
        return await real_call(mode, head, chosen)

    s._call = first_only  # type: ignore[method-assign]  # a spy in the settler's own call
    await s.pay_all()
    await s.pay_all()
    assert sorted(g[0] for g in sent) == sorted(first * 2)
    partial = await engine.markets.get(mid)
    paid_first = sum(refunds[x] for x in first)
    assert partial.status is MarketStatus.RESOLVED
    assert (partial.payouts_total, partial.pool) == (paid_first, book.market.pool - paid_first)
    assert await engine.redis.smembers(engine.keys.market_refunded(mid)) == {x for x in first if refunds[x]}
    for x in first:
        assert (await engine.accounts.get(x)).available == book.available[x] + refunds[x]
    await assert_invariants(engine)  # conservation and solvency (the refunds still owed) half-way

    await engine.markets.settle(mid, batch=2)
    await assert_settled(engine, book, refunds, "Refund")


async def test_an_interrupted_prob_settlement_resumes_and_pays_nobody_twice(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory,
) -> None:
    book = await build_book(engine, make_market, make_user)
    mid = book.market.market_id
    await engine.markets.resolve(mid, Resolution.prob([("YES", 700_001), ("NO", 299_999)]))
    paid = prob_expected(book, 700_001)
    s = await settler(engine, mid)
    real_call = s._call
    both = book.users["both"]

    async def both_only(mode: str, head: list[object], chunk: Sequence[tuple[str, list[object]]]) -> list[str]:
        return await real_call(mode, head, [g for g in chunk if g[0] == both])

    s._call = both_only  # type: ignore[method-assign]  # a spy in the settler's own call
    await s.pay_all()
    await s.pay_all()
    assert (await engine.markets.get(mid)).payouts_total == paid[both] > 0
    await assert_invariants(engine)
    await engine.markets.settle(mid)
    await assert_settled(engine, book, paid, "Payout")


async def test_a_refund_owed_to_a_user_out_of_redis_stops_the_settlement_until_it_is_back(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory,
) -> None:
    """A user who sold out may be evicted; with no record to load it from (this engine has none), the
    settlement stops with the market still RESOLVED rather than close it without the refund."""
    book = await build_book(engine, make_market, make_user)
    mid, loss = book.market.market_id, book.users["loss"]
    refunds, _ = cancel_expected(book)
    await engine.markets.resolve(mid, Resolution.cancel())
    kept = await hash_all(engine.redis, engine.keys.user(loss))
    await engine.redis.delete(engine.keys.user(loss))
    with pytest.raises(Unavailable):
        await engine.markets.settle(mid)
    assert (await engine.markets.get(mid)).status is MarketStatus.RESOLVED
    # A copy, so mypy types it as hset's mapping (a Mapping's key type is invariant: a dict[str, str] is not one).
    await engine.redis.hset(engine.keys.user(loss), mapping={field: value for field, value in kept.items()})
    await engine.markets.settle(mid)
    await assert_settled(engine, book, refunds, "Refund")


# --------------------------------------------------------------------------- the record, recover and audit

def audit_output(settings: Settings) -> subprocess.CompletedProcess[str]:
    return run_predmarket("audit", "--wait", "5", env=persister_env(settings))


def assert_audit_passes(settings: Settings) -> None:
    done = audit_output(settings)
    assert done.returncode == 0 and "audit passed" in done.stdout, done.stdout + done.stderr


async def assert_stores_agree(engine: MarketEngine, url: str) -> None:
    """PostgreSQL's picture equals Redis' (users, positions, net costs, markets, totals), both satisfy
    the invariants and the ledger balances."""
    pg, live = pg_state(url), await redis_state(engine)
    assert pg == live
    assert check_invariants(pg) == [] and check_invariants(live) == []
    with pg_connection(url) as conn:
        assert ledger_breaches(conn, pg) == []


@pytest.mark.slow
@pytest.mark.skipif(not REAL_REDIS, reason="recover and audit run as subprocesses on a real Redis")
async def test_the_record_follows_prob_and_cancel_and_recover_rebuilds_a_settlement_under_way(
    engine: MarketEngine, make_market: MarketFactory, make_user: UserFactory, pg_settings: Settings,
    redis_client: sync_redis.Redis,
) -> None:
    url, prefix = pg_settings.database_url, pg_settings.key_prefix
    prob = await build_book(engine, make_market, make_user)
    cancel = await build_book(engine, make_market, make_user, b_units=10, cycles=4)  # pro-rata
    partial = await build_book(engine, make_market, make_user)
    pending = await build_book(engine, make_market, make_user)  # PROB, resolved, not settled
    refunds, partial_refunds = cancel_expected(cancel)[0], cancel_expected(partial)[0]
    paid = prob_expected(prob, 333_333)
    with persister(pg_settings) as p:
        await engine.markets.resolve(prob.market.market_id, Resolution.prob([("YES", 333_333), ("NO", 666_667)]))
        await engine.markets.settle(prob.market.market_id)
        await engine.markets.resolve(cancel.market.market_id, Resolution.cancel())
        await engine.markets.settle(cancel.market.market_id)
        await engine.markets.resolve(pending.market.market_id, Resolution.prob([("YES", 1), ("NO", 999_999)]))
        # A CANCEL settlement interrupted after refunding a user without shares and one holding both sides.
        mid = partial.market.market_id
        await engine.markets.resolve(mid, Resolution.cancel())
        first = [partial.users["loss"], partial.users["both"]]
        s = await settler(engine, mid)
        real_call = s._call

        async def first_only(mode: str, head: list[object], chunk: Sequence[tuple[str, list[object]]]) -> list[str]:
            return await real_call(mode, head, [g for g in chunk if g[0] in first])

        s._call = first_only  # type: ignore[method-assign]  # a spy in the settler's own call
        await s.pay_all()
        catch_up(p)
        await assert_stores_agree(engine, url)
        with pg_connection(url) as conn:
            rows = {r.market_id: r for r in conn.execute(text("SELECT * FROM markets"))}
            ledger = {(r.market_id, r.user_id, r.kind): micro(r.total) for r in conn.execute(text(
                "SELECT market_id, user_id, kind, SUM(amount) AS total FROM ledger WHERE leg = 1 "
                "AND kind IN ('payout', 'refund') GROUP BY market_id, user_id, kind"))}
        assert (rows[prob.market.market_id].outcome, rows[prob.market.market_id].probabilities) == (
            "PROB", '{"YES":"0.333333","NO":"0.666667"}')
        assert (rows[cancel.market.market_id].outcome, rows[cancel.market.market_id].probabilities) == (
            "CANCEL", None)
        assert rows[pending.market.market_id].status == "RESOLVED"
        assert rows[pending.market.market_id].probabilities == '{"YES":"0.000001","NO":"0.999999"}'
        assert {(m, u): a for (m, u, kind), a in ledger.items() if kind == "payout"} == {
            (prob.market.market_id, u): a for u, a in paid.items() if a}
        assert {(m, u): a for (m, u, kind), a in ledger.items() if kind == "refund"} == {
            **{(cancel.market.market_id, u): a for u, a in refunds.items() if a},
            **{(mid, u): partial_refunds[u] for u in first}}
        before = full_snapshot(redis_client, prefix)
        assert sorted(before[f"{{m:{mid}}}:refunded"]) == sorted(first)
        assert_audit_passes(pg_settings)

        await delete_prefix_async(engine.redis, prefix)
        done = run_predmarket("recover", env=persister_env(pg_settings))
        assert done.returncode == 0, done.stdout + done.stderr
        after = full_snapshot(redis_client, prefix)
        assert after == before, diff(before, after)
        assert_audit_passes(pg_settings)

        # The interrupted settlement, resumed after the recovery, refunds only the others.
        await engine.markets.settle(mid)
        await assert_settled(engine, partial, partial_refunds, "Refund", wiped=frozenset(first))
        await engine.markets.settle(pending.market.market_id)
        await assert_settled(engine, pending, prob_expected(pending, 1), "Payout")
        catch_up(p)
    await assert_stores_agree(engine, url)
    assert_audit_passes(pg_settings)


async def test_prob_payouts_are_exact_at_the_largest_positions(engine: MarketEngine) -> None:
    """Positions near the 9e15 bound: the script's split sum stays exact in doubles (a plain double
    product p * s would be past 2^53 and round)."""
    k, mid = engine.keys, "m_big"
    holdings = {"u_big1": {"YES": 8_999_999_999_123_457, "NO": 7_777_777_777_777_777},
                "u_big2": {"YES": 1, "NO": 1_222_222_222_222_222}}
    p = {"YES": 333_333, "NO": 666_667}
    q = {label: sum(h[label] for h in holdings.values()) for label in p}
    pool = 9_000_000_000_000_000  # the contract's bound on a pool, and above every outcome's total
    await engine.redis.hset(k.market(mid), mapping={
        "name": "big", "status": "RESOLVED", "outcome": "PROB", "b": 10**15, "q_yes": q["YES"], "q_no": q["NO"],
        "pool": pool, "version": 1, "created_ms": 1, "updated_ms": 1, "last_event": "0-0",
        "probabilities": '{"YES":"0.333333","NO":"0.666667"}'})
    for user_id, held in holdings.items():
        await engine.redis.hset(k.user(user_id), mapping={"username": user_id, "available": 0, "locked": 0})
        for label, shares in held.items():
            await engine.redis.hset(k.market_positions(mid), f"{user_id}:{label}", shares)
            await engine.redis.hset(k.user_positions(user_id), f"{mid}:{label}", shares)
    assert max(q.values()) <= pool
    expected = {u: sum(p[label] * s for label, s in held.items()) // MICRO for u, held in holdings.items()}
    assert any(p[label] * s > 2**53 for held in holdings.values() for label, s in held.items())

    await (await settler(engine, mid)).pay_all()

    for user_id, amount in expected.items():
        assert int(cast(str, await engine.redis.hget(k.user(user_id), "available"))) == amount  # decoded: a str
    market = await engine.redis.hgetall(k.market(mid))
    assert int(market["pool"]) == pool - sum(expected.values())
    assert int(market["payouts_total"]) == sum(expected.values())
    assert (int(market["settled_yes"]), int(market["settled_no"])) == (q["YES"], q["NO"])
    payouts = {e["user_id"]: e for e in await events(engine, "Payout", mid)}
    assert {u: e["amount"] for u, e in payouts.items()} == {u: format_micro(a) for u, a in expected.items()}
    assert payouts["u_big1"]["shares"] == format_micro(sum(holdings["u_big1"].values()))  # past 2^53, exact


# --------------------------------------------------------------------------- the persister's reading of the events

RESOLVED = {"type": "MarketResolved", "ts": "1796000000000", "market_id": "m1"}
REFUND = {"type": "Refund", "ts": "1796000000000", "market_id": "m1", "user_id": "u1", "amount": "1.500000",
          "available": "10.000000", "pool": "3.000000"}


@pytest.mark.parametrize("fields", [
    {**RESOLVED, "outcome": "PROB"},  # no probabilities
    {**RESOLVED, "outcome": "PROB", "probabilities": '{"YES":"0.500000","NO":"0.400000"}'},
    {**RESOLVED, "outcome": "PROB", "probabilities": '{"YES":"1.000000"}'},
    {**RESOLVED, "outcome": "PROB", "probabilities": '{"YES":"1.5","NO":"-0.5"}'},
    {**RESOLVED, "outcome": "PROB", "probabilities": "not json"},
    {**RESOLVED, "outcome": "MAY BE"},  # not a label (n-outcome markets: MAYBE may be one)
    {**RESOLVED, "outcome": "PROB", "probabilities": '{"YES":"0.500000","PROB":"0.500000"}'},
    {**REFUND, "outcomes": "YES,MAY BE"},
    {**REFUND, "outcomes": "YES,CANCEL"},
    {**REFUND, "outcomes": "YES,YES"},
    {**REFUND, "amount": "-1.000000"},
    {**{k: v for k, v in REFUND.items() if k != "available"}},
    {"type": "Payout", "ts": "1796000000000", "market_id": "m1", "user_id": "u1", "shares": "2.000000",
     "amount": "1.000000", "available": "1.000000", "outcome": "CANCEL"},
], ids=lambda f: f"{f['type']}-{f.get('outcome', f.get('outcomes', ''))}-{len(f)}")
def test_a_malformed_resolution_payout_or_refund_entry_adds_nothing(fields: dict[str, str]) -> None:
    batch = Batch()
    with pytest.raises(MalformedEvent):
        batch.add("1796000000000-0", fields)
    assert batch == Batch()


def test_a_refund_moves_money_from_the_pool_and_zeroes_the_positions_it_names() -> None:
    batch = Batch()
    batch.add("1796000000000-0", {**RESOLVED, "outcome": "PROB", "probabilities": '{"YES":"0.250000","NO":"0.750000"}'})
    batch.add("1796000000000-1", {**REFUND, "outcomes": "NO"})
    batch.add("1796000000000-2", {**REFUND, "user_id": "u2", "outcomes": ""})
    assert batch.market_status["m1"]["probabilities"] == '{"YES":"0.250000","NO":"0.750000"}'
    legs = [(r["account"], r["amount"], r["kind"]) for r in batch.ledger if r["event_id"] == "1796000000000-1"]
    assert legs == [("pool:m1", "-1.500000", "refund"), ("user:u1", "1.500000", "refund")]
    assert set(batch.positions) == {("u1", "m1", "NO")} and batch.positions[("u1", "m1", "NO")]["shares"] == "0.000000"
    assert batch.balances["u2"]["available"] == "10.000000"
