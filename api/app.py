"""The FastAPI application: stateless, so any number of replicas can serve one Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import create_async_engine

from api import errors, openapi
from api.auth import Authenticator
from api.durable import CommittedWatcher
from api.middleware import RequestMiddleware
from api.responses import JSONResponse
from api.routes import events, markets, ops, trades, users
from api.streaming import HEARTBEAT_S
from engine.connection import UNREACHABLE, connect
from engine.errors import Unavailable
from engine.market_engine import MarketEngine
from engine.settings import Settings, get_settings
from record.loader import PgLoader

log = logging.getLogger("predmarket.api")


async def _ensure_house(engine: MarketEngine) -> None:
    """Create ``house`` as soon as Redis answers (it may be down when the API starts)."""
    delay = 0.1
    while True:
        try:
            await engine.start()
            return
        except (Unavailable, *UNREACHABLE):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = MarketEngine.from_settings(settings)
        # Blocking reads (SSE, pub/sub) get their own client with a timeout above their wait.
        stream_redis = connect(settings.redis_url, timeout_s=HEARTBEAT_S + 10)
        pg = create_async_engine(settings.database_url, pool_pre_ping=True, pool_size=5, max_overflow=10)
        watcher = CommittedWatcher(stream_redis, engine.keys)
        engine.loader = PgLoader(pg, engine.scripts, engine.keys)  # the hot set: reload on demand
        app.state.engine = engine
        app.state.auth = Authenticator(engine, settings.admin_token, settings.rate_limit_per_s)
        app.state.stream_redis = stream_redis
        app.state.pg = pg
        app.state.committed = watcher
        watcher.start()
        house = asyncio.create_task(_ensure_house(engine))
        # What start-up allocated (modules, the app, its routes) lives as long as the
        # process: frozen, it is no longer walked by every full collection.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            house.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await house
            await watcher.stop()
            await pg.dispose()
            await stream_redis.aclose()
            await engine.close()

    app = FastAPI(
        title="predmarket", version=version("predmarket"), lifespan=lifespan, default_response_class=JSONResponse,
        description="Real-time binary prediction market: LMSR pricing, Redis hot state, PostgreSQL record. "
        "Money, shares and prices are decimal strings with 6 decimals.",
    )
    errors.install(app)
    openapi.install(app)
    for module in (users, markets, trades, events, ops):
        app.include_router(module.router)
    # The trade route served without FastAPI's dependency machinery (it dominated the
    # profile under load); the FastAPI route of the same path still documents it.
    app.router.routes.insert(0, trades.FAST_ROUTE)
    app.add_middleware(RequestMiddleware, max_body_bytes=settings.max_body_bytes)
    return app
