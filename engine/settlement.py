"""Settling a market resolved PROB or CANCEL: one payout (or refund) per user, in batches, resumable.

An OUTCOME market is paid position by position (lua/settle_batch.lua, from engine/markets.py).
PROB and CANCEL pay per user over all of its outcomes, so each call of lua/settle_users.lua
takes whole users: every label of each user it is sent, read and paid in that one call.

* PROB: the users are those holding positions; the script computes each payout from the shares
  it reads (exact, see the script) and deletes them, so a user already paid is one without
  positions. The probabilities it pays with are compared with the market's.
* CANCEL: the users are those with a net cost in the market (kept by lua/trade.lua for every
  position ever traded) or a position. Each refund is computed here from the market's net costs,
  exactly in Python integers, and scaled to the pool at resolution when they exceed it
  (engine/resolutions.py). Nothing can change those inputs once the market is RESOLVED (trades
  need an OPEN market; the pool moves only by refunds, which ``payouts_total`` counts), so every
  run -- a first one, or one resuming an interrupted settlement -- computes the same refunds; the
  script still compares each user's net costs and the pool at resolution with those this run read
  before paying, and keeps the users it refunded so a resumed run skips them.

Users evicted by the hot set (only a user holding nothing is) are loaded and sent again; one that
cannot be loaded stops the settlement before the market is closed, so nobody loses a refund.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from predmarket.engine.errors import Unavailable
from predmarket.engine.hotset import HotSet
from predmarket.engine.keys import Keys
from predmarket.engine.resolutions import (
    CANCEL,
    PROB,
    market_labels,
    parse_probabilities_text,
    refund_due,
    scaled_refunds,
)
from predmarket.engine.scripts import Scripts
from redis.asyncio import Redis


@dataclass(frozen=True, slots=True)
class CancelPlan:
    """What a RESOLVED CANCEL market refunds: the same whenever it is read (nothing it depends on moves)."""

    #: user -> label -> net cost (as Redis keeps it), every user who traded the market or holds shares of it
    costs: dict[str, dict[str, str]]
    #: user -> refund, scaled to the pool when the refunds exceed it
    refunds: dict[str, int]
    #: the pool at resolution (today's pool plus what was refunded since)
    pool: int


async def cancel_plan(redis: Redis, keys: Keys, market_id: str) -> CancelPlan:
    """Every refund of a RESOLVED CANCEL market, computed from its net costs (also what a user's
    positions are worth until it is settled: engine.positions)."""
    costs: dict[str, dict[str, str]] = {}
    async for name, value in redis.hscan_iter(keys.market_costs(market_id), count=1000):
        user_id, _, label = cast(str, name).rpartition(":")
        costs.setdefault(user_id, {})[label] = cast(str, value)
    async for name, _ in redis.hscan_iter(keys.market_positions(market_id), count=1000):
        costs.setdefault(cast(str, name).rpartition(":")[0], {})  # a holding without a net cost: refund 0
    due = {user_id: refund_due(int(c) for c in held.values()) for user_id, held in costs.items()}
    # Nothing but refunds moves a resolved market's pool, and payouts_total counts them.
    pool, paid = await redis.hmget(keys.market(market_id), ["pool", "payouts_total"])
    at_resolution = int(pool or 0) + int(paid or 0)
    return CancelPlan(costs, scaled_refunds(due, at_resolution), at_resolution)


class UserSettler:
    """Pays every user of one RESOLVED PROB or CANCEL market (``fields``: its hash, read by the caller)."""

    def __init__(self, redis: Redis, scripts: Scripts, keys: Keys, hotset: HotSet,
                 market_id: str, fields: dict[str, str], batch: int) -> None:
        self._redis = redis
        self._scripts = scripts
        self._keys = keys
        self._hotset = hotset
        self._market_id = market_id
        self._fields = fields
        self._batch = max(1, batch)
        self._labels = market_labels(fields)

    async def pay_all(self) -> None:
        """One pass over every user; the caller's settle_finish then says whether any is left."""
        if self._fields["outcome"] == PROB:
            await self._pay_prob()
        else:
            await self._pay_cancel()

    # ------------------------------------------------------------------ PROB

    async def _pay_prob(self) -> None:
        given = dict(parse_probabilities_text(self._fields["probabilities"]))
        head = [self._fields["probabilities"], len(self._labels), *self._labels,
                *(given[label] for label in self._labels)]
        users = sorted({field.rpartition(":")[0] for field in await self._hash_keys(self._keys.market_positions(
            self._market_id))})
        await self._send(PROB, head, [(user_id, [user_id]) for user_id in users])

    # ------------------------------------------------------------------ CANCEL

    async def _pay_cancel(self) -> None:
        labels = self._labels
        plan = await cancel_plan(self._redis, self._keys, self._market_id)
        head = [str(plan.pool), len(labels), *labels]
        groups = [(user_id, [user_id, plan.refunds[user_id], *(plan.costs[user_id].get(label, "") for label in labels)])
                  for user_id in sorted(plan.costs)]
        await self._send(CANCEL, head, groups)

    # ------------------------------------------------------------------ both

    async def _hash_keys(self, key: str) -> list[str]:
        return [cast(str, name) async for name, _ in self._redis.hscan_iter(key, count=1000)]

    async def _send(self, mode: str, head: list[Any], groups: list[tuple[str, list[Any]]]) -> None:
        """Every user's group in batches; users found evicted are loaded and sent once more."""
        for start in range(0, len(groups), self._batch):
            chunk = groups[start:start + self._batch]
            missing = await self._call(mode, head, chunk)
            if missing:
                wanted = set(missing)
                for user_id in missing:
                    if not await self._hotset.load_user(user_id):
                        raise Unavailable(f"user {user_id} of market {self._market_id} cannot be loaded to be paid")
                still = await self._call(mode, head, [g for g in chunk if g[0] in wanted])
                if still:
                    raise Unavailable(f"users {', '.join(still)} left Redis again while being paid; settle again")

    async def _call(self, mode: str, head: list[Any], chunk: Sequence[tuple[str, list[Any]]]) -> list[str]:
        k, m = self._keys, self._market_id
        keys = [k.market(m), k.market_positions(m), k.events, k.dirty, k.market_costs(m), k.market_refunded(m)]
        args: list[Any] = [m, mode, *head]
        for user_id, group in chunk:
            keys += [k.user(user_id), k.user_positions(user_id)]
            args += group
        reply = await self._scripts.settle_users(keys, args)
        return [str(user_id) for user_id in reply[1:]]
