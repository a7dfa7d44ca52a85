"""PositionStore operations: accounts, deposits, withdrawals, API keys."""

from __future__ import annotations

import contextlib
import secrets
from typing import cast

from redis.asyncio import Redis

from engine.connection import unavailable_on_disconnect
from engine.errors import AlreadyExists, NotFound
from engine.hotset import Loader, reloading
from engine.keys import Keys
from engine.models import HOUSE, Account, Outcome, Position
from engine.scripts import Scripts
from engine.validation import check_id, check_quantity, check_username


def new_id(prefix: str) -> str:
    """A fresh id matching the contract's id pattern."""
    return f"{prefix}_{secrets.token_hex(8)}"


def account_from(user_id: str, fields: dict[str, str], positions: dict[str, str]) -> Account:
    held = []
    for name, shares in positions.items():
        market_id, _, outcome = name.rpartition(":")
        held.append(Position(market_id, Outcome(outcome), int(shares)))
    held.sort(key=lambda p: (p.market_id, p.outcome.value))
    return Account(
        user_id=user_id, username=fields["username"], available=int(fields["available"]),
        locked=int(fields["locked"]), created_ms=int(fields["created_ms"]), positions=held,
    )


class Accounts:
    def __init__(self, redis: Redis, scripts: Scripts, keys: Keys) -> None:
        self._redis = redis
        self._scripts = scripts
        self._keys = keys
        #: reloads evicted users; None when this process has no durable record to read
        self.loader: Loader | None = None

    async def create(self, username: str, user_id: str | None = None, key_hash: str = "") -> Account:
        """Register a user with zero balance; ``key_hash`` is sha256 of its API key."""
        check_username(username)
        user_id = check_id(user_id, "user_id") if user_id is not None else new_id("u")
        # An evicted user's id and name are only in the durable record now.
        if self.loader is not None and await self.loader.user_taken(user_id, username):
            raise AlreadyExists("user_id or username is taken")
        k = self._keys
        with unavailable_on_disconnect():
            (created_ms,) = await self._scripts.run(
                "create_user", [k.user(user_id), k.usernames, k.apikeys, k.events],
                [user_id, username, key_hash],
            )
        return Account(user_id, username, 0, 0, int(created_ms), [])

    async def ensure_house(self) -> None:
        """Create the ``house`` account if this deployment has none yet."""
        with unavailable_on_disconnect():
            if await self._redis.exists(self._keys.user(HOUSE)):
                return
        with contextlib.suppress(AlreadyExists):  # another process created it first
            await self.create(HOUSE, HOUSE)

    async def deposit(self, user_id: str, amount: int) -> Account:
        return await reloading(lambda: self._move("deposit", user_id, amount), self.loader, user_id=user_id)

    async def withdraw(self, user_id: str, amount: int) -> Account:
        return await reloading(lambda: self._move("withdraw", user_id, amount), self.loader, user_id=user_id)

    async def _move(self, script: str, user_id: str, amount: int) -> Account:
        check_quantity(amount, "amount")
        k = self._keys
        with unavailable_on_disconnect():
            await self._scripts.run(script, [k.user(user_id), k.events, k.totals], [user_id, amount])
        return await self._get(user_id)

    async def get(self, user_id: str) -> Account:
        return await reloading(lambda: self._get(user_id), self.loader, user_id=user_id)

    async def _get(self, user_id: str) -> Account:
        k = self._keys
        with unavailable_on_disconnect():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(k.user(user_id))
                pipe.hgetall(k.user_positions(user_id))
                fields, positions = await pipe.execute()
        if not fields:
            raise NotFound(f"no user {user_id}")
        return account_from(user_id, fields, positions)

    async def user_for_key(self, key_hash: str) -> str | None:
        """The user owning the API key with this hash: one round trip, unless the user was evicted."""
        with unavailable_on_disconnect():
            user_id = cast(str | None, await self._redis.hget(self._keys.apikeys, key_hash))
        if user_id is None and self.loader is not None:
            user_id = await self.loader.user_for_key(key_hash)
            if user_id is not None and not await self.loader.load_user(user_id):
                return None
        return user_id
