"""A test's keys in the shared Redis: removing them (never a FLUSHDB) and reading them all back.

Removal is the product's own routine (:func:`predmarket.persister.recover.delete_prefix`,
what ``predmarket recover`` uses), so there is one way to delete a prefix.
"""

from __future__ import annotations

import asyncio
from typing import cast

from predmarket.engine.keys import Keys
from predmarket.persister import recover
from redis.asyncio import Redis

from tests.support.services import REAL_REDIS, REDIS_URL, sync_client


def delete_prefix(prefix: str, redis_url: str = REDIS_URL) -> int:
    """Delete every key of ``prefix`` on ``redis_url``; returns how many."""
    client = sync_client(redis_url)
    try:
        return recover.delete_prefix(client, Keys(prefix))
    finally:
        client.close()


async def delete_prefix_async(redis: Redis, prefix: str) -> int:
    """:func:`delete_prefix` on the server ``redis`` talks to, without blocking the event loop."""
    if not REAL_REDIS:
        return 0  # fakeredis: the keys live in this process only, under a prefix no other test uses
    kwargs = redis.connection_pool.connection_kwargs
    url = f"redis://{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
    return await asyncio.to_thread(delete_prefix, prefix, url)


#: One stream entry as the tests' clients, which all decode (``decode_responses=True``), return it.
StreamEntry = tuple[str, dict[str, str]]


async def stream_entries(redis: Redis, stream: str) -> list[StreamEntry]:
    """Every entry of ``stream``, oldest first."""
    # redis-py types the reply for either decoding; with decoding on, ids and fields are str.
    return cast(list[StreamEntry], await redis.xrange(stream))


async def hash_fields(redis: Redis, key: str) -> list[str]:
    """The field names of hash ``key`` (a decoding client's, so str)."""
    return cast(list[str], await redis.hkeys(key))


async def hash_all(redis: Redis, key: str) -> dict[str, str]:
    """Every field of hash ``key`` with its value (a decoding client's, so str)."""
    return cast(dict[str, str], await redis.hgetall(key))


async def snapshot(redis: Redis, prefix: str) -> dict[str, object]:
    """Every key of ``prefix`` with its full contents, to prove a rejection changed nothing."""
    out: dict[str, object] = {}
    async for key in redis.scan_iter(match=Keys(prefix).pattern, count=1000):
        kind = await redis.type(key)
        if kind == "hash":
            out[key] = await redis.hgetall(key)
        elif kind == "string":
            out[key] = (await redis.get(key), await redis.ttl(key) > 0)
        elif kind == "zset":
            out[key] = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            out[key] = await redis.xrange(key)
        elif kind == "set":
            out[key] = sorted(await redis.smembers(key))
        elif kind == "list":
            out[key] = await redis.lrange(key, 0, -1)
        else:
            out[key] = kind
    return out
