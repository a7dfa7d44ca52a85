"""Chaos over shards on a Redis Cluster: worker processes trading through the sharded engine (their
trades keep moving money between sub-wallets by the transfer saga) are SIGKILLed while transfers are
in flight, and a master is SIGKILLed (its replica promoted, the failed node then rejoining). Once the
engine's sweeper has finished what the killed left between steps, every shard's books balance, money
in transit is zero, every transfer was credited exactly once and answered a debit of the same user and
amount: nothing was created or destroyed. A ``predmarket persister`` over the 8 shards copies every
stream meanwhile (SIGKILLed once, its heir claiming what it held): afterwards PostgreSQL holds every
trade Redis counted exactly once, and ``audit`` passes in both stores (sub-wallets, transfers each
debited once and credited once, money in transit, every trade's cost replayed).

3 masters with a replica each; 8 shards; ``PM_REPLICA_ACKS=1`` (each saga step on a replica before
the next, each trade on a replica before its answer).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
from predmarket.engine.connection import UNREACHABLE, connect, connect_sync
from predmarket.engine.models import HOUSE
from predmarket.engine.settings import Settings
from predmarket.engine.sharded import ShardedEngine
from predmarket.engine.units import MICRO
from predmarket.persister.audit import audit, wait_for_persister
from sqlalchemy import create_engine

from tests.support.cluster import PrivateCluster
from tests.support.persister import persister_env, scalar
from tests.support.processes import Process, start_persister
from tests.support.redis_data import delete_prefix
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SHARDS = 8
WORKERS = 3


class Workers:
    """The trading processes, each with its own log; SIGKILLed on the way out whatever happened."""

    def __init__(self, url: str, prefix: str, users: list[str], markets: list[str], logs: Path) -> None:
        self.args = (url, prefix, str(SHARDS))
        self.users, self.markets, self.logs = users, markets, logs
        self.processes: list[subprocess.Popen[bytes]] = []
        self._files: list[IO[bytes]] = []
        self.started = 0

    def start(self) -> subprocess.Popen[bytes]:
        self.started += 1
        log = (self.logs / f"worker{self.started}.log").open("wb")
        self._files.append(log)
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.sharded_worker", *self.args, str(self.started),
             ",".join(self.users), ",".join(self.markets)],
            cwd=ROOT, env=os.environ, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.processes.append(process)
        return process

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def kill_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                self.kill(process)
        for log in self._files:
            log.close()

    def output(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-2000:] for p in sorted(self.logs.glob("worker*.log")))


@pytest.fixture
def chaos_prefix(redis_cluster_with_replicas: PrivateCluster) -> Iterator[str]:
    prefix = f"pmshchaos{uuid.uuid4().hex[:8]}"
    yield prefix
    delete_prefix(prefix, redis_cluster_with_replicas.url)  # the shards' keys are under it


async def test_workers_and_a_master_killed_mid_transfer_create_and_destroy_no_money(
    redis_cluster_with_replicas: PrivateCluster, chaos_prefix: str, tmp_path: Path, database_url: str,
) -> None:
    cluster = redis_cluster_with_replicas
    settings = Settings(redis_url=cluster.url, key_prefix=chaos_prefix, shards=SHARDS, replica_acks=1,
                        replica_wait_ms=500, database_url=database_url)
    persister_environment = persister_env(settings, PM_SHARDS=str(SHARDS), PM_REPLICA_ACKS="1",
                                          PM_CLAIM_IDLE_S="1")
    persisters: list[Process] = []
    # The test's own engine sweeps too, as every process running the engine does: it is what
    # finishes the transfers the killed workers leave between steps.
    engine = ShardedEngine(connect(cluster.url, 2.0), settings, sweep_every_s=0.2, sweep_after_ms=1_000)
    try:
        await engine.start()
        await engine.deposit(HOUSE, 10_000 * MICRO)
        users = [(await engine.create_user(f"chaos{i}")).user_id for i in range(12)]
        for user in users:
            await engine.deposit(user, 30 * MICRO)  # little per user: trades keep needing transfers
        markets = []
        for _ in range(16):
            market = await engine.create_market("chaos", 50 * MICRO)
            await engine.market_engine(market.market_id).markets.open(market.market_id)
            markets.append(market.market_id)

        async def moved_out() -> int:
            total = 0
            for shard in range(SHARDS):
                total += int(await engine.redis.hget(engine.wallet_keys(shard).totals, "transfers_out") or 0)
            return total

        async def traded() -> int:
            total = 0
            for shard in range(SHARDS):
                total += int(await engine.redis.get(engine.wallet_keys(shard).trade_seq) or 0)
            return total

        async def pending() -> int:
            return sum([len(await engine.transfers.pending(shard)) for shard in range(SHARDS)])

        workers = Workers(cluster.url, chaos_prefix, users, markets, tmp_path)
        kills = 0
        persisters.append(start_persister(persister_environment, "first", tmp_path / "persister1.log"))
        try:
            for _ in range(WORKERS):
                workers.start()
            await wait_until_async(lambda: _at_least(traded, 100), 60, "trading to start")
            # Workers die while transfers are in flight (an outbox holds one), and come back.
            for victim in range(2):
                await wait_until_async(lambda: _at_least(pending, 1), 30, "a transfer in flight", interval_s=0.001)
                workers.kill(workers.processes[victim])
                kills += 1
                workers.start()
            # The persister dies too, whatever it held; its heir claims it.
            persisters[0].kill()
            persisters.append(start_persister(persister_environment, "heir", tmp_path / "persister2.log"))
            mark = await traded()
            await wait_until_async(lambda: _at_least(traded, mark + 100), 60, "trading by the restarted workers")
            # The master carrying shard 0 dies; its replica takes over; the node comes back as a replica.
            master = cluster.master_for_key(engine.wallet_keys(0).events)
            before_failover = await moved_out()
            cluster.kill(master)
            cluster.wait_promoted(master)
            cluster.rejoin(master)
            await wait_until_async(lambda: _at_least(moved_out, before_failover + 1), 60,
                                   "transfers after the failover")
            mark = await traded()
            await wait_until_async(lambda: _at_least(traded, mark + 100), 60, "trading after the failover")
            # And every worker dies at once, transfers in flight or not.
            await wait_until_async(lambda: _at_least(pending, 1), 30, "a transfer in flight", interval_s=0.001)
            workers.kill_all()
            kills += WORKERS
        finally:
            workers.kill_all()
        trades = await traded()

        # The engine's sweeper finishes whatever the killed workers left between steps.
        left = await pending()
        await wait_until_async(lambda: _at_most(pending, 0), 30, "the sweeper to finish every transfer")
        assert await engine.transfers.in_transit() == {}
        breaches = await engine.invariants()
        assert breaches == [], [str(b) for b in breaches]

        # The record: every trade once, and audit passes in Redis and PostgreSQL.
        lag, record_breaches = await asyncio.to_thread(_audit_both_stores, cluster, engine, database_url)
        assert lag == 0, persisters[-1].log_tail()
        assert record_breaches == [], record_breaches
        recorded = scalar(database_url, "SELECT count(DISTINCT trade_id) FROM trades")
        assert recorded == scalar(database_url, "SELECT count(*) FROM trades") == trades
        print(f"CHAOS sharded: {trades:,} trades, {await moved_out() / MICRO:,.0f} units moved by transfers, "
              f"{kills} workers and 1 persister SIGKILLed, 1 master failed over, {left} transfers left pending, "
              f"finished by the sweeper; invariants hold; every trade in PostgreSQL once, audit passes")
    finally:
        for process in persisters:
            process.kill()
        await engine.close()


def _audit_both_stores(cluster: PrivateCluster, engine: ShardedEngine, database_url: str) -> tuple[int, list[str]]:
    """Once the persister has caught up on every shard (the entries left, if it never does), ``audit``'s
    breaches."""
    client = connect_sync(cluster.url, 30.0)
    pg = create_engine(database_url)
    try:
        lag = wait_for_persister(client, [engine.wallet_keys(k) for k in range(SHARDS)], 60)
        if lag:
            return lag, []
        report = audit(pg, client, cluster.url, engine.keys, wait_s=10, shards=SHARDS)
        return 0, [str(b) for b in report.breaches]
    finally:
        pg.dispose()
        client.close()


async def _at_most(measure: Callable[[], Awaitable[int]], n: int) -> bool:
    try:
        return await measure() <= n
    except UNREACHABLE:
        return False


async def _at_least(measure: Callable[[], Awaitable[int]], n: int) -> bool:
    """``measure() >= n``; False while the cluster cannot answer (a failover under way: ask again)."""
    try:
        return await measure() >= n
    except UNREACHABLE:
        return False
