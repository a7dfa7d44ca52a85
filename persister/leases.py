"""Persisters sharing a deployment's shards by lease (``PM_SHARDS`` > 1).

Every persister keeps a loop per shard (persister/sharded.py), but a loop works only while
its persister holds the shard's lease (``lua/shard_lease.lua``: a key naming the holder,
expiring unless renewed). Each persister heartbeats in the deployment's registry of live
persisters and holds its fair share of the shards, ``ceil(S / live persisters)``: it takes
free leases up to it and gives back what it holds beyond it. A dead persister stops renewing:
its leases expire and the others, whose share has grown, take them (its pending entries are
claimed as ever, after ``PM_CLAIM_IDLE_S``).

A lease spreads the work; it is not what keeps the record right. Two persisters working one
shard for a moment (a lease that expired during a long pause) write nothing twice: each entry
goes to one consumer of the group, and every write is keyed by its entry id.
"""

from __future__ import annotations

import logging
import math
import threading
import zlib

import redis
from predmarket.engine.clock import redis_now_ms
from predmarket.engine.keys import Keys
from predmarket.engine.scripts import SyncScripts

log = logging.getLogger("predmarket.persister")


class ShardLeases:
    """The leases one persister (``consumer``) holds on ``shards`` (each shard's keys)."""

    def __init__(self, client: redis.Redis, deployment: Keys, shards: list[Keys], consumer: str,
                 ttl_ms: int) -> None:
        self._redis = client
        self._scripts = SyncScripts(client)
        self._registry = deployment.persisters
        self._shards = shards
        self.consumer = consumer
        self.ttl_ms = ttl_ms
        self._held = [False] * len(shards)
        self._lock = threading.Lock()  # the loops read what the coordinator writes
        # Persisters try the shards from different starting points: fewer collisions on the same one.
        self._first = zlib.crc32(consumer.encode()) % len(shards)

    def held(self, shard: int) -> bool:
        with self._lock:
            return self._held[shard]

    def holding(self) -> list[int]:
        with self._lock:
            return [k for k, held in enumerate(self._held) if held]

    def _hold(self, shard: int, action: str = "hold") -> bool:
        done = bool(self._scripts.shard_lease([self._shards[shard].persister_lease],
                                              [self.consumer, action, self.ttl_ms]))
        with self._lock:
            self._held[shard] = done and action == "hold"
        return done

    def _live_persisters(self) -> int:
        """Heartbeat, forget persisters silent for a lease's length, and count the live ones."""
        now_ms = redis_now_ms(self._redis)
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self._registry, {self.consumer: now_ms})
            pipe.zremrangebyscore(self._registry, "-inf", now_ms - self.ttl_ms)
            pipe.zcard(self._registry)
            replies = pipe.execute()
        return max(int(replies[-1]), 1)

    def round(self) -> list[int]:
        """Renew what is held, give back what is beyond the fair share, take free shards up to it;
        the shards held after it."""
        share = math.ceil(len(self._shards) / self._live_persisters())
        before = self.holding()
        held = [k for k in before if self._hold(k)]
        lost = set(before) - set(held)
        if lost:
            log.warning("lost the lease of shards %s (expired before renewal): another persister works them",
                        sorted(lost))
        for shard in held[share:]:
            self._hold(shard, "release")
        held = held[:share]
        order = [(self._first + i) % len(self._shards) for i in range(len(self._shards))]
        for shard in order:
            if len(held) >= share:
                break
            if shard not in held and self._hold(shard):
                held.append(shard)
        return sorted(held)

    def release_all(self) -> None:
        """Give back every lease and leave the registry (a clean stop: the others take over at once)."""
        for shard in self.holding():
            self._hold(shard, "release")
        self._redis.zrem(self._registry, self.consumer)
