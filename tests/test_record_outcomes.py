"""The record of markets with 2 to 16 outcome labels (issue 15 item 2): migration 0010, the persister's
rows, recovery, replay and the audit.

A database made before the change (revision 0009, YES/NO markets only) upgrades in place with every
value kept; the persister writes a labelled market's events (docs: /work/notes/nout.md's formats) as
``outcomes``/``totals``/``settled``/``prices`` JSON; engine-made 3- and 16-outcome markets, traded,
resolved and settled, come out of PostgreSQL as Redis holds them, ``recover`` rebuilds them into an
empty prefix in engine/labels.py's layout, and the audit passes.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from decimal import Decimal
from typing import Any

import pytest
import redis as sync_redis
from alembic import command
from predmarket.engine import pricing_n
from predmarket.engine.keys import Keys
from predmarket.engine.labels import decimal_map
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import HOUSE, Order, Side, Trade
from predmarket.engine.resolutions import Resolution
from predmarket.engine.settings import Settings
from predmarket.engine.state import MarketRecord, State, check_invariants, read_redis_state
from predmarket.engine.units import format_micro
from predmarket.persister.audit import AuditReport, audit
from predmarket.persister.events import Batch, MalformedEvent
from predmarket.persister.recover import recover
from predmarket.persister.writer import write_batch
from predmarket.record.database import alembic_config
from predmarket.record.loader import market_fields
from predmarket.record.schema import metadata
from sqlalchemy import create_engine, text

from predmarket.commands.stores import stores
from tests.support.factories import MarketFactory, UserFactory
from tests.support.faults import diff, full_snapshot
from tests.support.persister import catch_up, drain, generate_trades, persister, pg_connection, pg_state, run_scenario
from tests.support.redis_data import delete_prefix, hash_all
from tests.support.services import REAL_REDIS

MICRO = 1_000_000
TS = "1796000000000"
B = 10 * MICRO
LABELS = ("A", "B", "C")


def dec_map(values: list[int], labels: tuple[str, ...] = LABELS) -> str:
    return decimal_map(labels, [format_micro(v) for v in values])


def labelled_entries(market_id: str = "m3") -> list[tuple[str, dict[str, str]]]:
    """A 3-label market's life as its scripts write it (nout.md's event formats): created, opened, a
    buy of B, resolved B, paid, settled."""
    subsidy = pricing_n.subsidy_n(B, 3)
    shares = 2 * MICRO
    cost = pricing_n.buy_cost_n([0, 0, 0], 1, shares, B)
    after = [0, shares, 0]
    prices = pricing_n.prices_n(after, B)
    pool = subsidy + cost
    f = format_micro
    base = {"ts": TS, "market_id": market_id}
    return [(f"{TS}-{i}", fields) for i, fields in enumerate([
        {"type": "UserCreated", "ts": TS, "user_id": "u1", "username": "alice"},
        {"type": "Deposit", "ts": TS, "user_id": "u1", "amount": "100.000000", "available": "100.000000"},
        {"type": "Deposit", "ts": TS, "user_id": "house", "amount": "50.000000", "available": "50.000000"},
        {**base, "type": "MarketCreated", "name": "Who wins?", "liquidity_b": f(B), "pool": f(subsidy),
         "available": f(50 * MICRO - subsidy), "outcomes": '["A","B","C"]'},
        {**base, "type": "MarketOpened"},
        {**base, "type": "TradeExecuted", "trade_id": "1", "user_id": "u1", "side": "BUY", "outcome": "B",
         "shares": f(shares), "cost": f(cost), "prices": dec_map(prices), "outstanding": dec_map(after),
         "pool": f(pool), "available": f(100 * MICRO - cost), "position": f(shares), "net_cost": f(cost),
         "avg_price": f(cost // 2)},
        {**base, "type": "PriceUpdated", "prices": dec_map(prices), "shares": dec_map(after)},
        {**base, "type": "MarketResolved", "outcome": "B"},
        {**base, "type": "Payout", "user_id": "u1", "shares": f(shares), "amount": f(shares),
         "available": f(100 * MICRO - cost + shares), "pool": f(pool - shares), "outcome": "B"},
        {**base, "type": "MarketSettled", "payouts_total": f(shares), "house_return": f(pool - shares),
         "available": f(50 * MICRO - subsidy + pool - shares)},
    ])]


# --------------------------------------------------------------------------- the persister's reading

def test_labelled_events_fold_into_rows_by_label() -> None:
    batch = Batch()
    for entry_id, fields in labelled_entries():
        batch.add(entry_id, fields)
    market = batch.new_markets[0]
    assert (market["outcomes"], market["totals"], market["settled"]) == (
        '["A","B","C"]', '{"A":"0.000000","B":"0.000000","C":"0.000000"}',
        '{"A":"0.000000","B":"0.000000","C":"0.000000"}')
    assert [market[c] for c in ("yes_shares", "no_shares", "price_yes", "price_no")] == [None] * 4
    trade = batch.trades[0]
    assert trade["outcome"] == "B" and trade["price_yes"] is None and trade["yes_shares"] is None
    assert json.loads(trade["outstanding"]) == {"A": "0.000000", "B": "2.000000", "C": "0.000000"}
    assert list(json.loads(trade["prices"])) == list(LABELS)
    assert batch.positions[("u1", "m3", "B")]["shares"] == "0.000000"  # paid: zero, its net cost kept
    assert batch.positions[("u1", "m3", "B")]["net_cost"] == trade["cost"]
    assert batch.market_status["m3"]["status"] == "SETTLED" and batch.market_status["m3"]["outcome"] == "B"


def test_a_yes_no_trade_row_is_as_before() -> None:
    batch = Batch()
    batch.add(f"{TS}-0", {
        "type": "TradeExecuted", "ts": TS, "trade_id": "7", "market_id": "m2", "user_id": "u1", "side": "BUY",
        "outcome": "YES", "shares": "1.000000", "cost": "0.500000", "price_yes": "0.510000",
        "price_no": "0.490000", "yes_shares": "1.000000", "no_shares": "0.000000", "pool": "7.431472",
        "available": "1.000000", "position": "1.000000", "avg_price": "0.500000", "net_cost": "0.500000"})
    row = batch.trades[0]
    assert (row["price_yes"], row["price_no"], row["yes_shares"], row["no_shares"]) == (
        "0.510000", "0.490000", "1.000000", "0.000000")
    assert row["prices"] is None and row["outstanding"] is None


def _trade(**changes: str | None) -> dict[str, str]:
    fields = dict(labelled_entries()[5][1])
    for name, value in changes.items():
        if value is None:
            fields.pop(name)
        else:
            fields[name] = value
    return fields


CREATED = labelled_entries()[3][1]


@pytest.mark.parametrize("fields", [
    {**CREATED, "outcomes": '["A"]'},
    {**CREATED, "outcomes": '["A","A"]'},
    {**CREATED, "outcomes": '["A","CANCEL"]'},
    {**CREATED, "outcomes": '["A","B c"]'},
    {**CREATED, "outcomes": '{"A":1}'},
    {**CREATED, "outcomes": '[' + ",".join(f'"L{i}"' for i in range(17)) + ']'},
    _trade(outcome="D"),  # not among its market's prices
    _trade(prices=None),  # a label other than YES/NO without prices
    _trade(outstanding='{"A":"0.000000","C":"0.000000","B":"2.000000"}'),  # labels in another order
    _trade(prices='{"A":"0.3","B":"0.400000","C":"0.300000"}'),
    _trade(prices='{"A":"0.300000"}'),
    {"type": "PriceUpdated", "ts": TS, "market_id": "m3", "prices": '{"A":"0.500000","B":"0.500000"}',
     "shares": '{"A":"0.000000"}'},
], ids=lambda f: f"{f['type']}-{len(f)}-{str(f.get('outcomes', f.get('prices', '')))[:12]}")
def test_a_malformed_labelled_entry_adds_nothing(fields: dict[str, str]) -> None:
    batch = Batch()
    with pytest.raises(MalformedEvent):
        batch.add(f"{TS}-0", fields)
    assert batch == Batch()


def _rows(conn: Any, sql: str) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.execute(text(sql))]


def test_the_writer_records_a_labelled_market_by_label(database_url: str) -> None:
    batch = Batch()
    for entry_id, fields in labelled_entries():
        batch.add(entry_id, fields)
    pg = create_engine(database_url)
    try:
        with pg.begin() as conn:
            write_batch(conn, batch, {})
        with pg.begin() as conn:  # delivered twice: nothing written twice
            write_batch(conn, batch, {})
        with pg.connect() as conn:
            market = _rows(conn, "SELECT * FROM markets")[0]
            trade = _rows(conn, "SELECT * FROM trades")[0]
            positions = _rows(conn, "SELECT user_id, market_id, outcome, shares, net_cost FROM position_state")
            candles = _rows(conn, "SELECT outcome, interval_s, close, trades FROM candles ORDER BY 1, 2")
            unbalanced = conn.execute(text("SELECT count(*) FROM (SELECT event_id FROM ledger GROUP BY event_id "
                                           "HAVING SUM(amount) <> 0) x")).scalar_one()
    finally:
        pg.dispose()
    assert (market["status"], market["outcome"], market["outcomes"]) == ("SETTLED", "B", '["A","B","C"]')
    assert market["yes_shares"] is None and market["price_yes"] is None and market["settled_yes"] == 0
    assert (trade["outcome"], trade["price_yes"], trade["no_shares"]) == ("B", None, None)
    assert json.loads(trade["prices"]) == json.loads(labelled_entries()[5][1]["prices"])
    assert positions == [{"user_id": "u1", "market_id": "m3", "outcome": "B", "shares": 0,
                          "net_cost": Decimal(trade["cost"])}]
    prices = json.loads(trade["prices"])
    assert {(c["outcome"], c["close"]) for c in candles} == {(label, Decimal(p)) for label, p in prices.items()}
    assert len(candles) == 3 * 4 and all(c["trades"] == 1 for c in candles)
    assert unbalanced == 0


# --------------------------------------------------------------------------- migration 0010

def _table_rows(url: str, leave_out: dict[str, tuple[str, ...]] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Every table's rows (the positions view too) without the ``leave_out`` columns, in a fixed order."""
    out: dict[str, list[dict[str, Any]]] = {}
    with pg_connection(url) as conn:
        for name in [*(table.name for table in metadata.sorted_tables), "positions"]:
            dropped = (leave_out or {}).get(name, ())
            rows = [{k: v for k, v in row.items() if k not in dropped} for row in _rows(conn, f"SELECT * FROM {name}")]
            out[name] = sorted(rows, key=lambda row: repr(list(row.values())))
    return out


def _new_columns_null(url: str) -> bool:
    with pg_connection(url) as conn:
        return all(conn.execute(text(f"SELECT count(*) FROM {table} WHERE {column} IS NOT NULL")).scalar_one() == 0
                   for table, columns in NEW_COLUMNS.items() for column in columns)


def _revision(url: str) -> str:
    with pg_connection(url) as conn:
        return str(conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one())


NEW_COLUMNS = {"markets": ("outcomes", "totals", "settled"), "market_snapshots": ("outcomes", "totals", "settled"),
               "trades": ("prices", "outstanding")}
#: migration 0011's: every existing row is shard 0
SHARD_COLUMNS = {table: ("shard",) for table in ("users", "markets", "trades", "ledger", "balances")}


@pytest.mark.skipif(not REAL_REDIS, reason="recover and audit need a real Redis")
async def test_a_yes_no_record_made_at_0009_upgrades_in_place_then_recovers_and_audits(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory, pg_settings: Settings,
) -> None:
    await run_scenario(engine)  # every event type: settled, resolved and created markets, a withdrawal
    users = [(await make_user(10_000)).user_id for _ in range(4)]
    markets = [(await make_market(100)).market_id for _ in range(2)]
    await generate_trades(engine, users, markets, 60)
    url = pg_settings.database_url
    with persister(pg_settings) as p:
        catch_up(p)
    config = alembic_config(url)
    await asyncio.to_thread(command.downgrade, config, "0009")  # the record as the release before wrote it
    assert _revision(url) == "0009"
    before = _table_rows(url)
    assert before["trades"] and before["market_snapshots"] and "outcomes" not in before["markets"][0]

    await asyncio.to_thread(command.upgrade, config, "head")

    after = _table_rows(url, leave_out={t: NEW_COLUMNS.get(t, ()) + SHARD_COLUMNS.get(t, ())
                                        for t in {*NEW_COLUMNS, *SHARD_COLUMNS}})
    assert after == before
    assert _new_columns_null(url)
    with pg_connection(url) as conn:
        assert all(conn.execute(text(f"SELECT count(*) FROM {table} WHERE shard <> 0")).scalar_one() == 0
                   for table in SHARD_COLUMNS)
    assert pg_state(url) == await read_redis_state(engine.redis, engine.keys)
    await assert_recovers_and_audits(engine, pg_settings)


# --------------------------------------------------------------------------- recover and audit

def _recover_into(settings: Settings, prefix: str) -> None:
    with stores(settings) as (client, pg):
        recover(pg, client, Keys(prefix))


def _audit(settings: Settings) -> AuditReport:
    with persister(settings) as p:
        catch_up(p)
    with stores(settings) as (client, pg):
        return audit(pg, client, settings.redis_url, Keys(settings.key_prefix), wait_s=10.0)


async def assert_recovers_and_audits(engine: MarketEngine, settings: Settings) -> None:
    """PostgreSQL (caught up) equals Redis; ``recover`` into an empty prefix gives back the same state;
    the audit passes; both states satisfy invariants 1-4."""
    with persister(settings) as p:
        await asyncio.to_thread(catch_up, p)
    live = await read_redis_state(engine.redis, engine.keys)
    assert pg_state(settings.database_url) == live
    assert check_invariants(live) == []
    prefix = f"pmtest-{uuid.uuid4().hex[:12]}"
    try:
        await asyncio.to_thread(_recover_into, settings, prefix)
        rebuilt = await read_redis_state(engine.redis, Keys(prefix))
    finally:
        delete_prefix(prefix)
    assert rebuilt == live
    report = await asyncio.to_thread(_audit, settings)
    assert report.ok, "\n".join(map(str, report.breaches))


# --------------------------------------------------------------------------- markets traded through the engine

THREE = ("A", "B", "C")
SIXTEEN = (*(f"L{i}" for i in range(15)), "YES")  # YES among other labels keeps its q_yes field


async def labelled_market(engine: MarketEngine, labels: tuple[str, ...], b_units: int = 50) -> str:
    await engine.accounts.deposit(HOUSE, 3 * b_units * MICRO)  # ceil(b ln 16) < 3 b
    market = await engine.markets.create(f"{len(labels)} labels", b_units * MICRO, outcomes=list(labels))
    await engine.markets.open(market.market_id)
    return market.market_id


async def trade_labels(engine: MarketEngine, users: list[str], market_id: str, labels: tuple[str, ...],
                       count: int, seed: int) -> list[Trade]:
    """``count`` trades: buys by shares and by amount, and sells of what the trader holds."""
    rng = random.Random(seed)
    held: dict[tuple[str, str], int] = {}
    done: list[Trade] = []
    for i in range(count):
        user, label = rng.choice(users), rng.choice(labels)
        mine = held.get((user, label), 0)
        if mine and rng.random() < 0.3:
            order = Order(user, market_id, Side.SELL, label, shares=rng.randint(1, mine))
        elif i % 7 == 3:
            order = Order(user, market_id, Side.BUY, label, amount=rng.randint(1, 20) * MICRO)
        else:
            order = Order(user, market_id, Side.BUY, label, shares=rng.randint(1, 30) * MICRO // 4)
        trade = await engine.execute_trade(order)
        held[(user, label)] = mine + (trade.shares if order.side is Side.BUY else -trade.shares)
        done.append(trade)
    return done


def keyed(user_id: str, market_id: str, label: str, shares: int, key: str) -> Order:
    """An order carrying an Idempotency-Key (its first answer is restored by recover)."""
    return Order(user_id, market_id, Side.BUY, label, shares=shares, idempotency_key=key,
                 fingerprint=f"{market_id}|BUY|{label}|{shares}|None|None|None")


def _record_row(url: str, market_id: str) -> dict[str, Any]:
    with pg_connection(url) as conn:
        return _rows(conn, f"SELECT * FROM markets WHERE market_id = '{market_id}'")[0]


@pytest.mark.skipif(not REAL_REDIS, reason="recover and audit need a real Redis")
async def test_three_and_sixteen_label_markets_are_recorded_recovered_replayed_and_audited(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory, pg_settings: Settings,
    redis_client: sync_redis.Redis,
) -> None:
    users = [(await make_user(100_000)).user_id for _ in range(5)]
    three, sixteen = await labelled_market(engine, THREE), await labelled_market(engine, SIXTEEN)
    yes_no = (await make_market(100)).market_id
    await trade_labels(engine, users, three, THREE, 40, seed=3)
    await trade_labels(engine, users, sixteen, SIXTEEN, 60, seed=16)
    await trade_labels(engine, users, yes_no, ("YES", "NO"), 20, seed=2)
    first = await engine.execute_trade(keyed(users[0], three, "C", 3 * MICRO, "k-three"))
    await engine.execute_trade(keyed(users[1], sixteen, "L7", 5 * MICRO, "k-sixteen"))

    await assert_recovers_and_audits(engine, pg_settings)

    live = await read_redis_state(engine.redis, engine.keys)
    url = pg_settings.database_url
    for market_id, labels in ((three, THREE), (sixteen, SIXTEEN)):
        record = live.markets[market_id]
        assert record.outcomes == labels and sum(record.totals) > 0
        row = _record_row(url, market_id)
        assert json.loads(row["outcomes"]) == list(labels) and row["yes_shares"] is None
        assert json.loads(row["totals"]) == dict(zip(labels, map(format_micro, record.totals), strict=True))
        with pg_connection(url) as conn:
            candle_labels = {r[0] for r in conn.execute(text(
                "SELECT DISTINCT outcome FROM candles WHERE market_id = :m"), {"m": market_id})}
        assert candle_labels == set(labels)
    assert _record_row(url, yes_no)["outcomes"] is None

    # The whole Redis state, rebuilt into an empty prefix: every key and field as the engine wrote it
    # (engine/labels.py's layout), the stored first answers included.
    prefix = f"pmtest-{uuid.uuid4().hex[:12]}"
    try:
        await asyncio.to_thread(_recover_into, pg_settings, prefix)
        rebuilt = full_snapshot(redis_client, prefix)
    finally:
        delete_prefix(prefix)
    original = full_snapshot(redis_client, pg_settings.key_prefix)
    assert rebuilt == original, diff(original, rebuilt)
    market_hash = original["{m:" + three + "}"]
    assert market_hash["outcomes"] == "A,B,C" and {"q:A", "q:B", "q:C", "settled:A"} <= set(market_hash)

    # A keyed retry gets its first answer; trades after the last snapshot are replayed from the trades.
    again = await engine.execute_trade(keyed(users[0], three, "C", 3 * MICRO, "k-three"))
    assert again.trade_id == first.trade_id  # the stored first answer
    with persister(pg_settings) as p:
        await asyncio.to_thread(catch_up, p)  # its first round flushes; later drains do not
        await trade_labels(engine, users, three, THREE, 10, seed=33)
        await trade_labels(engine, users, sixteen, SIXTEEN, 10, seed=61)
        late = await labelled_market(engine, ("X", "Y", "Z", "W"))  # born after the flush: no snapshot
        await trade_labels(engine, users, late, ("X", "Y", "Z", "W"), 10, seed=4)
        await asyncio.to_thread(drain, p)  # committed, not flushed: the snapshots are stale
    with pg_connection(url) as conn:
        assert conn.execute(text("SELECT count(*) FROM market_snapshots WHERE market_id = :m"),
                            {"m": late}).scalar_one() == 0
    prefix = f"pmtest-{uuid.uuid4().hex[:12]}"
    try:
        await asyncio.to_thread(_recover_into, pg_settings, prefix)
        rebuilt_state = await read_redis_state(engine.redis, Keys(prefix))
    finally:
        delete_prefix(prefix)
    assert rebuilt_state == await read_redis_state(engine.redis, engine.keys)
    assert pg_state(url).markets[sixteen] != rebuilt_state.markets[sixteen]  # the record's row was stale
    await assert_recovers_and_audits(engine, pg_settings)


async def _audit_breaches(settings: Settings) -> list[str]:
    report = await asyncio.to_thread(_audit, settings)
    return [str(breach) for breach in report.breaches]


def _execute(url: str, sql: str, **params: Any) -> None:
    with pg_connection(url) as conn:
        conn.execute(text(sql), params)
        conn.commit()


@pytest.mark.skipif(not REAL_REDIS, reason="the audit needs a real Redis")
async def test_the_audit_names_a_labelled_market_s_breaches(
    engine: MarketEngine, make_user: UserFactory, pg_settings: Settings,
) -> None:
    users = [(await make_user(10_000)).user_id for _ in range(3)]
    market_id = await labelled_market(engine, THREE)
    done = await trade_labels(engine, users, market_id, THREE, 12, seed=5)
    await assert_recovers_and_audits(engine, pg_settings)
    url, key = pg_settings.database_url, engine.keys.market(market_id)

    # Redis: a label's outstanding total no longer the sum of its holdings.
    await engine.redis.hincrby(key, "q:B", 1)
    found = await _audit_breaches(pg_settings)
    assert any(b.startswith(f"redis: shares [market {market_id} B]") for b in found), found
    assert any(b.startswith(f"redis vs postgres [market {market_id}]") for b in found), found
    await engine.redis.hincrby(key, "q:B", -1)

    # PostgreSQL: a trade's recorded outstanding shares, and its cost, against the replay.
    victim = done[len(done) // 2]
    _execute(url, "UPDATE trades SET outstanding = replace(outstanding, '\"C\":\"', '\"C\":\"1') "
                  "WHERE trade_id = :t", t=victim.trade_id)
    _execute(url, "UPDATE trades SET cost = cost + 0.000001 WHERE trade_id = :t", t=victim.trade_id)
    found = await _audit_breaches(pg_settings)
    assert any(b.startswith(f"postgres: outstanding after trade [trade {victim.trade_id} ") for b in found), found
    assert any(b.startswith(f"postgres: trade cost [trade {victim.trade_id} ") for b in found), found

    # A pool below a label's outstanding shares (invariant 4), as check_invariants sees it in either store.
    record = (await read_redis_state(engine.redis, engine.keys)).markets[market_id]
    pool = max(record.totals) - 1
    short = MarketRecord.of("OPEN", "", record.b, record.outcomes, record.totals, pool, record.settled)
    held = {(users[0], market_id, label): q for label, q in zip(THREE, record.totals, strict=True) if q}
    breaches = check_invariants(State(markets={market_id: short}, positions=held, deposits=pool))
    assert [(b.invariant, b.subject) for b in breaches] == [("solvency", f"market {market_id}")]


async def _holders(engine: MarketEngine, market_id: str, labels: tuple[str, ...], users: list[str]) -> None:
    """Holders of several labels each, one who sold out at a loss, one who sold part."""
    for i, user in enumerate(users):
        for label in labels[i % len(labels):][:3]:
            await engine.execute_trade(Order(user, market_id, Side.BUY, label, shares=(2 + i) * MICRO))
    await engine.execute_trade(Order(users[0], market_id, Side.SELL, labels[0], shares=2 * MICRO))
    await engine.execute_trade(Order(users[1], market_id, Side.SELL, labels[1], shares=MICRO))


@pytest.mark.skipif(not REAL_REDIS, reason="recover and audit need a real Redis")
@pytest.mark.parametrize("kind", ["OUTCOME", "PROB", "CANCEL"])
async def test_a_labelled_market_resolved_and_settled_is_recorded_recovered_and_audited(
    engine: MarketEngine, make_user: UserFactory, pg_settings: Settings, kind: str,
) -> None:
    labels = THREE if kind == "OUTCOME" else SIXTEEN
    users = [(await make_user(10_000)).user_id for _ in range(6)]
    market_id = await labelled_market(engine, labels)
    await _holders(engine, market_id, labels, users)
    if kind == "OUTCOME":
        resolution = Resolution.of_outcome("B")
    elif kind == "PROB":
        weights = [MICRO // len(labels)] * len(labels)
        weights[3] += MICRO - sum(weights)
        resolution = Resolution.prob(zip(labels, weights, strict=True))
    else:
        resolution = Resolution.cancel()
    await engine.markets.resolve(market_id, resolution)
    await assert_recovers_and_audits(engine, pg_settings)  # RESOLVED, nothing paid yet

    settlement = await engine.markets.settle(market_id)
    assert settlement.payouts_total > 0

    await assert_recovers_and_audits(engine, pg_settings)
    live = (await read_redis_state(engine.redis, engine.keys)).markets[market_id]
    assert live.status == "SETTLED" and live.outcome == resolution.outcome
    assert live.settled == live.totals  # every share settled, per label
    row = _record_row(pg_settings.database_url, market_id)
    assert (row["status"], row["outcome"]) == ("SETTLED", resolution.outcome)
    assert json.loads(row["settled"]) == dict(zip(labels, map(format_micro, live.settled), strict=True))
    with pg_connection(pg_settings.database_url) as conn:
        held = conn.execute(text("SELECT count(*) FROM positions WHERE market_id = :m"), {"m": market_id})
        paid = conn.execute(text("SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE market_id = :m "
                                 "AND kind IN ('payout', 'refund') AND leg = 1"), {"m": market_id})
        assert held.scalar_one() == 0 and paid.scalar_one() == Decimal(format_micro(settlement.payouts_total))
        settled_row = conn.execute(text("SELECT * FROM markets WHERE market_id = :m"), {"m": market_id}).one()
    # The settled market as the directory rebuild keeps it archived (record/loader.py): the hash it left.
    kept = {name: str(value) for name, value in market_fields(settled_row).items() if name != "last_event"}
    fields = await hash_all(engine.redis, engine.keys.market(market_id))
    assert kept == {name: fields[name] for name in kept}
    assert {name for name in fields if name.startswith(("q", "settled"))} <= set(kept)
