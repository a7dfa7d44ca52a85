"""What the app holds for its routes (set at start-up in ``api.app``), read from a request.

Starlette's ``app.state`` types every attribute as Any: each accessor here states the
one type ``api.app`` stores under its name, so routes get typed objects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection

if TYPE_CHECKING:
    from predmarket.api.durable import CommittedWatcher
    from predmarket.api.stream_hub import StreamHub
    from predmarket.engine.deployment import Engine
    from predmarket.engine.keys import Keys
    from redis.asyncio import Redis
    from sqlalchemy.ext.asyncio import AsyncEngine


def engine_of(connection: HTTPConnection) -> Engine:
    """The replica's engine (one shard's, or the sharded deployment's)."""
    engine: Engine = connection.app.state.engine
    return engine


def pg_of(connection: HTTPConnection) -> AsyncEngine:
    """The PostgreSQL engine that history and readiness read through."""
    pg: AsyncEngine = connection.app.state.pg
    return pg


def stream_redis_of(connection: HTTPConnection) -> Redis:
    """The Redis client the event streams read positions and resume points with."""
    redis: Redis = connection.app.state.stream_redis
    return redis


def committed_of(connection: HTTPConnection) -> CommittedWatcher:
    """The watcher of the persister's committed mark (``?durable=true``)."""
    watcher: CommittedWatcher = connection.app.state.committed
    return watcher


def hubs_of(connection: HTTPConnection) -> list[StreamHub]:
    """The replica's stream hubs, one per shard, shared by every live subscriber."""
    hubs: list[StreamHub] = connection.app.state.hubs
    return hubs


def stream_keys_of(connection: HTTPConnection) -> list[Keys]:
    """The keys of each shard's event stream (one: the deployment's own)."""
    keys: list[Keys] = connection.app.state.stream_keys
    return keys


def page_marks(connection: HTTPConnection, market_id: str | None
               ) -> tuple[tuple[int, int] | None, dict[int, tuple[int, int] | None] | None]:
    """What bounds a first page of trades (api/history.py): the committed mark of the shard holding
    ``market_id``; of no market, over shards, each shard's (``shard_marks``)."""
    marks = committed_of(connection).marks
    if len(marks) == 1:
        return marks[0], None
    if market_id is not None:
        return marks[engine_of(connection).market_shard(market_id)], None
    return None, dict(enumerate(marks))
