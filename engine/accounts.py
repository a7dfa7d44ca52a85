"""PositionStore operations: accounts, deposits, withdrawals; API keys in ``self.api_keys`` (engine.api_keys)."""

from __future__ import annotations

import contextlib
import secrets

from predmarket.engine.api_keys import ApiKeys, key_id_for
from predmarket.engine.connection import unavailable_on_disconnect
from predmarket.engine.errors import AlreadyExists, NotFound
from predmarket.engine.hotset import HotSet, reloading
from predmarket.engine.keys import Keys
from predmarket.engine.models import HOUSE, Account, Position
from predmarket.engine.scripts import Script, Scripts
from predmarket.engine.units import MAX_EXACT
from predmarket.engine.validation import check_id, check_quantity, check_username
from redis.asyncio import Redis


def new_id(prefix: str) -> str:
    """A fresh id matching the contract's id pattern."""
    return f"{prefix}_{secrets.token_hex(8)}"


def account_from(user_id: str, fields: dict[str, str], positions: dict[str, str],
                 net_costs: dict[str, str] | None = None) -> Account:
    """``positions`` and ``net_costs``: the user's hashes (``<market>:<outcome>`` -> micro-units)."""
    costs = net_costs or {}
    held = []
    for name, shares in positions.items():
        market_id, _, outcome = name.rpartition(":")
        held.append(Position(market_id, outcome, int(shares), int(costs.get(name, 0))))
    held.sort(key=lambda p: (p.market_id, p.outcome))
    return Account(
        user_id=user_id, username=fields["username"], available=int(fields["available"]),
        locked=int(fields["locked"]), created_ms=int(fields["created_ms"]), positions=held,
    )


class Accounts:
    def __init__(self, redis: Redis, scripts: Scripts, keys: Keys, hotset: HotSet) -> None:
        self._redis = redis
        self._scripts = scripts
        self._keys = keys
        self._hotset = hotset
        self.api_keys = ApiKeys(redis, scripts, keys, hotset)

    async def create(self, username: str, user_id: str | None = None, key_hash: str = "",
                     last4: str = "") -> Account:
        """Register a user with zero balance; ``key_hash`` is sha256 of its first API key (listed among
        its keys, with ``last4``, the key's last 4 characters)."""
        check_username(username)
        user_id = check_id(user_id, "user_id") if user_id is not None else new_id("u")
        k = self._keys
        # The script decides uniqueness against the directory (ids and names of every user,
        # evicted ones included), atomically: no PostgreSQL read, so it works through an outage.
        with unavailable_on_disconnect():
            (created_ms,) = await self._scripts.create_user(
                [k.user(user_id), k.usernames, k.apikeys, k.events, k.user_ids, k.user_api_keys(user_id)],
                [user_id, username, key_hash, key_id_for(key_hash) if key_hash else "", last4],
            )
        return Account(user_id, username, 0, 0, int(created_ms), [])

    async def ensure_house(self) -> None:
        """Create the ``house`` account if this deployment has none yet."""
        with unavailable_on_disconnect():
            if await self._redis.exists(self._keys.user(HOUSE)):
                return
        with contextlib.suppress(AlreadyExists):  # another process created it first
            await self.create(HOUSE, HOUSE)

    async def deposit(self, user_id: str, amount: int, *, elsewhere: int | None = None,
                      deposits_bound: int = MAX_EXACT) -> Account:
        """Over shards: ``elsewhere``, the user's money in its other sub-wallets as
        :meth:`ShardedEngine.own_money <predmarket.engine.sharded.ShardedEngine.own_money>` counts it,
        so that lua/deposit.lua bounds the whole balance; ``deposits_bound``, this shard's share of the
        bound on the ledger's total deposits."""
        deposit = self._scripts.deposit
        extra = () if elsewhere is None else (elsewhere, deposits_bound)
        return await reloading(lambda: self._move(deposit, user_id, amount, *extra), self._hotset, user_id=user_id)

    async def withdraw(self, user_id: str, amount: int) -> Account:
        withdraw = self._scripts.withdraw
        return await reloading(lambda: self._move(withdraw, user_id, amount), self._hotset, user_id=user_id)

    async def _move(self, script: Script, user_id: str, amount: int, *extra: int) -> Account:
        check_quantity(amount, "amount")
        k = self._keys
        with unavailable_on_disconnect():
            await script([k.user(user_id), k.events, k.totals], [user_id, amount, *extra])
        return await self._get(user_id)

    async def get(self, user_id: str) -> Account:
        return await reloading(lambda: self._get(user_id), self._hotset, user_id=user_id)

    async def _get(self, user_id: str) -> Account:
        k = self._keys
        with unavailable_on_disconnect():
            # One transaction: a trade between the reads would pair a holding with another net cost.
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(k.user(user_id))
                pipe.hgetall(k.user_positions(user_id))
                pipe.hgetall(k.user_costs(user_id))
                fields, positions, net_costs = await pipe.execute()
        if not fields:
            raise NotFound(f"no user {user_id}")
        return account_from(user_id, fields, positions, net_costs)

    async def user_for_key(self, key_hash: str) -> str | None:
        """The user owning the live API key with this hash: one round trip (evicted users' keys stay too)."""
        return await self.api_keys.owner(key_hash)
