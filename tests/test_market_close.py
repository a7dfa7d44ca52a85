"""Close times and early closes: OPEN -> CLOSED, decided by Redis' clock, exact under load.

A market created with a close time trades until Redis' clock reaches it; the first trade, quote or
read after that (or the persister's closer, for an idle market) writes the one ``MarketClosed``
event, which names the last trade before the close. No trade executes at or after the close time,
not even one queued in a batch before it: every executed trade's time (the script's clock) lies
before it. The admin may close an OPEN market early. The record (PostgreSQL) and ``recover`` keep
the close time, the closing moment and the closing index.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest
import redis as sync_redis
from predmarket.engine.errors import InvalidState, MarketNotOpen, Unavailable, ValidationError
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import HOUSE, MarketStatus, Order, Outcome, Side
from predmarket.engine.scripts import SyncScripts
from predmarket.engine.settings import Settings
from predmarket.engine.state import check_invariants, read_redis_state
from predmarket.engine.units import MICRO
from predmarket.persister.closer import close_due_markets
from sqlalchemy import text

from tests.support.api import stream_id
from tests.support.factories import EngineFactory, MarketFactory, UserFactory
from tests.support.faults import full_snapshot
from tests.support.persister import catch_up, drain, persister, pg_connection
from tests.support.redis_data import delete_prefix_async, stream_entries
from tests.support.waiting import wait_until_async

YES, NO = Outcome.YES, Outcome.NO
BUY, SELL = Side.BUY, Side.SELL


async def redis_ms(engine: MarketEngine) -> int:
    seconds, micros = await engine.redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def events(engine: MarketEngine, kind: str) -> list[tuple[str, dict[str, str]]]:
    return [(i, f) for i, f in await stream_entries(engine.redis, engine.keys.events) if f["type"] == kind]


async def closing_market(engine: MarketEngine, after_ms: int, b_units: int = 100) -> str:
    """An OPEN market whose close time is ``after_ms`` from now by Redis' clock."""
    await engine.accounts.deposit(HOUSE, b_units * MICRO)
    market = await engine.markets.create("Closes soon", b_units * MICRO,
                                         close_ms=await redis_ms(engine) + after_ms)
    return (await engine.markets.open(market.market_id)).market_id


async def until_redis_reaches(engine: MarketEngine, ms: int) -> None:
    async def reached() -> bool:
        return await redis_ms(engine) >= ms
    await wait_until_async(reached, 10, f"Redis' clock at {ms}")


async def test_a_close_time_must_lie_ahead_of_redis_clock(engine: MarketEngine) -> None:
    await engine.accounts.deposit(HOUSE, 100 * MICRO)
    house = (await engine.accounts.get(HOUSE)).available
    with pytest.raises(ValidationError, match="close_time must lie in the future"):
        await engine.markets.create("Late", 100 * MICRO, close_ms=await redis_ms(engine) - 1)
    with pytest.raises(ValidationError):
        await engine.markets.create("Absurd", 100 * MICRO, close_ms=10**16)
    assert (await engine.accounts.get(HOUSE)).available == house
    assert await events(engine, "MarketCreated") == []


async def test_trades_stop_at_the_close_time_with_one_market_closed_event(
    engine: MarketEngine, make_user: UserFactory,
) -> None:
    user = await make_user(1_000)
    market_id = await closing_market(engine, after_ms=400)
    market = await engine.markets.get(market_id)
    assert market.status is MarketStatus.OPEN and market.close_ms is not None
    last = await engine.execute_trade(Order(user.user_id, market_id, BUY, YES, shares=5 * MICRO))
    assert last.created_ms < market.close_ms

    await until_redis_reaches(engine, market.close_ms)
    before = await engine.accounts.get(user.user_id)
    for _ in range(2):
        with pytest.raises(MarketNotOpen, match="CLOSED"):
            await engine.execute_trade(Order(user.user_id, market_id, SELL, YES, shares=MICRO))
    with pytest.raises(MarketNotOpen):
        await engine.markets.quote(market_id, BUY, NO, shares=MICRO)
    assert await engine.accounts.get(user.user_id) == before

    closed = await events(engine, "MarketClosed")
    assert len(closed) == 1
    fields = closed[0][1]
    assert fields["market_id"] == market_id and fields["reason"] == "close_time"
    assert fields["last_trade_id"] == str(last.trade_id)
    assert int(fields["ts"]) >= market.close_ms
    after = await engine.markets.get(market_id)
    assert after.status is MarketStatus.CLOSED and after.closed_ms == int(fields["ts"])
    assert after.version > market.version
    assert check_invariants(await read_redis_state(engine.redis, engine.keys)) == []


async def test_no_trade_executes_at_or_after_the_close_time_under_load(
    engine: MarketEngine, engines: EngineFactory, make_user: UserFactory,
) -> None:
    """Two engines (two processes' worth of books and batches) trade one market across its close time."""
    other = engines()
    users = [await make_user(100_000) for _ in range(8)]
    market_id = await closing_market(engine, after_ms=600, b_units=1_000)
    close_ms = (await engine.markets.get(market_id)).close_ms
    assert close_ms is not None
    executed: list[int] = []
    refused = 0

    async def trader(eng: MarketEngine, user_id: str, n: int) -> None:
        nonlocal refused
        for i in itertools.count():
            side, outcome = (BUY, YES) if (i + n) % 3 else (BUY, NO)
            try:
                trade = await eng.execute_trade(Order(user_id, market_id, side, outcome, shares=MICRO))
                executed.append(trade.created_ms)
            except Unavailable:
                continue  # two engines contending: a 503 a client retries, as this trader does
            except MarketNotOpen:
                refused += 1
                return

    await asyncio.gather(*(trader((engine, other)[n % 2], u.user_id, n)
                           for n, u in enumerate(users) for _ in range(4)))
    assert executed and refused == 32
    assert max(executed) < close_ms
    trades = await events(engine, "TradeExecuted")
    assert len(trades) == len(executed) and all(int(f["ts"]) < close_ms for _, f in trades)
    closed = await events(engine, "MarketClosed")
    assert len(closed) == 1
    # The stream agrees: the close comes after every trade, and names the last of them.
    assert stream_id(closed[0][0]) > stream_id(trades[-1][0])  # as (ms, seq) numbers: '…-10' < '…-8' as text
    assert closed[0][1]["last_trade_id"] == trades[-1][1]["trade_id"]
    assert check_invariants(await read_redis_state(engine.redis, engine.keys)) == []


async def test_the_admin_closes_an_open_market_early(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory,
) -> None:
    user = await make_user(1_000)
    market = await make_market(100)
    await engine.execute_trade(Order(user.user_id, market.market_id, BUY, NO, shares=3 * MICRO))
    closed = await engine.markets.close(market.market_id)
    assert closed.status is MarketStatus.CLOSED and closed.close_ms is None and closed.closed_ms is not None
    with pytest.raises(MarketNotOpen):
        await engine.execute_trade(Order(user.user_id, market.market_id, SELL, NO, shares=MICRO))
    with pytest.raises(InvalidState, match="only an OPEN market can be closed"):
        await engine.markets.close(market.market_id)
    created = await make_market(100, open=False)
    with pytest.raises(InvalidState):
        await engine.markets.close(created.market_id)
    (_, fields), = await events(engine, "MarketClosed")
    assert fields["reason"] == "admin" and fields["market_id"] == market.market_id
    # Resolution follows a close as it follows OPEN.
    resolved = await engine.markets.resolve(market.market_id, NO)
    assert resolved.status is MarketStatus.RESOLVED
    assert (await engine.markets.settle(market.market_id)).payouts_total == 3 * MICRO
    assert check_invariants(await read_redis_state(engine.redis, engine.keys)) == []


async def test_an_idle_market_is_closed_by_the_closer_or_its_first_reader(
    engine: MarketEngine, redis_client: sync_redis.Redis,
) -> None:
    idle = await closing_market(engine, after_ms=300)
    read = await closing_market(engine, after_ms=300)
    later = await closing_market(engine, after_ms=600_000)
    assert set(await engine.redis.zrange(engine.keys.closing, 0, -1)) == {idle, read, later}
    close_ms = max([(await engine.markets.get(m)).close_ms or 0 for m in (idle, read)])
    await until_redis_reaches(engine, close_ms)

    # A reader sees it CLOSED at once, whoever comes by first.
    assert (await engine.markets.get(read)).status is MarketStatus.CLOSED
    listed = {m.market_id: m.status for m in await engine.markets.list_all()}
    assert listed[idle] is MarketStatus.CLOSED and listed[later] is MarketStatus.OPEN
    # The readers closed both and took them out of the index: the closer has nothing left to do.
    assert close_due_markets(redis_client, SyncScripts(redis_client), engine.keys) == 0
    assert await engine.redis.zrange(engine.keys.closing, 0, -1) == [later]
    assert len(await events(engine, "MarketClosed")) == 2


async def test_the_closer_writes_the_event_of_a_market_nobody_touches(
    engine: MarketEngine, redis_client: sync_redis.Redis,
) -> None:
    market_id = await closing_market(engine, after_ms=200)
    close_ms = await engine.redis.zscore(engine.keys.closing, market_id)
    assert close_ms is not None
    await until_redis_reaches(engine, int(close_ms))
    scripts = SyncScripts(redis_client)
    assert close_due_markets(redis_client, scripts, engine.keys) == 1
    assert close_due_markets(redis_client, scripts, engine.keys) == 0
    assert await engine.redis.hget(engine.keys.market(market_id), "status") == "CLOSED"
    assert len(await events(engine, "MarketClosed")) == 1


async def test_resolving_an_open_market_past_its_close_time_closes_it_first(engine: MarketEngine) -> None:
    market_id = await closing_market(engine, after_ms=150)
    close_ms = (await engine.markets.get(market_id)).close_ms
    assert close_ms is not None
    await until_redis_reaches(engine, close_ms)
    # Straight to the script, as if nobody had read the market since its close time.
    await engine.scripts.resolve_market([engine.keys.market(market_id), engine.keys.events, engine.keys.dirty],
                                        [market_id, "YES", ""])
    kinds = [f["type"] for _, f in await stream_entries(engine.redis, engine.keys.events)
             if f.get("market_id") == market_id]
    assert kinds == ["MarketCreated", "MarketOpened", "MarketClosed", "MarketResolved"]
    assert (await engine.markets.get(market_id)).status is MarketStatus.RESOLVED


async def test_a_market_opened_after_its_close_time_opens_closed(engine: MarketEngine) -> None:
    await engine.accounts.deposit(HOUSE, 100 * MICRO)
    market = await engine.markets.create("Opened late", 100 * MICRO, close_ms=await redis_ms(engine) + 150)
    assert market.close_ms is not None and market.status is MarketStatus.CREATED
    await until_redis_reaches(engine, market.close_ms)
    opened = await engine.markets.open(market.market_id)
    assert opened.status is MarketStatus.CLOSED
    kinds = [f["type"] for _, f in await stream_entries(engine.redis, engine.keys.events)
             if f.get("market_id") == market.market_id]
    assert kinds == ["MarketCreated", "MarketOpened", "MarketClosed"]
    assert await engine.redis.zrange(engine.keys.closing, 0, -1) == []


@pytest.mark.slow
async def test_the_record_and_recover_keep_close_times_and_closes(
    engine: MarketEngine, make_user: UserFactory, pg_settings: Settings, database_url: str,
    redis_client: sync_redis.Redis,
) -> None:
    from tests.test_recovery import assert_audit_passes, assert_breach, assert_recovered, execute

    user = await make_user(1_000)
    closed_id = await closing_market(engine, after_ms=300)
    open_id = await closing_market(engine, after_ms=3_600_000)
    await engine.execute_trade(Order(user.user_id, closed_id, BUY, YES, shares=2 * MICRO))
    await engine.execute_trade(Order(user.user_id, open_id, BUY, NO, shares=2 * MICRO))
    closed = await engine.markets.get(closed_id)
    assert closed.close_ms is not None
    await until_redis_reaches(engine, closed.close_ms)
    assert (await engine.markets.get(closed_id)).status is MarketStatus.CLOSED
    with persister(pg_settings) as p:
        catch_up(p)
        with pg_connection(database_url) as conn:
            rows = {r.market_id: r for r in conn.execute(text(
                "SELECT market_id, status, close_time, closed_at FROM markets"))}
        assert rows[closed_id].status == "CLOSED" and rows[open_id].status == "OPEN"
        closed_now = await engine.markets.get(closed_id)
        assert closed_now.closed_ms is not None
        assert int(rows[closed_id].closed_at.timestamp() * 1000) == closed_now.closed_ms
        assert int(rows[closed_id].close_time.timestamp() * 1000) == closed.close_ms
        assert rows[open_id].closed_at is None

        before = full_snapshot(redis_client, pg_settings.key_prefix)
        assert [member for member, _ in before["closing"]] == [open_id]
        await delete_prefix_async(engine.redis, pg_settings.key_prefix)
        assert_recovered(pg_settings, redis_client, before)
        assert_audit_passes(pg_settings)
        with pytest.raises(MarketNotOpen):
            await engine.execute_trade(Order(user.user_id, closed_id, SELL, YES, shares=MICRO))
        drain(p)

    # A record whose close time falls at or before a trade of the market is named by the audit.
    execute(database_url, "UPDATE markets SET close_time = (SELECT created_at FROM trades WHERE market_id = :m) "
            "WHERE market_id = :m", m=closed_id)
    assert_breach(pg_settings, f"postgres: trading after the close [market {closed_id}]", "1 trades from trade")
