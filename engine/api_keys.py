"""API keys: several per user, listed, revoked at once, their last use remembered.

A key is shown once; Redis and PostgreSQL keep only its SHA-256. Its ``key_id``
is ``k_`` and the first 20 hex digits of that hash: stable, the same wherever
the hash is (a key made before ids existed gets its id from the stored hash,
in Redis and in migration 0005 alike), and it tells nothing about the key.

In Redis (engine/keys.py): the directory ``<p>:apikeys`` (hash -> user id, live
keys only, never evicted) decides authentication on every request;
``<p>:ukeys:<user>`` holds each live key's record for listing (evicted and
reloaded with the user); ``<p>:apikeys:used`` the last use of each live key.
Creation and revocation are one script each, writing an ``ApiKeyCreated`` or
``ApiKeyRevoked`` event that the persister turns into the ``api_keys`` row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple, cast

from predmarket.engine.connection import unavailable_on_disconnect
from predmarket.engine.errors import NotFound
from predmarket.engine.hotset import HotSet, reloading
from predmarket.engine.keys import Keys
from predmarket.engine.scripts import Scripts
from redis.asyncio import Redis

#: Live keys a user may hold: each costs memory in Redis that never leaves (the directory).
MAX_KEYS_PER_USER = 100
#: Key uses sent to Redis in one touch_api_keys call (four arguments each).
TOUCH_CHUNK = 500


def key_id_for(key_hash: str) -> str:
    """The id of the key whose SHA-256 (hex) is ``key_hash``."""
    return "k_" + key_hash[:20]


class KeyRecord(NamedTuple):
    """A live key as ``<p>:ukeys:<user>`` stores it (one ``|``-separated string; lua/revoke_api_key.lua
    reads it with the same field order)."""

    key_hash: str
    created_ms: int
    last4: str  # '' when unknown (keys made before this record existed)

    def encode(self) -> str:
        return f"{self.key_hash}|{self.created_ms}|{self.last4}"

    @classmethod
    def decode(cls, text: str) -> KeyRecord:
        key_hash, created_ms, last4 = text.split("|", 2)
        return cls(key_hash, int(created_ms), last4)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One live key of a user, as listed. Times in Unix milliseconds; ``last_used_ms`` 0 if never used."""

    key_id: str
    created_ms: int
    last_used_ms: int
    last4: str | None


class KeyUse(NamedTuple):
    """A request authenticated by a key, as an API replica remembers it until its next flush."""

    key_hash: str
    user_id: str
    used_ms: int


class ApiKeys:
    """The key operations on one Redis under one prefix."""

    def __init__(self, redis: Redis, scripts: Scripts, keys: Keys, hotset: HotSet) -> None:
        self._redis = redis
        self._scripts = scripts
        self._keys = keys
        self._hotset = hotset
        #: key hash -> callers waiting for the next lookup; the task sending it
        self._lookups: dict[str, list[asyncio.Future[str | None]]] = {}
        self._looking_up: asyncio.Task[None] | None = None

    async def owner(self, key_hash: str) -> str | None:
        """The user whose live key has this hash, from Redis's current state.

        Lookups made while one is in flight wait for the next, which asks for all of them
        at once (one HMGET): each is still answered by a read sent after it was asked, so
        a key revoked before the request arrived is never taken, and a replica under load
        pays one round trip per batch of requests instead of one per request.
        """
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._lookups.setdefault(key_hash, []).append(future)
        if self._looking_up is None or self._looking_up.done():
            self._looking_up = asyncio.create_task(self._look_up())
        return await future

    async def _look_up(self) -> None:
        while self._lookups:
            batch, self._lookups = self._lookups, {}
            hashes = list(batch)
            try:
                with unavailable_on_disconnect():
                    owners = cast(list[str | None], await self._redis.hmget(self._keys.apikeys, hashes))
            except Exception as exc:  # every caller of this batch gets it (Unavailable when Redis is gone)
                for waiting in batch.values():
                    for future in waiting:
                        if not future.done():
                            future.set_exception(exc)
                continue
            for key_hash, user_id in zip(hashes, owners, strict=True):
                for future in batch[key_hash]:
                    if not future.done():
                        future.set_result(user_id)

    async def create(self, user_id: str, key_hash: str, last4: str) -> ApiKey:
        """Add a live key to the user (reloaded first if evicted); NotFound, InvalidState past the cap."""
        async def call() -> ApiKey:
            k = self._keys
            with unavailable_on_disconnect():
                (created_ms,) = await self._scripts.create_api_key(
                    [k.user(user_id), k.user_api_keys(user_id), k.apikeys, k.events],
                    [user_id, key_id_for(key_hash), key_hash, last4, MAX_KEYS_PER_USER])
            return ApiKey(key_id_for(key_hash), int(created_ms), 0, last4 or None)

        return await reloading(call, self._hotset, user_id=user_id)

    async def of_user(self, user_id: str) -> list[ApiKey]:
        """The user's live keys, oldest first; NotFound if there is no such user."""
        return await reloading(lambda: self._list(user_id), self._hotset, user_id=user_id)

    async def _list(self, user_id: str) -> list[ApiKey]:
        k = self._keys
        with unavailable_on_disconnect():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hmget(k.user(user_id), "username", "key_hash", "created_ms")
                pipe.hgetall(k.user_api_keys(user_id))
                (username, legacy_hash, user_created), stored = await pipe.execute()
            if username is None:
                raise NotFound(f"no user {user_id}")
            records = {key_id: KeyRecord.decode(text) for key_id, text in stored.items()}
            if legacy_hash and key_id_for(legacy_hash) not in records:
                # The key a user was created with before key records existed (see the module doc).
                records[key_id_for(legacy_hash)] = KeyRecord(legacy_hash, int(user_created), "")
            ids = sorted(records, key=lambda key_id: (records[key_id].created_ms, key_id))
            used = await self._redis.hmget(k.apikeys_used, ids) if ids else []
        return [ApiKey(key_id, records[key_id].created_ms, int(ms or 0), records[key_id].last4 or None)
                for key_id, ms in zip(ids, used, strict=True)]

    async def revoke(self, user_id: str, key_id: str) -> None:
        """Revoke the user's key ``key_id``: the next request with it is refused everywhere.

        NotFound if the user has no live key of that id (another user's key included).
        """
        async def call() -> None:
            k = self._keys
            with unavailable_on_disconnect():
                creation_hash = cast(str | None, await self._redis.hget(k.user(user_id), "key_hash"))
                legacy = creation_hash if creation_hash and key_id_for(creation_hash) == key_id else ""
                await self._scripts.revoke_api_key(
                    [k.user(user_id), k.user_api_keys(user_id), k.apikeys, k.apikeys_used, k.events],
                    [user_id, key_id, legacy])

        await reloading(call, self._hotset, user_id=user_id)

    async def touch(self, uses: Iterable[KeyUse]) -> int:
        """Record the last use of keys (skipping revoked ones and older times); how many were newer."""
        k = self._keys
        pending = list(uses)
        newer = 0
        for start in range(0, len(pending), TOUCH_CHUNK):
            args: list[str | int] = []
            for use in pending[start:start + TOUCH_CHUNK]:
                args += [use.key_hash, use.user_id, key_id_for(use.key_hash), use.used_ms]
            with unavailable_on_disconnect():
                newer += int(await self._scripts.touch_api_keys([k.apikeys, k.apikeys_used, k.apikeys_unsaved], args))
        return newer
