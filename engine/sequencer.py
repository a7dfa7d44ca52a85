"""The per-market sequencer: the seed's single-threaded MarketEngine, one per market per process.

Orders for a market queue up while the previous script call is in flight.
The sequencer then prices the queued orders one after another against the
state the last script reply returned (no read per trade) and sends them in one
``trade`` script call that checks the market version once and gives each order
its own result. A version conflict (another process traded the market) returns
the fresh state; the batch is re-priced and resent, a bounded number of times.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from engine.connection import UNREACHABLE
from engine.dispatcher import Dispatcher
from engine.errors import ERRORS_BY_CODE, EngineError, NotFound, Unavailable
from engine.keys import Keys
from engine.models import MarketStatus, Order, Outcome, Side, Trade
from engine.orders import Fill, check_slippage, fill
from engine.scripts import Scripts
from engine.units import format_micro, parse_micro

#: A queue at least this long is sent as two pipelined batches rather than one.
SPLIT_FROM = 8
#: After a conflict (another process traded the market), stop speculating for this long:
#: a batch priced ahead would mostly conflict again, costing a script call each time.
CONTENDED_S = 0.05


@dataclass(slots=True)
class MarketState:
    """The part of a market the sequencer prices against; micro-units."""

    version: str
    status: MarketStatus
    q_yes: int
    q_no: int
    pool: int


@dataclass(slots=True)
class SequencerStats:
    """Counters across all sequencers of one engine."""

    script_calls: int = 0
    conflicts: int = 0
    trades: int = 0
    rejected: int = 0


@dataclass(slots=True)
class _Pending:
    order: Order
    future: asyncio.Future[Trade]


@dataclass(slots=True)
class _Attempt:
    """A batch sent to Redis whose reply has not been handled yet."""

    batch: list[_Pending]
    priced: list[_Priced]
    call: asyncio.Future[list[Any]]
    #: the market's state if every order applies as priced; None: do not speculate on it
    predicted: MarketState | None


@dataclass(slots=True)
class _Priced:
    pending: _Pending
    fill: Fill | None  # None: rejected by the engine before Redis, see `rejection`
    rejection: EngineError | None


class TradeContext:
    """What every sequencer of one engine shares: Redis, scripts, keys, limits, counters."""

    def __init__(
        self, redis: Redis, scripts: Scripts, keys: Keys, *, max_batch: int,
        max_conflicts: int, idempotency_ttl_s: int,
    ) -> None:
        self.redis = redis
        self.scripts = scripts
        self.keys = keys
        self.max_batch = max_batch
        self.max_conflicts = max_conflicts
        self.idempotency_ttl_s = idempotency_ttl_s
        self.stats = SequencerStats()
        self.dispatcher = Dispatcher(redis, keys, idempotency_ttl_s, max_batch, self.stats)


def _state_from(fields: list[Any]) -> MarketState:
    version, status, q_yes, q_no, pool = fields
    return MarketState(str(version), MarketStatus(status), int(q_yes), int(q_no), int(pool))


def _predict(state: MarketState, priced: list[_Priced]) -> MarketState | None:
    """The state ``priced`` leaves if every order executes; None when that is not the expected case."""
    if state.status is not MarketStatus.OPEN or any(p.fill is None for p in priced):
        return None
    last = priced[-1].fill
    assert last is not None
    pool = state.pool
    for p in priced:
        assert p.fill is not None
        pool += p.fill.cost if p.pending.order.side is Side.BUY else -p.fill.cost
    return MarketState(str(int(state.version) + len(priced)), state.status, last.q_yes, last.q_no, pool)


def _error(code: str, message: str) -> EngineError:
    return ERRORS_BY_CODE.get(code, Unavailable)(message)


def stored_fingerprint(order: Order) -> str:
    """The fingerprint as ``trade.lua`` stores and compares it: a fixed-length hex digest.

    The stored response is ``"|"``-separated and matched by prefix, so a raw
    fingerprint containing ``"|"`` broke :func:`replayed_trade` (the sequencer
    task died, the caller hung) and one that was a prefix of another matched it.
    """
    return hashlib.sha256(order.fingerprint.encode()).hexdigest() if order.fingerprint else ""


def replayed_trade(order: Order, stored: str) -> Trade:
    """The first response to an Idempotency-Key, from what ``trade.lua`` stored."""
    _, trade_id, side, outcome, shares, cost, avg, py, pn, ms, event_id = stored.split("|")
    return Trade(
        trade_id=int(trade_id), market_id=order.market_id, user_id=order.user_id,
        side=Side(side), outcome=Outcome(outcome), shares=int(shares), cost=int(cost),
        avg_price=parse_micro(avg), price_yes=parse_micro(py), price_no=parse_micro(pn),
        created_ms=int(ms), event_id=event_id, replayed=True,
    )


class MarketSequencer:
    """Serialises this process's orders for one market into batched script calls."""

    def __init__(self, ctx: TradeContext, market_id: str) -> None:
        self._ctx = ctx
        self.market_id = market_id
        self._queue: deque[_Pending] = deque()
        self._task: asyncio.Task[None] | None = None
        self._b: int | None = None
        self._state: MarketState | None = None
        self._contended_until = 0.0
        self._market_keys = (ctx.keys.market(market_id), ctx.keys.market_positions(market_id))

    @property
    def idle(self) -> bool:
        return self._task is None and not self._queue

    async def submit(self, order: Order) -> Trade:
        """Queue ``order`` and wait for its trade (or its rejection)."""
        future: asyncio.Future[Trade] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(order, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        """Send batches until the queue is empty, keeping one speculative batch in flight.

        While batch N is in flight, batch N+1 is priced against the state N should
        leave (its fills applied) and sent at once, so pricing overlaps Redis's
        work. If N does not end exactly as predicted (a rejection, another
        process's trade), N+1 fails its state check and is simply re-priced.
        """
        try:
            ahead: _Attempt | None = None
            while self._queue or ahead is not None:
                # With nothing in flight, send only half of a long queue: the other half
                # follows speculatively at once, so Redis runs one while Python prices the next.
                current = ahead or await self._guarded(self._take(split=self._alone()), self._first_attempt)
                ahead = None
                if current is None:
                    continue
                predicted = current.predicted
                if self._queue and predicted is not None and self._alone():
                    ahead = await self._guarded(self._take(), partial(self._attempt, state=predicted))
                await self._guarded(current, self._finish)
        finally:
            self._task = None

    def _alone(self) -> bool:
        """No other process changed this market lately: speculating on its state pays off."""
        return time.monotonic() >= self._contended_until

    def _take(self, split: bool = False) -> list[_Pending]:
        waiting = len(self._queue)
        take = min((waiting + 1) // 2 if split and waiting >= SPLIT_FROM else waiting, self._ctx.max_batch)
        batch = [self._queue.popleft() for _ in range(take)]
        return [p for p in batch if not p.future.done()]  # callers that gave up

    async def _guarded(self, work: Any, step: Callable[[Any], Awaitable[Any]]) -> Any:
        """Run ``step(work)``; on failure, fail the orders of ``work`` (never leave a caller waiting)."""
        batch = work.batch if isinstance(work, _Attempt) else work
        if not batch:
            return None
        try:
            return await step(work)
        except EngineError as exc:
            self._fail(batch, exc)
        except UNREACHABLE as exc:
            # The outcome of an unanswered call is unknown: forget the
            # cached state and let clients retry with their Idempotency-Key.
            self._state = None
            self._fail(batch, Unavailable(f"Redis is unreachable: {exc.__class__.__name__}"))
        except Exception as exc:
            # Anything else (an error reply such as OOM or MISCONF, a bug) must not
            # leave this batch's callers, or the orders queued behind it, waiting forever.
            self._state = None
            self._fail(batch, Unavailable(f"Redis refused the trade: {exc}")
                       if isinstance(exc, RedisError) else exc)
        return None

    async def _first_attempt(self, batch: list[_Pending]) -> _Attempt | None:
        state = self._state or await self._load()
        self._state = state
        return await self._attempt(batch, state)

    async def _attempt(self, batch: list[_Pending], state: MarketState) -> _Attempt | None:
        """Price ``batch`` against ``state`` and send it; the reply is awaited later, in ``_finish``."""
        priced = self._price(batch, state)
        if not priced:
            return None
        call = asyncio.ensure_future(self._ctx.dispatcher.call(
            self._market_keys, self._market_call(priced, state), len(priced)))
        return _Attempt(batch, priced, call, _predict(state, priced))

    async def _finish(self, attempt: _Attempt) -> None:
        reply = await attempt.call
        if reply[0] == "NOT_FOUND":
            self._state = None
            raise NotFound(f"no market {self.market_id}")
        if reply[0] == "CONFLICT":
            self._state = _state_from(reply[1:6])
            self._ctx.stats.conflicts += 1
            self._contended_until = time.monotonic() + CONTENDED_S
            await self._execute([p.pending for p in attempt.priced], conflicts=1)
            return
        self._state = _state_from(reply[1:6])
        again = self._resolve(attempt.priced, reply[7], int(str(reply[6])))
        if again:
            await self._execute(again)

    @staticmethod
    def _fail(batch: list[_Pending], error: Exception) -> None:
        for p in batch:
            if not p.future.done():
                p.future.set_exception(error)

    async def _load(self) -> MarketState:
        fields: list[Any] = await self._ctx.redis.hmget(
            self._market_keys[0], ["version", "status", "q_yes", "q_no", "pool", "b"]
        )
        if fields[0] is None:
            raise NotFound(f"no market {self.market_id}")
        self._b = int(fields[5])
        return _state_from(fields[:5])

    async def _execute(self, batch: list[_Pending], conflicts: int = 0) -> None:
        """Price, send and resolve ``batch`` one attempt at a time (the non-speculative path)."""
        pending = batch
        if conflicts > self._ctx.max_conflicts:
            raise Unavailable(f"market {self.market_id} is too contended; retry")
        while pending:
            state = self._state or await self._load()
            self._state = state
            priced = self._price(pending, state)
            if not priced:
                return
            reply = await self._ctx.dispatcher.call(
                self._market_keys, self._market_call(priced, state), len(priced))
            if reply[0] == "NOT_FOUND":
                self._state = None
                raise NotFound(f"no market {self.market_id}")
            if reply[0] == "CONFLICT":
                self._state = _state_from(reply[1:6])
                self._ctx.stats.conflicts += 1
                self._contended_until = time.monotonic() + CONTENDED_S
                conflicts += 1
                if conflicts > self._ctx.max_conflicts:
                    raise Unavailable(f"market {self.market_id} is too contended; retry")
                pending = [p.pending for p in priced]
                continue
            self._state = _state_from(reply[1:6])
            pending = self._resolve(priced, reply[7], int(str(reply[6])))

    def _price(self, batch: list[_Pending], state: MarketState) -> list[_Priced]:
        """Price orders in sequence; settle at once those rejected without an Idempotency-Key."""
        assert self._b is not None
        q_yes, q_no = state.q_yes, state.q_no
        priced: list[_Priced] = []
        for p in batch:
            order = p.order
            if state.status is not MarketStatus.OPEN:
                priced.append(_Priced(p, None, None))  # the script answers MARKET_NOT_OPEN or replays
                continue
            try:
                result = fill(q_yes, q_no, self._b, order.side, order.outcome, order.shares, order.amount)
                check_slippage(order, result)
            except EngineError as exc:
                if order.fingerprint:
                    priced.append(_Priced(p, None, exc))  # a replay of the key still wins
                elif not p.future.done():
                    self._ctx.stats.rejected += 1
                    p.future.set_exception(exc)
                continue
            priced.append(_Priced(p, result, None))
            q_yes, q_no = result.q_yes, result.q_no
        return priced

    def _market_call(self, priced: list[_Priced], state: MarketState) -> list[str | int]:
        """This market's part of a ``trade`` script call: id, expected state, orders (see lua/trade.lua)."""
        # The script compares q_yes and q_no too: a version number alone can come back
        # with other contents after a data loss (restart without AOF, recover), and the
        # costs below are exact only for these q.
        args: list[str | int] = [self.market_id, f"{state.version}:{state.q_yes}:{state.q_no}", len(priced)]
        for item in priced:
            order, f = item.pending.order, item.fill
            if f is None:
                reason = f"{item.rejection.code} {item.rejection.message}" if item.rejection else ""
                fields = [order.user_id, order.side.value, order.outcome.value, "0", "0", "", "", "",
                          stored_fingerprint(order), reason.replace("\t", " "), order.idempotency_key]
            else:
                fields = [order.user_id, order.side.value, order.outcome.value, str(f.shares), str(f.cost),
                          format_micro(f.price_yes), format_micro(f.price_no), format_micro(f.avg_price),
                          stored_fingerprint(order), "", order.idempotency_key]
            args.append("\t".join(fields))
        return args

    def _resolve(self, priced: list[_Priced], results: list[list[str]], ts_ms: int) -> list[_Pending]:
        """Hand each order its result; return the orders to re-price (SKIPPED)."""
        stats = self._ctx.stats
        again: list[_Pending] = []
        for item, result in zip(priced, results, strict=True):
            pending, kind = item.pending, result[0]
            if kind == "SKIPPED":
                again.append(pending)
                continue
            if pending.future.done():
                continue
            order = pending.order
            if kind == "OK":
                f = item.fill
                assert f is not None
                stats.trades += 1
                pending.future.set_result(Trade(
                    trade_id=int(result[1]), market_id=self.market_id, user_id=order.user_id,
                    side=order.side, outcome=order.outcome, shares=f.shares, cost=f.cost,
                    avg_price=f.avg_price, price_yes=f.price_yes, price_no=f.price_no,
                    created_ms=ts_ms, available=int(result[2]), position=int(result[3]),
                    event_id=result[4],
                ))
            elif kind == "REPLAY":
                pending.future.set_result(replayed_trade(order, result[1]))
            else:
                stats.rejected += 1
                pending.future.set_exception(_error(kind, result[1]))
        return again
