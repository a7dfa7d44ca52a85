"""Chaos on a Redis Cluster: a master SIGKILLed (its replica promoted), an API replica and the persister
SIGKILLed and restarted, all under trading, deposits and withdrawals -- and nothing acknowledged is lost,
nothing runs twice, no money is made or destroyed.

The deployment is the one ``docs/SCALING.md`` describes as built: one hash tag (every key in one slot,
so one master carries it), ``PM_REPLICA_ACKS=1`` (every acknowledged write on a replica before its
answer). The cluster is private: 3 masters with a replica each, ``cluster-node-timeout`` 1 s.

Traders (:class:`~tests.support.faults.Trader`) retry each keyed trade until a definite answer, on the
other replica when one dies. Deposits and withdrawals carry no Idempotency-Key in the contract, so a
mover never retries one: an answer lost to a fault leaves it *unknown*. Each movement's amount is
unique, so the event stream shows which ran: every acknowledged one once, an unknown one at most once,
nothing else, and the balance is exactly their sum.
"""

from __future__ import annotations

import random
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import cast

import httpx
import pytest
import redis
from predmarket.engine.keys import Keys
from predmarket.engine.units import micro_from_decimal

from tests.support.api import bearer
from tests.support.cluster import PrivateCluster
from tests.support.faults import (
    Load,
    Reliability,
    assert_accounts_match_acks,
    assert_acks_exactly_once,
    assert_audit_passes,
    deployment,
    pg_trades,
    stream_trades,
    trade_seq,
)
from tests.support.persister import pending
from tests.support.services import sync_client
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

#: Each mover's opening balance, whole units.
MOVER_START = 100


@dataclass(eq=False)
class Mover(threading.Thread):
    """One account's deposits and withdrawals, alternating replicas, each sent once.

    The n-th movement is of ``units`` whole units plus n micro-units, so each one is told apart in
    the event stream by its amount alone (n < 1,000,000).
    """

    urls: list[str]
    admin_token: str
    user_id: str
    stop: threading.Event
    seed: int
    #: signed micro-units of each movement answered 201
    acked: list[int] = field(default_factory=list)
    #: signed micro-units of each movement whose answer was lost (503 or the connection cut)
    unknown: list[int] = field(default_factory=list)
    refused: int = 0
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, name=f"mover-{self.user_id}", daemon=True)

    def run(self) -> None:
        rng = random.Random(self.seed)
        clients = [httpx.Client(base_url=url, timeout=10.0, headers=bearer(self.admin_token)) for url in self.urls]
        try:
            n = 0
            while not self.stop.is_set() and n < 999_999:
                n += 1
                amount = rng.randint(1, 20) * 1_000_000 + n
                kind, signed = ("deposits", amount) if rng.random() < 0.55 else ("withdrawals", -amount)
                try:
                    decimal = f"{amount // 1_000_000}.{amount % 1_000_000:06d}"
                    r = clients[n % len(clients)].post(f"/v1/users/{self.user_id}/{kind}", json={"amount": decimal})
                except httpx.TransportError:
                    self.unknown.append(signed)
                else:
                    if r.status_code == 201:
                        self.acked.append(signed)
                    elif r.status_code == 503:
                        self.unknown.append(signed)
                    elif r.status_code == 422 and r.json()["error"]["code"] == "INSUFFICIENT_FUNDS":
                        self.refused += 1
                    else:
                        self.errors.append(f"{kind} {amount}: {r.status_code} {r.text[:200]}")
                time.sleep(0.01)  # the client's pacing, not synchronisation
        except Exception as exc:  # reported by the test, never lost in a thread
            self.errors.append(repr(exc))
        finally:
            for client in clients:
                client.close()

    def check(self, executed: list[int]) -> None:
        """``executed`` (signed micro-units of the account's Deposit and Withdrawal events, in order) holds
        every acknowledged movement, each movement at most once, and none that was never sent."""
        assert len(executed) == len(set(executed)), f"{self.user_id}: a movement executed twice"
        assert set(self.acked) <= set(executed), f"{self.user_id}: acknowledged movements lost"
        assert set(executed) <= set(self.acked) | set(self.unknown), f"{self.user_id}: a movement never sent"


def movements(client: redis.Redis, prefix: str, user_id: str) -> list[int]:
    """The signed micro-units of every Deposit and Withdrawal of ``user_id`` in the stream, oldest first."""
    entries = cast(list[tuple[str, dict[str, str]]], client.xrange(Keys(prefix).events))
    return [(1 if f["type"] == "Deposit" else -1) * micro_from_decimal(Decimal(f["amount"]))
            for _, f in entries if f.get("type") in ("Deposit", "Withdrawal") and f.get("user_id") == user_id]


def tagged_prefix() -> str:
    return f"{{pmchaos-{uuid.uuid4().hex[:8]}}}"


def test_chaos_on_a_cluster_master_api_and_persister_kills_lose_and_duplicate_nothing(
    database_url: str, tmp_path: Path, redis_cluster_with_replicas: PrivateCluster,
) -> None:
    cluster = redis_cluster_with_replicas
    figures = Reliability("Redis Cluster: master SIGKILL (replica promoted), API replica and persister SIGKILL")
    with deployment("chaos", database_url, cluster.url, tmp_path, prefix=tagged_prefix(),
                    PM_REPLICA_ACKS="1", PM_PERSISTER_BATCH="100") as (stack, api):
        markets = [api.create_market("1000") for _ in range(4)]
        load = Load(api, markets, traders=8, failover=True).start()
        movers = [Mover(stack.urls, stack.admin_token, api.create_user(str(MOVER_START)).user_id, load.stop, seed=i)
                  for i in range(3)]
        for mover in movers:
            mover.start()
        master = cluster.master_for_key(stack.events_key)
        with sync_client(cluster.url) as client:
            load.wait_acked(200, 30)

            # An API replica dies with requests in flight; its clients fail over; it comes back on its port.
            stack.servers[1].kill()
            load.wait_acked(load.acked + 100, 30, "trades through the surviving replica")
            stack.servers[1].start()

            # The persister dies holding a batch it has not acknowledged; another takes its entries over.
            wait_until(lambda: pending(client, stack.events_key, "p0") > 0, 20,
                       "the persister to hold an unacknowledged batch", interval_s=0.001)
            stack.persisters[0].signal(signal.SIGKILL)
            stack.start_persister("p1")

            # The master carrying the deployment dies; its replica is promoted; trading goes on.
            load.wait_acked(load.acked + 100, 30)
            acked_at_kill = load.acked
            cluster.kill(master)
            promoted = cluster.wait_promoted(master)
            load.wait_acked(acked_at_kill + 200, 40, "trades on the promoted master")
            # The promoted master has no replica: with PM_REPLICA_ACKS=1 the persister copies nothing a
            # failover could take back, so the record waits until the failed node rejoins as its replica.
            cluster.rejoin(master)
            load.finish(timeout_s=60)
            for mover in movers:
                mover.join(30)

            assert not any(m.errors for m in movers), [m.errors[:3] for m in movers]
            assert cluster.master_for_key(stack.events_key).port == promoted.port

            stack.wait_persisted(timeout_s=60)
            assert_accounts_match_acks(client, stack.prefix, load)
            seq = trade_seq(client, stack.prefix)
            executed = [int(f["trade_id"]) for f in stream_trades(client, stack.prefix)]
            keys = Keys(stack.prefix)
            for mover in movers:
                moved = movements(client, stack.prefix, mover.user_id)
                mover.check(moved[1:])  # the first is the opening deposit
                available = int(str(client.hget(keys.user(mover.user_id), "available")))  # micro-units
                assert available == MOVER_START * 1_000_000 + sum(moved[1:]), mover.user_id
        assert len(executed) == len(set(executed)) == seq  # every trade id executed once in Redis
        assert {t["trade_id"] for t in load.acks.values()} <= set(executed)
        figures.lost, figures.duplicates = assert_acks_exactly_once(load.acks, load.rejected,
                                                                    pg_trades(stack.database_url), seq=seq)
        assert_audit_passes(stack)
        statuses = load.statuses
        figures.trades, figures.requests = len(load.acks), load.requests
        answered = sum(len(m.acked) for m in movers)
        unknown = sum(len(m.unknown) for m in movers)
        figures.load = (f"8 traders over 4 markets, 3 accounts moving money; {answered} deposits/withdrawals "
                        f"acknowledged, {unknown} unanswered; {statuses['503']} answers 503, "
                        f"{sum(n for s, n in statuses.items() if s.startswith('transport:'))} requests cut")
    figures.faults = "1 master SIGKILL (replica promoted), 1 API replica SIGKILL + restart, 1 persister SIGKILL"
    figures.report()

