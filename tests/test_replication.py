"""PM_REPLICA_ACKS: trades answered, and entries copied to PostgreSQL, once replicas have them (WAIT).

On a private cluster with a replica per master: an answered trade is already on the replica of the
master that ran it (what makes it survive that master's failover); with the replica stopped (SIGSTOP)
trades are still answered (they ran) and counted as unconfirmed, and the persister copies nothing to
PostgreSQL until the replica has caught up -- the record never holds what a failover could take back.
Without the setting the persister copies entries the replica does not have (the witness).
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from predmarket.engine.connection import connect
from predmarket.engine.keys import Keys
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import HOUSE, Order, Outcome, Side
from predmarket.engine.replication import ReplicasBehind
from predmarket.engine.settings import Settings
from predmarket.engine.units import MICRO
from sqlalchemy import create_engine, text

from tests.support.cluster import Node, PrivateCluster
from tests.support.persister import persister
from tests.support.redis_data import delete_prefix
from tests.support.waiting import wait_until


def _settings(cluster: PrivateCluster, database_url: str, acks: int) -> Settings:
    # The wait is generous: a live replica confirms within a few ms, but on a busy CI machine (seven
    # Redis servers, two cores) one confirmation took over 200 ms and counted as a shortfall. Each write
    # made with the replica stopped waits all of it, which the tests keep to a handful.
    return Settings(redis_url=cluster.url, key_prefix=f"{{pmtest-repl-{uuid.uuid4().hex[:8]}}}",
                    database_url=database_url, replica_acks=acks, replica_wait_ms=1500)


@contextmanager
def _stopped(node: Node) -> Iterator[None]:
    """The node frozen (SIGSTOP): it neither receives nor confirms the master's writes meanwhile."""
    assert node.process is not None
    os.kill(node.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(node.process.pid, signal.SIGCONT)


def _replica_of_deployment(cluster: PrivateCluster, keys: Keys) -> Node:
    (replica,) = cluster.replicas_of(cluster.master_for_key(keys.events))
    return replica


def _pg_trades(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM trades")).scalar_one())
    finally:
        engine.dispose()


async def _engine_with_a_market(settings: Settings) -> tuple[MarketEngine, str, str]:
    engine = MarketEngine(connect(settings.redis_url, settings.redis_timeout_s), settings)
    await engine.start()
    user = await engine.accounts.create(f"u{uuid.uuid4().hex[:8]}")
    await engine.accounts.deposit(user.user_id, 1_000 * MICRO)
    await engine.accounts.deposit(HOUSE, 100 * MICRO)  # the subsidy
    market = await engine.markets.create("replicated?", 100 * MICRO)
    await engine.markets.open(market.market_id)
    return engine, user.user_id, market.market_id


def _buy(user_id: str, market_id: str) -> Order:
    return Order(user_id=user_id, market_id=market_id, side=Side.BUY, outcome=Outcome.YES, shares=MICRO)


async def test_an_answered_trade_is_on_the_replica_and_a_stopped_replica_is_counted(
    redis_cluster_with_replicas: PrivateCluster, database_url: str,
) -> None:
    cluster = redis_cluster_with_replicas
    settings = _settings(cluster, database_url, acks=1)
    keys = Keys(settings.key_prefix)
    engine, user_id, market_id = await _engine_with_a_market(settings)
    replica = _replica_of_deployment(cluster, keys)
    try:
        with replica.client() as on_replica:
            on_replica.execute_command("READONLY")
            for _ in range(20):
                trade = await engine.execute_trade(_buy(user_id, market_id))
                # Confirmed by the replica before the answer: it reads the trade at once.
                assert int(on_replica.get(keys.trade_seq) or 0) >= trade.trade_id
            assert engine.stats.replica_shortfalls == 0
            with _stopped(replica):
                trade = await engine.execute_trade(_buy(user_id, market_id))  # it ran: answered all the same
            assert engine.stats.replica_shortfalls == 1
    finally:
        await engine.close()
        delete_prefix(settings.key_prefix, settings.redis_url)


async def test_admin_writes_are_answered_once_the_replica_has_them(
    redis_cluster_with_replicas: PrivateCluster, database_url: str,
) -> None:
    """Deposits, withdrawals, market creation, lifecycle and settlement: each answered write is on the
    replica already; with the replica stopped each is still answered (it ran) and counted."""
    cluster = redis_cluster_with_replicas
    settings = _settings(cluster, database_url, acks=1)
    keys = Keys(settings.key_prefix)
    engine, user_id, market_id = await _engine_with_a_market(settings)
    replica = _replica_of_deployment(cluster, keys)
    try:
        with replica.client() as on_replica:
            on_replica.execute_command("READONLY")

            def on_the_replica(key: str, field: str) -> str | None:
                return on_replica.hget(key, field)  # type: ignore[no-any-return]  # decoded by the client

            account = await engine.accounts.deposit(user_id, 5 * MICRO)
            assert on_the_replica(keys.user(user_id), "available") == str(account.available)
            account = await engine.accounts.withdraw(user_id, 2 * MICRO)
            assert on_the_replica(keys.user(user_id), "available") == str(account.available)
            await engine.execute_trade(_buy(user_id, market_id))
            for step, status in ((engine.markets.close, "CLOSED"),
                                 (lambda m: engine.markets.resolve(m, Outcome.YES), "RESOLVED"),
                                 (engine.markets.settle, "SETTLED")):
                await step(market_id)
                assert on_the_replica(keys.market(market_id), "status") == status
            await engine.accounts.deposit(HOUSE, 100 * MICRO)
            created = await engine.markets.create("another", 100 * MICRO)
            assert on_the_replica(keys.market(created.market_id), "status") == "CREATED"
            assert engine.stats.replica_shortfalls == 0

            with _stopped(replica):
                await engine.accounts.deposit(user_id, MICRO)  # it ran: answered all the same
                await engine.markets.open(created.market_id)
            assert engine.stats.replica_shortfalls == 2
            assert engine.replica_fence.shortfalls == 2
    finally:
        await engine.close()
        delete_prefix(settings.key_prefix, settings.redis_url)


async def test_without_the_setting_no_admin_write_waits(engine: MarketEngine) -> None:
    """The default (PM_REPLICA_ACKS=0) sends no fence: the counter it would bump never appears."""
    await engine.accounts.deposit(HOUSE, 5 * MICRO)
    assert await engine.redis.exists(engine.keys.replication_fence) == 0


@pytest.mark.parametrize("acks", [1, 0])
async def test_the_persister_copies_only_what_a_replica_has(
    redis_cluster_with_replicas: PrivateCluster, database_url: str, acks: int,
) -> None:
    cluster = redis_cluster_with_replicas
    settings = _settings(cluster, database_url, acks=acks)
    keys = Keys(settings.key_prefix)
    engine, user_id, market_id = await _engine_with_a_market(settings)
    replica = _replica_of_deployment(cluster, keys)
    try:
        with persister(settings) as p:
            while p.step():
                pass  # the set-up's events
            await engine.execute_trade(_buy(user_id, market_id))
            assert p.step() > 0 and _pg_trades(database_url) == 1
            with _stopped(replica):
                await engine.execute_trade(_buy(user_id, market_id))
                if acks:
                    with pytest.raises(ReplicasBehind):
                        p.step()
                    assert _pg_trades(database_url) == 1  # the record is not ahead of the replica
                else:
                    assert p.step() > 0 and _pg_trades(database_url) == 2  # the witness: it is

            def caught_up() -> bool:
                try:
                    p.step()
                except ReplicasBehind:
                    return False  # the replica is still catching up
                return _pg_trades(database_url) == 2

            wait_until(caught_up, 10, "the persister to copy the trade once the replica has it")
    finally:
        await engine.close()
        delete_prefix(settings.key_prefix, settings.redis_url)
