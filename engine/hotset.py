"""The engine's side of the hot set: what to do when Redis does not know a user or a market.

Idle users and settled markets may have been evicted from Redis (the
persister's janitor does it once PostgreSQL holds their state). A ``Loader``
(implemented over PostgreSQL in ``record.loader``; the engine itself knows no
SQL) puts them back; :func:`reloading` retries an operation once after a load.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from engine.errors import NotFound
from engine.models import Market, MarketStatus

T = TypeVar("T")


class Loader(Protocol):
    async def load_user(self, user_id: str) -> bool:
        """Install the user from the durable record if it is there; True if it exists."""

    async def load_market(self, market_id: str) -> bool:
        """Install an archived market; True if it exists."""

    async def user_for_key(self, key_hash: str) -> str | None:
        """The user owning an API key hash, from the durable record."""

    async def user_taken(self, user_id: str, username: str) -> bool:
        """Whether an (evicted) user already has this id or username."""

    async def market_taken(self, market_id: str) -> bool:
        """Whether an (archived) market already has this id."""

    async def archived_markets(self, known: set[str], status: MarketStatus | None) -> list[Market]:
        """Markets recorded durably but no longer in Redis."""


async def reload_missing(loader: Loader | None, *, user_id: str | None = None,
                         market_id: str | None = None) -> bool:
    """Put back an evicted user and/or archived market; True if the loader supplied either."""
    if loader is None:
        return False
    loaded = False
    if user_id is not None:
        loaded = await loader.load_user(user_id) or loaded
    if market_id is not None:
        loaded = await loader.load_market(market_id) or loaded
    return loaded


async def reloading(call: Callable[[], Awaitable[T]], loader: Loader | None, *,
                    user_id: str | None = None, market_id: str | None = None) -> T:
    """Run ``call``; if it finds no such user or market and the loader can supply one, run it again."""
    try:
        return await call()
    except NotFound:
        if not await reload_missing(loader, user_id=user_id, market_id=market_id):
            raise
    return await call()
