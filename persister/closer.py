"""Closing markets at their close time when nobody trades them.

A trade or quote that meets a market past its close time closes it itself (lua/trade.lua,
lua/close_market.lua), so this is only what makes the ``MarketClosed`` event of an idle market
come on time: every few hundred milliseconds, the markets of the closing index whose close time
Redis' clock has reached are closed. The script decides by that same clock, so this process's
clock only chooses which markets to ask about; several persisters may ask at once.
"""

from __future__ import annotations

from typing import cast

import redis
from predmarket.engine.clock import redis_now_ms
from predmarket.engine.errors import NotFound
from predmarket.engine.keys import Keys
from predmarket.engine.scripts import SyncScripts

#: Markets closed per round at most: the rest wait for the next round.
PER_ROUND = 500


def close_due_markets(client: redis.Redis, scripts: SyncScripts, keys: Keys) -> int:
    """Close every market of the closing index due by Redis' clock; returns how many were asked."""
    due = cast(list[str], client.zrangebyscore(keys.closing, "-inf", redis_now_ms(client), start=0, num=PER_ROUND))
    for market_id in due:
        try:
            scripts.close_market([keys.market(market_id), keys.events, keys.dirty, keys.closing], [market_id, "due"])
        except NotFound:  # gone (a deleted prefix): the script took it out of the index
            continue
    return len(due)
