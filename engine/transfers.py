"""Moving a user's money between its sub-wallets (engine/shards.py): a saga of single-slot steps.

A trade runs in one shard and pays from the user's sub-wallet there; money reaches that
sub-wallet from another one by a transfer. No Redis command spans two shards (on a
cluster they may sit on different masters), so a transfer is four steps, each one
script in one shard, each safe to send again:

1. ``transfer_out`` on the source: debit, record the transfer as pending (outbox), emit
   ``TransferOut``. Sent again with the same id, it answers DUP and debits nothing.
2. ``transfer_in`` on the destination: credit at most once per id, emit ``TransferIn``.
3. ``transfer_done`` on the source: out of the outbox, the record kept as done for a while.
4. ``transfer_forget`` on the destination: the credit record expires (nothing sends step 2
   for a done transfer any more).

A crash between steps leaves the transfer in the source's outbox; :meth:`Transfers.sweep`
finishes every one older than a threshold (steps 2-4 again: step 2 answers DUP if it ran).
Money in transit (debited, not yet credited) is in no sub-wallet: :func:`in_transit` finds
it, so that sub-wallets + in transit + pools = deposits - withdrawals holds at every moment.

With replicas (``PM_REPLICA_ACKS``), step 1 must be on a replica before step 2 runs (a
failover that took back the debit after the credit ran would create money), and step 2
before step 3 (one that took back the credit of a transfer marked done would destroy it).
The ``fence`` (engine/replication.py's WAIT on the shard's master) is awaited after each,
and a transfer a replica did not confirm stays pending for the sweeper (step 2 sent again
answers DUP where its credit survived, and credits where a failover took it back).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

from predmarket.engine.clock import redis_now_ms_async
from predmarket.engine.errors import NotFound, Unavailable
from predmarket.engine.keys import Keys
from predmarket.engine.scripts import Scripts
from predmarket.engine.shards import shard_keys
from redis.asyncio import Redis

#: How long a finished transfer's records stay (seconds): a step re-sent that late still answers DUP.
KEEP_DONE_S = 86_400

#: ``fence(shard)``: whether replicas have every write made so far on the shard's master.
Fence = Callable[[int], Awaitable[bool]]
#: ``load(user_id, shard)``: put the user's sub-wallet in ``shard`` back from the durable record if the
#: janitor evicted it; whether it is resident now (engine/hotset.py).
Load = Callable[[str, int], Awaitable[bool]]
#: Credits of one transfer tried, each after loading its evicted destination (evicted again meanwhile).
LOAD_TRIES = 3


@dataclass(frozen=True)
class Transfer:
    transfer_id: str
    user_id: str
    source: int
    dest: int
    amount: int  # micro-units

    @property
    def args(self) -> list[str | int]:
        """The ARGV the four scripts share (the first of them)."""
        return [self.transfer_id, self.user_id, self.source, self.dest, self.amount]


class TransferIdReused(ValueError):
    """A transfer id already taken out for another user, shard or amount."""


def parse_record(transfer_id: str, record: str) -> tuple[str, Transfer]:
    """A transfer record (``<state>|<user>|<from>|<to>|<amount>|<ms>``) -> (state, transfer)."""
    state, user_id, source, dest, amount, _ms = record.split("|")
    return state, Transfer(transfer_id, user_id, int(source), int(dest), int(amount))


class Transfers:
    """The saga's steps and its sweeper, for one deployment of ``shards`` shards under ``prefix``."""

    def __init__(self, redis: Redis, scripts: Scripts, prefix: str, shards: int, *,
                 keep_s: int = KEEP_DONE_S, fence: Fence | None = None) -> None:
        self._redis = redis
        self._scripts = scripts
        self._shards = [shard_keys(prefix, k, shards) for k in range(shards)]
        self._keep_s = keep_s
        self._fence = fence
        #: loads an evicted destination sub-wallet before its credit (None: nothing is evicted)
        self.load: Load | None = None

    def keys(self, shard: int) -> Keys:
        return self._shards[shard]

    async def move(self, user_id: str, source: int, dest: int, amount: int,
                   transfer_id: str | None = None) -> Transfer:
        """Move ``amount`` of ``user_id``'s money from sub-wallet ``source`` to ``dest``, all four steps.

        Raises InsufficientFunds (nothing moved) if the source holds less. If a later step fails
        (Redis unreachable, replicas behind), the transfer is pending: the caller may call
        :meth:`finish` again, and the sweeper finishes it anyway.
        """
        if source == dest or not (0 <= source < len(self._shards) and 0 <= dest < len(self._shards)):
            raise ValueError(f"a transfer goes between two of the {len(self._shards)} shards, not {source} -> {dest}")
        if amount <= 0:
            raise ValueError(f"a transfer moves a positive amount, not {amount}")
        transfer = Transfer(transfer_id or uuid.uuid4().hex, user_id, source, dest, amount)
        await self.take_out(transfer)
        await self.finish(transfer)
        return transfer

    async def take_out(self, transfer: Transfer) -> None:
        """Step 1 (see the module docstring); DUP is success only for the same transfer. A source the
        janitor evicted is loaded back first (NotFound if there is none)."""
        k = self.keys(transfer.source)
        keys = [k.user(transfer.user_id), k.transfer(transfer.transfer_id), k.outbox, k.events, k.totals]
        try:
            reply = await self._scripts.transfer_out(keys, transfer.args)
        except NotFound:
            if self.load is None or not await self.load(transfer.user_id, transfer.source):
                raise
            reply = await self._scripts.transfer_out(keys, transfer.args)
        if reply[0] == "DUP":
            _, recorded = parse_record(transfer.transfer_id, str(reply[1]))
            if recorded != transfer:
                raise TransferIdReused(f"transfer {transfer.transfer_id} was taken out as {recorded}, not {transfer}")

    async def finish(self, transfer: Transfer) -> None:
        """Steps 2-4 of a transfer taken out: each safe to run again."""
        if self._fence is not None and not await self._fence(transfer.source):
            raise Unavailable(f"no replica confirmed transfer {transfer.transfer_id}'s debit in shard "
                              f"{transfer.source}: it stays pending, the sweeper finishes it")
        src, dst = self.keys(transfer.source), self.keys(transfer.dest)
        await self._credit(transfer, dst)
        # And the credit before the source forgets the transfer: a failover that took the credit
        # back after the transfer was marked done would destroy the money.
        if self._fence is not None and not await self._fence(transfer.dest):
            raise Unavailable(f"no replica confirmed transfer {transfer.transfer_id}'s credit in shard "
                              f"{transfer.dest}: it stays pending, the sweeper finishes it")
        await self._scripts.transfer_done([src.transfer(transfer.transfer_id), src.outbox],
                                          [transfer.transfer_id, self._keep_s])
        await self._scripts.transfer_forget([dst.transfer(transfer.transfer_id)], [self._keep_s])

    async def _credit(self, transfer: Transfer, dst: Keys) -> None:
        """Step 2, loading the destination sub-wallet first where the janitor evicted it (the script
        refuses to credit a fresh one there: the record's balance would lose the evicted money)."""
        for _ in range(LOAD_TRIES):
            reply = await self._scripts.transfer_in(
                [dst.user(transfer.user_id), dst.transfer(transfer.transfer_id), dst.events, dst.totals, dst.evicted],
                transfer.args)
            if reply[0] != "EVICTED":
                return
            if self.load is None or not await self.load(transfer.user_id, transfer.dest):
                break
        raise Unavailable(f"transfer {transfer.transfer_id}'s destination, an evicted sub-wallet, could not be "
                          "loaded: it stays pending, the sweeper finishes it")

    async def _now_ms(self) -> int:
        return await redis_now_ms_async(self._redis)

    async def pending(self, shard: int, older_than_ms: int = 0, now_ms: int | None = None) -> list[Transfer]:
        """Shard ``shard``'s transfers out not marked done, taken out at least ``older_than_ms`` before
        ``now_ms`` (Redis's clock now if None)."""
        k = self.keys(shard)
        now_ms = await self._now_ms() if now_ms is None else now_ms
        ids = cast(list[str], await self._redis.zrangebyscore(k.outbox, "-inf", now_ms - older_than_ms))
        if not ids:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for transfer_id in ids:
            pipe.get(k.transfer(transfer_id))
        out = []
        for transfer_id, record in zip(ids, await pipe.execute(), strict=True):
            if record is None:
                continue  # done meanwhile (the record is never dropped while the id is in the outbox)
            state, transfer = parse_record(transfer_id, str(record))
            if state == "out":
                out.append(transfer)
        return out

    async def sweep(self, older_than_ms: int) -> int:
        """Finish every transfer left pending longer than ``older_than_ms``; how many it finished."""
        finished = 0
        now_ms = await self._now_ms()  # one clock reading for the whole round
        for shard in range(len(self._shards)):
            for transfer in await self.pending(shard, older_than_ms, now_ms):
                await self.finish(transfer)
                finished += 1
        return finished

    async def in_transit(self) -> dict[str, int]:
        """User -> micro-units debited by a pending transfer and not yet credited (in no sub-wallet)."""
        owed: dict[str, int] = {}
        now_ms = await self._now_ms()
        for shard in range(len(self._shards)):
            for transfer in await self.pending(shard, 0, now_ms):
                credited = await self._redis.exists(self.keys(transfer.dest).transfer(transfer.transfer_id))
                if not credited:
                    owed[transfer.user_id] = owed.get(transfer.user_id, 0) + transfer.amount
        return owed
