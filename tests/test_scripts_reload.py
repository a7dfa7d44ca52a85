"""Redis faults seen by the engine: scripts flushed (NOSCRIPT), a restarted server, an
unreachable or silent server, and a server that refuses commands (OOM).

These tests run against a private ``redis-server`` (own port and temp dir, see
``tests/redis_server.py``) that they flush, kill and restart; the shared Redis is never touched.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from predmarket.engine import pricing
from predmarket.engine.errors import Unavailable
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import HOUSE, Order, Outcome, Side, Trade
from predmarket.engine.settings import Settings
from predmarket.engine.state import check_invariants, read_redis_state
from predmarket.engine.units import MICRO

from tests.support.network import free_port
from tests.support.redis_server import RedisServer

T = TypeVar("T")
USER, MARKET = "alice", "m1"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path) as srv:
        yield srv


@pytest.fixture
def private_settings(server: RedisServer) -> Settings:
    return Settings(key_prefix=f"pmtest-{uuid.uuid4().hex[:12]}", redis_url=server.url, redis_timeout_s=1.0)


@pytest.fixture
async def engines(private_settings: Settings) -> AsyncIterator[Callable[[], MarketEngine]]:
    """Engines (each its own client, like separate processes) on the private server."""
    made: list[MarketEngine] = []

    def make() -> MarketEngine:
        made.append(MarketEngine.from_settings(private_settings))
        return made[-1]

    try:
        yield make
    finally:
        for eng in made:
            await eng.close()


async def seed(engine: MarketEngine) -> None:
    """House, one funded user and one open market with fixed ids."""
    await engine.start()
    await engine.accounts.deposit(HOUSE, 1_000 * MICRO)
    await engine.accounts.create(USER, USER)
    await engine.accounts.deposit(USER, 10_000 * MICRO)
    await engine.markets.create("M", 100 * MICRO, MARKET)
    await engine.markets.open(MARKET)


def buy(units: int) -> Order:
    return Order(USER, MARKET, Side.BUY, Outcome.YES, shares=units * MICRO)


async def eventually(call: Callable[[], Awaitable[T]], timeout_s: float = 10.0) -> tuple[T, int]:
    """``call()`` retried while it raises ``Unavailable``; the result and how many attempts failed."""
    deadline = time.monotonic() + timeout_s
    failures = 0
    while True:
        try:
            return await call(), failures
        except Unavailable:
            failures += 1
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.01)  # back off between attempts (not a synchronisation)


async def assert_consistent(engine: MarketEngine) -> None:
    state = await read_redis_state(engine.redis, engine.keys)
    assert check_invariants(state) == []


# --------------------------------------------------------------------------- NOSCRIPT


async def test_script_flush_is_transparent(server: RedisServer, engines: Callable[[], MarketEngine]) -> None:
    eng = engines()
    await seed(eng)
    first = await eng.execute_trade(buy(10))
    with server.client() as admin:
        assert admin.script_flush()
        assert admin.script_exists(*eng.scripts.shas) == [False] * len(eng.scripts.shas)
    second = await eng.execute_trade(buy(10))  # EVALSHA -> NOSCRIPT -> loaded again, no error
    assert second.trade_id == first.trade_id + 1
    assert second.cost == pricing.buy_cost(10 * MICRO, 0, 10 * MICRO, 100 * MICRO)
    with server.client() as admin:
        admin.script_flush()
    await eng.accounts.deposit(USER, 1 * MICRO)  # every script, not only trades
    await eng.markets.resolve(MARKET, Outcome.YES)
    with server.client() as admin:
        admin.script_flush()
    settlement = await eng.markets.settle(MARKET)
    assert settlement.payouts_total == 20 * MICRO
    await assert_consistent(eng)


async def test_script_flush_under_concurrent_load(server: RedisServer, engines: Callable[[], MarketEngine]) -> None:
    eng = engines()
    await seed(eng)
    orders = [buy(1 + i % 7) for i in range(200)]
    with server.client() as admin:
        admin.script_flush()
    trades = await asyncio.gather(*(eng.execute_trade(o) for o in orders))
    assert len({t.trade_id for t in trades}) == 200
    await assert_consistent(eng)


# --------------------------------------------------------------------------- restart


async def test_restart_reconnects_and_reloads_scripts(server: RedisServer, engines: Callable[[], MarketEngine]) -> None:
    eng = engines()
    await seed(eng)
    await asyncio.gather(*(eng.execute_trade(buy(2)) for _ in range(20)))

    server.restart()  # no persistence: the data is gone, and so are the scripts

    _, failures = await eventually(eng.start)  # idempotent: safe to repeat after a failure
    # Stale pooled connections fail once each (the outcome of a write on a dead socket is
    # unknown, so nothing retries it blindly); a fresh connection follows at once.
    assert failures <= 3
    await seed(eng)
    trade, failures = await eventually(lambda: eng.execute_trade(buy(10)))
    assert failures == 0
    assert trade.trade_id == 1  # a fresh server: the counter restarted with the data
    assert trade.cost == pricing.buy_cost(0, 0, 10 * MICRO, 100 * MICRO)  # the stale cached state was not used
    trades = await asyncio.gather(*(eng.execute_trade(buy(1)) for _ in range(50)))
    assert sorted(t.trade_id for t in trades) == list(range(2, 52))
    await assert_consistent(eng)


async def test_stale_cached_state_with_a_reused_version_is_not_priced_against(
    server: RedisServer, engines: Callable[[], MarketEngine]
) -> None:
    """After a data loss the market's version numbers start again: a sequencer that cached
    "version 3" before the loss must not price against it when the new market reaches version 3."""
    a, b = engines(), engines()
    await seed(a)
    await a.execute_trade(buy(10))  # a caches (version v, q_yes = 10)
    version = (await a.markets.get(MARKET)).version

    server.restart()
    await eventually(lambda: a.markets.list_all())  # a's stale connection fails outside the sequencer
    await seed(b)
    await b.execute_trade(buy(30))  # the re-created market reaches the same version, with q_yes = 30
    market = await b.markets.get(MARKET)
    assert market.version == version and market.yes_shares == 30 * MICRO

    trade = await a.execute_trade(buy(10))
    assert trade.cost == pricing.buy_cost(30 * MICRO, 0, 10 * MICRO, 100 * MICRO)
    await assert_consistent(a)


async def test_orders_during_an_outage_fail_fast_and_trading_resumes(
    server: RedisServer, engines: Callable[[], MarketEngine]
) -> None:
    eng = engines()
    await seed(eng)
    await eng.execute_trade(buy(5))
    server.stop()
    start = time.monotonic()
    results = await asyncio.gather(*(eng.execute_trade(buy(1)) for _ in range(30)), return_exceptions=True)
    assert all(isinstance(r, Unavailable) for r in results), results
    assert time.monotonic() - start < 5
    with pytest.raises(Unavailable):
        await eng.accounts.get(USER)
    server.start()
    await eventually(eng.start)
    await seed(eng)
    trade, _ = await eventually(lambda: eng.execute_trade(buy(1)))
    assert trade.trade_id == 1
    await assert_consistent(eng)


# --------------------------------------------------------------------------- a server refusing commands


async def test_redis_error_reply_fails_the_orders_instead_of_hanging(
    server: RedisServer, engines: Callable[[], MarketEngine]
) -> None:
    """An error reply that is not a contract code (here OOM) must reach every caller of the
    batch, not leave them waiting forever; the sequencer keeps working afterwards."""
    eng = engines()
    await seed(eng)
    await eng.execute_trade(buy(5))
    with server.client() as admin:
        admin.config_set("maxmemory", "1")
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(eng.execute_trade(buy(1)) for _ in range(10)), return_exceptions=True), timeout=10
        )
        assert all(isinstance(r, Exception) and not isinstance(r, Trade) for r in results), results
        assert all("OOM" in str(r) or "maxmemory" in str(r) or isinstance(r, Unavailable) for r in results)
    finally:
        with server.client() as admin:
            admin.config_set("maxmemory", "0")
    trade = await asyncio.wait_for(eng.execute_trade(buy(1)), timeout=10)
    assert trade.trade_id == 2
    await assert_consistent(eng)


# --------------------------------------------------------------------------- unreachable


async def test_closed_port_is_unavailable_quickly() -> None:
    settings = Settings(key_prefix="pmtest-closed", redis_url=f"redis://127.0.0.1:{free_port()}/0",
                        redis_timeout_s=0.3)
    eng = MarketEngine.from_settings(settings)
    try:
        for call in (
            lambda: eng.execute_trade(buy(1)),
            lambda: eng.accounts.get(USER),
            lambda: eng.accounts.deposit(USER, MICRO),
            lambda: eng.markets.get(MARKET),
            eng.start,
        ):
            start = time.monotonic()
            with pytest.raises(Unavailable):
                await asyncio.wait_for(call(), timeout=5)
            assert time.monotonic() - start < 2
    finally:
        await eng.close()


async def test_silent_server_is_unavailable_within_the_timeout() -> None:
    """A peer that accepts connections but never answers: calls fail after ``redis_timeout_s``."""
    accepted: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    silent = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    eng = MarketEngine.from_settings(
        Settings(key_prefix="pmtest-silent", redis_url=f"redis://127.0.0.1:{port}/0", redis_timeout_s=0.3)
    )
    try:
        start = time.monotonic()
        results = await asyncio.wait_for(
            asyncio.gather(eng.execute_trade(buy(1)), eng.execute_trade(buy(2)), eng.accounts.get(USER),
                           return_exceptions=True),
            timeout=10,
        )
        assert all(isinstance(r, Unavailable) for r in results), results
        assert time.monotonic() - start < 3
    finally:
        await eng.close()
        for writer in accepted:
            writer.close()
        silent.close()
        await silent.wait_closed()
