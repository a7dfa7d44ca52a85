"""The accounts, markets and API keys of a sharded deployment, with the single-shard engine's interface.

The API's routes call ``engine.accounts``, ``engine.markets`` and ``engine.accounts.api_keys``
the same way whatever the layout: on one shard those are :class:`~engine.accounts.Accounts`
and its peers; over shards they are the classes here, which route each call to the shard
that decides it (a market's shard, a user's home) or gather it from every shard.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, cast

from predmarket.engine.accounts import new_id
from predmarket.engine.api_keys import ApiKey, ApiKeys, KeyUse
from predmarket.engine.connection import unavailable_on_disconnect
from predmarket.engine.errors import InsufficientFunds
from predmarket.engine.markets import Markets
from predmarket.engine.models import Account, Market, MarketStatus, Quote, Settlement, Side
from predmarket.engine.resolutions import Resolution
from predmarket.engine.units import format_micro
from predmarket.engine.validation import check_id, check_quantity, check_username

if TYPE_CHECKING:
    from predmarket.engine.sharded import ShardedEngine


class ShardedApiKeys:
    """A user's keys live in the home shard (created, listed, revoked there, with their events);
    a key's owner is looked up in every shard's directory at once (a key does not say its home)."""

    def __init__(self, engine: ShardedEngine) -> None:
        self._engine = engine

    def _home(self, user_id: str) -> ApiKeys:
        return self._engine.engines[self._engine.home(user_id)].accounts.api_keys

    async def owner(self, key_hash: str) -> str | None:
        """The user whose live key has this hash, from every shard's directory (one pipeline)."""
        engine = self._engine
        with unavailable_on_disconnect():
            async with engine.redis.pipeline(transaction=False) as pipe:
                for shard in range(engine.count):
                    pipe.hget(engine.wallet_keys(shard).apikeys, key_hash)
                owners = cast(list[str | None], await pipe.execute())
        return next((owner for owner in owners if owner is not None), None)

    async def create(self, user_id: str, key_hash: str, last4: str) -> ApiKey:
        return await self._home(user_id).create(user_id, key_hash, last4)

    async def of_user(self, user_id: str) -> list[ApiKey]:
        return await self._home(user_id).of_user(user_id)

    async def revoke(self, user_id: str, key_id: str) -> None:
        await self._home(user_id).revoke(user_id, key_id)

    async def touch(self, uses: Iterable[KeyUse]) -> int:
        """Each use recorded in its user's home shard."""
        by_home: dict[int, list[KeyUse]] = {}
        for use in uses:
            by_home.setdefault(self._engine.home(use.user_id), []).append(use)
        newer = 0
        for shard, group in by_home.items():
            newer += await self._engine.engines[shard].accounts.api_keys.touch(group)
        return newer


class ShardedAccounts:
    """Users over shards: created in their home shard, their money summed over the sub-wallets."""

    def __init__(self, engine: ShardedEngine) -> None:
        self._engine = engine
        self.api_keys = ShardedApiKeys(engine)

    async def create(self, username: str, user_id: str | None = None, key_hash: str = "",
                     last4: str = "") -> Account:
        check_username(username)  # the request's shape before the directory is touched
        user_id = check_id(user_id, "user_id") if user_id is not None else new_id("u")
        return await self._engine.create_user(username, user_id, key_hash, last4)

    async def get(self, user_id: str) -> Account:
        return await self._engine.account(user_id)

    async def deposit(self, user_id: str, amount: int) -> Account:
        check_quantity(amount, "amount")
        return await self._engine.deposit(user_id, amount)

    async def withdraw(self, user_id: str, amount: int) -> Account:
        check_quantity(amount, "amount")
        account = await self._engine.account(user_id)  # NotFound before anything moves
        if amount > account.available:
            # Refused without gathering the money home first: a refused withdrawal moves nothing.
            raise InsufficientFunds(f"available {format_micro(account.available)} < {format_micro(amount)}")
        return await self._engine.withdraw(user_id, amount)


class ShardedMarkets:
    """Markets over shards: each call goes to the market's shard; a listing gathers every shard."""

    def __init__(self, engine: ShardedEngine) -> None:
        self._engine = engine

    def _of(self, market_id: str) -> Markets:
        return self._engine.market_engine(market_id).markets

    async def create(self, name: str, liquidity_b: int, market_id: str | None = None,
                     close_ms: int | None = None, outcomes: Sequence[str] | None = None) -> Market:
        return await self._engine.create_market(name, liquidity_b, close_ms=close_ms,
                                                outcomes=list(outcomes) if outcomes is not None else None,
                                                market_id=market_id)

    async def list_all(self, status: MarketStatus | None = None) -> list[Market]:
        markets: list[Market] = []
        for engine in self._engine.engines:
            markets += await engine.markets.list_all(status)
        return sorted(markets, key=lambda m: (m.created_ms, m.market_id))

    async def get(self, market_id: str) -> Market:
        return await self._of(market_id).get(market_id)

    async def open(self, market_id: str) -> Market:
        return await self._of(market_id).open(market_id)

    async def close(self, market_id: str) -> Market:
        return await self._of(market_id).close(market_id)

    async def resolve(self, market_id: str, resolution: Resolution | str) -> Market:
        return await self._of(market_id).resolve(market_id, resolution)

    async def settle(self, market_id: str) -> Settlement:
        return await self._of(market_id).settle(market_id)

    async def quote(self, market_id: str, side: Side, outcome: str,
                    shares: int | None = None, amount: int | None = None) -> Quote:
        return await self._of(market_id).quote(market_id, side, outcome, shares=shares, amount=amount)
