"""Reference peer: the naive, unbatched read -> compute -> compare-and-set on Redis.

What the engine did before per-market sequencing: every trade reads its
market (HMGET), prices one order with ``engine.orders.fill`` and submits it
alone with the project's own ``lua/trade.lua``; on CONFLICT (another task
traded the market in between) it reads again and retries. The same script,
keys and events as the engine, so the difference measured is the batching.
"""

from __future__ import annotations

from typing import Any

from predmarket.engine.errors import NotFound, Unavailable, rejection
from predmarket.engine.keys import Keys
from predmarket.engine.models import Outcome, Side
from predmarket.engine.orders import fill
from predmarket.engine.scripts import Scripts
from predmarket.engine.wire import OrderLine, head_args, head_keys, market_keys, order_keys
from redis.asyncio import Redis

#: A trade still conflicting after this many re-reads is given up (counted as UNAVAILABLE).
MAX_RETRIES = 10_000


class NaiveCas:
    def __init__(self, redis: Redis, keys: Keys, idempotency_ttl_s: int) -> None:
        self._redis = redis
        self._scripts = Scripts(redis)
        self._keys = keys
        self._head_keys = head_keys(keys)
        self._head_args = head_args(idempotency_ttl_s)

    async def trade(self, user_id: str, market_id: str, side: Side, outcome: Outcome, shares: int) -> int:
        """Execute one trade; returns the retries it took."""
        market_key = self._keys.market(market_id)
        keys = [*self._head_keys, *market_keys(self._keys, market_id), *order_keys(self._keys, user_id, "")]
        for retries in range(MAX_RETRIES + 1):
            fields: list[Any] = await self._redis.hmget(market_key, ["version", "q_yes", "q_no", "b"])
            if fields[0] is None:
                raise NotFound(f"no market {market_id}")
            version, q_yes, q_no, b = fields[0], int(fields[1]), int(fields[2]), int(fields[3])
            f = fill((q_yes, q_no), b, side, 0 if outcome is Outcome.YES else 1, shares=shares, label=outcome.value)
            # One order, no Idempotency-Key: see the argument format in lua/trade.lua.
            order = OrderLine(user_id, side, outcome, f.shares, f.cost, f.prices, f.avg_price, "", "", "").encode()
            args = [*self._head_args, market_id, f"{version}:{q_yes}:{q_no}", 1, order]
            (reply,) = await self._scripts.trade(keys, args)
            if reply[0] == "CONFLICT":
                continue
            if reply[0] == "NOT_FOUND":
                raise NotFound(f"no market {market_id}")
            result = reply[6][0]
            if result[0] != "OK":
                raise rejection(result[0], result[1], source="trade")
            return retries
        raise Unavailable(f"market {market_id}: still conflicting after {MAX_RETRIES} retries")
