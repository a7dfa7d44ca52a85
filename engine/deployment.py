"""The engine a deployment runs: one :class:`MarketEngine` for one shard, a :class:`ShardedEngine` for more.

Both offer what the API and the commands call (``accounts``, ``markets``, ``execute_trade``,
``live_book``, ``user_keys``, ``stats``, ``scripts``, ``invariants``, ``start``, ``close``) with the same
meaning.
"""

from __future__ import annotations

from typing import TypeAlias

from predmarket.engine.connection import connect
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.settings import Settings
from predmarket.engine.sharded import ShardedEngine

Engine: TypeAlias = MarketEngine | ShardedEngine


def engine_for(settings: Settings) -> Engine:
    """The engine of ``settings.shards`` shards on ``settings.redis_url``."""
    if settings.shards == 1:
        return MarketEngine.from_settings(settings)
    return ShardedEngine(connect(settings.redis_url, settings.redis_timeout_s), settings)
