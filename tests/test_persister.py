"""The persister, driven in-process: every event type's rows, exactly-once, order, committed mark, trimming,
idle flush, and ``predmarket migrate``.

Each test has its own key prefix and its own database (``pg_settings``); the
persister runs as ``predmarket persister`` builds it (:func:`persister.worker.build`).
"""

from __future__ import annotations

import random
import uuid
from decimal import Decimal
from typing import Any, cast
from unittest import mock

import pytest
from alembic.script import ScriptDirectory
from predmarket.engine import pricing
from predmarket.engine.errors import ValidationError
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import HOUSE, Order
from predmarket.engine.settings import Settings
from predmarket.engine.state import check_invariants
from predmarket.engine.units import MICRO, decimal_from_micro
from predmarket.persister.events import event_order
from predmarket.persister.lag import group_lag
from predmarket.persister.stream import GROUP, Entry, parse_id, predecessor
from predmarket.record.database import alembic_config, drop_database
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.support.factories import MarketFactory, UserFactory
from tests.support.persister import (
    BUY,
    KEY_HASH,
    NO,
    SELL,
    YES,
    Scenario,
    catch_up,
    committed_mark,
    drain,
    entries,
    event_fields,
    expected_ledger_rows,
    ledger_breaches,
    newest_id,
    oldest_id,
    pending,
    pending_ids,
    persister,
    persister_env,
    pg_connection,
    pg_state,
    read_as,
    redis_state,
    row_counts,
    run_scenario,
    trade_seq,
)
from tests.support.processes import run_predmarket
from tests.support.waiting import wait_until


async def assert_stores_agree(engine: MarketEngine, url: str) -> None:
    """PostgreSQL's picture equals Redis', both satisfy the invariants, the ledger balances."""
    pg, live = pg_state(url), await redis_state(engine)
    assert pg == live
    assert check_invariants(pg) == []
    with pg_connection(url) as conn:
        assert ledger_breaches(conn, pg) == []


# --------------------------------------------------------------------------- 1. every event type

@pytest.fixture
async def landed(engine: MarketEngine, pg_settings: Settings) -> Scenario:
    """The full scenario, drained by one persister and flushed."""
    scenario = await run_scenario(engine)
    with persister(pg_settings) as p:
        catch_up(p)
    return scenario


async def test_catch_up_makes_postgres_equal_redis(landed: Scenario, engine: MarketEngine,
                                                   database_url: str) -> None:
    await assert_stores_agree(engine, database_url)
    state = pg_state(database_url)
    assert set(state.users) == {HOUSE, *landed.users.values()}
    assert set(state.markets) == set(landed.markets.values())


@pytest.mark.parametrize("batch", [1, 2000])
async def test_events_alone_write_statuses_balances_and_positions(engine: MarketEngine, pg_settings: Settings,
                                                                  database_url: str, batch: int) -> None:
    """Without any flush: lifecycle events set status and outcome (MarketResolved and MarketSettled in one
    batch or in two), balances and positions come per event too."""
    scenario = await run_scenario(engine)
    with persister(pg_settings, persister_batch=batch, idle_flush_s=600.0, max_dirty_s=600.0) as p:
        drain(p)
    with pg_connection(database_url) as conn:
        status = {r.market_id: (r.status, r.outcome) for r in conn.execute(text("SELECT * FROM markets"))}
        assert conn.execute(text("SELECT count(*) FROM market_snapshots")).scalar_one() == 0
    assert status == {scenario.markets["m1"]: ("SETTLED", "YES"), scenario.markets["m2"]: ("RESOLVED", "NO"),
                      scenario.markets["m3"]: ("CREATED", None)}
    pg, live = pg_state(database_url), await redis_state(engine)
    assert (pg.users, pg.positions, pg.deposits, pg.withdrawals) == (
        live.users, live.positions, live.deposits, live.withdrawals)


async def test_user_created_row_carries_the_key_hash(landed: Scenario, engine: MarketEngine,
                                                     database_url: str) -> None:
    with pg_connection(database_url) as conn:
        rows = {r.user_id: r for r in conn.execute(text("SELECT user_id, username, api_key_hash, created_at "
                                                        "FROM users"))}
    assert rows[landed.users["alice"]].api_key_hash == KEY_HASH
    assert rows[landed.users["alice"]].username == "alice"
    assert rows[landed.users["bob"]].api_key_hash is None
    assert rows[HOUSE].api_key_hash is None
    created_ms = int(cast(str, await engine.redis.hget(engine.keys.user(landed.users["alice"]), "created_ms")))
    assert int(rows[landed.users["alice"]].created_at.timestamp() * 1000) == created_ms


async def test_deposits_and_withdrawals_write_balanced_ledger_legs(landed: Scenario, database_url: str) -> None:
    with pg_connection(database_url) as conn:
        legs = conn.execute(text(
            "SELECT event_id, leg, kind, account, amount FROM ledger WHERE kind IN ('deposit', 'withdrawal') "
            "ORDER BY event_id, leg")).all()
    by_event: dict[str, list[Any]] = {}
    for row in legs:
        by_event.setdefault(row.event_id, []).append(row)
    deposits = [(rows[1].account, rows[1].amount) for rows in by_event.values() if rows[0].kind == "deposit"]
    withdrawals = [(rows[0].account, rows[0].amount) for rows in by_event.values() if rows[0].kind == "withdrawal"]
    assert sorted(deposits) == sorted((f"user:{u}", decimal_from_micro(a)) for u, a in landed.deposits)
    assert withdrawals == [(f"user:{u}", -decimal_from_micro(a)) for u, a in landed.withdrawals]
    for rows in by_event.values():
        assert [r.leg for r in rows] == [0, 1]
        assert sum(r.amount for r in rows) == 0
        assert "external" in {r.account for r in rows}
        debit, credit = rows
        assert debit.amount < 0 < credit.amount
        if rows[0].kind == "deposit":
            assert debit.account == "external"
        else:
            assert credit.account == "external"


async def test_market_rows_lifecycle_and_subsidy(landed: Scenario, engine: MarketEngine, database_url: str) -> None:
    m1, m2, m3 = (landed.markets[n] for n in ("m1", "m2", "m3"))
    with pg_connection(database_url) as conn:
        rows = {r.market_id: r for r in conn.execute(text(
            "SELECT market_id, name, status, outcome, liquidity_b, pool, settled_yes, settled_no FROM markets"))}
        subsidy = {r.market_id: r for r in conn.execute(text(
            "SELECT market_id, array_agg(account ORDER BY leg) AS accounts, array_agg(amount ORDER BY leg) AS amounts "
            "FROM ledger WHERE kind = 'subsidy' GROUP BY market_id"))}
    assert (rows[m1].status, rows[m1].outcome) == ("SETTLED", "YES")
    assert (rows[m2].status, rows[m2].outcome) == ("RESOLVED", "NO")
    assert (rows[m3].status, rows[m3].outcome) == ("CREATED", None)
    for name, b in (("m1", 100), ("m2", 50), ("m3", 20)):
        market_id = landed.markets[name]
        assert rows[market_id].name == f"Market {name}"
        assert rows[market_id].liquidity_b == b
        paid = decimal_from_micro(pricing.subsidy(b * MICRO))
        assert subsidy[market_id].accounts == ["user:house", f"pool:{market_id}"]
        assert subsidy[market_id].amounts == [-paid, paid]
    assert rows[m1].pool == 0
    assert rows[m2].pool == decimal_from_micro((await engine.markets.get(m2)).pool)


async def test_trades_rows_ledger_and_positions(landed: Scenario, engine: MarketEngine, database_url: str) -> None:
    with pg_connection(database_url) as conn:
        rows = {r.trade_id: r for r in conn.execute(text("SELECT * FROM trades"))}
        legs = conn.execute(text(
            "SELECT trade_id, account, amount FROM ledger WHERE kind = 'trade' ORDER BY trade_id, leg")).all()
        view = {(r.user_id, r.market_id, r.outcome): r.shares for r in conn.execute(text("SELECT * FROM positions"))}
        held = {(r.user_id, r.market_id, r.outcome): r.shares
                for r in conn.execute(text("SELECT * FROM position_state"))}
    assert sorted(rows) == [t.trade_id for t in landed.trades]
    d = decimal_from_micro
    for t in landed.trades:
        row = rows[t.trade_id]
        assert (row.user_id, row.market_id, row.side, row.outcome) == (t.user_id, t.market_id, t.side, t.outcome)
        assert (row.shares, row.cost, row.price) == (d(t.shares), d(t.cost), d(t.avg_price))
        assert (row.price_yes, row.price_no) == (d(t.price_yes), d(t.price_no))
        assert int(row.created_at.timestamp() * 1000) == t.created_ms
        mine = [(a, amount) for trade_id, a, amount in legs if trade_id == t.trade_id]
        user, pool = f"user:{t.user_id}", f"pool:{t.market_id}"
        assert mine == ([(user, -d(t.cost)), (pool, d(t.cost))] if t.side == BUY else
                        [(pool, -d(t.cost)), (user, d(t.cost))])
    # The positions view holds shares > 0 only; a holding sold back to zero stays as a zero state row.
    assert all(shares > 0 for shares in view.values())
    carol_m1 = (landed.users["carol"], landed.markets["m1"], "YES")
    assert held[carol_m1] == 0 and carol_m1 not in view
    m2 = landed.markets["m2"]
    assert view[(landed.users["alice"], m2, "NO")] == Decimal("3.500000")
    assert view[(landed.users["bob"], m2, "YES")] == 7
    live = await redis_state(engine)
    assert view == {k: d(v) for k, v in live.positions.items()}


async def test_payout_and_settlement_zero_every_position_of_the_market(
    landed: Scenario, engine: MarketEngine, database_url: str,
) -> None:
    m1 = landed.markets["m1"]
    alice, bob = landed.users["alice"], landed.users["bob"]
    payouts = await event_fields(engine, "Payout")
    settled = await event_fields(engine, "MarketSettled")
    assert [(p["user_id"], p["amount"]) for p in payouts] == [(alice, "6.000000")]
    with pg_connection(database_url) as conn:
        legs = conn.execute(text(
            "SELECT kind, account, amount FROM ledger WHERE kind IN ('payout', 'house_return') "
            "ORDER BY kind, leg")).all()
        m1_holdings = conn.execute(text(
            "SELECT user_id, outcome, shares FROM position_state WHERE market_id = :m ORDER BY user_id, outcome"),
            {"m": m1}).all()
        visible = conn.execute(text("SELECT count(*) FROM positions WHERE market_id = :m"), {"m": m1}).scalar_one()
    returned = Decimal(settled[0]["house_return"])
    assert returned > 0
    assert [tuple(r) for r in legs] == [
        ("house_return", f"pool:{m1}", -returned), ("house_return", "user:house", returned),
        ("payout", f"pool:{m1}", Decimal("-6")), ("payout", f"user:{alice}", Decimal("6")),
    ]
    # Winner, loser and the holder who sold out: all zero, none visible.
    assert {(u, o) for u, o, _ in m1_holdings} >= {(alice, "YES"), (bob, "NO")}
    assert all(shares == 0 for _, _, shares in m1_holdings)
    assert visible == 0


async def test_snapshot_per_flushed_market(landed: Scenario, engine: MarketEngine, database_url: str) -> None:
    with pg_connection(database_url) as conn:
        snaps = {r.market_id: r for r in conn.execute(text(
            "SELECT DISTINCT ON (market_id) * FROM market_snapshots ORDER BY market_id, version DESC"))}
    for name, market_id in landed.markets.items():
        h = await engine.redis.hgetall(engine.keys.market(market_id))
        snap = snaps[market_id]
        assert snap.version == int(h["version"]), name
        assert snap.last_event == h["last_event"]
        assert snap.last_trade_id == int(h.get("last_trade_id", 0))
        assert snap.yes_shares == decimal_from_micro(int(h["q_yes"]))
    assert await engine.redis.zcard(engine.keys.dirty) == 0


async def test_names_at_the_edges_land_and_the_engine_refuses_what_the_record_cannot_hold(
    engine: MarketEngine, pg_settings: Settings, database_url: str,
) -> None:
    long_name, fancy = "x" * 10_000, "Élection: «oui» | non? 🎲 \"quoted\" back\\slash {a,b}"
    user = await engine.accounts.create("ü" * 63 + "🎲")
    await engine.accounts.deposit(HOUSE, 100 * MICRO)
    ids = [(await engine.markets.create(name, MICRO)).market_id for name in (long_name, fancy)]
    length = await engine.redis.xlen(engine.keys.events)
    for bad in ("", "a\x00b", "x" * 10_001, "line\nbreak"):
        with pytest.raises(ValidationError):
            await engine.markets.create(bad, MICRO)
    assert await engine.redis.xlen(engine.keys.events) == length
    with persister(pg_settings) as p:
        catch_up(p)
        assert p.counters.dead == 0
    with pg_connection(database_url) as conn:
        names: dict[str, str] = {r.market_id: r.name for r in conn.execute(text("SELECT market_id, name FROM markets"))}
        username = conn.execute(text("SELECT username FROM users WHERE user_id = :u"), {"u": user.user_id}).scalar()
    assert names == dict(zip(ids, (long_name, fancy), strict=True))
    assert username == user.username
    await assert_stores_agree(engine, database_url)


# --------------------------------------------------------------------------- 2. duplicate delivery

async def test_duplicate_delivery_writes_nothing_twice(engine: MarketEngine, pg_settings: Settings,
                                                       database_url: str) -> None:
    await run_scenario(engine)
    stream: list[Entry] = list(await entries(engine))
    with persister(pg_settings) as p:
        p.process(stream)
        with pg_connection(database_url) as conn:
            once, state_once = row_counts(conn), pg_state(database_url)
        p.process(stream)
        p.process(stream[len(stream) // 2:])  # and an overlapping part of it
        with pg_connection(database_url) as conn:
            assert row_counts(conn) == once
        assert pg_state(database_url) == state_once
        catch_up(p)  # a third delivery, through the group this time, then the flush
    with pg_connection(database_url) as conn:
        counts = row_counts(conn)
    assert counts["trades"] == await trade_seq(engine)
    assert counts["ledger"] == expected_ledger_rows(await entries(engine))
    assert counts["users"] == len((await redis_state(engine)).users)
    assert {k: v for k, v in counts.items() if k not in ("markets", "market_snapshots")} == {
        k: v for k, v in once.items() if k not in ("markets", "market_snapshots")}
    await assert_stores_agree(engine, database_url)


# --------------------------------------------------------------------------- 3. out of order

@pytest.mark.parametrize("order", ["second-half-first", "reversed-chunks", "shuffled-chunks"])
async def test_batches_committed_out_of_order_converge(engine: MarketEngine, pg_settings: Settings,
                                                       database_url: str, order: str) -> None:
    await run_scenario(engine)
    total = await engine.redis.xlen(engine.keys.events)
    with persister(pg_settings) as p:
        p.stream.ensure_group()
        # Delivered through the group, so the committed mark covers them only once all are acknowledged.
        if order == "second-half-first":
            first = p.stream.read_new(total // 2, 1)
            second = p.stream.read_new(total, 1)
            batches = [second, first]
        else:
            batches = [p.stream.read_new(5, 1) for _ in range(0, total, 5)]
            if order == "reversed-chunks":
                batches.reverse()
            else:
                random.Random(3).shuffle(batches)
        assert sum(len(b) for b in batches) == total
        for batch in batches:
            p.process(batch)
        assert pending(p.stream.redis, p.stream.keys.events) == 0
        catch_up(p)
    await assert_stores_agree(engine, database_url)


@pytest.mark.parametrize("market_row_first", [True, False])
async def test_late_holding_of_a_settled_market_is_zeroed(engine: MarketEngine, pg_settings: Settings,
                                                          database_url: str, make_user: UserFactory,
                                                          make_market: MarketFactory, market_row_first: bool) -> None:
    """Trades committed after their market's settlement (a dead persister's claimed batch) leave no holding,
    whether the market's row was already written when the settlement was (``market_row_first``) or not."""
    alice, bob = await make_user(100), await make_user(100)
    market = await make_market(10)
    setup = await engine.redis.xlen(engine.keys.events)
    await engine.execute_trade(Order(alice.user_id, market.market_id, BUY, YES, shares=2 * MICRO))
    await engine.execute_trade(Order(bob.user_id, market.market_id, BUY, NO, shares=3 * MICRO))
    traded = await engine.redis.xlen(engine.keys.events)
    await engine.markets.resolve(market.market_id, YES)
    await engine.markets.settle(market.market_id)
    with persister(pg_settings) as p:
        p.stream.ensure_group()
        created = p.stream.read_new(setup, 1)
        trades = p.stream.read_new(traded - setup, 1)
        settled = p.stream.read_new(1000, 1)
        order = [created, settled, trades] if market_row_first else [settled, created + trades]
        for batch in order:
            p.process(batch)
        catch_up(p)
    await assert_stores_agree(engine, database_url)
    with pg_connection(database_url) as conn:
        holdings = conn.execute(text("SELECT shares FROM position_state WHERE market_id = :m"),
                                {"m": market.market_id}).scalars().all()
    assert sorted(holdings) == [0, 0]


# --------------------------------------------------------------------------- 8. committed mark

async def test_committed_mark_follows_acks_and_never_moves_back(
    engine: MarketEngine, pg_settings: Settings, make_user: UserFactory, make_market: MarketFactory,
) -> None:
    user = await make_user(100)
    market = await make_market(10)
    for _ in range(3):
        await engine.execute_trade(Order(user.user_id, market.market_id, BUY, YES, shares=MICRO))
    keys = engine.keys
    with persister(pg_settings) as p:
        assert p.stream.committed() is None  # no group yet
        drain(p)
        last = await newest_id(engine)
        assert p.stream.committed() == last
        assert await committed_mark(engine) == last
        older = await oldest_id(engine)
        assert p.stream.publish_committed(older) is False
        assert p.stream.publish_committed(last) is False
        assert await committed_mark(engine) == last

        # Another consumer holds one entry unacknowledged: the mark stays below it.
        await engine.execute_trade(Order(user.user_id, market.market_id, BUY, NO, shares=MICRO))
        await engine.execute_trade(Order(user.user_id, market.market_id, SELL, YES, shares=MICRO))
        held = read_as(p.stream.redis, keys.events, "other", 1)[0][0]
        drain(p)
        committed = p.stream.committed()
        assert committed is not None and committed == predecessor(held)
        assert parse_id(committed) < parse_id(held)
        mark = await committed_mark(engine)
        assert mark is not None and parse_id(last) <= parse_id(mark) < parse_id(held)

        p.stream.redis.xack(keys.events, GROUP, held)
        newest = await newest_id(engine)
        assert p.stream.committed() == newest
        assert p.stream.publish_committed(newest) is True
        assert await committed_mark(engine) == newest
        assert p.stream.publish_committed(committed) is False
        assert await committed_mark(engine) == newest


async def test_lag_when_entries_are_acknowledged_between_its_reads(
    engine: MarketEngine, pg_settings: Settings, make_user: UserFactory,
) -> None:
    """Another persister acknowledging between lag()'s group info and its XPENDING must not crash the stats."""
    await make_user(10)
    keys = engine.keys
    with persister(pg_settings) as p:
        p.stream.ensure_group()
        held = p.stream.read_new(1, 1)
        stale = group_lag(p.stream.redis, keys.events, GROUP)
        assert stale is not None and stale.pending == 1
        p.stream.ack([entry_id for entry_id, _ in held])
        seconds, _ = p.stream.redis.time()
        with mock.patch("predmarket.persister.stream.group_lag", return_value=stale):
            lag = p.stream.lag(seconds * 1000)
        assert lag.oldest_age_ms == 0
        assert lag.committed == held[0][0]
        drain(p)
        p.report()
        assert int(p.stream.redis.hget(keys.persister_stats, "lag_entries") or -1) == 0


# --------------------------------------------------------------------------- 9. stream retention

async def test_trim_keeps_the_newest_and_every_unacknowledged_entry(
    engine: MarketEngine, pg_settings: Settings, make_user: UserFactory, make_market: MarketFactory,
) -> None:
    user = await make_user(1000)
    market = await make_market(10)
    for _ in range(30):
        await engine.execute_trade(Order(user.user_id, market.market_id, BUY, YES, shares=MICRO))
    keys = engine.keys
    with persister(pg_settings, persister_batch=20) as p:
        assert p.step() == 20
        held = read_as(p.stream.redis, keys.events, "other", 5)
        held_ids = [entry_id for entry_id, _ in held]
        drain(p)
        committed = p.stream.committed()
        assert committed is not None and parse_id(committed) < parse_id(held_ids[0])
        before = await engine.redis.xlen(keys.events)
        assert before > 40
        removed = p.stream.trim(committed, keep=10)
        ids = [entry_id for entry_id, _ in await entries(engine)]
        # Only the 20 entries below the one still pending go, although 10 would be enough to keep.
        assert removed == 20 and len(ids) == before - 20
        assert ids[:5] == held_ids
        assert set(pending_ids(p.stream.redis, keys.events)) == set(held_ids)
        assert p.stream.trim(committed, keep=10) == 0

        # Acknowledged at last: now only the newest `keep` stay.
        p.stream.redis.xack(keys.events, GROUP, *held_ids)
        assert p.stream.trim(p.stream.committed() or "", keep=10) == before - 20 - 10
        assert [entry_id for entry_id, _ in await entries(engine)] == ids[-10:]
        assert await engine.redis.xlen(keys.events) == 10


async def test_worker_trims_to_stream_keep(engine: MarketEngine, pg_settings: Settings, make_user: UserFactory,
                                           make_market: MarketFactory) -> None:
    user = await make_user(1000)
    market = await make_market(10)
    for _ in range(20):
        await engine.execute_trade(Order(user.user_id, market.market_id, BUY, YES, shares=MICRO))
    keys = engine.keys
    with persister(pg_settings, stream_keep=10, trim_every_s=0.0) as p:
        drain(p)  # its first round of chores trims what it just committed
        assert await engine.redis.xlen(keys.events) == 10
        newest = await newest_id(engine)
        assert await oldest_id(engine) != newest
        assert await committed_mark(engine) == newest


# --------------------------------------------------------------------------- 10. idle flush

def market_rows(url: str, market_id: str) -> tuple[Any, int]:
    with pg_connection(url) as conn:
        row = conn.execute(text("SELECT * FROM markets WHERE market_id = :m"), {"m": market_id}).one()
        snaps = conn.execute(text("SELECT count(*) FROM market_snapshots WHERE market_id = :m"),
                             {"m": market_id}).scalar_one()
    return row, snaps


async def test_idle_flush_waits_for_idleness(engine: MarketEngine, pg_settings: Settings, database_url: str,
                                             make_user: UserFactory, make_market: MarketFactory) -> None:
    user = await make_user(100)
    market = await make_market(10)
    trade = await engine.execute_trade(Order(user.user_id, market.market_id, BUY, YES, shares=2 * MICRO))
    with persister(pg_settings, idle_flush_s=600.0, max_dirty_s=600.0) as p:
        drain(p)
        assert p.flusher.flush(p.stream.committed()) == 0
    row, snaps = market_rows(database_url, market.market_id)
    assert (row.status, row.yes_shares, row.last_trade_id, snaps) == ("OPEN", 0, 0, 0)  # status: per event
    assert await engine.redis.zscore(engine.keys.dirty, market.market_id) is not None
    with persister(pg_settings, idle_flush_s=0) as p:
        catch_up(p)
    row, snaps = market_rows(database_url, market.market_id)
    assert (row.status, row.yes_shares, row.last_trade_id, snaps) == ("OPEN", 2, trade.trade_id, 1)
    assert await engine.redis.zscore(engine.keys.dirty, market.market_id) is None


async def test_max_dirty_age_flushes_a_market_that_keeps_trading(
    engine: MarketEngine, pg_settings: Settings, database_url: str, make_user: UserFactory,
    make_market: MarketFactory,
) -> None:
    user = await make_user(1000)
    market = await make_market(10)
    with persister(pg_settings, idle_flush_s=600.0, max_dirty_s=0.3) as p:
        await engine.execute_trade(Order(user.user_id, market.market_id, BUY, YES, shares=MICRO))
        drain(p)
        assert p.flusher.flush(p.stream.committed()) == 0  # first seen dirty now
        trades = []
        for _ in range(5):  # it keeps trading, never idle for 10 minutes
            trades.append(await engine.execute_trade(Order(user.user_id, market.market_id, BUY, NO, shares=MICRO)))
            drain(p)

        def flushed() -> bool:
            drain(p)
            return p.flusher.flush(p.stream.committed()) == 1

        wait_until(flushed, 10, "the max-dirty flush")
    row, snaps = market_rows(database_url, market.market_id)
    assert (row.yes_shares, row.no_shares, row.last_trade_id, snaps) == (1, 5, trades[-1].trade_id, 1)
    with pg_connection(database_url) as conn:
        snap = conn.execute(text("SELECT * FROM market_snapshots WHERE market_id = :m"),
                            {"m": market.market_id}).one()
    assert snap.last_trade_id == trades[-1].trade_id
    assert snap.last_event == trades[-1].event_id


async def test_market_not_flushed_before_its_last_event_is_committed(
    engine: MarketEngine, pg_settings: Settings, database_url: str, make_user: UserFactory,
    make_market: MarketFactory,
) -> None:
    user = await make_user(100)
    market = await make_market(10)
    keys = engine.keys
    with persister(pg_settings) as p:
        catch_up(p)
        assert (market_rows(database_url, market.market_id))[1] == 1
        trade = await engine.execute_trade(Order(user.user_id, market.market_id, BUY, YES, shares=MICRO))
        # Another (slow) persister holds the trade's events, not yet committed.
        held = read_as(p.stream.redis, keys.events, "slow", 10)
        assert trade.event_id in {entry_id for entry_id, _ in held}
        drain(p)
        assert p.flusher.flush(p.stream.committed()) == 0
        row, snaps = market_rows(database_url, market.market_id)
        assert (row.yes_shares, snaps) == (0, 1)
        assert await engine.redis.zscore(keys.dirty, market.market_id) is not None
        # The slow one commits: now it is flushed, with the trade included.
        p.process(list(held))
        assert p.flusher.flush(p.stream.committed()) == 1
    row, snaps = market_rows(database_url, market.market_id)
    assert (row.yes_shares, row.last_trade_id, snaps) == (1, trade.trade_id, 2)


def test_event_order_orders_like_stream_ids() -> None:
    ids = ["1-0", "1-1", "1-1048575", "2-0", "1700000000000-5", "1700000000001-0"]
    assert [event_order(i) for i in ids] == sorted(event_order(i) for i in ids)
    assert max(event_order(i) for i in ids) < 2**63


# --------------------------------------------------------------------------- 12. migrations

@pytest.mark.slow
def test_migrate_creates_a_new_database_and_runs_twice(pg_settings: Settings) -> None:
    url = make_url(pg_settings.database_url).set(database=f"pmtest_new_{uuid.uuid4().hex[:10]}")
    new_url = url.render_as_string(hide_password=False)
    env = persister_env(pg_settings, PM_DATABASE_URL=new_url)
    try:
        for expected in ("database created and migrated", "database migrated"):
            done = run_predmarket("migrate", env=env, timeout_s=60)
            assert done.returncode == 0, done.stderr
            assert done.stdout.startswith(expected), done.stdout
        with pg_connection(new_url) as conn:
            tables = set(conn.execute(text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")).scalars())
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        assert {"users", "balances", "markets", "market_snapshots", "position_state", "positions", "trades",
                "ledger"} <= tables
        head = ScriptDirectory.from_config(alembic_config(new_url)).get_current_head()
        assert version == head and head is not None
    finally:
        drop_database(new_url)
    with pg_connection(pg_settings.database_url) as conn:
        exists = conn.execute(text("SELECT count(*) FROM pg_database WHERE datname = :n"),
                              {"n": url.database}).scalar_one()
    assert exists == 0
