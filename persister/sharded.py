"""The persister of a deployment over several shards (``PM_SHARDS`` > 1, engine/shards.py).

Each shard has its own event stream, consumer group and committed mark, and a shard's
rows depend only on its own stream (a market lives in one shard; a sub-wallet is a
(user, shard) row). So a sharded persister is one :class:`~persister.worker.Persister`
loop per shard, each in its own thread, sharing the process's connections.

Any number of persisters may run: they share the shards by lease (persister/leases.py),
each working its fair share, ``ceil(S / live persisters)``, so that the work and the
PostgreSQL connections (two per working loop) spread over them rather than every persister
working every shard. A dead persister's leases expire after ``PM_CLAIM_IDLE_S`` and the
others take its shards, claiming the entries it left pending.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

import redis
from predmarket.engine.keys import Keys
from predmarket.engine.settings import Settings
from predmarket.persister.leases import ShardLeases
from predmarket.persister.worker import (
    STORE_ERRORS,
    Cadence,
    Persister,
    connect_stores,
    default_consumer,
    install_stop_handlers,
)

log = logging.getLogger("predmarket.persister")


class ShardedPersister:
    """One loop per shard under one consumer name, each working while the shard's lease is held;
    :meth:`run` until stopped."""

    def __init__(self, loops: list[Persister], client: redis.Redis, deployment: Keys, lease_ttl_ms: int) -> None:
        assert loops, "a persister has at least one shard"
        self._loops = loops
        self.consumer = loops[0].consumer
        self.leases = ShardLeases(client, deployment, [loop.stream.keys for loop in loops], self.consumer,
                                  lease_ttl_ms)
        for loop in loops:
            loop.may_work = lambda shard=loop.shard: self.leases.held(shard)  # type: ignore[misc]  # bound per loop
        self._stopped = threading.Event()

    @property
    def parts(self) -> list[Persister]:
        return list(self._loops)

    @property
    def stopping(self) -> bool:
        return all(loop.stopping for loop in self._loops)

    def stop(self) -> None:
        for loop in self._loops:
            loop.stopping = True
        self._stopped.set()

    def install_signal_handlers(self) -> None:
        install_stop_handlers(self._loops, self.stop)

    def run(self) -> None:
        """Every shard's loop in its own thread until stopped. A loop that fails (anything but
        Redis or PostgreSQL being unreachable, which each loop rides out) stops the others, and
        its error is raised here once they have finished their batches."""
        with ThreadPoolExecutor(max_workers=len(self._loops) + 1, thread_name_prefix="persister-shard") as pool:
            futures = [pool.submit(loop.run) for loop in self._loops]
            futures.append(pool.submit(self._coordinate))
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f for f in done if f.exception() is not None), None)
            if failed is not None:
                log.error("a shard's loop failed; stopping the others")
                self.stop()
            wait(futures)
        try:
            self.leases.release_all()  # a clean stop: the others take the shards at once
        except STORE_ERRORS as exc:
            log.warning("could not give the leases back (%s); they expire", exc)
        for future in futures:
            future.result()  # the first failure, if any

    def _coordinate(self) -> None:
        """Hold this persister's share of the leases: a round every third of a lease's length."""
        every_s = self.leases.ttl_ms / 3000
        while not self._stopped.is_set():
            try:
                held = self.leases.round()
            except STORE_ERRORS as exc:
                log.warning("lease round failed (%s); the leases held expire unless the next one renews them", exc)
            else:
                log.debug("working shards %s", held)
            self._stopped.wait(every_s)

    def step(self) -> int:
        """One synchronous round (tests): a lease round, then one of every loop whose shard is held;
        the entries written."""
        held = self.leases.round()
        return sum(self._loops[k].step() for k in held)

    def close(self) -> None:
        for loop in self._loops:
            loop.close(stores=loop is self._loops[-1])  # the connections are shared: released once


def build(settings: Settings, consumer: str | None = None,
          cadence: Cadence | None = None) -> Persister | ShardedPersister:
    """The persister for ``settings``: one loop with one shard, one per shard with more."""
    client, pg = connect_stores(settings, loops=settings.shards)
    consumer = consumer or default_consumer()
    loops = [Persister(client, pg, settings, cadence, consumer, shard=k) for k in range(settings.shards)]
    if settings.shards == 1:
        return loops[0]
    return ShardedPersister(loops, client, Keys(settings.key_prefix), int(settings.claim_idle_s * 1000))
