"""The persister under faults: SIGKILL and restart, two at once, PostgreSQL refusing connections,
hostile stream entries, SIGTERM.

Multi-process tests run ``predmarket persister`` as a child with its own key
prefix and database; every child is killed in ``finally``. Waits poll a
condition with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
from pathlib import Path
from typing import Any, cast

import pytest
import redis as sync_redis
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import HOUSE, Order, Trade
from predmarket.engine.settings import Settings
from predmarket.engine.state import check_invariants
from predmarket.engine.units import MICRO
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from tests.support.factories import MarketFactory, UserFactory
from tests.support.network import free_port
from tests.support.persister import (
    BUY,
    NO,
    YES,
    catch_up,
    committed_mark,
    consumer_seen,
    drain,
    entries,
    expected_ledger_rows,
    generate_trades,
    ledger_breaches,
    newest_id,
    pending,
    persister,
    persister_env,
    pg_connection,
    pg_state,
    redis_state,
    row_counts,
    run_scenario,
    scalar,
    trade_seq,
)
from tests.support.processes import start_persister
from tests.support.services import sync_client
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until, wait_until_async

REFUSED_URL = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"


async def assert_caught_up_exactly_once(engine: MarketEngine, url: str, executed: list[Trade]) -> None:
    """Every executed trade is in ``trades`` once, every ledger leg once, and PostgreSQL equals Redis."""
    executed_ids = await trade_seq(engine)
    with pg_connection(url) as conn:
        ids = conn.execute(text("SELECT trade_id FROM trades")).scalars().all()
        distinct_events = conn.execute(text("SELECT count(DISTINCT event_id) FROM trades")).scalar_one()
        counts = row_counts(conn)
        pg = pg_state(url)
        assert ledger_breaches(conn, pg) == []
    assert len(ids) == len(set(ids)) == distinct_events == executed_ids
    assert set(ids) >= {t.trade_id for t in executed}
    assert counts["ledger"] == expected_ledger_rows(await entries(engine))
    assert pg == await redis_state(engine)
    assert check_invariants(pg) == []


# --------------------------------------------------------------------------- 4. SIGKILL mid-batch

@pytest.mark.slow
async def test_sigkill_mid_batch_then_restart_writes_every_trade_exactly_once(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory, pg_settings: Settings,
    database_url: str, tmp_path: Path,
) -> None:
    users = [(await make_user(1_000_000)).user_id for _ in range(12)]
    markets = [(await make_market(1000)).market_id for _ in range(4)]
    keys = engine.keys
    client = sync_client(pg_settings.redis_url)
    env = persister_env(pg_settings, PM_CLAIM_IDLE_S="1", PM_PERSISTER_BATCH="200", PM_IDLE_FLUSH_S="0.2")
    procs = []
    try:
        victim = start_persister(env, "victim", tmp_path / "victim.log")
        procs.append(victim)
        wait_until(lambda: consumer_seen(client, keys.events, "victim"), 20, "the first persister to start")

        executed: list[Trade] = []
        killed = asyncio.Event()

        async def trading() -> None:
            # At least 3,000 trades, and on until the victim has been caught holding a batch.
            while len(executed) < 3000 or not killed.is_set():
                executed.extend(await generate_trades(engine, users, markets, 150, seed=len(executed)))
                assert len(executed) < 30_000, "the persister was never seen holding a batch"

        generator = asyncio.create_task(trading())
        try:
            async def holding() -> bool:
                return pending(client, keys.events, "victim") > 0

            await wait_until_async(holding, 30, "the victim to hold unacknowledged entries", interval_s=0.001)
            victim.signal(signal.SIGKILL)
            victim.wait(10)
            killed.set()
            await asyncio.wait_for(generator, 60)
        finally:
            generator.cancel()
        assert victim.wait(0) == -signal.SIGKILL
        orphaned = pending(client, keys.events, "victim")
        assert orphaned > 0  # its batch is left pending: only a claim can finish it
        assert scalar(database_url, "SELECT count(*) FROM trades") < len(executed)

        heir = start_persister(env, "heir", tmp_path / "heir.log")
        procs.append(heir)

        def caught_up() -> bool:
            return (pending(client, keys.events) == 0
                    and scalar(database_url, "SELECT count(*) FROM trades") == len(executed)
                    and client.xinfo_groups(keys.events)[0]["lag"] == 0)

        wait_until(caught_up, 45, "the heir to claim the victim's batch and catch up", interval_s=0.05)
        assert pending(client, keys.events, "victim") == 0

        async def flushed() -> bool:
            return pg_state(database_url) == await redis_state(engine)

        await wait_until_async(flushed, 20, "the heir's idle flush", interval_s=0.1)
        assert heir.alive()
        heir.signal(signal.SIGTERM)
        assert heir.wait(15) == 0
    finally:
        for proc in procs:
            proc.kill()
        client.close()
    await assert_caught_up_exactly_once(engine, database_url, executed)
    assert "claimed" in (tmp_path / "heir.log").read_text()


# --------------------------------------------------------------------------- 5. two persisters at once

@pytest.mark.slow
async def test_two_persisters_share_the_stream_without_double_writes(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory, pg_settings: Settings,
    database_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="predmarket.persister")
    users = [(await make_user(1_000_000)).user_id for _ in range(8)]
    markets = [(await make_market(500)).market_id for _ in range(3)]
    keys = engine.keys
    with persister(pg_settings, "a", persister_batch=50, flush_every_s=0.05) as a, \
            persister(pg_settings, "b", persister_batch=50, flush_every_s=0.05) as b:
        threads = [threading.Thread(target=p.run, name=f"persister-{p.consumer}") for p in (a, b)]
        for thread in threads:
            thread.start()
        try:
            executed = await generate_trades(engine, users, markets, 1500)
            # Lifecycle while both run: a market created, traded, resolved and settled.
            late = (await engine.markets.create("late market", 50 * MICRO)).market_id
            await engine.markets.open(late)
            for i, outcome in enumerate((YES, NO, YES)):
                executed.append(await engine.execute_trade(Order(users[i], late, BUY, outcome, shares=3 * MICRO)))
            await engine.markets.resolve(late, YES)
            await engine.markets.settle(late)
            executed += await generate_trades(engine, users, markets, 1500, seed=8)
            await engine.accounts.withdraw(users[0], 10 * MICRO)
            length = await engine.redis.xlen(keys.events)

            async def caught_up() -> bool:
                group = (await engine.redis.xinfo_groups(keys.events))[0]
                return (group["lag"] == 0 and group["pending"] == 0
                        and pg_state(database_url) == await redis_state(engine))

            await wait_until_async(caught_up, 60, "both persisters to catch up", interval_s=0.05)
        finally:
            for p in (a, b):
                p.stopping = True
            for thread in threads:
                thread.join(timeout=10)
        assert not any(thread.is_alive() for thread in threads)
        # Each entry was handled by exactly one of them, and both did a share.
        assert a.counters.entries > 0 and b.counters.entries > 0
        assert a.counters.entries + b.counters.entries == length
        # Both lock shared rows (house, busy users) in key order: they never deadlock each other.
        assert [r.getMessage() for r in caplog.records if "deadlock" in r.getMessage()] == []
    await assert_caught_up_exactly_once(engine, database_url, executed)


# --------------------------------------------------------------------------- 6. PostgreSQL refusing connections

async def test_refused_database_acks_nothing_then_the_same_consumer_catches_up(
    engine: MarketEngine, pg_settings: Settings, database_url: str,
) -> None:
    await run_scenario(engine)
    keys = engine.keys
    length = await engine.redis.xlen(keys.events)
    with persister(pg_settings.model_copy(update={"database_url": REFUSED_URL}), "c1") as down:
        for _ in range(2):
            with pytest.raises(OperationalError):
                down.step()
        assert pending(down.stream.redis, keys.events, "c1") == length
        assert await committed_mark(engine) is None
    assert scalar(database_url, "SELECT count(*) FROM ledger") == 0
    with persister(pg_settings, "c1") as up:
        catch_up(up)
        assert pending(up.stream.redis, keys.events) == 0
        assert up.counters.entries == length
    assert pg_state(database_url) == await redis_state(engine)


async def test_refused_database_then_another_consumer_claims_the_batch(
    engine: MarketEngine, pg_settings: Settings, database_url: str,
) -> None:
    await run_scenario(engine)
    keys = engine.keys
    with persister(pg_settings.model_copy(update={"database_url": REFUSED_URL}), "dead") as down:
        with pytest.raises(OperationalError):
            down.step()
        assert pending(down.stream.redis, keys.events, "dead") > 0
    with persister(pg_settings, "alive", claim_idle_s=0.1, claim_every_s=0.0) as up:
        def claimed_and_done() -> bool:
            up.step()
            return pending(up.stream.redis, keys.events) == 0

        wait_until(claimed_and_done, 10, "the batch of the dead consumer to be claimed and written")
        catch_up(up)
    assert pg_state(database_url) == await redis_state(engine)


async def test_run_survives_a_database_outage_and_stops_on_request(
    engine: MarketEngine, pg_settings: Settings, database_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    """``run()`` retries the batch it holds once the database is back -- without waiting for a claim."""
    caplog.set_level(logging.WARNING, logger="predmarket.persister")
    scenario = await run_scenario(engine)
    keys = engine.keys
    port = free_port()
    url = pg_settings.database_url.replace("127.0.0.1:5432", f"127.0.0.1:{port}")
    assert url != pg_settings.database_url
    database = TcpProxy(("127.0.0.1", 5432), port)
    with persister(pg_settings.model_copy(update={"database_url": url}), "c1", claim_idle_s=600.0,
                   max_backoff_s=0.5, flush_every_s=0.05) as p:
        thread = threading.Thread(target=p.run, name="persister")
        thread.start()
        try:
            def refused_twice() -> bool:
                return sum("store unavailable" in r.getMessage() for r in caplog.records) >= 2

            wait_until(refused_twice, 10, "two refused attempts")
            assert thread.is_alive()
            assert pending(p.stream.redis, keys.events, "c1") > 0
            assert await committed_mark(engine) is None

            database.start()  # PostgreSQL is back

            async def caught_up() -> bool:
                return (pending(p.stream.redis, keys.events) == 0
                        and pg_state(database_url) == await redis_state(engine))

            await wait_until_async(caught_up, 10, "the held batch to be retried and written", interval_s=0.05)
            assert scalar(database_url, "SELECT count(*) FROM trades") == len(scenario.trades)
        finally:
            p.stopping = True
            thread.join(timeout=10)
            database.cut()
        assert not thread.is_alive()


# --------------------------------------------------------------------------- 7. hostile stream content

def hostile_entries(user_id: str, market_id: str) -> list[tuple[str, dict[str, str]]]:
    """Entries no script writes, each with the reason it must be refused."""
    ts = "1795600000000"
    deposit = {"type": "Deposit", "ts": ts, "user_id": user_id, "amount": "5.000000", "available": "5.000000"}
    trade = {
        "type": "TradeExecuted", "ts": ts, "trade_id": "900000", "market_id": market_id, "user_id": user_id,
        "side": "BUY", "outcome": "YES", "shares": "1.000000", "cost": "0.500000", "price_yes": "0.510000",
        "price_no": "0.490000", "yes_shares": "1.000000", "no_shares": "0.000000", "pool": "7.431472",
        "available": "1.000000", "position": "1.000000", "avg_price": "0.500000",
    }
    return [
        ("missing fields", {"type": "Deposit", "user_id": user_id}),
        ("missing ts", {k: v for k, v in deposit.items() if k != "ts"}),
        ("exponent", {**deposit, "amount": "1e5"}),
        ("minus zero", {**deposit, "amount": "-0"}),
        ("letters", {**deposit, "available": "abc"}),
        ("seven decimals", {**deposit, "amount": "5.0000001"}),
        ("negative", {**deposit, "amount": "-5.000000", "available": "-5.000000"}),
        ("beyond NUMERIC(20,6)", {**deposit, "amount": "123456789012345.000000"}),
        ("unknown type", {**deposit, "type": "Teleport"}),
        ("no type", {k: v for k, v in deposit.items() if k != "type"}),
        ("too-long id", {"type": "UserCreated", "ts": ts, "user_id": "u" * 65, "username": "long"}),
        ("bad id characters", {"type": "MarketOpened", "ts": ts, "market_id": "m 1"}),
        ("too-long username", {"type": "UserCreated", "ts": ts, "user_id": "u_long", "username": "x" * 65}),
        ("NUL in a name", {"type": "UserCreated", "ts": ts, "user_id": "u_nul", "username": "a\x00b"}),
        ("superscript digit", {**deposit, "ts": "\u00b2"}),
        ("arabic-indic digits", {**deposit, "ts": "\u0661\u0662"}),
        ("ts out of range", {**deposit, "ts": "9" * 18}),
        ("trade id beyond BIGINT", {**trade, "trade_id": "9" * 19}),
        ("bad side", {**trade, "side": "HOLD"}),
        ("bad outcome", {"type": "MarketResolved", "ts": ts, "market_id": market_id, "outcome": "MAY BE"}),
        ("trade without avg_price", {k: v for k, v in trade.items() if k != "avg_price"}),
    ]


async def test_hostile_entries_go_to_dead_letters_and_the_rest_is_written(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory, pg_settings: Settings,
    database_url: str,
) -> None:
    keys = engine.keys
    alice = await make_user(100)
    market = await make_market(10)
    raw = sync_redis.Redis.from_url(pg_settings.redis_url)  # bytes: can write what is not UTF-8
    hostile: dict[str, str] = {}
    try:
        for i, (reason, fields) in enumerate(hostile_entries(alice.user_id, market.market_id)):
            hostile[cast(bytes, raw.xadd(keys.events, cast(Any, fields))).decode()] = reason
            # valid entries between the hostile ones
            if i % 4 == 0:
                await engine.execute_trade(Order(alice.user_id, market.market_id, BUY, YES, shares=MICRO))
        entry_id = raw.xadd(keys.events, {b"type": b"UserCreated", b"ts": b"1795600000000",
                                          b"user_id": b"u_utf8", b"username": b"\xff\xfe"})
        hostile[cast(bytes, entry_id).decode()] = "not UTF-8"
    finally:
        raw.close()
    bob = await make_user(50, username="bob")
    await engine.execute_trade(Order(bob.user_id, market.market_id, BUY, NO, shares=2 * MICRO))
    await engine.accounts.withdraw(bob.user_id, 5 * MICRO)

    with persister(pg_settings, persister_batch=7) as p:
        catch_up(p)  # raises if any entry crashed it
        assert pending(p.stream.redis, keys.events) == 0
        assert p.counters.dead == len(hostile)

    dead = await entries(engine, keys.dead_letters)
    assert {f["original_id"]: f["reason"] for _, f in dead}.keys() == hostile.keys()
    for _, f in dead:
        assert f["reason"], f
        assert isinstance(json.loads(f["entry"]), dict)
    with pg_connection(database_url) as conn:
        for table in ("users", "trades", "ledger"):
            written = conn.execute(text(f"SELECT count(*) FROM {table} WHERE event_id = ANY(:ids)"),
                                   {"ids": list(hostile)}).scalar_one()
            assert written == 0, table
        assert conn.execute(text("SELECT count(*) FROM trades WHERE trade_id >= 900000")).scalar_one() == 0
        users = set(conn.execute(text("SELECT user_id FROM users")).scalars())
    assert users == {HOUSE, alice.user_id, bob.user_id}
    pg = pg_state(database_url)
    assert pg == await redis_state(engine)
    with pg_connection(database_url) as conn:
        assert ledger_breaches(conn, pg) == []


async def test_dead_letters_do_not_stop_the_committed_mark(
    engine: MarketEngine, make_user: UserFactory, pg_settings: Settings,
) -> None:
    user = await make_user(10)
    await engine.redis.xadd(engine.keys.events, {"type": "Nonsense", "ts": "1"})
    await engine.accounts.deposit(user.user_id, MICRO)
    with persister(pg_settings) as p:
        drain(p)
        assert await committed_mark(engine) == await newest_id(engine)
    assert await engine.redis.xlen(engine.keys.dead_letters) == 1


# --------------------------------------------------------------------------- 11. SIGTERM

@pytest.mark.slow
async def test_sigterm_stops_the_persister_cleanly(
    engine: MarketEngine, make_user: UserFactory, pg_settings: Settings, tmp_path: Path,
) -> None:
    await make_user(10)
    keys = engine.keys
    client = sync_client(pg_settings.redis_url)
    proc = start_persister(persister_env(pg_settings), "term", tmp_path / "term.log")
    try:
        wait_until(lambda: consumer_seen(client, keys.events, "term") and pending(client, keys.events) == 0
                   and client.get(keys.committed) is not None, 20, "the persister to start and catch up")
        proc.signal(signal.SIGTERM)
        assert proc.wait(5) == 0
    finally:
        proc.kill()
        client.close()
    assert "stopped" in (tmp_path / "term.log").read_text()
