"""The hot set: idle users and settled markets leave Redis once persisted, and come back on demand."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from predmarket.engine.errors import AlreadyExists, MarketNotOpen, NotFound, Unavailable
from predmarket.engine.hotset import EVICTED_MARK_KEEP_MS, RELOAD_WINDOW_MS
from predmarket.engine.keys import Keys
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import HOUSE, Order, Outcome, Side, Trade
from predmarket.engine.scripts import Script
from predmarket.engine.settings import Settings
from predmarket.engine.state import check_invariants, read_redis_state
from predmarket.engine.units import MICRO
from predmarket.persister.events import event_order
from predmarket.persister.janitor import SCAN_PER_ROUND
from predmarket.persister.worker import Persister, build
from predmarket.record.loader import PgLoader, entry_id
from redis.typing import EncodableT, FieldT
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from predmarket.simulate import Plan, run
from tests.support.persister import persister_env, tuned
from tests.support.processes import run_predmarket, start_persister
from tests.support.redis_data import delete_prefix, delete_prefix_async
from tests.support.services import new_redis
from tests.support.waiting import wait_until


@pytest.fixture
async def pg(pg_settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(pg_settings.database_url, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture
async def hot(pg_settings: Settings, pg: AsyncEngine) -> AsyncIterator[MarketEngine]:
    """An engine with the PostgreSQL loader, as the API and simulate run it."""
    engine = MarketEngine(new_redis(), pg_settings)
    engine.loader = PgLoader(pg, engine.scripts, engine.keys)
    await engine.start()
    try:
        yield engine
    finally:
        await delete_prefix_async(engine.redis, pg_settings.key_prefix)
        await engine.close()


PersisterFactory = Callable[..., Persister]


@pytest.fixture
def persister(pg_settings: Settings) -> Iterator[PersisterFactory]:
    """``persister(**overrides)``: one whose janitor evicts anything idle for a millisecond."""
    built: list[Persister] = []

    def make(**overrides: float) -> Persister:
        options: dict[str, float] = {"idle_flush_s": 0, "block_ms": 10, "user_idle_ttl_s": 0.001,
                                     "market_archive_after_s": 0.001}
        options.update(overrides)
        changed, cadence = tuned(pg_settings, **options)
        built.append(build(changed, consumer="hot", cadence=cadence))
        return built[-1]

    yield make
    for p in built:
        p.close()


def catch_up_and_sweep(p: Persister) -> None:
    while p.step():
        pass
    p.flusher.flush(p.stream.committed())
    p.janitor.sweep(p.stream.committed())


async def funded_user(engine: MarketEngine, name: str, units: int = 1_000) -> str:
    account = await engine.accounts.create(name, name)
    await engine.accounts.deposit(account.user_id, units * MICRO)
    return account.user_id


async def open_market(engine: MarketEngine, market_id: str) -> str:
    await engine.accounts.deposit(HOUSE, 100 * MICRO)
    await engine.markets.create("hot set", 100 * MICRO, market_id)
    await engine.markets.open(market_id)
    return market_id


async def exists(engine: MarketEngine, key: str) -> bool:
    return bool(await engine.redis.exists(key))


async def test_an_evicted_user_trades_again_with_its_balance_intact(
    hot: MarketEngine, persister: PersisterFactory
) -> None:
    user = await funded_user(hot, "eve")
    market = await open_market(hot, "m-evict")
    bought = await hot.execute_trade(Order(user, market, Side.BUY, Outcome.YES, shares=10 * MICRO))
    sold = await hot.execute_trade(Order(user, market, Side.SELL, Outcome.YES, shares=10 * MICRO))
    before = await hot.accounts.get(user)
    assert before.available == 1_000 * MICRO - bought.cost + sold.cost and before.positions == []
    p = persister()
    await asyncio.to_thread(catch_up_and_sweep, p)
    assert not await exists(hot, hot.keys.user(user))
    # The directory stays: the name is still taken, and the key still names the user.
    assert await hot.redis.hget(hot.keys.usernames, "eve") == user
    assert await hot.redis.sismember(hot.keys.user_ids, user)
    assert p.janitor.stats.users_evicted >= 1
    # A trade for the evicted user loads it first, then executes against the same balance.
    again = await hot.execute_trade(Order(user, market, Side.BUY, Outcome.NO, shares=5 * MICRO))
    after = await hot.accounts.get(user)
    assert after.available == before.available - again.cost
    assert [(x.market_id, x.outcome, x.shares) for x in after.positions] == [(market, Outcome.NO, 5 * MICRO)]
    assert check_invariants(await read_redis_state(hot.redis, hot.keys)) == []


async def test_holders_house_and_uncommitted_users_stay(hot: MarketEngine, persister: PersisterFactory) -> None:
    holder = await funded_user(hot, "holder")
    idle = await funded_user(hot, "idle")
    market = await open_market(hot, "m-stay")
    await hot.execute_trade(Order(holder, market, Side.BUY, Outcome.YES, shares=MICRO))
    p = persister()
    # Nothing is committed yet: the janitor must not evict anyone.
    p.janitor.sweep(p.stream.committed() or "0-0")
    assert await exists(hot, hot.keys.user(idle))
    await asyncio.to_thread(catch_up_and_sweep, p)
    assert not await exists(hot, hot.keys.user(idle))
    assert await exists(hot, hot.keys.user(holder)), "a user with a position must stay"
    assert await exists(hot, hot.keys.user(HOUSE))
    assert await exists(hot, hot.keys.market(market)), "an open market is never archived"


async def test_eviction_is_refused_while_the_persister_lags(hot: MarketEngine, persister: PersisterFactory) -> None:
    user = await funded_user(hot, "lagging")
    p = persister()
    await asyncio.to_thread(catch_up_and_sweep, p)
    assert not await exists(hot, hot.keys.user(user))
    await hot.accounts.deposit(user, 5 * MICRO)  # loads it, then a new event the persister has not seen
    p.janitor.sweep(p.stream.committed())
    assert await exists(hot, hot.keys.user(user)), "its last event is not committed yet"
    await asyncio.to_thread(catch_up_and_sweep, p)
    assert not await exists(hot, hot.keys.user(user))
    assert (await hot.accounts.get(user)).available == 1_005 * MICRO


async def test_loads_racing_each_other_and_a_trade_lose_nothing(hot: MarketEngine, persister: PersisterFactory) -> None:
    user = await funded_user(hot, "racer")
    market = await open_market(hot, "m-race")
    await asyncio.to_thread(catch_up_and_sweep, persister(market_archive_after_s=0))
    assert not await exists(hot, hot.keys.user(user))
    loader = hot.loader
    assert loader is not None
    results = await asyncio.gather(
        loader.load_user(user), loader.load_user(user),
        hot.execute_trade(Order(user, market, Side.BUY, Outcome.YES, shares=7 * MICRO)),
        loader.load_user(user),
    )
    trade = results[2]
    assert isinstance(trade, Trade)
    account = await hot.accounts.get(user)
    assert account.available == 1_000 * MICRO - trade.cost
    assert [p.shares for p in account.positions] == [7 * MICRO]
    assert int(await hot.redis.get(hot.keys.trade_seq) or 0) == 1


async def test_an_archived_market_is_listed_read_and_closed(hot: MarketEngine, persister: PersisterFactory) -> None:
    user = await funded_user(hot, "settler")
    market = await open_market(hot, "m-archive")
    await hot.execute_trade(Order(user, market, Side.BUY, Outcome.YES, shares=3 * MICRO))
    await hot.markets.resolve(market, Outcome.YES)
    settled = await hot.markets.settle(market)
    p = persister()
    await asyncio.to_thread(catch_up_and_sweep, p)
    await asyncio.to_thread(catch_up_and_sweep, p)  # the settlement's flush, then the archive
    assert not await exists(hot, hot.keys.market(market))
    assert p.janitor.stats.markets_archived == 1
    listed = await hot.markets.list_all()
    assert [m.market_id for m in listed] == [market]
    assert listed[0] == settled.market or listed[0].yes_shares == settled.market.yes_shares
    assert await hot.redis.hexists(hot.keys.archived, market)
    got = await hot.markets.get(market)  # read from its kept final state
    assert (got.status.value, got.yes_shares, got.pool) == ("SETTLED", 3 * MICRO, 0)
    with pytest.raises(MarketNotOpen):
        await hot.execute_trade(Order(user, market, Side.BUY, Outcome.YES, shares=MICRO))
    with pytest.raises(AlreadyExists):
        await hot.markets.create("again", 100 * MICRO, market)


async def test_a_market_moving_in_and_out_of_the_archive_is_always_listed(
    hot: MarketEngine, persister: PersisterFactory
) -> None:
    """Two parties taking turns: the hot set putting a settled market back and the janitor archiving it
    again, while the list is read; every answer lists it (once it was in neither between two reads)."""
    market = await open_market(hot, "m-churn")
    await hot.markets.resolve(market, Outcome.YES)
    await hot.markets.settle(market)
    p = persister()
    await asyncio.to_thread(catch_up_and_sweep, p)
    await asyncio.to_thread(catch_up_and_sweep, p)
    assert not await exists(hot, hot.keys.market(market))

    async def churn() -> None:
        for _ in range(150):
            assert await hot.hotset.unarchive(market)
            await asyncio.to_thread(p.janitor.round, p.stream.committed())
        assert p.janitor.stats.markets_archived >= 150

    moving = asyncio.create_task(churn())
    answers = missing = 0
    while not moving.done():
        listed = [m.market_id for m in await hot.markets.list_all()]
        answers += 1
        missing += listed.count(market) != 1
    await moving
    assert answers > 50 and missing == 0, f"{missing} of {answers} answers did not list the market once"


async def test_unknown_still_means_not_found_and_names_stay_taken(
    hot: MarketEngine, persister: PersisterFactory
) -> None:
    await funded_user(hot, "taken")
    await asyncio.to_thread(catch_up_and_sweep, persister())
    assert not await exists(hot, hot.keys.user("taken"))
    with pytest.raises(AlreadyExists):
        await hot.accounts.create("taken")
    with pytest.raises(AlreadyExists):
        await hot.accounts.create("someone-else", "taken")
    with pytest.raises(NotFound):
        await hot.accounts.get("nobody")
    with pytest.raises(NotFound):
        await hot.markets.get("no-market")
    key_hash = "ab" * 32
    assert await hot.accounts.user_for_key(key_hash) is None


@pytest.mark.slow
def test_audit_is_clean_after_random_trading_under_aggressive_eviction(pg_settings: Settings, tmp_path: Path) -> None:
    """The seed's random trades (engine, two processes) with a persister evicting after one second."""
    env = persister_env(pg_settings, PM_USER_IDLE_TTL_S="1", PM_MARKET_ARCHIVE_AFTER_S="1", PM_IDLE_FLUSH_S="0.2")
    proc = start_persister(env, "p0", tmp_path / "persister.log")
    try:
        # 60 users over 3,000 trades: many trade rarely, so they go idle (and are evicted) between trades.
        summary = run(pg_settings, Plan(markets=4, users=60, trades=3_000, concurrency=8, processes=2, seed=7))
        assert summary.trades > 2_500
        assert summary.rejected.get("NOT_FOUND", 0) == 0, summary.rejected
        # Funded users who never trade go idle and are evicted within a second or two.
        asyncio.run(_idle_users(pg_settings, 10))
        wait_until(lambda: not _idle_left(pg_settings), 20, "idle users to be evicted", interval_s=0.2)
        audit = run_predmarket("audit", "--wait", "30", env=env)
        assert audit.returncode == 0, audit.stdout + audit.stderr
        assert "audit passed" in audit.stdout
    finally:
        proc.stop(grace_s=15)
        delete_prefix(pg_settings.key_prefix, pg_settings.redis_url)


async def _idle_users(settings: Settings, n: int) -> None:
    engine = MarketEngine(new_redis(), settings)
    try:
        for i in range(n):
            await funded_user(engine, f"idle-{i}")
    finally:
        await engine.close()


def _idle_left(settings: Settings) -> bool:
    import redis

    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        return any(client.scan_iter(match=Keys(settings.key_prefix).user("idle-*"), count=1000))
    finally:
        client.close()


async def test_a_load_that_lost_the_race_goes_on_with_the_user_another_load_put_back(
    hot: MarketEngine, persister: PersisterFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    """Request B found the user missing; meanwhile A put it back and traded, and the trade reached
    PostgreSQL before B's load read it. B's load sees positions there, but the user resident: no loss."""
    user = await funded_user(hot, "late")
    market = await open_market(hot, "m-late")
    p = persister(market_archive_after_s=0)
    await asyncio.to_thread(catch_up_and_sweep, p)
    assert not await exists(hot, hot.keys.user(user))
    trade = await hot.execute_trade(Order(user, market, Side.BUY, Outcome.YES, shares=3 * MICRO))  # A
    await asyncio.to_thread(catch_up_and_sweep, p)  # the position is in PostgreSQL; a holder stays
    loader = hot.loader
    assert loader is not None
    with caplog.at_level(logging.ERROR, logger="predmarket.hotset"):
        assert await loader.load_user(user) is True  # B, past its own residency check
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    account = await hot.accounts.get(user)
    assert account.available == 1_000 * MICRO - trade.cost
    assert [x.shares for x in account.positions] == [3 * MICRO]


async def test_a_holder_redis_lost_is_refused_and_reported(
    hot: MarketEngine, persister: PersisterFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    user = await funded_user(hot, "lost")
    market = await open_market(hot, "m-lost")
    await hot.execute_trade(Order(user, market, Side.BUY, Outcome.YES, shares=2 * MICRO))
    await asyncio.to_thread(catch_up_and_sweep, persister(market_archive_after_s=0))
    await hot.redis.delete(hot.keys.user(user), hot.keys.user_positions(user))  # Redis lost it
    loader = hot.loader
    assert loader is not None
    with caplog.at_level(logging.ERROR, logger="predmarket.hotset"):
        assert await loader.load_user(user) is False
    assert any("run predmarket recover" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    assert not await exists(hot, hot.keys.user(user)), "a partial user must not be installed"


class InterleavingInstall:
    """``install_user`` that runs ``before()`` once, just ahead of its first call."""

    def __init__(self, install_user: Script, before: Callable[[], Awaitable[None]]) -> None:
        self._install_user = install_user
        self._before: Callable[[], Awaitable[None]] | None = before
        self.installs: list[int] = []

    async def __call__(self, keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
        if self._before is not None:
            before, self._before = self._before, None
            await before()
        reply = await self._install_user(keys, args)
        self.installs.append(int(reply))
        return reply


async def test_a_row_read_before_another_load_trades_and_an_eviction_is_read_again(
    hot: MarketEngine, pg: AsyncEngine, persister: PersisterFactory,
) -> None:
    """B reads the evicted user's row; before B installs it, A puts the user back, it deposits, and the
    janitor evicts it again. B's row lacks the deposit: installing it would lose money."""
    user = await funded_user(hot, "aba")
    p = persister(market_archive_after_s=0)
    await asyncio.to_thread(catch_up_and_sweep, p)
    assert not await exists(hot, hot.keys.user(user))

    async def another_load_a_deposit_and_an_eviction() -> None:
        await hot.accounts.deposit(user, 5 * MICRO)  # A: loads the user (its own loader), deposits
        await asyncio.to_thread(catch_up_and_sweep, p)
        assert not await exists(hot, hot.keys.user(user))

    scripts = copy.copy(hot.scripts)  # B's registry: its install_user lets A act first
    install = InterleavingInstall(hot.scripts.install_user, another_load_a_deposit_and_an_eviction)
    scripts.install_user = install  # type: ignore[assignment]  # not a Script: wraps one, called alike
    late = PgLoader(pg, scripts, hot.keys)
    assert await late.load_user(user) is True  # B
    assert install.installs == [-2, 1]  # the stale row refused, the one read again installed
    assert (await hot.accounts.get(user)).available == 1_005 * MICRO


async def test_an_eviction_mark_is_forgotten_once_older_than_the_keep_time(
    hot: MarketEngine, persister: PersisterFactory,
) -> None:
    """The mark holds the user's last event and when it was evicted; the janitor forgets it
    EVICTED_MARK_KEEP_MS after the eviction (not before), and the user still loads back whole."""
    user = await funded_user(hot, "forgotten")
    p = persister(market_archive_after_s=0)
    await asyncio.to_thread(catch_up_and_sweep, p)
    mark = cast(str | None, await hot.redis.hget(hot.keys.evicted, user))
    assert mark is not None
    last_event, _, evicted_ms = mark.partition("|")
    newest = cast(list[tuple[str, dict[str, str]]], await hot.redis.xrevrange(hot.keys.events, count=1))
    assert last_event == newest[0][0]  # the deposit, its last event
    assert abs(int(evicted_ms) - await hot.scripts.server_ms()) < 60_000

    # A sweep measuring idleness from a moment far ahead (tools, tests) judges a mark's age by Redis's clock.
    await asyncio.to_thread(p.janitor.sweep, p.stream.committed(), 10**14)
    assert await hot.redis.hget(hot.keys.evicted, user) == mark
    await asyncio.to_thread(p.janitor.forget_old_marks, int(evicted_ms) + EVICTED_MARK_KEEP_MS - 1)
    assert await hot.redis.hget(hot.keys.evicted, user) == mark
    await asyncio.to_thread(p.janitor.forget_old_marks, int(evicted_ms) + EVICTED_MARK_KEEP_MS)
    assert await hot.redis.hget(hot.keys.evicted, user) is None
    assert p.janitor.stats.marks_forgotten == 1
    # The directory still says the user exists: the first request loads it, balance intact.
    assert (await hot.accounts.get(user)).available == 1_000 * MICRO


async def test_forgetting_covers_every_mark_wherever_the_rounds_paging_stands(
    hot: MarketEngine, persister: PersisterFactory,
) -> None:
    now = await hot.scripts.server_ms()
    marks: dict[FieldT, EncodableT] = {f"u-old-{i}": f"1-{i}|{now}" for i in range(3 * SCAN_PER_ROUND)}
    await hot.redis.hset(hot.keys.evicted, mapping=marks)
    janitor = persister(market_archive_after_s=0).janitor
    await asyncio.to_thread(janitor.round, "0-0")  # a page of marks, none old yet
    assert await hot.redis.hlen(hot.keys.evicted) == len(marks)
    await asyncio.to_thread(janitor.forget_old_marks, now + EVICTED_MARK_KEEP_MS)
    assert not await hot.redis.exists(hot.keys.evicted)
    assert janitor.stats.marks_forgotten == len(marks)


async def test_a_mark_written_again_since_the_janitor_read_it_stays(hot: MarketEngine) -> None:
    k = hot.keys
    await hot.redis.hset(k.evicted, "u-again", "1796479445986-5|1796479446000")
    forgotten = await hot.scripts.forget_unchanged([k.evicted], ["u-again", "1796479445000-1|1796479445001"])
    assert forgotten == 0 and await hot.redis.hget(k.evicted, "u-again") == "1796479445986-5|1796479446000"
    assert await hot.scripts.forget_unchanged([k.evicted], ["u-again", "1796479445986-5|1796479446000"]) == 1
    assert not await hot.redis.hexists(k.evicted, "u-again")


async def test_a_row_read_longer_ago_than_the_reload_window_is_read_again(
    hot: MarketEngine, pg: AsyncEngine, persister: PersisterFactory,
) -> None:
    """What lets the janitor forget marks at all: no load installs a row read before an eviction whose
    mark may be gone. A load whose reads began past the window is refused, and reads again."""
    user = await funded_user(hot, "slow")
    await asyncio.to_thread(catch_up_and_sweep, persister(market_archive_after_s=0))
    scripts = copy.copy(hot.scripts)
    install = InterleavingInstall(hot.scripts.install_user, lambda: asyncio.sleep(0))
    scripts.install_user = install  # type: ignore[assignment]  # not a Script: wraps one, called alike
    clock = iter([await hot.scripts.server_ms() - RELOAD_WINDOW_MS - 1])  # the first read began too long ago

    async def server_ms() -> int:
        return next(clock, None) or await hot.scripts.server_ms()

    scripts.server_ms = server_ms  # type: ignore[method-assign]
    assert await PgLoader(pg, scripts, hot.keys).load_user(user) is True
    assert install.installs == [-3, 1]
    assert (await hot.accounts.get(user)).available == 1_000 * MICRO


async def test_a_load_too_slow_every_time_says_so(
    hot: MarketEngine, pg: AsyncEngine, persister: PersisterFactory,
) -> None:
    """Every read began past the reload window: the 503 names the slow reads, not a user that kept
    changing (nothing changed it), and the user stays evicted."""
    user = await funded_user(hot, "slower")
    await asyncio.to_thread(catch_up_and_sweep, persister(market_archive_after_s=0))
    scripts = copy.copy(hot.scripts)
    install = InterleavingInstall(hot.scripts.install_user, lambda: asyncio.sleep(0))
    scripts.install_user = install  # type: ignore[assignment]  # not a Script: wraps one, called alike

    async def server_ms() -> int:
        return await hot.scripts.server_ms() - RELOAD_WINDOW_MS - 1

    scripts.server_ms = server_ms  # type: ignore[method-assign]
    with pytest.raises(Unavailable, match=r"took longer than 60 s 3 times \(PostgreSQL is overloaded\)"):
        await PgLoader(pg, scripts, hot.keys).load_user(user)
    assert install.installs == [-3, -3, -3]
    assert not await hot.redis.exists(hot.keys.user(user))


def test_the_marks_are_kept_well_past_the_reload_window() -> None:
    assert EVICTED_MARK_KEEP_MS >= 10 * RELOAD_WINDOW_MS


@pytest.mark.parametrize("stream_id", ["0-0", "1-0", "1796479445986-5", f"1796479445986-{2**20 - 1}"])
def test_entry_id_decodes_the_persisters_event_order(stream_id: str) -> None:
    assert entry_id(event_order(stream_id)) == stream_id


async def test_recover_directory_restores_what_an_older_version_evicted(
    hot: MarketEngine, persister: PersisterFactory, pg_settings: Settings,
) -> None:
    """A deployment that evicted and archived before the directory existed gets it back, online."""
    import redis as sync_redis
    from predmarket.persister.recover import rebuild_directory
    from sqlalchemy import create_engine

    user = await funded_user(hot, "legacy")
    market = await open_market(hot, "m-legacy")
    await hot.markets.resolve(market, Outcome.YES)
    await hot.markets.settle(market)
    p = persister()
    await asyncio.to_thread(catch_up_and_sweep, p)
    await asyncio.to_thread(catch_up_and_sweep, p)
    k = hot.keys
    assert not await exists(hot, k.user(user)) and not await exists(hot, k.market(market))
    # What an older janitor left: no trace of either in Redis.
    await hot.redis.srem(k.user_ids, user)
    await hot.redis.hdel(k.usernames, "legacy")
    await hot.redis.hdel(k.archived, market)
    assert market not in [m.market_id for m in await hot.markets.list_all()]

    client = sync_redis.Redis.from_url(pg_settings.redis_url, decode_responses=True)
    pg = create_engine(pg_settings.database_url)
    try:
        report = await asyncio.to_thread(rebuild_directory, pg, client, k)
    finally:
        pg.dispose()
        client.close()
    assert report.markets_kept == 1
    with pytest.raises(AlreadyExists):
        await hot.accounts.create("legacy")
    with pytest.raises(AlreadyExists):
        await hot.markets.create("again", 100 * MICRO, market)
    listed = {m.market_id: m for m in await hot.markets.list_all()}
    assert listed[market].status.value == "SETTLED"
    assert (await hot.accounts.get(user)).available == 1_000 * MICRO  # loaded from PostgreSQL
