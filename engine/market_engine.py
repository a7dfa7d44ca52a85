"""MarketEngine: the one object callers hold; it wires the stores, scripts and the trader."""

from __future__ import annotations

from dataclasses import replace

from predmarket.engine.accounts import Accounts
from predmarket.engine.connection import connect, unavailable_on_disconnect
from predmarket.engine.errors import NotFound
from predmarket.engine.hotset import HotSet, Loader, reloading
from predmarket.engine.keys import Keys
from predmarket.engine.markets import Markets
from predmarket.engine.models import Order, Trade
from predmarket.engine.positions import LiveBook, live_positions
from predmarket.engine.replication import ReplicaFence
from predmarket.engine.scripts import Scripts
from predmarket.engine.sequencer import SequencerStats
from predmarket.engine.settings import Settings
from predmarket.engine.state import Breach, check_invariants, read_redis_state
from predmarket.engine.trader import Trader
from predmarket.engine.validation import check_order
from redis.asyncio import Redis


class MarketEngine:
    """Accounts, markets and trading over one Redis, under one key prefix."""

    def __init__(self, redis: Redis, settings: Settings, trade_ids: tuple[int, int] = (1, 0)) -> None:
        """``trade_ids``: (stride, offset) of the trade ids it makes: (S, k) as shard k of S (engine/sharded.py)."""
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.replica_fence = ReplicaFence(redis, self.keys.replication_fence, settings.replica_acks,
                                          settings.replica_wait_ms, on_shortfall=self._admin_shortfall)
        self.scripts = Scripts(redis, after_write=self.replica_fence)
        self.hotset = HotSet(redis, self.scripts, self.keys)
        self.accounts = Accounts(redis, self.scripts, self.keys, self.hotset)
        self.markets = Markets(redis, self.scripts, self.keys, self.hotset)
        self._trader = Trader(
            redis, self.keys, self.scripts.trade, max_batch=settings.max_batch,
            max_conflicts=settings.max_conflict_retries, idempotency_ttl_s=settings.idempotency_ttl_s,
            pipeline_depth=settings.pipeline_depth,
            split_from=settings.split_from,
            replicas=settings.replica_acks, replica_wait_ms=settings.replica_wait_ms, trade_ids=trade_ids,
        )

    @property
    def loader(self) -> Loader | None:
        return self.hotset.loader

    @loader.setter
    def loader(self, loader: Loader | None) -> None:
        """Read evicted users' balances from the durable record on demand (the hot set); see engine.hotset."""
        self.hotset.loader = loader

    @classmethod
    def from_settings(cls, settings: Settings) -> MarketEngine:
        return cls(connect(settings.redis_url, settings.redis_timeout_s), settings)

    @property
    def stats(self) -> SequencerStats:
        return self._trader.stats

    def _admin_shortfall(self) -> None:
        # One count for every write answered short of PM_REPLICA_ACKS, trades and admin writes alike.
        self._trader.stats.replica_shortfalls += 1

    def market_shard(self, market_id: str) -> int:
        """The shard holding the market: the one there is."""
        return 0

    def user_keys(self, user_id: str) -> Keys:
        """The keys of the user's profile, API keys and rate limit (one shard: the engine's own)."""
        return self.keys

    async def live_book(self, user_id: str) -> LiveBook:
        """The user's balance and live positions, read in one transaction (the user reloaded if evicted)."""
        return await reloading(lambda: live_positions(self.redis, self.keys, user_id), self.hotset, user_id=user_id)

    async def invariants(self) -> list[Breach]:
        """The contract's invariants over this engine's keys (consistent when nothing moves meanwhile)."""
        return check_invariants(await read_redis_state(self.redis, self.keys))

    async def start(self) -> None:
        """Make sure the deployment's ``house`` account exists."""
        await self.accounts.ensure_house()

    async def close(self) -> None:
        await self.close_trading()
        await self.redis.aclose()

    async def close_trading(self) -> None:
        """Stop the trader (orders queued are answered UNAVAILABLE); the Redis client stays open
        for its other users (engine/sharded.py: the shards' engines share one client)."""
        await self._trader.close()

    async def execute_trade(self, order: Order) -> Trade:
        """Execute ``order`` through its market's sequencer; raises an ``EngineError`` if rejected."""
        check_order(order)
        if order.sell_all and order.shares is None:
            order = await self._with_holding(order)
        # reloading() inlined: this is the hot path, and the retry is the rare case.
        try:
            return await self._trader.submit(order)
        except NotFound:
            if not await self.hotset.reload(user_id=order.user_id, market_id=order.market_id):
                raise
        return await self._trader.submit(order)

    async def _with_holding(self, order: Order) -> Order:
        """A SELL of "all" priced for the holding now: a first guess only, the script has the last word
        (lua/trade.lua answers HELD with the holding if it changed, and the order is priced again)."""
        field = f"{order.user_id}:{order.outcome}"
        with unavailable_on_disconnect():
            held = await self.redis.hget(self.keys.market_positions(order.market_id), field)
        return replace(order, shares=int(held or 0))
