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
    from predmarket.engine.market_engine import MarketEngine
    from redis.asyncio import Redis
    from sqlalchemy.ext.asyncio import AsyncEngine


def engine_of(connection: HTTPConnection) -> MarketEngine:
    """The replica's engine."""
    engine: MarketEngine = connection.app.state.engine
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


def hub_of(connection: HTTPConnection) -> StreamHub:
    """The replica's stream hub, shared by every live subscriber."""
    hub: StreamHub = connection.app.state.hub
    return hub
