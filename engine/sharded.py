"""One deployment over S > 1 shards: a :class:`MarketEngine` per shard, money in per-shard sub-wallets.

Shard ``k`` is a whole engine under the prefix ``<p>:{s<k>}`` (engine/shards.py): its markets,
its sub-wallets (each user's money there, the user hash of its keys), its event stream,
trade counter, idempotency records and house. Every script it runs stays in that one hash
slot, so on Redis Cluster each shard may sit on any master, and the engine's code is the
single-slot engine's, unchanged. What spans shards is here:

* **users**: the username is claimed in the deployment's directory (``<p>:usernames``, one
  key), then the account is created in its home shard (profile and home sub-wallet); a
  claim left by a creation that died in between is taken over after a grace period.
  Deposits land there; a withdrawal first brings money home.
* **funding a trade**: a trade pays from the sub-wallet of its market's shard. Rejected
  for funds there (or with no sub-wallet there yet), it has the shortfall moved in by the
  transfer saga (engine/transfers.py) from the user's other sub-wallets, home first, and
  is sent again: a rejection for funds is final only once nothing is left elsewhere.
* **markets**: a market's id decides its shard; its subsidy is moved into the house's
  sub-wallet there before the market is made.
* **accounts**: ``available`` is the sum of the sub-wallets (exact whenever nothing is in
  transit, never counted twice); positions are every shard's.
* **trade ids** are unique across shards: shard k of S numbers its trades S + k, 2S + k, ...
* **Idempotency-Keys** stay the user's across shards: claimed in the home shard for one
  request, then executed (and replayed) in the market's shard.
* **the sweeper**: every engine finishes, once a second, the transfers a dead process left
  between the saga's steps.

The persister, ``audit`` and ``recover`` run over shards too (persister/sharded.py), and so
does the API: ``accounts``, ``markets`` and ``scripts`` have the single-shard engine's interface
(engine/sharded_facades.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from typing import cast

from predmarket.engine import pricing_n
from predmarket.engine.accounts import new_id
from predmarket.engine.connection import UNREACHABLE
from predmarket.engine.errors import (
    AlreadyExists,
    EngineError,
    IdempotencyKeyReused,
    InsufficientFunds,
    InsufficientShares,
    NotFound,
    Unavailable,
)
from predmarket.engine.hotset import Loader
from predmarket.engine.keys import Keys
from predmarket.engine.labels import check_labels
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.markets import check_close_ms
from predmarket.engine.models import HOUSE, Account, Market, Order, Side, Trade
from predmarket.engine.positions import LiveBook, live_positions
from predmarket.engine.replication import fence_async
from predmarket.engine.scripts import Scripts
from predmarket.engine.sequencer import SequencerStats
from predmarket.engine.settings import Settings
from predmarket.engine.sharded_facades import ShardedAccounts, ShardedMarkets
from predmarket.engine.shards import MAX_SHARDS, home_of, shard_keys, shard_of, shard_prefix
from predmarket.engine.state import Breach, check_invariants, read_redis_state
from predmarket.engine.transfers import LOAD_TRIES, Transfers, parse_record
from predmarket.engine.units import MAX_EXACT, format_micro, micro_from_decimal
from predmarket.engine.validation import check_id, check_liquidity, check_market_name
from predmarket.engine.wire import request_hash
from redis.asyncio import Redis

log = logging.getLogger("predmarket.engine")

#: lua/trade.lua's rejection for funds; the difference is what a transfer must bring.
_SHORT = re.compile(r"available (\d+\.\d{6}) < cost (\d+\.\d{6})")
#: Transfers in before a trade's rejection for funds stands: each brings the shortfall the
#: script reported and a margin (the price can move between rounds); the last brings all
#: the user holds elsewhere, so the rejection after it is checked against every sub-wallet.
FUNDING_ROUNDS = 4
#: A trade short of funds in a shard brings, beyond what it needs, this fraction (1/n) of what the
#: user's home sub-wallet holds beyond that (ShardedEngine._fund).
FLOAT_SHARE = 4
#: Tries of one order in its shard at most: the funding rounds, then as many again for the user's
#: concurrent orders, which take what was brought for this one (and bring money for it).
MAX_TRIES = 2 * FUNDING_ROUNDS


#: How often each engine sweeps for transfers left pending, and how long one must have been pending:
#: a transfer's four steps take about a millisecond, so one pending for seconds was left by a crash.
SWEEP_EVERY_S = 1.0
SWEEP_AFTER_MS = 5_000
#: How old a username's claim with no account must be before another creation takes it over (ms):
#: far longer than creating an account takes, so a creation in flight is never taken over.
CLAIM_GRACE_MS = 30_000
#: Reads of every sub-wallet before an account's balance is given up on (a transfer caught twice in each).
SNAPSHOT_TRIES = 20


#: Each shard's sub-wallet of one user as read: (available as stored or None, moved in, moved out).
Wallets = list[tuple[str | None, int, int]]


def held_in(wallets: Wallets) -> list[int]:
    """Each sub-wallet's balance, micro-units (0 where there is none)."""
    return [int(available or 0) for available, _, _ in wallets]


def own_in(wallets: Wallets) -> list[int]:
    """Each sub-wallet's own money (:meth:`ShardedEngine.own_money`)."""
    return [int(available or 0) + moved_out - moved_in for available, moved_in, moved_out in wallets]


def shortfall(exc: InsufficientFunds, funding_round: int = 0) -> int | None:
    """What to bring for another try after the trade script's rejection for funds: the shortfall
    it reported plus a tenth of the cost per round already tried (the price may move between
    rounds, others trading the market meanwhile); None if it did not say."""
    found = _SHORT.search(str(exc))
    if found is None:
        return None
    available, cost = (micro_from_decimal(Decimal(v)) for v in found.groups())
    return max(cost - available, 1) + cost * funding_round // 10


def _refuse_if_short(wallets: Wallets, exc: InsufficientFunds) -> None:
    """Refuse for funds at once, moving nothing, when the user's whole balance (``wallets`` as just read)
    cannot pay the cost the trade script just priced: bringing money in for a trade that fails anyway
    would move the user's money between sub-wallets for a rejected order. Money in transit counts: it
    lands."""
    found = _SHORT.search(str(exc))
    if found is None:
        return
    cost = micro_from_decimal(Decimal(found.group(2)))
    total = sum(own_in(wallets))
    if total < cost:
        raise InsufficientFunds(f"available {format_micro(total)} < cost {format_micro(cost)}") from None


#: How lua/trade.lua's NOT_FOUND names an order's user with no hash in the shard (a market's says "no market").
NO_USER = "no user "


def _stop_if_cancelled() -> None:
    """Raise CancelledError if this task was cancelled and the cancellation got lost on the way: the
    Redis client may turn it into a connection error, or swallow it, when it cuts a call short. A close()
    that cancels the sweeper mid-sweep then waited on it forever (seen in the cluster chaos test)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class ShardedEngine:
    """Accounts, markets and trading over ``settings.shards`` shards of one Redis (or one Redis Cluster)."""

    def __init__(self, redis: Redis, settings: Settings, *, sweep_every_s: float | None = SWEEP_EVERY_S,
                 sweep_after_ms: int = SWEEP_AFTER_MS) -> None:
        """``sweep_every_s``: how often :meth:`start`'s sweeper finishes the transfers left pending for
        ``sweep_after_ms`` (by a process that died between the saga's steps); None: no sweeper."""
        shards = settings.shards
        if not 1 < shards <= MAX_SHARDS:
            raise ValueError(f"a sharded deployment has 2 to {MAX_SHARDS} shards, not {shards}")
        self.redis = redis
        self.settings = settings
        self.count = shards
        #: the directory: keys under the deployment's own prefix, outside every shard
        self.keys = Keys(settings.key_prefix)
        # Each shard's engine is a one-shard deployment under the shard's prefix; shard k numbers its
        # trades S + k, 2S + k, 3S + k, ...: ids unique across shards.
        self.engines = [MarketEngine(redis, settings.model_copy(update={
            "key_prefix": shard_prefix(settings.key_prefix, k, shards), "shards": 1}), trade_ids=(shards, k))
            for k in range(shards)]
        self._sweep_every_s, self._sweep_after_ms = sweep_every_s, sweep_after_ms
        self._sweeper: asyncio.Task[None] | None = None
        self._directory = Scripts(redis)
        self.transfers = Transfers(redis, self._directory, settings.key_prefix, shards,
                                   fence=self._fence if settings.replica_acks else None)
        # What the API's routes call, as on a single-shard MarketEngine (engine/sharded_facades.py).
        self.scripts = self._directory
        self.accounts = ShardedAccounts(self)
        self.markets = ShardedMarkets(self)

    async def _fence(self, shard: int) -> bool:
        """Whether replicas have every write made so far in ``shard`` (engine/replication.py)."""
        key = shard_keys(self.settings.key_prefix, shard, self.count).replication_fence
        wanted = self.settings.replica_acks
        return await fence_async(self.redis, key, wanted, self.settings.replica_wait_ms) >= wanted

    def market_shard(self, market_id: str) -> int:
        return shard_of(market_id, self.count)

    def home(self, user_id: str) -> int:
        return home_of(user_id, self.count)

    def wallet_keys(self, shard: int) -> Keys:
        return self.engines[shard].keys

    def user_keys(self, user_id: str) -> Keys:
        """The keys of the user's home shard (profile, API keys, rate limit)."""
        return self.wallet_keys(self.home(user_id))

    @property
    def stats(self) -> SequencerStats:
        """The shards' trade counters summed."""
        total = SequencerStats()
        for engine in self.engines:
            for name in SequencerStats.__dataclass_fields__:
                setattr(total, name, getattr(total, name) + getattr(engine.stats, name))
        return total

    async def live_book(self, user_id: str) -> LiveBook:
        """The user's money and live positions over every shard holding a sub-wallet of theirs
        (each shard read in one transaction; NotFound if the user does not exist)."""
        wallets = await self._sub_wallets(user_id)
        home = self.home(user_id)
        if wallets[home] is None:
            raise NotFound(f"no user {user_id}")
        books = [await live_positions(self.redis, self.wallet_keys(shard), user_id)
                 for shard, wallet in enumerate(wallets) if wallet is not None]
        return LiveBook(sum(b.available for b in books), sum(b.locked for b in books),
                        [p for b in books for p in b.positions])

    async def start(self) -> None:
        """A ``house`` in every shard (its home shard's is the one deposits reach)."""
        await self.redis.hsetnx(self.keys.usernames, HOUSE, f"{HOUSE}|0")
        for engine in self.engines:
            await engine.start()
        if self._sweep_every_s is not None and self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(self._sweep_every_s))

    async def _sweep_forever(self, every_s: float) -> None:
        """Finish, every ``every_s``, the transfers a dead process left between steps. Every process
        running the engine sweeps: two sweepers finishing one transfer credit it once (each step is
        idempotent), so none has to be elected."""
        while True:
            _stop_if_cancelled()
            await asyncio.sleep(every_s)  # the sweeper's period, not a wait for something
            try:
                finished = await self.transfers.sweep(self._sweep_after_ms)
            except (EngineError, *UNREACHABLE) as exc:
                _stop_if_cancelled()
                log.warning("transfer sweep failed (%s: %s); next in %.1fs", exc.__class__.__name__, exc, every_s)
                continue
            if finished:
                log.info("finished %d transfers left pending", finished)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for engine in self.engines:
            await engine.close_trading()
        await self.redis.aclose()

    # ------------------------------------------------------------------ accounts

    async def create_user(self, username: str, user_id: str | None = None, key_hash: str = "",
                          last4: str = "") -> Account:
        """Claim ``username`` across shards, then create the account (with its first API key's hash
        and last 4 characters, if given) in its home shard."""
        user_id = user_id or new_id("u")
        await self._claim_username(username, user_id)
        try:
            return await self.engines[self.home(user_id)].accounts.create(username, user_id, key_hash, last4)
        except Exception:
            # Not created: give the name back (only if it is still this id's claim). A process
            # killed right here leaves the claim: the next creation of the name takes it over.
            held = await self.redis.hget(self.keys.usernames, username)
            if held is not None and str(held).partition("|")[0] == user_id:
                await self.redis.hdel(self.keys.usernames, username)
            raise

    async def _claim_username(self, username: str, user_id: str) -> None:
        """The name for ``user_id`` in the deployment's directory, or AlreadyExists. A claim whose
        account does not exist and is older than :data:`CLAIM_GRACE_MS` was left by a creation that
        died half-way (claimed, never made): it is taken over (lua/claim_username.lua)."""
        claim = self._directory.claim_username
        taken, held = await claim([self.keys.usernames], [username, user_id, "", CLAIM_GRACE_MS])
        if taken:
            return
        held_id = str(held).partition("|")[0]
        # The home shard's directory of ids, not the user's hash: the janitor may have evicted that.
        if await self.redis.sismember(self.wallet_keys(self.home(held_id)).user_ids, held_id):
            raise AlreadyExists("username is taken")
        taken, _ = await claim([self.keys.usernames], [username, user_id, held, CLAIM_GRACE_MS])
        if not taken:
            raise AlreadyExists("username is taken")  # being created right now, or just taken over

    async def deposit(self, user_id: str, amount: int) -> Account:
        """Into the home sub-wallet, within the balance bound on the user's whole balance (the home
        script is given the other sub-wallets' money, :meth:`own_money`, and adds its own) and within
        the shard's share of the deposits' bound (all shards' deposits together stay within int64,
        so every sub-wallet does, wherever transfers take the money)."""
        home = self.home(user_id)
        owned = await self.own_money(user_id)
        elsewhere = sum(money for shard, money in enumerate(owned) if shard != home)
        await self.engines[home].accounts.deposit(user_id, amount, elsewhere=elsewhere,
                                                  deposits_bound=MAX_EXACT // self.count)
        return await self.account(user_id)

    async def withdraw(self, user_id: str, amount: int) -> Account:
        """Bring money home from the other sub-wallets as needed, then pay it out from home."""
        home = self.home(user_id)
        held = await self.balances(user_id)
        await self._bring(user_id, home, amount - held[home], held)
        await self.engines[home].accounts.withdraw(user_id, amount)
        return await self.account(user_id)

    async def account(self, user_id: str) -> Account:
        """The account as one: the home shard's profile, every sub-wallet's money (as of one moment:
        :meth:`_snapshot`) and positions."""
        home = self.home(user_id)
        account = await self.engines[home].accounts.get(user_id)
        wallets = await self._snapshot(user_id)
        positions = list(account.positions)
        for shard, balance in enumerate(wallets):
            if shard != home and balance is not None:
                positions += (await self.engines[shard].accounts.get(user_id)).positions
        return replace(account, available=sum(int(b) for b in wallets if b is not None), positions=positions)

    async def _sub_wallets(self, user_id: str) -> list[str | None]:
        """Each shard's sub-wallet balance of ``user_id`` as stored (None where it has none)."""
        return [available for available, _, _ in await self._collect(user_id)]

    async def _collect(self, user_id: str) -> Wallets:
        """Each shard's sub-wallet of ``user_id``: (available, moved in, moved out), read shard after shard.
        A sub-wallet the janitor evicted (its money in the durable record alone) is loaded back first."""
        for _ in range(LOAD_TRIES):
            pipe = self.redis.pipeline(transaction=False)
            for shard in range(self.count):
                keys = self.wallet_keys(shard)
                pipe.hmget(keys.user(user_id), ["available", "moved_in", "moved_out"])
                pipe.hexists(keys.evicted, user_id)
            replies = await pipe.execute()
            wallets = cast(list[list[str | None]], replies[0::2])
            evicted = [shard for shard, (wallet, gone) in enumerate(zip(wallets, replies[1::2], strict=True))
                       if wallet[0] is None and gone]
            if not evicted:
                return [(available, int(moved_in or 0), int(moved_out or 0))
                        for available, moved_in, moved_out in wallets]
            for shard in evicted:
                if not await self._load(user_id, shard):
                    raise Unavailable(f"the sub-wallet of {user_id} in shard {shard} is evicted and this process "
                                      "cannot load it (no durable record to read)")
        raise Unavailable(f"sub-wallets of {user_id} kept being evicted while they were read: try again")

    async def _load(self, user_id: str, shard: int) -> bool:
        """Put the user's sub-wallet in ``shard`` back if the janitor evicted it; whether it is resident now."""
        return await self.engines[shard].hotset.load_user(user_id)

    def use_loaders(self, loader_for: Callable[[int, MarketEngine], Loader]) -> None:
        """Read evicted sub-wallets from the durable record on demand: ``loader_for(shard, its engine)`` is
        each shard's loader (record.loader.PgLoader; the engine itself knows no SQL)."""
        for shard, engine in enumerate(self.engines):
            engine.loader = loader_for(shard, engine)
        self.transfers.load = self._load

    async def _snapshot(self, user_id: str) -> list[str | None]:
        """The sub-wallets' balances, read so that no transfer is counted twice.

        Read one after the other (on a cluster, on different masters), they could count a
        transfer twice: its source read before the debit, its destination after the credit. Each
        sub-wallet counts what it ever sent and received by transfers; every credit follows its
        debit, so a read whose credits exceed its debits caught a transfer twice, and is read
        again. A read that passes holds no more money than the user has: a transfer caught between
        its debit and its credit (in transit) is counted nowhere, and at rest the read is exact.
        Trades change no count, so a busy trader's reads do not have to be retried.
        """
        for _ in range(SNAPSHOT_TRIES):
            wallets = await self._collect(user_id)
            if sum(moved_in for _, moved_in, _ in wallets) <= sum(moved_out for _, _, moved_out in wallets):
                return [available for available, _, _ in wallets]
        raise Unavailable(f"transfers of {user_id} kept landing between reads of its sub-wallets: try again")

    async def balances(self, user_id: str) -> list[int]:
        """Each shard's sub-wallet of ``user_id``, micro-units (0 where it has none)."""
        return held_in(await self._collect(user_id))

    async def _fund(self, user_id: str, shard: int, need: int, held: list[int]) -> int:
        """Fund a trade in ``shard``: bring ``need`` and a float from home, a quarter of what the home
        sub-wallet holds beyond it (:data:`FLOAT_SHARE`), so that the user's next trades there find
        money without a transfer each (a transfer is four script calls and two events: bringing the
        shortfall alone made nearly every trade outside a user's home shard pay one). The float comes
        from home only: taken from another shard the user trades in, it would have to come back.
        ``held``: the sub-wallets' balances as just read. How much it moved."""
        home = self.home(user_id)
        float_ = max(held[home] - need, 0) // FLOAT_SHARE if shard != home else 0
        return await self._bring(user_id, shard, need + float_, held)

    async def _bring(self, user_id: str, dest: int, need: int, held: list[int]) -> int:
        """Move up to ``need`` of the user's money into sub-wallet ``dest`` from the others (``held``: their
        balances as just read), home first then the fullest; how much it moved (less than ``need`` when the
        others hold less)."""
        if need <= 0:
            return 0
        home = self.home(user_id)
        sources = sorted((k for k in range(self.count) if k != dest and held[k] > 0),
                         key=lambda k: (k != home, -held[k]))
        moved = 0
        for source in sources:
            if moved >= need:
                break
            amount = min(held[source], need - moved)
            try:
                await self.transfers.move(user_id, source, dest, amount)
            except (InsufficientFunds, NotFound):
                continue  # spent meanwhile by a trade in that shard (or evicted since read): try the next one
            moved += amount
        return moved

    # ------------------------------------------------------------------ markets

    async def create_market(self, name: str, liquidity_b: int, *, close_ms: int | None = None,
                            outcomes: list[str] | None = None, market_id: str | None = None) -> Market:
        """A market in the shard its id (new if not given) names, its subsidy first moved to the
        house's sub-wallet there."""
        check_market_name(name)  # the request's shape before any money moves
        check_liquidity(liquidity_b)
        labels = check_labels(outcomes)
        market_id = check_id(market_id, "market_id") if market_id is not None else new_id("m")
        check_close_ms(close_ms)  # the checks in the order Markets.create makes them
        shard = self.market_shard(market_id)
        subsidy = pricing_n.subsidy_n(liquidity_b, len(labels))
        markets = self.engines[shard].markets
        # A refused creation moves nothing: what the script would refuse is refused before the house's
        # money is brought to the shard (the id taken, the close time passed, the house short).
        await markets.refuse_creation(market_id, close_ms)
        held = await self.balances(HOUSE)
        if sum(held) < subsidy:
            raise InsufficientFunds(f"house cannot pay the subsidy {format_micro(subsidy)}")
        await self._bring(HOUSE, shard, subsidy - held[shard], held)
        return await markets.create(name, liquidity_b, market_id, close_ms, outcomes)

    def market_engine(self, market_id: str) -> MarketEngine:
        """The engine of the market's shard: open, close, resolve, settle, get and quote go there."""
        return self.engines[self.market_shard(market_id)]

    # ------------------------------------------------------------------ trading

    async def execute_trade(self, order: Order) -> Trade:
        """Execute ``order`` in its market's shard, funding the sub-wallet there when it falls short."""
        shard = self.market_shard(order.market_id)
        if order.idempotency_key:
            await self._claim(order, shard)
        engine = self.engines[shard]
        exhausted = False  # a bring found nothing left in the user's other sub-wallets
        for funding_round in range(MAX_TRIES):
            try:
                return await engine.execute_trade(order)
            except InsufficientFunds as exc:
                if exhausted or funding_round == MAX_TRIES - 1:
                    raise  # tried here after nothing was left elsewhere (or others kept taking it)
                wallets = await self._collect(order.user_id)  # one read decides, and funds, this round
                _refuse_if_short(wallets, exc)
                held = held_in(wallets)
                need = shortfall(exc, funding_round)
                if need is None or funding_round >= FUNDING_ROUNDS - 1:
                    need = sum(held)  # from the last round on, bring it all
                if not await self._fund(order.user_id, shard, need, held):
                    # Nothing left elsewhere. Another of the user's orders may have brought money here
                    # meanwhile (its own shortfall and margin): one more try here decides.
                    exhausted = True
            except NotFound as exc:
                if funding_round == MAX_TRIES - 1 or not await self._first_in_shard(
                        order, shard, wallet_missing=exc.message.startswith(NO_USER)):
                    raise
        raise AssertionError("unreachable: the last try raises or returns")

    async def _claim(self, order: Order, shard: int) -> None:
        """An Idempotency-Key is the user's across every market and shard: claimed in the home shard for
        this request before it executes where its market lives. The same key with another request is
        IDEMPOTENCY_KEY_REUSED, wherever its market; the same request is sent on, and its market's
        shard (which keeps the reply, lua/trade.lua) replays it."""
        claim = self.wallet_keys(self.home(order.user_id)).idempotency_claim(order.user_id, order.idempotency_key)
        fingerprint = request_hash(order.fingerprint)
        while True:
            if await self.redis.set(claim, f"{fingerprint}|{shard}", nx=True, ex=self.settings.idempotency_ttl_s):
                return
            held = await self.redis.get(claim)
            if held is not None:
                break  # else it expired between the two calls: claim it again
        if str(held).rpartition("|")[0] != fingerprint:
            raise IdempotencyKeyReused("this Idempotency-Key was already used with a different request")

    async def _first_in_shard(self, order: Order, shard: int, wallet_missing: bool) -> bool:
        """A NOT_FOUND from a shard where the user has no sub-wallet yet (``wallet_missing``: the script
        said so): bring what the order needs and say to send it again (False: the user or the market is
        what is missing)."""
        if await self.engines[shard].hotset.load_user(order.user_id):
            # Made meanwhile by another of the user's first orders in this shard (its transfer), or loaded
            # back after an eviction: send this one again. A NOT_FOUND that was the market's is final.
            return wallet_missing
        if not await self.engines[self.home(order.user_id)].hotset.load_user(order.user_id):
            return False  # no such user
        if order.side is Side.SELL:
            raise InsufficientShares(f"holding 0.000000 < {format_micro(order.shares or 0)}") from None
        if order.amount is not None:
            cost = need = order.amount
        else:
            assert order.shares is not None
            quote = await self.engines[shard].markets.quote(order.market_id, order.side, order.outcome,
                                                            shares=order.shares)
            cost, need = quote.cost, quote.cost + quote.cost // 10  # a margin: the price may move meanwhile
        wallets = await self._collect(order.user_id)
        total = sum(own_in(wallets))
        if total < cost:
            raise InsufficientFunds(f"available {format_micro(total)} < cost {format_micro(cost)}") from None
        if not await self._fund(order.user_id, shard, need, held_in(wallets)):
            # Nothing moved: the user's other orders took the money meanwhile, maybe here (this
            # order's own copies, sent at once with one Idempotency-Key, among them). If it is still
            # the user's, in transit included, send this one again: the money lands, or a copy
            # executed and this one replays it.
            total = sum(await self.own_money(order.user_id))
            if total < cost:
                raise InsufficientFunds(f"available {format_micro(total)} < cost {format_micro(cost)}") from None
        return True

    async def own_money(self, user_id: str) -> list[int]:
        """Each shard's sub-wallet of ``user_id`` counted as its balance plus what it sent to the user's
        other sub-wallets less what it received from them: the money deposits, withdrawals and trades
        in that shard brought the user (negative where they took more than they brought).

        A transfer adds to one side's count what it takes from the other's, so each count moves only
        with deposits, withdrawals and trades, and their sum is the user's whole balance, money in
        transit included, however transfers interleave with the reads (no retry, unlike
        :meth:`_snapshot`): exact when no trade or deposit of the user's lands between them.
        """
        return own_in(await self._collect(user_id))

    # ------------------------------------------------------------------ invariants

    async def _recorded_debit(self, transfer_id: str, dest: int) -> tuple[str, str, str] | None:
        """A transfer's debit as its source shard's record keeps it (while pending, and a day after):
        for a credit whose TransferOut is no longer in a stream (trimmed, or a recovery that rebuilt
        the transfer from PostgreSQL). The source is found by trying every shard but ``dest``."""
        for shard in range(self.count):
            if shard == dest:
                continue
            record = await self.redis.get(self.wallet_keys(shard).transfer(transfer_id))
            if record is not None:
                _, transfer = parse_record(transfer_id, str(record))
                return transfer.user_id, format_micro(transfer.amount), str(transfer.dest)
        return None

    async def invariants(self) -> list[Breach]:
        """The contract's invariants over every shard (consistent when nothing moves meanwhile).

        Each shard on its own: its sub-wallets + pools = its deposits - withdrawals + transfers in -
        transfers out (a transfer in transit is out of its source and not yet into its
        destination, so this holds at every moment), no negatives, shares and solvency. Across
        shards: transfers out - transfers in = the money in transit, and every TransferIn answers
        a TransferOut of the same user, amount and destination (in a stream, or else as the source's
        transfer record keeps it).
        """
        breaches: list[Breach] = []
        moved_out = moved_in = 0
        outs: dict[str, tuple[str, str, str]] = {}
        ins: list[tuple[str, tuple[str, str, str]]] = []
        for shard, engine in enumerate(self.engines):
            state = await read_redis_state(self.redis, engine.keys)
            totals = cast(dict[str, str], await self.redis.hgetall(engine.keys.totals))
            t_in, t_out = int(totals.get("transfers_in", 0)), int(totals.get("transfers_out", 0))
            moved_in, moved_out = moved_in + t_in, moved_out + t_out
            state.deposits += t_in
            state.withdrawals += t_out
            breaches += [replace(b, subject=f"shard {shard}: {b.subject}") for b in check_invariants(state)]
            entries = cast(list[tuple[str, dict[str, str]]], await self.redis.xrange(engine.keys.events))
            for _, f in entries:
                if f["type"] in ("TransferOut", "TransferIn"):
                    what = (f["user_id"], f["amount"], f["to_shard"])
                    if f["type"] == "TransferOut":
                        outs[f["transfer_id"]] = what
                    else:
                        ins.append((f["transfer_id"], what))
        in_transit = sum((await self.transfers.in_transit()).values())
        if moved_out - moved_in != in_transit:
            breaches.append(Breach("conservation", "transfers between shards",
                                   f"{format_micro(in_transit)} in transit",
                                   f"{format_micro(moved_out - moved_in)} (out - in)"))
        credited = [transfer_id for transfer_id, _ in ins]
        for transfer_id, what in ins:
            debit = outs.get(transfer_id) or await self._recorded_debit(transfer_id, int(what[2]))
            if debit != what:
                breaches.append(Breach("conservation", f"transfer {transfer_id}", f"a TransferOut of {what}",
                                       f"{debit}"))
        if len(credited) != len(set(credited)):
            breaches.append(Breach("conservation", "transfers between shards", "each credited once",
                                   f"{len(credited) - len(set(credited))} credited twice"))
        return breaches
