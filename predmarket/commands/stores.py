"""Both stores for one command run (audit, recover): opened once, always closed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
from sqlalchemy import Engine

from predmarket.engine.connection import connect_sync
from predmarket.engine.settings import Settings
from predmarket.record.database import make_engine


@contextmanager
def stores(settings: Settings) -> Iterator[tuple[redis.Redis, Engine]]:
    """A synchronous Redis client (long timeout: bulk work) and a PostgreSQL engine."""
    client = connect_sync(settings.redis_url, 60.0)
    pg = make_engine(settings.database_url)
    try:
        yield client, pg
    finally:
        pg.dispose()
        client.close()
