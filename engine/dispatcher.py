"""One script call for many markets: the dispatcher behind every sequencer of a process.

Each market's sequencer prices its own batch (it alone knows that market's
state); the dispatcher then sends the batches of all markets that are ready in
one ``trade`` script call, and hands each sequencer its market's reply. With
orders spread over many markets a call thus still carries many trades, where
one call per market would pay a round trip for one or two.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from engine.channel import OrderedScript
from engine.keys import Keys
from engine.scripts import sources

if TYPE_CHECKING:
    from engine.sequencer import SequencerStats


@dataclass(slots=True)
class MarketCall:
    market_keys: tuple[str, str]  # market hash, market positions hash
    args: list[str | int]  # market id, expected state, n, n order strings
    orders: int
    future: asyncio.Future[list[Any]]


#: Script calls in flight at once: two, so Python prepares the next while Redis runs one
#: (a sequencer sends its next batch speculatively, see engine.sequencer).
IN_FLIGHT = 2


class Dispatcher:
    """Coalesces the sequencers' market batches into script calls, at most IN_FLIGHT at a time."""

    def __init__(self, redis: Redis, keys: Keys, idempotency_ttl_s: int, max_orders: int,
                 stats: SequencerStats) -> None:
        self._trade = OrderedScript(redis, sources()["trade"])
        self._head_keys = [keys.events, keys.trade_seq, keys.dirty]
        self._head_args: list[str | int] = [keys.prefix, idempotency_ttl_s]
        self._max_orders = max_orders
        self._queue: deque[MarketCall] = deque()
        self._task: asyncio.Task[None] | None = None
        self._stats = stats
        self._slots = asyncio.Semaphore(IN_FLIGHT)
        self._sending: set[asyncio.Task[None]] = set()

    async def call(self, market_keys: tuple[str, str], args: list[str | int], orders: int) -> list[Any]:
        """Send one market's batch (with whatever else is ready) and return that market's reply."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._queue.append(MarketCall(market_keys, args, orders, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                # Let the sequencers woken by the last reply queue their next batches first.
                await asyncio.sleep(0)
                calls = self._take()
                await self._slots.acquire()
                task = asyncio.create_task(self._send(calls))
                self._sending.add(task)
                task.add_done_callback(self._sent)
        finally:
            self._task = None

    def _take(self) -> list[MarketCall]:
        """The calls for the next script call: queue order, up to max_orders orders.

        With no call in flight, only half of what waits: the rest goes in a second call
        right behind it, so Redis runs one while Python handles the other's replies.
        """
        limit = len(self._queue) if self._sending else (len(self._queue) + 1) // 2
        calls = [self._queue.popleft()]
        orders = calls[0].orders
        while self._queue and len(calls) < limit and orders + self._queue[0].orders <= self._max_orders:
            call = self._queue.popleft()
            calls.append(call)
            orders += call.orders
        return calls

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._slots.release()

    async def _send(self, calls: list[MarketCall]) -> None:
        keys = list(self._head_keys)
        args = list(self._head_args)
        for call in calls:
            keys += call.market_keys
            args += call.args
        self._stats.script_calls += 1
        try:
            replies = await self._trade(keys, args)
        except BaseException as exc:
            for call in calls:
                if not call.future.done():
                    call.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for call, reply in zip(calls, replies, strict=True):
            if not call.future.done():
                call.future.set_result(reply)

    async def close(self) -> None:
        await self._trade.close()
