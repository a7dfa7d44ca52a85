"""The per-market sequencer: one book per market per process, priced one order after another.

A :class:`MarketBook` holds what this process knows of one market: the state
the last script reply returned, the orders waiting, the batches in flight.
The functions here are the steps the trader (``engine.trader``) runs on a
book: price a batch of orders one after another against the book's state (no
read per trade), encode it as that market's part of a ``trade`` script call,
and hand each order its result from the reply. The script checks the
market's state once per batch; a conflict (another process traded the
market) returns the fresh state and the batch is re-priced.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

from predmarket.engine.errors import EngineError, InsufficientShares, rejection
from predmarket.engine.keys import Keys
from predmarket.engine.labels import YES_NO, labels_of, totals_of
from predmarket.engine.models import MarketStatus, Order, Side, Trade
from predmarket.engine.orders import Fill, check_slippage, fill, label_index
from predmarket.engine.wire import OrderLine, StoredReply, order_keys, request_hash

#: After a conflict (another process traded the market), stop speculating for this long:
#: a batch priced ahead would mostly conflict again, costing a script call each time.
CONTENDED_S = 0.05


@dataclass(slots=True)
class MarketState:
    """The part of a market the sequencer prices against; micro-units."""

    version: str
    status: MarketStatus
    #: every label's outstanding total, in label order
    totals: tuple[int, ...]
    pool: int


@dataclass(slots=True)
class SequencerStats:
    """Counters across all markets of one engine."""

    script_calls: int = 0
    conflicts: int = 0
    trades: int = 0
    rejected: int = 0
    #: trade calls and admin writes answered before PM_REPLICA_ACKS replicas confirmed them (WAIT timed out short)
    replica_shortfalls: int = 0


@dataclass(slots=True)
class Pending:
    """An order waiting for its trade; ``conflicts`` counts the batches of it that lost a race."""

    order: Order
    future: asyncio.Future[Trade]
    conflicts: int = 0


@dataclass(slots=True)
class Priced:
    pending: Pending
    fill: Fill | None  # None: not executed as priced, see `rejection`
    rejection: EngineError | None


class MarketBook:
    """One market as this process sees it: cached state, waiting orders, batches in flight."""

    __slots__ = (
        "b",
        "contended_until",
        "in_flight",
        "keys",
        "labels",
        "loading",
        "market_id",
        "predicted",
        "queue",
        "ready",
        "retry",
        "state",
        "yes_no",
    )

    def __init__(self, market_id: str, keys: tuple[str, str, str]) -> None:
        self.market_id = market_id
        self.keys = keys  # market hash, market positions hash, market net costs hash (wire.market_keys)
        self.b: int | None = None
        #: the market's labels in creation order (loaded with b; they never change)
        self.labels: tuple[str, ...] = YES_NO
        self.yes_no = True
        #: the state the last reply returned; None: unknown, load it before pricing
        self.state: MarketState | None = None
        self.queue: deque[Pending] = deque()
        #: orders to send again (a conflict, a SKIPPED), ahead of the queue and in their first order
        self.retry: deque[Pending] = deque()
        self.in_flight = 0
        #: the state once every batch in flight applies as priced; None: do not price ahead
        self.predicted: MarketState | None = None
        self.contended_until = 0.0
        self.loading = False
        self.ready = False  # in the trader's ready queue

    @property
    def waiting(self) -> int:
        return len(self.retry) + len(self.queue)

    @property
    def idle(self) -> bool:
        return not self.in_flight and not self.loading and not self.queue and not self.retry

    def take(self, limit: int) -> list[Pending]:
        """Up to ``limit`` waiting orders, retries first; drops those whose callers gave up."""
        batch: list[Pending] = []
        for source in (self.retry, self.queue):
            while source and len(batch) < limit:
                p = source.popleft()
                if not p.future.done():
                    batch.append(p)
        return batch


def state_from(version: Any, status: Any, pool: Any, totals: Any) -> MarketState:
    """A market's state from a ``trade`` reply's fields (lua/trade.lua: totals ':'-joined in label order)."""
    parts = str(totals).split(":")
    # Once per market per call: a YES/NO market's pair without tuple(map(...))'s iterator.
    q = (int(parts[0]), int(parts[1])) if len(parts) == 2 else tuple(map(int, parts))
    return MarketState(str(version), MarketStatus(status), q, int(pool))


def state_of(fields: dict[str, str]) -> tuple[MarketState, tuple[str, ...]]:
    """A market's state and labels from its whole hash."""
    labels = labels_of(fields)
    return (MarketState(str(fields["version"]), MarketStatus(fields["status"]), totals_of(fields, labels),
                        int(fields["pool"])), labels)


def predict(state: MarketState, priced: list[Priced]) -> MarketState | None:
    """The state ``priced`` leaves if every order executes; None when that is not the expected case."""
    if state.status is not MarketStatus.OPEN:
        return None
    pool = state.pool
    last: Fill | None = None
    for p in priced:
        last = p.fill
        if last is None:
            return None
        pool += last.cost if p.pending.order.side is Side.BUY else -last.cost
    assert last is not None
    return MarketState(str(int(state.version) + len(priced)), state.status, last.totals, pool)


def same_state(a: MarketState, b: MarketState | None) -> bool:
    return b is not None and a.version == b.version and a.totals == b.totals


def yes_no_prices(book: MarketBook, prices: tuple[int, ...]) -> tuple[int, int]:
    """A trade's price_yes and price_no: a YES/NO market's prices, 0 for a market of other labels."""
    return (prices[0], prices[1]) if book.yes_no else (0, 0)


def replayed_trade(book: MarketBook, order: Order, stored: str) -> Trade:
    """The first response to an Idempotency-Key, from what ``trade.lua`` stored (engine/wire.py)."""
    r = StoredReply.decode(stored)
    price_yes, price_no = yes_no_prices(book, r.prices)
    return Trade(
        trade_id=r.trade_id, market_id=order.market_id, user_id=order.user_id,
        side=r.side, outcome=r.outcome, shares=r.shares, cost=r.cost,
        avg_price=r.avg_price, price_yes=price_yes, price_no=price_no,
        created_ms=r.created_ms, event_id=r.event_id, replayed=True,
        outcomes=book.labels, prices=r.prices,
    )


def price(book: MarketBook, batch: list[Pending], state: MarketState) -> list[Priced]:
    """Price orders in sequence against ``state``, the state this process last saw.

    An order that fails here (shares outstanding, slippage, a bound, too small an
    amount) is not rejected yet: ``state`` may be stale, since another process can
    have traded the market since. It goes to the script with its rejection, and
    the script's state check either confirms the rejection against the current
    state or answers CONFLICT, and the order is priced again on the fresh state.
    """
    b = book.b
    assert b is not None
    labels, totals = book.labels, state.totals
    priced: list[Priced] = []
    for p in batch:
        order = p.order
        if state.status is not MarketStatus.OPEN:
            priced.append(Priced(p, None, None))  # the script answers MARKET_NOT_OPEN or replays
            continue
        try:
            try:
                k = labels.index(order.outcome)
            except ValueError:  # a label the market lacks is invalid, held or not
                k = label_index(labels, order.outcome)  # raises VALIDATION_ERROR naming the labels
            if order.sell_all and not order.shares:
                # As every rejection here, final only once the script finds the user holds none.
                raise InsufficientShares(f"no {order.outcome} shares are held")
            result = fill(totals, b, order.side, k, order.shares, order.amount, order.outcome)
            check_slippage(order, result)
        except EngineError as exc:
            priced.append(Priced(p, None, exc))  # final only once the script confirms the state
            continue
        priced.append(Priced(p, result, None))
        totals = result.totals
    return priced


def encode(book: MarketBook, priced: list[Priced], state: MarketState,
           keys: Keys) -> tuple[list[str], list[str | int]]:
    """This market's part of a ``trade`` script call (see lua/trade.lua): its KEYS (market hash,
    market positions, market net costs, then each order's four keys) and its ARGV (id, expected state,
    order lines). A sell_all order states the holding it was priced for even when rejected (the
    script checks it: engine.wire.OrderLine)."""
    # The script compares every label's total too: a version number alone can come back
    # with other contents after a data loss (restart without AOF, recover), and the
    # costs below are exact only for these totals.
    part_keys: list[str] = list(book.keys)
    expected = f"{state.version}:{':'.join(map(str, state.totals))}"
    args: list[str | int] = [book.market_id, expected, len(priced)]
    for item in priced:
        order, f = item.pending.order, item.fill
        fingerprint = request_hash(order.fingerprint)
        if f is None:
            reason = f"{item.rejection.code} {item.rejection.message}" if item.rejection else ""
            held = (order.shares or 0) if order.sell_all else 0
            line = OrderLine(order.user_id, order.side, order.outcome, held, 0, None, None,
                             fingerprint, reason, order.idempotency_key, order.sell_all)
        else:
            line = OrderLine(order.user_id, order.side, order.outcome, f.shares, f.cost,
                             f.prices, f.avg_price, fingerprint, "", order.idempotency_key, order.sell_all)
        part_keys += order_keys(keys, order.user_id, order.idempotency_key)
        args.append(line.encode())
    return part_keys, args


def hand_out_results(book: MarketBook, priced: list[Priced], results: list[list[str]], ts_ms: int,
            stats: SequencerStats) -> list[Pending]:
    """Hand each order its result; return the orders to re-price (SKIPPED, HELD).

    HELD: a sell_all order found the user holding another amount than it was priced for (another
    process traded it since): it is re-priced for the holding the script saw, counted as a conflict.
    """
    again: list[Pending] = []
    market_id, labels, yes_no = book.market_id, book.labels, book.yes_no
    for item, result in zip(priced, results, strict=True):
        pending, kind = item.pending, result[0]
        if kind == "SKIPPED":
            again.append(pending)
            continue
        if pending.future.done():
            continue
        order = pending.order
        if kind == "HELD":
            pending.order = replace(order, shares=int(result[1]))
            pending.conflicts += 1
            again.append(pending)
        elif kind == "OK":
            f = item.fill
            assert f is not None
            stats.trades += 1
            prices = f.prices
            price_yes, price_no = (prices[0], prices[1]) if yes_no else (0, 0)  # yes_no_prices, inlined
            pending.future.set_result(Trade(
                trade_id=int(result[1]), market_id=market_id, user_id=order.user_id,
                side=order.side, outcome=order.outcome, shares=f.shares, cost=f.cost,
                avg_price=f.avg_price, price_yes=price_yes, price_no=price_no,
                created_ms=ts_ms, available=int(result[2]), position=int(result[3]),
                event_id=result[4], outcomes=labels, prices=prices,
            ))
        elif kind == "REPLAY":
            pending.future.set_result(replayed_trade(book, order, result[1]))
        else:
            stats.rejected += 1
            pending.future.set_exception(rejection(kind, result[1], source="trade"))
    return again
