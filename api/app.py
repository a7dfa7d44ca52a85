"""The FastAPI application: stateless, so any number of replicas can serve one Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version

from fastapi import FastAPI
from predmarket.api import errors, openapi
from predmarket.api.auth import Authenticator
from predmarket.api.durable import CommittedWatcher
from predmarket.api.graceful import on_stop_signal
from predmarket.api.middleware import RequestMiddleware
from predmarket.api.responses import JSONResponse
from predmarket.api.routes import api_keys, candles, events, markets, me, ops, trades, users, web
from predmarket.api.stream_hub import READ_BLOCK_MS, StreamHub
from predmarket.engine.connection import UNREACHABLE, connect
from predmarket.engine.deployment import Engine, engine_for
from predmarket.engine.errors import Unavailable
from predmarket.engine.keys import Keys
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.settings import Settings, get_settings
from predmarket.record.loader import load_from
from sqlalchemy.ext.asyncio import create_async_engine

from predmarket.collector import tune_collector

log = logging.getLogger("predmarket.api")
#: Connections for subscribers' start positions, backlogs and positions (short calls, never blocking).
STREAM_SIDE_CONNECTIONS = 8


async def _ensure_house(engine: Engine) -> None:
    """Create ``house`` as soon as Redis answers (it may be down when the API starts)."""
    delay = 0.1
    while True:
        try:
            await engine.start()
            return
        except (Unavailable, *UNREACHABLE):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def _stream_keys(engine: Engine) -> list[Keys]:
    """Each shard's keys, whose event stream a hub reads (one shard: the engine's own)."""
    return [engine.keys] if isinstance(engine, MarketEngine) else [shard.keys for shard in engine.engines]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = engine_for(settings)
        stream_keys = _stream_keys(engine)
        # Live streams and durable answers never take a connection of the trading pool: each
        # shard's stream reader has one of its own (a timeout above its blocking wait),
        # subscribers share a small side pool for their start positions and backlogs, and the
        # durable watcher has its own client.
        stream_readers = [connect(settings.redis_url, timeout_s=READ_BLOCK_MS / 1000 + 10, max_connections=1)
                          for _ in stream_keys]
        stream_redis = connect(settings.redis_url, timeout_s=settings.redis_timeout_s,
                               max_connections=STREAM_SIDE_CONNECTIONS)
        hubs = [StreamHub(reader, stream_redis, keys, settings.max_subscribers)
                for reader, keys in zip(stream_readers, stream_keys, strict=True)]
        pg = create_async_engine(settings.database_url, pool_pre_ping=True, pool_size=5, max_overflow=10)
        watcher = CommittedWatcher(connect(settings.redis_url, timeout_s=max(settings.redis_timeout_s, 5.0),
                                           max_connections=4), stream_keys)
        # The hot set: reload evicted users on demand (over shards, each shard's sub-wallets; an archived
        # market comes back from its shard's Redis alone).
        load_from(pg, engine)
        app.state.engine = engine
        app.state.auth = Authenticator(engine, settings.admin_token, settings.rate_limit_per_s)
        app.state.auth.start()  # flushes the API keys' last use every few seconds
        app.state.stream_redis = stream_redis
        app.state.hubs = hubs
        app.state.stream_keys = stream_keys
        app.state.pg = pg
        app.state.committed = watcher
        watcher.start()
        for hub in hubs:
            hub.start()
        house = asyncio.create_task(_ensure_house(engine))
        tune_collector()

        def close_streams() -> None:
            for hub in hubs:
                hub.close()

        try:
            with on_stop_signal(close_streams):
                yield
        finally:
            house.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await house
            for hub in hubs:
                await hub.stop()
            await watcher.stop()
            await pg.dispose()
            for reader in stream_readers:
                await reader.aclose()
            await stream_redis.aclose()
            await app.state.auth.close()
            await engine.close()

    app = FastAPI(
        title="predmarket", version=version("predmarket"), lifespan=lifespan, default_response_class=JSONResponse,
        description="Real-time binary prediction market: LMSR pricing, Redis hot state, PostgreSQL record. "
        "Money, shares and prices are decimal strings with 6 decimals.",
    )
    errors.install(app)
    openapi.install(app)
    for module in (users, markets, candles, trades, events, ops, web, api_keys, me):
        app.include_router(module.router)
    # The trade route served without FastAPI's dependency machinery (it dominated the
    # profile under load); the FastAPI route of the same path still documents it.
    app.router.routes.insert(0, trades.FAST_ROUTE)
    app.add_middleware(RequestMiddleware, max_body_bytes=settings.max_body_bytes)
    return app
