"""Waiting for the persister: ``Prefer: durable=postgres`` answers once a trade is in PostgreSQL.

The persister publishes its committed mark (every stream entry up to it is
committed) on ``<prefix>:persister:committed``; one listener per process keeps
the latest mark and wakes the waiting requests. A wait also polls the key, so a
missed message (a reconnect) costs at most a poll interval, never a hang.

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

from predmarket.engine.connection import UNREACHABLE
from predmarket.engine.keys import Keys
from redis.asyncio import Redis

log = logging.getLogger("predmarket.api")
POLL_S = 0.25


def _id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class CommittedWatcher:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        """``redis``: a client for the watcher alone (it is closed by :meth:`stop`)."""
        self._redis = redis
        self._channel = keys.committed
        self._mark: tuple[int, int] = (0, 0)
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

    def _advance(self, value: str | None) -> None:
        if value and _id(value) > self._mark:
            self._mark = _id(value)
            self._changed.set()
            self._changed = asyncio.Event()

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel)
                    self._advance(cast(str | None, await self._redis.get(self._channel)))
                    backoff = 0.1
                    while True:
                        # A bounded wait, so an idle channel never trips the socket timeout.
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                        if message and message.get("type") == "message":
                            self._advance(message["data"])
            except asyncio.CancelledError:
                raise
            except UNREACHABLE as exc:
                log.warning("committed-mark listener lost Redis (%s); reconnecting", exc.__class__.__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def wait(self, event_id: str, timeout_s: float) -> bool:
        """True once the persister has committed ``event_id``; False after ``timeout_s``."""
        target = _id(event_id)
        deadline = time.monotonic() + timeout_s
        while self._mark < target:
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
                        self._advance(cast(str | None, await self._redis.get(self._channel)))
        return True
