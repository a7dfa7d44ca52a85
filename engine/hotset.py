"""The engine's side of the hot set: what to do when Redis does not hold a user or a market.

Idle users and settled markets may have been taken out of Redis (the
persister's janitor does it once PostgreSQL holds their state). What exists is
still known to Redis alone -- the directory of user ids, usernames and key
hashes is never evicted, and an archived market's final state is kept in
``<p>:archived`` (see ``engine.keys``) -- so "no such user or market" and
uniqueness never need PostgreSQL, and an archived market comes back from
Redis. Only an evicted user's balance is read from the durable record, through
a ``Loader`` (implemented over PostgreSQL in ``record.loader``; the engine
itself knows no SQL). :func:`reloading` retries an operation once after a load.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from predmarket.engine.connection import unavailable_on_disconnect
from predmarket.engine.errors import NotFound
from predmarket.engine.keys import Keys
from predmarket.engine.scripts import Scripts
from redis.asyncio import Redis

T = TypeVar("T")

#: A load installs a user only within this long (Redis's clock) of the moment it began reading the
#: durable record (lua/install_user.lua); a slower one reads again. This is what lets the janitor
#: forget an eviction's mark at all: only a load that read before that eviction needs the mark to be
#: refused, and no such load can install once the mark is older than this.
RELOAD_WINDOW_MS = 60_000
#: The janitor forgets an eviction's mark (``<p>:evicted``) this long after the eviction (one shard
#: only: persister/janitor.py): ten times the reload window, so clocks may differ by minutes.
EVICTED_MARK_KEEP_MS = 600_000


class Loader(Protocol):
    async def load_user(self, user_id: str) -> bool:
        """Install the user from the durable record if it is there; True if it exists."""


class HotSet:
    """Puts evicted users and archived markets back into Redis when an operation needs them."""

    def __init__(self, redis: Redis, scripts: Scripts, keys: Keys) -> None:
        self._redis = redis
        self._scripts = scripts
        self._keys = keys
        #: reads evicted users' balances; None when this process has no durable record to read
        self.loader: Loader | None = None

    async def reload(self, *, user_id: str | None = None, market_id: str | None = None) -> bool:
        """Make the user and/or market resident if they exist; True if an operation is worth retrying."""
        resident = False
        if market_id is not None:
            resident = await self.unarchive(market_id) or resident
        if user_id is not None:
            resident = await self.load_user(user_id) or resident
        return resident

    async def unarchive(self, market_id: str) -> bool:
        """True if the market is resident now (put back from its archived state, or already there)."""
        k = self._keys
        with unavailable_on_disconnect():
            return bool(await self._scripts.unarchive_market(
                [k.market(market_id), k.markets, k.archived], [market_id]))

    async def load_user(self, user_id: str) -> bool:
        """True if the user is resident now; only an evicted user asks the loader: one in the directory,
        or (over shards, a sub-wallet outside the user's home, which no directory lists) one the janitor
        marked evicted."""
        with unavailable_on_disconnect():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.exists(self._keys.user(user_id))
                pipe.sismember(self._keys.user_ids, user_id)
                pipe.hexists(self._keys.evicted, user_id)
                resident, listed, evicted = await pipe.execute()
        if resident:
            return True  # whatever was missing, it was not this user
        if not (listed or evicted) or self.loader is None:
            return False
        return await self.loader.load_user(user_id)


async def reloading(call: Callable[[], Awaitable[T]], hotset: HotSet, *,
                    user_id: str | None = None, market_id: str | None = None) -> T:
    """Run ``call``; if it finds no such user or market and either can be put back, run it again."""
    try:
        return await call()
    except NotFound:
        if not await hotset.reload(user_id=user_id, market_id=market_id):
            raise
    return await call()
