"""The persister of a deployment over several shards (``PM_SHARDS`` > 1, engine/shards.py).

Each shard has its own event stream, consumer group and committed mark, and a shard's
rows depend only on its own stream (a market lives in one shard; a sub-wallet is a
(user, shard) row). So a sharded persister is one :class:`~persister.worker.Persister`
loop per shard, each in its own thread, sharing the process's connections.

Any number of persisters may run: each joins every shard's group, Redis hands each
entry to one of them, and a dead persister's pending entries are claimed by the others
after ``PM_CLAIM_IDLE_S`` -- the sharing and the take-over a lease per shard would give,
without one (the consumer group already is that lease, per entry).
"""

from __future__ import annotations

import logging
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

from predmarket.engine.settings import Settings
from predmarket.persister.worker import (
    Cadence,
    Persister,
    connect_stores,
    default_consumer,
    install_stop_handlers,
)

log = logging.getLogger("predmarket.persister")


class ShardedPersister:
    """One loop per shard under one consumer name; :meth:`run` until stopped."""

    def __init__(self, loops: list[Persister]) -> None:
        assert loops, "a persister has at least one shard"
        self._loops = loops
        self.consumer = loops[0].consumer

    @property
    def parts(self) -> list[Persister]:
        return list(self._loops)

    @property
    def stopping(self) -> bool:
        return all(loop.stopping for loop in self._loops)

    def stop(self) -> None:
        for loop in self._loops:
            loop.stopping = True

    def install_signal_handlers(self) -> None:
        install_stop_handlers(self._loops)

    def run(self) -> None:
        """Every shard's loop in its own thread until stopped. A loop that fails (anything but
        Redis or PostgreSQL being unreachable, which each loop rides out) stops the others, and
        its error is raised here once they have finished their batches."""
        with ThreadPoolExecutor(max_workers=len(self._loops), thread_name_prefix="persister-shard") as pool:
            futures = [pool.submit(loop.run) for loop in self._loops]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f for f in done if f.exception() is not None), None)
            if failed is not None:
                log.error("a shard's loop failed; stopping the others")
                self.stop()
            wait(futures)
        for future in futures:
            future.result()  # the first failure, if any

    def step(self) -> int:
        """One synchronous round of every shard's loop (tests); the entries written."""
        return sum(loop.step() for loop in self._loops)

    def close(self) -> None:
        for loop in self._loops:
            loop.close(stores=loop is self._loops[-1])  # the connections are shared: released once


def build(settings: Settings, consumer: str | None = None,
          cadence: Cadence | None = None) -> Persister | ShardedPersister:
    """The persister for ``settings``: one loop with one shard, one per shard with more."""
    client, pg = connect_stores(settings, loops=settings.shards)
    consumer = consumer or default_consumer()
    loops = [Persister(client, pg, settings, cadence, consumer, shard=k) for k in range(settings.shards)]
    return loops[0] if settings.shards == 1 else ShardedPersister(loops)
