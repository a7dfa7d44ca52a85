"""The persister over S shards (persister/sharded.py): every shard's stream into one record.

A sharded engine (4 shards on the shared Redis, under the test's own prefix) runs users,
deposits, withdrawals, markets in several shards, trades that move money between sub-wallets,
and a settlement; the sharded persister copies every shard's stream. Then the record holds
each trade once, a balance row per sub-wallet equal to Redis's, the user's whole balance in
the ``user_balances`` view, each transfer's two ledger legs through its ``transit`` account
(empty once both are written), and ``audit`` replays it without a breach.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from predmarket.engine.errors import MarketNotOpen
from predmarket.engine.keys import Keys
from predmarket.engine.models import HOUSE, Order, Outcome, Side, Trade
from predmarket.engine.settings import Settings
from predmarket.engine.sharded import ShardedEngine
from predmarket.engine.shards import shard_keys, shard_prefix
from predmarket.engine.state import State, read_redis_state
from predmarket.engine.transfers import Transfer
from predmarket.engine.units import MICRO, micro_from_decimal
from predmarket.persister.audit import add_shard, audit
from predmarket.persister.recover import RecoveryRefused, recover
from predmarket.persister.sharded import ShardedPersister, build
from predmarket.record.loader import load_from
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine

from predmarket.commands.stores import stores
from tests.support.persister import (
    QUIET,
    consumer_seen,
    drain,
    pending,
    persister_env,
    pg_connection,
    scalar,
    tuned,
)
from tests.support.processes import Process, run_predmarket, start_persister
from tests.support.redis_data import delete_prefix_async
from tests.support.services import REDIS_URL, new_redis, sync_client
from tests.support.waiting import wait_until, wait_until_async

SHARDS = 4


@pytest.fixture
def shard_settings(prefix: str, database_url: str) -> Settings:
    return Settings(key_prefix=prefix, redis_url=REDIS_URL, database_url=database_url, shards=SHARDS)


async def delete_deployment(prefix: str) -> None:
    """Every key of a deployment of SHARDS shards under ``prefix``."""
    client = new_redis()
    try:
        for k in range(SHARDS):
            await delete_prefix_async(client, shard_prefix(prefix, k, SHARDS))
        await delete_prefix_async(client, prefix)
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def sharded_engine(settings: Settings, **options: Any) -> AsyncIterator[ShardedEngine]:
    """A started engine over the shards of ``settings``; every key of its prefix deleted after."""
    engine = ShardedEngine(new_redis(), settings, **options)
    await engine.start()
    try:
        yield engine
    finally:
        await delete_deployment(settings.key_prefix)
        await engine.close()


@pytest.fixture
async def sharded(shard_settings: Settings) -> AsyncIterator[ShardedEngine]:
    async with sharded_engine(shard_settings) as engine:
        yield engine


@contextlib.contextmanager
def sharded_persister(settings: Settings, consumer: str, **overrides: float | int) -> Iterator[ShardedPersister]:
    """A persister over the shards of ``settings``, built as the command builds it (quiet cadence,
    ``overrides`` on top); its connections closed after."""
    tuned_settings, cadence = tuned(settings, **{**QUIET, **overrides})
    made = build(tuned_settings, consumer=consumer, cadence=cadence)
    assert isinstance(made, ShardedPersister)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def persister(shard_settings: Settings) -> Iterator[ShardedPersister]:
    with sharded_persister(shard_settings, "p1") as made:
        yield made


async def users_and_markets(engine: ShardedEngine, tag: str, count: int, each: int) -> tuple[list[str], list[str]]:
    """A funded house, ``count`` users named ``<tag><n>`` with ``each`` at home, an OPEN market per shard."""
    await engine.deposit(HOUSE, 1_000 * MICRO)
    users = [(await engine.create_user(f"{tag}{n}")).user_id for n in range(count)]
    for user in users:
        await engine.deposit(user, each)
    return users, await market_in_each_shard(engine)


async def market_in_each_shard(engine: ShardedEngine) -> list[str]:
    """One OPEN market in every shard."""
    by_shard: dict[int, str] = {}
    while len(by_shard) < SHARDS:
        await engine.deposit(HOUSE, 35 * MICRO)  # the subsidy (50 ln 2), however many markets it takes
        market = await engine.create_market(f"m{len(by_shard)}", 50 * MICRO)
        shard = engine.market_shard(market.market_id)
        if shard not in by_shard:
            by_shard[shard] = market.market_id
            await engine.market_engine(market.market_id).markets.open(market.market_id)
    return [by_shard[k] for k in range(SHARDS)]


async def settle(engine: ShardedEngine, market_id: str, outcome: str) -> None:
    """Close, resolve and settle the market in its shard."""
    markets = engine.market_engine(market_id).markets
    await markets.close(market_id)
    await markets.resolve(market_id, outcome)
    await markets.settle(market_id)


async def leave_in_transit(engine: ShardedEngine, user_id: str, hops: int, amount: int) -> Transfer:
    """A transfer of ``amount`` from the user's home to the shard ``hops`` further, debited and never
    credited: as a process that died between the saga's first two steps leaves it."""
    home = engine.home(user_id)
    stuck = Transfer(uuid.uuid4().hex, user_id, home, (home + hops) % SHARDS, amount)
    await engine.transfers.take_out(stuck)
    return stuck


async def trading(engine: ShardedEngine, users: list[str], markets: list[str], count: int,
                  seed: int = 3) -> list[Trade]:
    """``count`` trades over every shard: buys, and sells of what was bought. Money follows the
    trades between sub-wallets (transfers)."""
    rng = random.Random(seed)
    done: list[Trade] = []
    for _ in range(count):
        user, market = rng.choice(users), rng.choice(markets)
        outcome = rng.choice((Outcome.YES, Outcome.NO))
        trade = await engine.execute_trade(Order(user, market, Side.BUY, outcome, shares=rng.randint(1, 4) * MICRO))
        done.append(trade)
        if rng.random() < 0.3:
            done.append(await engine.execute_trade(Order(user, market, Side.SELL, outcome, shares=trade.shares)))
    return done


def ledger_kinds(conn: Connection) -> dict[str, int]:
    """Ledger rows per kind of movement."""
    return {str(kind): int(n) for kind, n in conn.execute(text("SELECT kind, count(*) FROM ledger GROUP BY kind"))}


def sub_wallets_in_redis(prefix: str, users: list[str]) -> dict[tuple[str, int], int]:
    client = sync_client()
    try:
        found = {}
        for k in range(SHARDS):
            keys = shard_keys(prefix, k, SHARDS)
            for user in users:
                available = client.hget(keys.user(user), "available")
                if available is not None:
                    found[(user, k)] = int(available)
        return found
    finally:
        client.close()


async def test_every_shard_is_copied_with_a_row_per_sub_wallet_and_transfers_through_transit(
        sharded: ShardedEngine, persister: ShardedPersister, shard_settings: Settings) -> None:
    users, markets = await users_and_markets(sharded, "u", 5, 200 * MICRO)
    trades = await trading(sharded, users, markets, 60)
    await sharded.withdraw(users[0], 20 * MICRO)  # brings money home first
    settled = markets[1]
    await sharded.market_engine(settled).markets.close(settled)
    await sharded.market_engine(settled).markets.resolve(settled, "YES")
    await sharded.market_engine(settled).markets.settle(settled)
    assert await sharded.invariants() == []

    written = drain(persister)
    assert written > len(trades)
    every = [*users, HOUSE]
    wallets = sub_wallets_in_redis(shard_settings.key_prefix, every)
    assert len({shard for _, shard in wallets}) == SHARDS, "the money is spread over every shard"
    with pg_connection(shard_settings.database_url) as conn:
        # Each trade once, in the shard of its market.
        rows = {r.trade_id: r for r in conn.execute(text("SELECT trade_id, market_id, shard FROM trades"))}
        assert sorted(rows) == sorted(t.trade_id for t in trades)
        assert all(r.shard == sharded.market_shard(r.market_id) for r in rows.values())
        # A balance row per sub-wallet, equal to Redis's; the view sums them.
        recorded = {(r.user_id, r.shard): micro_from_decimal(r.available)
                    for r in conn.execute(text("SELECT user_id, shard, available FROM balances"))}
        assert recorded == wallets
        for user in every:
            whole = conn.execute(text("SELECT available FROM user_balances WHERE user_id = :u"),
                                 {"u": user}).scalar_one()
            assert micro_from_decimal(whole) == (await sharded.account(user)).available
        # Transfers: two legs each, through the transfer's own transit account, empty once both are in.
        kinds = ledger_kinds(conn)
        assert kinds["transfer_out"] == kinds["transfer_in"] > 0
        assert conn.execute(text(
            "SELECT count(*) FROM (SELECT account FROM ledger WHERE account LIKE 'transit:%' "
            "GROUP BY account HAVING SUM(amount) <> 0) t")).scalar_one() == 0
        # And a sub-wallet is its ledger: what the shard's events moved in and out of it.
        replayed = {(r.user_id, r.shard): micro_from_decimal(r.total) for r in conn.execute(text(
            "SELECT user_id, shard, SUM(amount) AS total FROM ledger WHERE user_id IS NOT NULL "
            "GROUP BY user_id, shard"))}
        assert {k: v for k, v in replayed.items() if v or k in wallets} == wallets


async def test_two_persisters_share_the_shards_and_a_second_copy_writes_nothing_twice(
        sharded: ShardedEngine, shard_settings: Settings) -> None:
    """Two sharded persisters, running their loops in threads (as the command does), share the shards
    by lease (half each): every entry is written once; re-reading the streams from the start (a third
    persister, once they stopped and gave their leases back) changes nothing."""
    users, markets = await users_and_markets(sharded, "v", 4, 100 * MICRO)
    # Leases last PM_CLAIM_IDLE_S and are renewed (and the shards shared again) every third of it.
    settings, cadence = tuned(shard_settings, **{**QUIET, "claim_idle_s": 1.5})
    runners = [build(settings, consumer=name, cadence=cadence) for name in ("a", "b")]
    threads = [threading.Thread(target=r.run) for r in runners]
    for thread in threads:
        thread.start()
    try:
        leased = [r for r in runners if isinstance(r, ShardedPersister)]

        def shared() -> bool:
            held = [set(r.leases.holding()) for r in leased]
            return [len(h) for h in held] == [SHARDS // 2] * 2 and held[0] | held[1] == set(range(SHARDS))

        wait_until(shared, 30, "the two persisters to hold half of the shards' leases each")
        trades = await trading(sharded, users, markets, 40, seed=11)

        def all_written() -> bool:
            with pg_connection(shard_settings.database_url) as conn:
                return int(conn.execute(text("SELECT count(*) FROM trades")).scalar_one()) == len(trades)

        wait_until(all_written, 30, "both persisters to write every trade")
    finally:
        for r in runners:
            assert isinstance(r, ShardedPersister)
            r.stop()
        for thread in threads:
            thread.join(timeout=30)
        for r in runners:
            r.close()
    shares = [sum(loop.counters.entries for loop in r.parts) for r in runners]
    assert all(shares), f"each persister wrote some entries: {shares}"
    with pg_connection(shard_settings.database_url) as conn:
        before = ledger_kinds(conn)
    # A persister of another group name reads every stream from the start: the same rows, none twice.
    client = sync_client()
    try:
        for k in range(SHARDS):
            client.xgroup_destroy(shard_keys(shard_settings.key_prefix, k, SHARDS).events, "persister")
    finally:
        client.close()
    with sharded_persister(shard_settings, "c") as again:
        assert drain(again) > 0
    with pg_connection(shard_settings.database_url) as conn:
        assert ledger_kinds(conn) == before
        assert int(conn.execute(text("SELECT count(*) FROM trades")).scalar_one()) == len(trades)


def run_audit(settings: Settings) -> list[str]:
    with stores(settings) as (client, pg):
        report = audit(pg, client, settings.redis_url, Keys(settings.key_prefix), wait_s=10.0,
                       shards=settings.shards)
    return [str(b) for b in report.breaches]


async def test_audit_passes_over_shards_and_names_a_sub_wallet_or_a_transfer_that_is_wrong(
        sharded: ShardedEngine, persister: ShardedPersister, shard_settings: Settings) -> None:
    users, markets = await users_and_markets(sharded, "w", 4, 150 * MICRO)
    await trading(sharded, users, markets, 40, seed=5)
    drain(persister)
    assert await asyncio.to_thread(run_audit, shard_settings) == []

    # A sub-wallet off by one micro-unit in Redis (the user's sum too): named with its shard.
    client = sync_client()
    try:
        wallet = next(k for k in range(SHARDS) if k != sharded.home(users[0])
                      and client.exists(shard_keys(shard_settings.key_prefix, k, SHARDS).user(users[0])))
        client.hincrby(shard_keys(shard_settings.key_prefix, wallet, SHARDS).user(users[0]), "available", 1)
        breaches = await asyncio.to_thread(run_audit, shard_settings)
        assert any(f"sub-wallet {users[0]} in shard {wallet}" in b for b in breaches), breaches
        client.hincrby(shard_keys(shard_settings.key_prefix, wallet, SHARDS).user(users[0]), "available", -1)
    finally:
        client.close()
    assert await asyncio.to_thread(run_audit, shard_settings) == []

    # A transfer credited twice in the record (a second TransferIn leg pair of another event id).
    with pg_connection(shard_settings.database_url) as conn:
        account = conn.execute(text(
            "SELECT account FROM ledger WHERE kind = 'transfer_in' LIMIT 1")).scalar_one()
        conn.execute(text(
            "INSERT INTO ledger (event_id, leg, kind, account, user_id, market_id, trade_id, amount, "
            "created_at, shard) "
            "SELECT '1-' || leg, leg, kind, account, user_id, market_id, trade_id, amount, created_at, shard "
            "FROM ledger WHERE event_id = (SELECT event_id FROM ledger WHERE account = :a AND kind = 'transfer_in') "
            "AND shard = (SELECT shard FROM ledger WHERE account = :a AND kind = 'transfer_in')"), {"a": account})
        conn.commit()
    breaches = await asyncio.to_thread(run_audit, shard_settings)
    _, dest, transfer_id = account.split(":")
    transfer = f"transfer {transfer_id} to shard {dest}"
    assert any("postgres: transfers" in b and transfer in b and "2 credits" in b for b in breaches), breaches


# --------------------------------------------------------------------------- recovery over shards

def shard_snapshot(prefix: str, users: list[str]) -> dict[str, Any]:
    """What recovery must give back, shard by shard: sub-wallets with their transfer counts, each
    shard's trade counter, totals, outbox and pending transfers' records."""
    client = sync_client()
    try:
        found: dict[str, Any] = {}
        for k in range(SHARDS):
            keys = shard_keys(prefix, k, SHARDS)
            for user in users:
                found[f"{k} wallet {user}"] = client.hmget(keys.user(user), ["available", "moved_in", "moved_out"])
            found[f"{k} trade_seq"] = client.get(keys.trade_seq)
            totals = client.hmget(keys.totals, ["deposits", "withdrawals", "transfers_out", "transfers_in"])
            found[f"{k} totals"] = [int(total or 0) for total in totals]  # absent: never moved yet
            outbox = cast(list[str], client.zrange(keys.outbox, 0, -1))
            found[f"{k} outbox"] = {t: client.get(keys.transfer(t)) for t in outbox}
        return found
    finally:
        client.close()


async def test_recover_rebuilds_every_shard_and_the_engine_goes_on_from_there(
        shard_settings: Settings, persister: ShardedPersister) -> None:
    """Users, sub-wallets (with moved_in/out), markets, positions, idempotent replies and a transfer left
    between its steps, recovered from PostgreSQL into an empty prefix: each shard as it was; the sweeper
    then finishes the transfer, a keyed trade sent again replays its first answer, and new trades get
    new ids in every shard."""
    target = shard_settings.model_copy(update={"key_prefix": f"{shard_settings.key_prefix}-r"})
    async with sharded_engine(shard_settings, sweep_every_s=None) as engine:
        users, markets = await users_and_markets(engine, "r", 4, 150 * MICRO)
        await trading(engine, users, markets, 30, seed=9)
        keyed = Order(users[0], markets[2], Side.BUY, Outcome.YES, shares=MICRO, idempotency_key="once",
                      fingerprint="buy 1 YES")
        first = await engine.execute_trade(keyed)
        settled = markets[3]
        await settle(engine, settled, "NO")
        stuck = await leave_in_transit(engine, users[1], 1, 3 * MICRO)
        drain(persister)
        every = [*users, HOUSE]
        before = shard_snapshot(shard_settings.key_prefix, every)
        states = [await read_redis_state(engine.redis, shard_keys(shard_settings.key_prefix, k, SHARDS))
                  for k in range(SHARDS)]
        owed = (await engine.account(users[1])).available + stuck.amount

    try:
        with stores(target) as (client, pg):
            recover(pg, client, Keys(target.key_prefix), shards=SHARDS)
        assert shard_snapshot(target.key_prefix, every) == before
        async with sharded_engine(target, sweep_every_s=None) as rebuilt:
            for k in range(SHARDS):
                assert await read_redis_state(rebuilt.redis, shard_keys(target.key_prefix, k, SHARDS)) == states[k]
            assert await asyncio.to_thread(run_audit, target) == []  # the transfer in transit on both sides

            assert await rebuilt.transfers.sweep(0) == 1
            assert await rebuilt.invariants() == []
            assert (await rebuilt.account(users[1])).available == owed
            again = await rebuilt.execute_trade(keyed)
            assert (again.trade_id, again.cost) == (first.trade_id, first.cost)
            for k, market in enumerate(markets[:3]):  # markets[k] is in shard k: its next id, n*S + k
                fresh = await rebuilt.execute_trade(Order(users[2], market, Side.BUY, Outcome.NO, shares=MICRO))
                assert fresh.trade_id == (int(before[f"{k} trade_seq"]) + 1) * SHARDS + k
            assert await rebuilt.invariants() == []
    finally:
        await delete_deployment(target.key_prefix)


# --------------------------------------------------------------------------- the commands, as processes

async def test_the_commands_over_shards_a_killed_persister_s_entries_claimed_then_audit_and_recover(
        sharded: ShardedEngine, shard_settings: Settings, tmp_path: Path) -> None:
    """``predmarket persister`` with PM_SHARDS=4 reads every shard; SIGKILLed while it holds entries of
    some shard, its heir claims them; ``predmarket audit`` then passes and ``predmarket recover`` rebuilds
    every shard into an empty prefix (each sub-wallet back in its shard)."""
    users, markets = await users_and_markets(sharded, "p", 6, 500 * MICRO)
    env = persister_env(shard_settings, PM_SHARDS=str(SHARDS), PM_CLAIM_IDLE_S="1", PM_PERSISTER_BATCH="20")
    streams = [shard_keys(shard_settings.key_prefix, k, SHARDS).events for k in range(SHARDS)]
    client = sync_client()
    procs: list[Process] = []
    try:
        executed: list[Trade] = []
        orphaned = 0
        for attempt in range(5):  # a victim may acknowledge its batch between our look and the kill
            victim = start_persister(env, f"victim{attempt}", tmp_path / f"victim{attempt}.log")
            procs.append(victim)
            wait_until(lambda: all(consumer_seen(client, s, victim.name) for s in streams), 30,  # noqa: B023
                       "the victim on every shard")
            for round_ in range(200):
                executed += await trading(sharded, users, markets, 10, seed=len(executed) + round_)
                if any(pending(client, s, victim.name) for s in streams):
                    break
            victim.signal(signal.SIGKILL)
            assert victim.wait(10) == -signal.SIGKILL
            orphaned = sum(pending(client, s, victim.name) for s in streams)
            if orphaned:
                break
        assert orphaned > 0, "no victim was killed holding entries"
        executed += await trading(sharded, users, markets, 20, seed=999)
        heir = start_persister(env, "heir", tmp_path / "heir.log")
        procs.append(heir)

        def caught_up() -> bool:
            return (sum(pending(client, s) for s in streams) == 0
                    and scalar(shard_settings.database_url, "SELECT count(*) FROM trades") == len(executed))

        wait_until(caught_up, 60, "the heir to claim the victim's entries and catch up", interval_s=0.05)
        assert "claimed" in (tmp_path / "heir.log").read_text()
        audited = run_predmarket("audit", env=env, timeout_s=120)
        assert audited.returncode == 0, audited.stdout + audited.stderr
        heir.signal(signal.SIGTERM)
        assert heir.wait(20) == 0
    finally:
        for proc in procs:
            proc.kill()
        client.close()
    assert scalar(shard_settings.database_url, "SELECT count(DISTINCT trade_id) FROM trades") == len(executed)

    target = f"{shard_settings.key_prefix}-r"
    try:
        recovered = run_predmarket("recover", env={**env, "PM_KEY_PREFIX": target}, timeout_s=120)
        assert recovered.returncode == 0, recovered.stdout + recovered.stderr
        assert f"{SHARDS} shards" in recovered.stdout
        every = [*users, HOUSE]
        assert shard_snapshot(target, every) == shard_snapshot(shard_settings.key_prefix, every)
    finally:
        await delete_deployment(target)


# --------------------------------------------------------------------------- the cutover to another S

async def merged_state(redis: Any, prefix: str, shards: int) -> State:
    state = State()
    for k in range(shards):
        add_shard(state, await read_redis_state(redis, shard_keys(prefix, k, shards)))
    return state


async def test_recover_reshards_every_user_s_money_home_and_the_record_stays_audited(
        shard_settings: Settings, persister: ShardedPersister) -> None:
    """A deployment of 4 shards (a transfer left in transit) recovered into 3: refused without
    --reshard; with it every user's money (the transfer's too) is in its new home sub-wallet,
    positions and markets are where their ids map, the invariants hold in every shard, audit passes,
    and trading goes on with ids no trade had, copied by a persister over the 3 shards."""
    new_shards = 3
    target = shard_settings.model_copy(update={"key_prefix": f"{shard_settings.key_prefix}-3",
                                               "shards": new_shards})
    async with sharded_engine(shard_settings, sweep_every_s=None) as engine:
        users, markets = await users_and_markets(engine, "s", 5, 150 * MICRO)
        await trading(engine, users, markets, 40, seed=21)
        settled = markets[0]
        await settle(engine, settled, "YES")
        stuck = await leave_in_transit(engine, users[3], 2, 2 * MICRO)
        drain(persister)
        every = [*users, HOUSE]
        owed = {user: sum(await engine.balances(user)) for user in every}
        owed[users[3]] += stuck.amount
        before = await merged_state(engine.redis, shard_settings.key_prefix, SHARDS)

    try:
        with stores(target) as (client, pg):
            with pytest.raises(RecoveryRefused, match="--reshard"):
                recover(pg, client, Keys(target.key_prefix), shards=new_shards)
            report = recover(pg, client, Keys(target.key_prefix), shards=new_shards, resharding=True)
        assert report.resharded is not None and report.resharded.transits_closed == 1
        assert report.resharded.wallets_moved > 0 and report.resharded.markets_moved > 0
        async with sharded_engine(target, sweep_every_s=None) as rebuilt:
            for user in every:
                wallets = await rebuilt.balances(user)
                assert wallets[rebuilt.home(user)] == owed[user] == sum(wallets), user
                # what the dropped shard sent and received is counted at home: the counts still add up
                assert sum(await rebuilt.own_money(user)) == owed[user], user
            after = await merged_state(rebuilt.redis, target.key_prefix, new_shards)
            assert (after.positions, after.net_costs, after.markets) == (before.positions, before.net_costs,
                                                                         before.markets)
            assert await rebuilt.invariants() == []
            assert await asyncio.to_thread(run_audit, target) == []
            recorded = set(scalar_list(target.database_url, "SELECT trade_id FROM trades"))
            fresh = await trading(rebuilt, users, markets[1:], 12, seed=22)
            assert not {t.trade_id for t in fresh} & recorded
            with sharded_persister(target, "after") as copier:
                drain(copier)
            assert await rebuilt.invariants() == []
            assert await asyncio.to_thread(run_audit, target) == []
    finally:
        await delete_deployment(target.key_prefix)


def scalar_list(url: str, sql: str) -> list[Any]:
    with pg_connection(url) as conn:
        return list(conn.execute(text(sql)).scalars())


def lease_holders(prefix: str) -> list[str | None]:
    client = sync_client()
    try:
        return [cast(str | None, client.get(shard_keys(prefix, k, SHARDS).persister_lease)) for k in range(SHARDS)]
    finally:
        client.close()


async def test_two_persister_processes_share_the_shards_and_a_killed_one_s_are_taken_over(
        sharded: ShardedEngine, shard_settings: Settings, tmp_path: Path) -> None:
    users, markets = await users_and_markets(sharded, "k", 4, 300 * MICRO)
    env = persister_env(shard_settings, PM_SHARDS=str(SHARDS), PM_CLAIM_IDLE_S="1")
    procs = [start_persister(env, name, tmp_path / f"{name}.log") for name in ("one", "two")]
    try:
        wait_until(lambda: sorted(map(str, lease_holders(shard_settings.key_prefix))) == ["one"] * 2 + ["two"] * 2,
                   30, "the two persisters to hold two shards each")
        executed = await trading(sharded, users, markets, 20, seed=31)
        procs[0].signal(signal.SIGKILL)
        assert procs[0].wait(10) == -signal.SIGKILL
        executed += await trading(sharded, users, markets, 20, seed=32)
        wait_until(lambda: lease_holders(shard_settings.key_prefix) == ["two"] * SHARDS, 30,
                   "the survivor to take the dead one's shards once their leases expire")

        def written() -> bool:
            return int(scalar(shard_settings.database_url, "SELECT count(*) FROM trades")) == len(executed)

        wait_until(written, 30, "every trade written, the dead one's pending entries claimed")
        assert await asyncio.to_thread(run_audit, shard_settings) == []
        procs[1].signal(signal.SIGTERM)
        assert procs[1].wait(20) == 0
        assert lease_holders(shard_settings.key_prefix) == [None] * SHARDS  # given back on a clean stop
    finally:
        for proc in procs:
            proc.kill()


async def test_settled_markets_are_archived_shard_by_shard_and_come_back(
        sharded: ShardedEngine, shard_settings: Settings) -> None:
    """Over shards the janitor archives a settled market in its shard; the market comes back from its
    shard's Redis when asked for, and audit holds meanwhile."""
    users, markets = await users_and_markets(sharded, "a", 3, 200 * MICRO)
    await trading(sharded, users, markets, 20, seed=41)
    settled = markets[2]
    shard_engine = sharded.market_engine(settled)
    await shard_engine.markets.close(settled)
    await shard_engine.markets.resolve(settled, "YES")
    await shard_engine.markets.settle(settled)
    with sharded_persister(shard_settings, "janitor", market_archive_after_s=0.05, user_idle_ttl_s=0) as made:
        drain(made)
        loop = made.parts[2]

        async def archived() -> bool:
            loop.janitor.round(loop.stream.committed())
            return not await sharded.redis.exists(shard_engine.keys.market(settled))

        await wait_until_async(archived, 10, "the settled market archived")
    assert await sharded.redis.hexists(shard_engine.keys.archived, settled)
    assert all([await sharded.redis.exists(sharded.wallet_keys(sharded.home(u)).user(u)) for u in users])
    assert await asyncio.to_thread(run_audit, shard_settings) == []
    with pytest.raises(MarketNotOpen):  # a trade meets the archived market, brought back, settled
        await sharded.execute_trade(Order(users[0], settled, Side.BUY, Outcome.YES, shares=MICRO))
    assert (await shard_engine.markets.get(settled)).status == "SETTLED"
    assert await sharded.invariants() == []


async def sell_everything(engine: ShardedEngine, users: list[str]) -> None:
    """Every holding of ``users`` sold: nothing pins their sub-wallets in Redis (a holder is never evicted)."""
    for user in users:
        for held in (await engine.account(user)).positions:
            if held.shares:
                await engine.execute_trade(Order(user, held.market_id, Side.SELL, held.outcome, shares=held.shares))


async def evict_idle(engine: ShardedEngine, made: ShardedPersister, users: list[str]) -> None:
    """Every shard's janitor over its keys, as if an hour had passed, until no sub-wallet of ``users`` is
    left in Redis (a round evicts only what its shard's committed mark covers)."""
    seconds, micros = await engine.redis.time()
    later_ms = seconds * 1000 + micros // 1000 + 3_600_000

    async def gone() -> bool:
        drain(made)
        for loop in made.parts:
            loop.janitor.sweep(loop.stream.committed(), now_ms=later_ms)
        return await wallet_fields(engine, users) == {}

    await wait_until_async(gone, 10, "every idle sub-wallet evicted")


async def wallet_fields(engine: ShardedEngine, users: list[str]) -> dict[tuple[str, int], list[str | None]]:
    """Every sub-wallet of ``users`` in Redis: (user, shard) -> [available, moved_in, moved_out]."""
    found = {}
    for user in users:
        for shard in range(SHARDS):
            wallet = engine.wallet_keys(shard).user(user)
            fields = await engine.redis.hmget(wallet, ["available", "moved_in", "moved_out"])
            if fields[0] is not None:
                found[user, shard] = cast(list[str | None], fields)
    return found


async def test_idle_sub_wallets_are_evicted_shard_by_shard_and_load_back_with_their_transfer_counts(
        sharded: ShardedEngine, shard_settings: Settings) -> None:
    """Each shard's janitor evicts the idle sub-wallets of its shard (at home and elsewhere); audit holds
    while they are out; a read, a trade or a transfer loads one back from the record with its balance and
    transfer counts, so accounts and own money are what they were; a credit into an evicted sub-wallet
    loads it first (it made a fresh one, without the evicted money, before lua/transfer_in.lua refused)."""
    pg = create_async_engine(shard_settings.database_url)
    load_from(pg, sharded)
    try:
        users, markets = await users_and_markets(sharded, "e", 3, 200 * MICRO)
        await trading(sharded, users, markets, 30, seed=43)
        await sell_everything(sharded, users)
        resident = await wallet_fields(sharded, users)
        assert len({shard for _, shard in resident}) > 1, "money in several shards"
        accounts = {user: (await sharded.account(user)).available for user in users}
        owned = {user: await sharded.own_money(user) for user in users}
        with sharded_persister(shard_settings, "janitor", user_idle_ttl_s=60) as made:
            await evict_idle(sharded, made, users)
            assert sum(loop.janitor.stats.users_evicted for loop in made.parts) == len(resident)
            assert {(u, k) for k in range(SHARDS) for u in users
                    if await sharded.redis.hexists(sharded.wallet_keys(k).evicted, u)} == set(resident)
            assert await asyncio.to_thread(run_audit, shard_settings) == []
            # Over shards a mark is also the record that a sub-wallet exists: none is ever forgotten.
            for loop in made.parts:
                await asyncio.to_thread(loop.janitor.forget_old_marks, 2**62)
            assert {(u, k) for k in range(SHARDS) for u in users
                    if await sharded.redis.hexists(sharded.wallet_keys(k).evicted, u)} == set(resident)

            # Reads load every sub-wallet back as it was (with its transfer counts, which own money needs).
            assert {user: (await sharded.account(user)).available for user in users} == accounts
            assert {user: await sharded.own_money(user) for user in users} == owned
            assert await wallet_fields(sharded, users) == resident

            # A transfer into an evicted sub-wallet holding money adds to that money.
            user, shard = next((u, k) for (u, k), fields in resident.items()
                               if k != sharded.home(u) and int(fields[0] or 0) > 0)
            held = int(resident[user, shard][0] or 0)
            await evict_idle(sharded, made, users)
            await sharded.transfers.move(user, sharded.home(user), shard, MICRO)  # loads both sides
            assert (await sharded.balances(user))[shard] == held + MICRO
            assert sum(await sharded.own_money(user)) == accounts[user]

            # Trading goes on over evicted sub-wallets, each loaded on the way; both stores agree after.
            await evict_idle(sharded, made, users)
            await trading(sharded, users, markets, 20, seed=44)
            for user in users:  # those the trades did not touch are still out: back in, for Redis's invariants
                await sharded.balances(user)
            assert await sharded.invariants() == []
            drain(made)
            assert await asyncio.to_thread(run_audit, shard_settings) == []
    finally:
        await pg.dispose()
