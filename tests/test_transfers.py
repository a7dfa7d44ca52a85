"""The transfer saga between a user's sub-wallets (engine/transfers.py), on one Redis with S shards
and on a private 3-master cluster where the shards sit on different masters.

Money is checked to the micro-unit after every scenario: sub-wallets + in transit = deposits -
withdrawals (+ nothing else: no pools here), every TransferIn has its TransferOut with the same
user and amount, and no transfer id is credited twice.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import cast

import pytest
from predmarket.engine.connection import connect
from predmarket.engine.errors import InsufficientFunds, Unavailable
from predmarket.engine.scripts import Scripts
from predmarket.engine.shards import shard_keys, shard_of, shard_prefix
from predmarket.engine.transfers import Transfer, TransferIdReused, Transfers
from predmarket.engine.units import MICRO
from redis.asyncio import Redis

from tests.support.cluster import PrivateCluster
from tests.support.redis_data import delete_prefix, delete_prefix_async
from tests.support.services import new_redis

SHARDS = 4


class Wallets:
    """One user's sub-wallets in a deployment of ``shards`` shards, and the money checks."""

    def __init__(self, redis: Redis, prefix: str, shards: int) -> None:
        self.redis, self.prefix, self.shards = redis, prefix, shards
        self.scripts = Scripts(redis)
        self.transfers = Transfers(redis, self.scripts, prefix, shards)

    async def open(self, user_id: str, shard: int, units: int) -> None:
        """A sub-wallet funded by a deposit (the deposit script on the shard's own keys)."""
        k = shard_keys(self.prefix, shard, self.shards)
        await self.redis.hset(k.user(user_id), "available", "0")
        await self.scripts.deposit([k.user(user_id), k.events, k.totals], [user_id, units * MICRO])

    async def available(self, user_id: str) -> list[int]:
        return [int(await self.redis.hget(shard_keys(self.prefix, k, self.shards).user(user_id), "available") or 0)
                for k in range(self.shards)]

    async def events(self, kind: str) -> list[dict[str, str]]:
        out = []
        for k in range(self.shards):
            entries = cast(list[tuple[str, dict[str, str]]],
                           await self.redis.xrange(shard_keys(self.prefix, k, self.shards).events))
            out += [fields for _, fields in entries if fields["type"] == kind]
        return out

    async def assert_conserved(self, users: list[str]) -> None:
        """Sub-wallets + in transit = deposits (per user and in all); every credit has its debit, once."""
        deposits = Counter({e["user_id"]: 0 for e in await self.events("Deposit")})
        for e in await self.events("Deposit"):
            deposits[e["user_id"]] += int(e["amount"].replace(".", ""))
        in_transit = await self.transfers.in_transit()
        for user in users:
            assert sum(await self.available(user)) + in_transit.get(user, 0) == deposits[user], user
        outs = {e["transfer_id"]: e for e in await self.events("TransferOut")}
        ins = await self.events("TransferIn")
        assert len({e["transfer_id"] for e in ins}) == len(ins), "a transfer credited twice"
        for e in ins:
            out = outs[e["transfer_id"]]  # a TransferIn without its TransferOut is a KeyError
            assert (out["user_id"], out["amount"], out["to_shard"]) == (e["user_id"], e["amount"], e["to_shard"])
        totals = Counter[str]()
        for k in range(self.shards):
            hashed = cast(dict[str, str], await self.redis.hgetall(shard_keys(self.prefix, k, self.shards).totals))
            for name, value in hashed.items():
                totals[name] += int(value)
        assert totals["transfers_out"] - totals["transfers_in"] == sum(in_transit.values())


@pytest.fixture
async def wallets(prefix: str) -> AsyncIterator[Wallets]:
    redis = new_redis()
    try:
        yield Wallets(redis, prefix, SHARDS)
    finally:
        await delete_prefix_async(redis, prefix)
        await redis.aclose()


def test_shard_names_one_shard_is_the_deployments_own_prefix() -> None:
    assert shard_prefix("pm", 0, 1) == "pm"  # S = 1: today's keys, unchanged
    assert shard_prefix("pm", 3, 8) == "pm:{s3}"
    assert shard_keys("pm", 3, 8).market("m1") == "pm:{s3}:{m:m1}"  # the first tag decides the slot
    assert {shard_of(f"m{i}", 8) for i in range(200)} == set(range(8))
    assert shard_of("m7", 1) == 0
    with pytest.raises(ValueError):
        shard_prefix("pm", 8, 8)


async def test_a_transfer_moves_money_once_and_leaves_nothing_pending(wallets: Wallets) -> None:
    await wallets.open("alice", 0, 100)
    transfer = await wallets.transfers.move("alice", 0, 2, 30 * MICRO)
    assert await wallets.available("alice") == [70 * MICRO, 0, 30 * MICRO, 0]
    assert await wallets.transfers.pending(0) == []
    (out,), (into,) = await wallets.events("TransferOut"), await wallets.events("TransferIn")
    assert (out["transfer_id"], out["from_shard"], out["to_shard"], out["amount"], out["available"]) == (
        transfer.transfer_id, "0", "2", "30.000000", "70.000000")
    assert (into["transfer_id"], into["amount"], into["available"]) == (transfer.transfer_id, "30.000000", "30.000000")
    # Both records expire now that the transfer is done; the destination's new sub-wallet has no name.
    for shard in (0, 2):
        assert await wallets.redis.ttl(shard_keys(wallets.prefix, shard, SHARDS).transfer(transfer.transfer_id)) > 0
    wallet = await wallets.redis.hgetall(shard_keys(wallets.prefix, 2, SHARDS).user("alice"))
    assert (wallet["username"], wallet["available"], wallet["locked"]) == ("", str(30 * MICRO), "0")
    await wallets.assert_conserved(["alice"])


async def test_a_transfer_beyond_the_source_moves_nothing(wallets: Wallets) -> None:
    await wallets.open("alice", 1, 10)
    with pytest.raises(InsufficientFunds):
        await wallets.transfers.move("alice", 1, 3, 10 * MICRO + 1, transfer_id="t1")
    assert await wallets.available("alice") == [0, 10 * MICRO, 0, 0]
    assert await wallets.redis.exists(shard_keys(wallets.prefix, 1, SHARDS).transfer("t1")) == 0
    assert await wallets.events("TransferOut") == []
    with pytest.raises(ValueError):
        await wallets.transfers.move("alice", 1, 1, MICRO)
    with pytest.raises(ValueError):
        await wallets.transfers.move("alice", 1, 2, 0)


async def test_every_step_sent_again_changes_nothing(wallets: Wallets) -> None:
    await wallets.open("alice", 0, 100)
    transfer = await wallets.transfers.move("alice", 0, 1, 25 * MICRO, transfer_id="t1")
    await wallets.transfers.take_out(transfer)  # the first step again, after the transfer is done: DUP
    await wallets.transfers.finish(transfer)  # and the others
    assert await wallets.available("alice") == [75 * MICRO, 25 * MICRO, 0, 0]
    with pytest.raises(TransferIdReused):  # the same id for another amount debits nothing either
        await wallets.transfers.take_out(Transfer("t1", "alice", 0, 1, 26 * MICRO))
    assert await wallets.available("alice") == [75 * MICRO, 25 * MICRO, 0, 0]
    assert len(await wallets.events("TransferOut")) == len(await wallets.events("TransferIn")) == 1
    await wallets.assert_conserved(["alice"])


@pytest.mark.parametrize("crash_after", ["transfer_out", "transfer_in", "transfer_done"])
async def test_the_sweeper_finishes_a_transfer_cut_after_any_step(wallets: Wallets, crash_after: str) -> None:
    await wallets.open("alice", 0, 100)
    transfer = Transfer("t1", "alice", 0, 3, 40 * MICRO)
    src, dst = (shard_keys(wallets.prefix, k, SHARDS) for k in (0, 3))
    await wallets.transfers.take_out(transfer)
    if crash_after != "transfer_out":
        await wallets.scripts.transfer_in([dst.user("alice"), dst.transfer("t1"), dst.events, dst.totals, dst.evicted],
                                          transfer.args)
    if crash_after == "transfer_done":
        await wallets.scripts.transfer_done([src.transfer("t1"), src.outbox], ["t1", 60])
    await wallets.assert_conserved(["alice"])  # in transit counted while debited and not credited
    assert await wallets.transfers.in_transit() == ({"alice": 40 * MICRO} if crash_after == "transfer_out" else {})

    finished = await wallets.transfers.sweep(older_than_ms=0)
    assert finished == (0 if crash_after == "transfer_done" else 1)
    assert await wallets.transfers.sweep(older_than_ms=0) == 0
    assert await wallets.available("alice") == [60 * MICRO, 0, 0, 40 * MICRO]
    assert await wallets.transfers.pending(0) == []
    assert len(await wallets.events("TransferIn")) == 1
    await wallets.assert_conserved(["alice"])


async def test_a_young_pending_transfer_is_left_to_its_mover(wallets: Wallets) -> None:
    await wallets.open("alice", 0, 100)
    await wallets.transfers.take_out(Transfer("t1", "alice", 0, 1, MICRO))
    assert await wallets.transfers.sweep(older_than_ms=60_000) == 0
    assert await wallets.transfers.in_transit() == {"alice": MICRO}


async def test_a_debit_no_replica_confirmed_is_not_credited_until_one_does(wallets: Wallets) -> None:
    confirmed = False

    async def fence(shard: int) -> bool:
        return confirmed

    await wallets.open("alice", 2, 10)
    fenced = Transfers(wallets.redis, wallets.scripts, wallets.prefix, SHARDS, fence=fence)
    with pytest.raises(Unavailable):
        await fenced.move("alice", 2, 0, 4 * MICRO)
    assert await wallets.available("alice") == [0, 0, 6 * MICRO, 0]
    assert await wallets.transfers.in_transit() == {"alice": 4 * MICRO}
    confirmed = True
    assert await fenced.sweep(older_than_ms=0) == 1
    assert await wallets.available("alice") == [4 * MICRO, 0, 6 * MICRO, 0]
    await wallets.assert_conserved(["alice"])


async def test_a_credit_no_replica_confirmed_keeps_the_transfer_pending_and_is_not_paid_twice(
        wallets: Wallets) -> None:
    confirmed = {2}  # the source's master has replicas in step; the destination's does not (yet)

    async def fence(shard: int) -> bool:
        return shard in confirmed

    await wallets.open("alice", 2, 10)
    fenced = Transfers(wallets.redis, wallets.scripts, wallets.prefix, SHARDS, fence=fence)
    with pytest.raises(Unavailable):
        await fenced.move("alice", 2, 0, 4 * MICRO)
    # Credited, but not marked done: a failover could still take the credit back.
    assert await wallets.available("alice") == [4 * MICRO, 0, 6 * MICRO, 0]
    assert len(await wallets.transfers.pending(2)) == 1
    assert await wallets.transfers.in_transit() == {}
    confirmed.add(0)
    assert await fenced.sweep(older_than_ms=0) == 1
    assert await wallets.available("alice") == [4 * MICRO, 0, 6 * MICRO, 0]  # credited once
    assert await wallets.transfers.pending(2) == []
    await wallets.assert_conserved(["alice"])


async def test_movers_and_two_sweepers_on_separate_clients_credit_each_transfer_once(prefix: str) -> None:
    """Random transfers cut after random steps, while two sweepers (two clients, as two processes
    would be) race each other and the movers to finish them."""
    clients = [new_redis(), new_redis(), new_redis()]
    rng = random.Random(7)
    users = [f"u{i}" for i in range(5)]
    try:
        wallets = Wallets(clients[0], prefix, SHARDS)
        for user in users:
            await wallets.open(user, rng.randrange(SHARDS), 1_000)
        sweepers = [Transfers(c, Scripts(c), prefix, SHARDS) for c in clients[1:]]
        stop = asyncio.Event()

        async def sweep_until_stopped(sweeper: Transfers) -> int:
            finished = 0
            while not stop.is_set():
                finished += await sweeper.sweep(older_than_ms=0)
                await asyncio.sleep(0)  # let the movers run between rounds (a yield, not a wait)
            return finished

        async def mover(user: str) -> None:
            for _ in range(30):
                balances = await wallets.available(user)
                source = max(range(SHARDS), key=lambda k: balances[k])
                dest = rng.choice([k for k in range(SHARDS) if k != source])
                transfer = Transfer(uuid.uuid4().hex, user, source, dest, rng.randint(1, 50) * MICRO)
                try:
                    await wallets.transfers.take_out(transfer)
                except InsufficientFunds:
                    continue
                if rng.random() < 0.7:  # else "crashed" after the debit: the sweepers finish it
                    await wallets.transfers.finish(transfer)

        sweeping = [asyncio.create_task(sweep_until_stopped(s)) for s in sweepers]
        await asyncio.gather(*(mover(user) for user in users))
        stop.set()
        await asyncio.gather(*sweeping)
        await sweepers[0].sweep(older_than_ms=0)
        assert await wallets.transfers.in_transit() == {}
        outs, ins = await wallets.events("TransferOut"), await wallets.events("TransferIn")
        assert len(outs) == len(ins) > 50
        await wallets.assert_conserved(users)
    finally:
        await delete_prefix_async(clients[0], prefix)
        for c in clients:
            await c.aclose()


async def test_transfers_between_shards_on_different_masters(redis_cluster: PrivateCluster) -> None:
    """On a cluster every step is one script in one slot (the server refuses anything else: no script
    may cross slots), and the shards of one deployment spread over the masters."""
    prefix, shards = f"pmx{uuid.uuid4().hex[:8]}", 8
    owners = {redis_cluster.master_for_key(shard_keys(prefix, k, shards).events).port for k in range(shards)}
    assert len(owners) > 1, owners
    redis = connect(redis_cluster.url)
    try:
        wallets = Wallets(redis, prefix, shards)
        await wallets.open("alice", 0, 100)
        for dest in range(1, shards):
            await wallets.transfers.move("alice", dest - 1, dest, (100 - dest) * MICRO)
        balances = await wallets.available("alice")
        assert balances == [MICRO] * (shards - 1) + [93 * MICRO]
        await wallets.assert_conserved(["alice"])
    finally:
        await redis.aclose()
        for k in range(shards):
            delete_prefix(shard_prefix(prefix, k, shards), redis_cluster.url)


def test_the_record_names_every_field_in_order() -> None:
    from predmarket.engine.transfers import parse_record

    state, transfer = parse_record("t9", "out|alice|1|5|250|1700000000000")
    assert (state, transfer) == ("out", Transfer("t9", "alice", 1, 5, 250))
    assert cast(list[object], transfer.args) == ["t9", "alice", 1, 5, 250]
