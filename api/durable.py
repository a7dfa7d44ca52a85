"""Waiting for the persister: ``Prefer: durable=postgres`` answers once a trade is in PostgreSQL.

The persister publishes its committed mark (every stream entry up to it is
committed) on ``<prefix>:persister:committed``; one listener per process keeps
the latest mark and wakes the waiting requests. A wait also polls the key, so a
missed message (a reconnect) costs at most a poll interval, never a hang. Over shards
each shard has its stream, persister loop and mark: a trade waits on its market's shard's.

The watcher has a Redis client of its own (two connections: the subscription and
the polls), so neither a busy trading pool nor thousands of live-stream
subscribers can make a durable answer wait for a connection; and every poll is
bounded by what is left of the request's wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import cast

from predmarket.engine.channel import cluster_of, owner_of
from predmarket.engine.connection import UNREACHABLE
from predmarket.engine.keys import Keys
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

log = logging.getLogger("predmarket.api")
POLL_S = 0.25


def _id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class CommittedWatcher:
    def __init__(self, redis: Redis, keys: Keys | list[Keys]) -> None:
        """``redis``: a client for the watcher alone (it is closed by :meth:`stop`); ``keys``: the
        deployment's, or each shard's (shard k's mark is watched on ``keys[k].committed``)."""
        self._redis = redis
        self._cluster = cluster_of(redis)
        self._refresh = False  # on a cluster: ask for the topology before subscribing again
        self._channels = [k.committed for k in (keys if isinstance(keys, list) else [keys])]
        self._shard_of = {channel: shard for shard, channel in enumerate(self._channels)}
        self._marks: list[tuple[int, int]] = [(0, 0)] * len(self._channels)
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._redis.aclose()

    def _advance(self, shard: int, value: str | None) -> None:
        if value and _id(value) > self._marks[shard]:
            self._marks[shard] = _id(value)
            self._changed.set()
            self._changed = asyncio.Event()

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            try:
                async with await self._pubsub() as pubsub:
                    await pubsub.subscribe(*self._channels)
                    for shard, channel in enumerate(self._channels):
                        self._advance(shard, cast(str | None, await self._redis.get(channel)))
                    backoff = 0.1
                    while True:
                        # A bounded wait, so an idle channel never trips the socket timeout.
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                        if message and message.get("type") == "message":
                            of = self._shard_of.get(str(message["channel"]))
                            if of is not None:
                                self._advance(of, message["data"])
            except asyncio.CancelledError:
                raise
            except UNREACHABLE as exc:
                log.warning("committed-mark listener lost Redis (%s); reconnecting", exc.__class__.__name__)
                self._refresh = self._cluster is not None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _pubsub(self) -> PubSub:
        """A subscription client: on one primary the client's own; on a cluster, bound to one node.

        A PUBLISH on a cluster reaches the subscribers of every node, so any master would
        do; the one owning the channel key's slot is chosen (as the ordered channel finds
        it), asking the cluster for its topology again after a failure (that node may be gone).
        """
        if self._cluster is None:
            return self._redis.pubsub()
        node = await owner_of(self._cluster, self._channels[0], refresh=self._refresh)
        self._refresh = False
        return self._cluster.pubsub(node=node)

    @property
    def mark(self) -> tuple[int, int] | None:
        """The newest committed mark heard of (never ahead of the persisters), or None before the first;
        over shards, shard 0's (see :attr:`marks`)."""
        return self.marks[0]

    @property
    def marks(self) -> list[tuple[int, int] | None]:
        """Each shard's newest committed mark heard of, None before its first."""
        return [mark if mark != (0, 0) else None for mark in self._marks]

    async def wait(self, event_id: str, timeout_s: float, shard: int = 0) -> bool:
        """True once the persister has committed ``event_id`` of ``shard``'s stream; False after ``timeout_s``."""
        target = _id(event_id)
        channel = self._channels[shard]
        deadline = time.monotonic() + timeout_s
        while self._marks[shard] < target:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), min(POLL_S, remaining))
            except TimeoutError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                with contextlib.suppress(TimeoutError, *UNREACHABLE):
                    async with asyncio.timeout(remaining):
                        self._advance(shard, cast(str | None, await self._redis.get(channel)))
        return True
