"""MarketStore operations: create, lifecycle, reads, quotes and settlement."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import cast

from predmarket.engine import pricing_n
from predmarket.engine.accounts import new_id
from predmarket.engine.clock import redis_now_ms_async
from predmarket.engine.connection import unavailable_on_disconnect
from predmarket.engine.errors import AlreadyExists, MarketNotOpen, NotFound, ValidationError
from predmarket.engine.hotset import HotSet, reloading
from predmarket.engine.keys import Keys
from predmarket.engine.labels import YES_NO, check_labels, labels_field, labels_of, settled_of, totals_of
from predmarket.engine.models import HOUSE, Market, MarketStatus, Outcome, Quote, Settlement, Side
from predmarket.engine.orders import fill, label_index
from predmarket.engine.resolutions import CANCEL, PROB, Resolution, market_labels, parse_probabilities_text
from predmarket.engine.scripts import Scripts
from predmarket.engine.settlement import UserSettler
from predmarket.engine.validation import check_id, check_liquidity, check_market_name, check_quantity
from redis.asyncio import Redis

SETTLE_BATCH = 500
#: 9999-12-31T23:59:59.999Z: the latest close time RFC 3339 can write
MAX_CLOSE_MS = 253_402_300_799_999


def market_from(market_id: str, f: dict[str, str]) -> Market:
    b = int(f["b"])
    labels = labels_of(f)
    totals = totals_of(f, labels)
    prices = tuple(pricing_n.prices_n(totals, b))
    settled = settled_of(f, labels)
    # A YES/NO market's own fields; 0 for a market of other labels (the API shows them null).
    yes_no = labels == YES_NO
    q_yes, q_no = totals if yes_no else (0, 0)
    price_yes, price_no = prices if yes_no else (0, 0)
    return Market(
        market_id=market_id, name=f["name"], status=MarketStatus(f["status"]),
        outcome=outcome_of(f.get("outcome")), liquidity_b=b,
        yes_shares=q_yes, no_shares=q_no, price_yes=price_yes, price_no=price_no,
        pool=int(f["pool"]), version=int(f["version"]), created_ms=int(f["created_ms"]),
        updated_ms=int(f["updated_ms"]), settled_yes=settled[0] if yes_no else 0,
        settled_no=settled[1] if yes_no else 0, payouts_total=int(f.get("payouts_total", 0)),
        holders_paid=int(f.get("holders_paid", 0)),
        close_ms=int(f["close_ms"]) if f.get("close_ms") else None,
        closed_ms=int(f["closed_ms"]) if f.get("closed_ms") else None,
        probabilities=parse_probabilities_text(f["probabilities"]) if f.get("probabilities") else None,
        outcomes=labels, totals=totals, prices=prices, settled=settled,
    )


def outcome_of(value: str | None) -> str | None:
    """A market hash's ``outcome``: None until resolved; YES and NO as the Outcome members the trade
    path uses (so ``market.outcome is Outcome.YES`` holds), other labels, PROB and CANCEL as text."""
    if not value:
        return None
    return Outcome(value) if value in Outcome.__members__ else value


def past_close_time(market: Market) -> bool:
    """An OPEN market whose close time this process's clock says has come: Redis' clock decides (the
    script asks it), this only spares every read of every other market the question."""
    return market.status is MarketStatus.OPEN and market.close_ms is not None and time.time() * 1000 >= market.close_ms


def check_close_ms(close_ms: int | None) -> None:
    """A close time (ms since the epoch) the record can hold; whether it lies ahead, Redis' clock decides."""
    if close_ms is not None and not 0 < close_ms <= MAX_CLOSE_MS:
        raise ValidationError("close_time must lie between 1970 and 9999")


def check_quote(side: Side, shares: int | None, amount: int | None) -> None:
    """Shape of a quote request: exactly one of shares/amount, amount only with BUY, bounds."""
    if (shares is None) == (amount is None):
        raise ValidationError("exactly one of shares and amount is required")
    if amount is not None and side is not Side.BUY:
        raise ValidationError("amount is only allowed with side BUY")
    if amount is not None:
        check_quantity(amount, "amount")
    if shares is not None:
        check_quantity(shares, "shares")


class Markets:
    def __init__(self, redis: Redis, scripts: Scripts, keys: Keys, hotset: HotSet) -> None:
        self._redis = redis
        self._scripts = scripts
        self._keys = keys
        self._hotset = hotset

    async def create(self, name: str, liquidity_b: int, market_id: str | None = None,
                     close_ms: int | None = None, outcomes: Sequence[str] | None = None) -> Market:
        """Register a CREATED market of ``outcomes`` (2-16 labels; YES/NO when None); its pool is
        ``ceil(b ln n)`` taken from ``house``. ``close_ms``: when trading stops (ms since the epoch),
        which must lie ahead of Redis' clock."""
        check_market_name(name)
        check_liquidity(liquidity_b)
        labels = check_labels(outcomes)
        market_id = check_id(market_id, "market_id") if market_id is not None else new_id("m")
        check_close_ms(close_ms)
        k = self._keys
        # Resident or archived, every market is in Redis: the script alone decides uniqueness.
        with unavailable_on_disconnect():
            await self._scripts.create_market(
                [k.market(market_id), k.markets, k.user(HOUSE), k.events, k.dirty, k.archived],
                [market_id, name, liquidity_b, pricing_n.subsidy_n(liquidity_b, len(labels)),
                 "" if close_ms is None else close_ms, labels_field(labels)],
            )
        return await self.get(market_id)

    async def refuse_creation(self, market_id: str, close_ms: int | None) -> None:
        """Raise what creating ``market_id`` would be refused for before its subsidy (the id taken, resident
        or archived; the close time passed by Redis' clock), as lua/create_market.lua words it. Over shards
        the house's money is moved into the market's shard first: a creation refused there must move
        nothing, so these are checked before the move (the script still decides: two creations of one id
        at once may both pass here, and the one refused has then only moved the house's own money)."""
        k = self._keys
        with unavailable_on_disconnect():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.exists(k.market(market_id))
                pipe.hexists(k.archived, market_id)
                resident, archived = await pipe.execute()
            if resident or archived:
                raise AlreadyExists(f"market_id {market_id} is taken")
            if close_ms is not None and close_ms <= await redis_now_ms_async(self._redis):
                raise ValidationError("close_time must lie in the future")

    async def open(self, market_id: str) -> Market:
        return await reloading(lambda: self._open(market_id), self._hotset, market_id=market_id)

    async def _open(self, market_id: str) -> Market:
        k = self._keys
        with unavailable_on_disconnect():
            await self._scripts.open_market(
                [k.market(market_id), k.events, k.dirty, k.closing], [market_id]
            )
        return await self._get(market_id)

    async def close(self, market_id: str) -> Market:
        """OPEN -> CLOSED now (the admin's early close): trading and quotes stop, resolution may follow."""
        return await reloading(lambda: self._close(market_id, "admin"), self._hotset, market_id=market_id)

    async def _close(self, market_id: str, mode: str) -> Market:
        k = self._keys
        with unavailable_on_disconnect():
            await self._scripts.close_market(
                [k.market(market_id), k.events, k.dirty, k.closing], [market_id, mode]
            )
        return await self._get(market_id)

    async def resolve(self, market_id: str, resolution: Resolution | str) -> Market:
        """OPEN or CLOSED -> RESOLVED: ``resolution`` is a winning label (an Outcome), or a PROB or
        CANCEL :class:`~engine.resolutions.Resolution`; checked against the market's labels."""
        if not isinstance(resolution, Resolution):
            resolution = Resolution.of_outcome(resolution)
        return await reloading(lambda: self._resolve(market_id, resolution), self._hotset, market_id=market_id)

    async def _resolve(self, market_id: str, resolution: Resolution) -> Market:
        k = self._keys
        with unavailable_on_disconnect():
            fields = cast(dict[str, str], await self._redis.hgetall(k.market(market_id)))
            if not fields:
                raise NotFound(f"no market {market_id}")
            checked = resolution.check(market_labels(fields))
            await self._scripts.resolve_market(
                [k.market(market_id), k.events, k.dirty],
                [market_id, checked.outcome, checked.probabilities_text()],
            )
        return await self._get(market_id)

    async def settle(self, market_id: str, batch: int = SETTLE_BATCH) -> Settlement:
        """Pay every winning holder (PROB: every holder; CANCEL: every refund, engine/settlement.py), then
        close the market; safe to run again if interrupted."""
        return await reloading(lambda: self._settle(market_id, batch), self._hotset, market_id=market_id)

    async def _settle(self, market_id: str, batch: int) -> Settlement:
        k = self._keys
        positions = k.market_positions(market_id)
        with unavailable_on_disconnect():
            state = cast(dict[str, str], await self._redis.hgetall(k.market(market_id)))
            by_user = state.get("outcome") in (PROB, CANCEL) and state.get("status") == MarketStatus.RESOLVED
            while True:
                if by_user:
                    await UserSettler(self._redis, self._scripts, k, self._hotset, market_id, state, batch).pay_all()
                # HSCAN from the start each round: settled fields are deleted by
                # the script, so what is left is exactly what remains to pay.
                cursor = 0
                while not by_user:
                    cursor, fields = await self._redis.hscan(positions, cursor, count=batch)
                    if fields:
                        await self._settle_fields(market_id, cast(list[str], list(fields)))
                    if cursor == 0:
                        break
                reply = await self._scripts.settle_finish(
                    [k.market(market_id), positions, k.user(HOUSE), k.events, k.dirty, k.market_refunded(market_id)],
                    [market_id],
                )
                if reply[0] == "SETTLED":
                    break
        market = await self._get(market_id)
        return Settlement(market, int(reply[1]), int(reply[2]), int(reply[3]))

    async def _settle_fields(self, market_id: str, fields: list[str]) -> None:
        k = self._keys
        keys = [k.market(market_id), k.market_positions(market_id), k.events, k.dirty]
        for field in fields:
            user_id = field.rpartition(":")[0]
            keys += [k.user(user_id), k.user_positions(user_id)]
        await self._scripts.settle_batch(keys, [market_id, *fields])

    async def get(self, market_id: str) -> Market:
        """The market, resident or archived (read from its kept final state, without loading it)."""
        k = self._keys
        with unavailable_on_disconnect():
            fields = cast(dict[str, str], await self._redis.hgetall(k.market(market_id)))
            if not fields:
                kept = cast(str | None, await self._redis.hget(k.archived, market_id))
                if kept is None:
                    # Unarchived by another request between the two reads: it is resident now.
                    fields = cast(dict[str, str], await self._redis.hgetall(k.market(market_id)))
                else:
                    fields = json.loads(kept)
        if not fields:
            raise NotFound(f"no market {market_id}")
        market = market_from(market_id, fields)
        if past_close_time(market):
            # Nobody traded it since its close time, and the janitor has not come by yet: ask Redis' clock.
            market = await self._close(market_id, "due")
        return market

    async def _get(self, market_id: str) -> Market:
        with unavailable_on_disconnect():
            fields = cast(dict[str, str], await self._redis.hgetall(self._keys.market(market_id)))
        if not fields:
            raise NotFound(f"no market {market_id}")
        return market_from(market_id, fields)

    async def list_all(self, status: MarketStatus | None = None) -> list[Market]:
        """Every market (optionally of one status), oldest first: resident and archived, from Redis alone."""
        k = self._keys
        with unavailable_on_disconnect():
            # One instant's membership: a market is resident or archived, never neither (the
            # scripts move it atomically). Read apart, one moved in between was in neither.
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zrange(k.markets, 0, -1)
                pipe.hgetall(k.archived)  # every archived market is SETTLED
                ids, kept = cast(tuple[list[str], dict[str, str]], await pipe.execute())
            # Each market resident then is, at one later instant, resident or archived: ask both.
            async with self._redis.pipeline(transaction=True) as pipe:
                for market_id in ids:
                    pipe.hgetall(k.market(market_id))
                    pipe.hget(k.archived, market_id)
                replies = await pipe.execute()
        markets: dict[str, Market] = {}
        for market_id, fields, text in zip(ids, replies[::2], replies[1::2], strict=True):
            if fields:
                markets[market_id] = market_from(market_id, fields)
            elif text:
                kept[market_id] = text
        if status in (None, MarketStatus.SETTLED):
            for market_id, text in kept.items():
                markets.setdefault(market_id, market_from(market_id, json.loads(text)))
        for market_id, market in markets.items():
            if past_close_time(market):  # as in get(): a listing never shows a market open past its close time
                markets[market_id] = await self._close(market_id, "due")
        chosen = [m for m in markets.values() if status is None or m.status is status]
        return sorted(chosen, key=lambda m: (m.created_ms, m.market_id))

    async def quote(
        self, market_id: str, side: Side, outcome: str,
        shares: int | None = None, amount: int | None = None,
    ) -> Quote:
        """What the order would do now; changes nothing."""
        check_quote(side, shares, amount)
        market = await self.get(market_id)
        if market.status is not MarketStatus.OPEN:
            raise MarketNotOpen(f"market is {market.status.value}")
        k = label_index(market.outcomes, outcome)
        f = fill(market.totals, market.liquidity_b, side, k, shares, amount, outcome)
        price_yes, price_no = f.prices if market.is_yes_no else (0, 0)
        return Quote(side, outcome, f.shares, f.cost, f.avg_price, price_yes, price_no,
                     outcomes=market.outcomes, prices=f.prices)
