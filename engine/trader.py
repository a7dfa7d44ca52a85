"""The trader: one loop per engine turning every market's waiting orders into ``trade`` script calls.

Callers queue an order on its market's book (``engine.sequencer``) and wait on
a future. The loop takes the books that have orders, prices each one's batch
against that market's state and sends the batches of all of them in one
script call, with at most PM_PIPELINE_DEPTH calls pipelined on one connection
(``engine.channel``). The reply is handled where it arrives: each market's
part settles its orders' futures and readies the book again if more wait.

A book with a batch in flight is priced again only against the state that
batch should leave (``MarketBook.predicted``), and only while no other
process has touched the market lately; if the batch does not end as
predicted, the script's state check turns the batch behind it into a
conflict and it is simply re-priced. With orders spread over many markets a
call still carries many trades, and no market costs a task or a round trip
of its own.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, cast

from predmarket.engine.channel import OrderedScript
from predmarket.engine.connection import UNREACHABLE
from predmarket.engine.errors import EngineError, NotFound, Unavailable
from predmarket.engine.keys import Keys
from predmarket.engine.labels import YES_NO
from predmarket.engine.models import Order, Trade
from predmarket.engine.scripts import Script, script_error
from predmarket.engine.sequencer import (
    CONTENDED_S,
    MarketBook,
    MarketState,
    Pending,
    Priced,
    SequencerStats,
    encode,
    hand_out_results,
    predict,
    price,
    same_state,
    state_from,
    state_of,
)
from predmarket.engine.wire import head_args, head_keys, market_keys
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError, ResponseError

#: Books kept per process before the idle ones are dropped.
MAX_IDLE_BOOKS = 10_000
#: On close, how long calls already sent may take to be answered (a socket timeout ends them sooner).
CLOSE_WAIT_S = 5.0


@dataclass(slots=True)
class _Part:
    """One market's batch within a script call."""

    book: MarketBook
    priced: list[Priced]
    predicted: MarketState | None
    keys: list[str]
    args: list[str | int]


def _as_failure(exc: Exception) -> Exception:
    """What the callers of a batch that failed with ``exc`` are told."""
    if isinstance(exc, EngineError):
        return exc
    if isinstance(exc, UNREACHABLE):
        # The outcome of an unanswered call is unknown: clients retry with their Idempotency-Key.
        return Unavailable(f"Redis is unreachable: {exc.__class__.__name__}")
    if isinstance(exc, ResponseError):  # an error reply such as OOM, or a bug in the script
        return script_error("trade", exc)
    if isinstance(exc, RedisError):
        return Unavailable(f"Redis failed the trade: {exc}")
    return exc  # a bug: still never leave a caller waiting


def _fail(orders: list[Pending], error: Exception) -> None:
    for p in orders:
        if not p.future.done():
            p.future.set_exception(error)


class Trader:
    """Every market's sequencing for one engine: books, the send loop, reply handling."""

    def __init__(self, redis: Redis, keys: Keys, trade: Script, *, max_batch: int, max_conflicts: int,
                 idempotency_ttl_s: int, pipeline_depth: int = 2, split_from: int = 8, replicas: int = 0,
                 replica_wait_ms: int = 100, trade_ids: tuple[int, int] = (1, 0)) -> None:
        """``trade_ids``: (stride, offset) of the trade ids this engine's shard makes (wire.head_args)."""
        self.redis = redis
        self.keys = keys
        self.stats = SequencerStats()
        self.books: dict[str, MarketBook] = {}
        # Pipelined in order (see engine.channel); answered once ``replicas`` replicas have each call.
        self._trade = OrderedScript(redis, trade.source, replicas, replica_wait_ms, on_shortfall=self._shortfall)
        self._head_keys = head_keys(keys)
        self._head_args = head_args(idempotency_ttl_s, *trade_ids)
        self._max_batch = max_batch
        self._max_conflicts = max_conflicts
        self._ready: deque[MarketBook] = deque()
        # Calls in flight at once (PM_PIPELINE_DEPTH); a market's queue of at least
        # split_from orders, with nothing of it in flight, is sent as two batches so
        # that Redis runs the first while Python prices the second.
        self._slots = asyncio.Semaphore(pipeline_depth)
        self._split_from = split_from
        self._calls_in_flight = 0
        self._loop: asyncio.Task[None] | None = None
        #: set while the loop waits for orders (:meth:`_run`); its result: no call was in flight
        self._idle: asyncio.Future[bool] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: calls written at once (:meth:`_send`) and not answered yet; on close, set once there are none
        self._written = 0
        self._drained: asyncio.Future[None] | None = None
        #: calls sent by :meth:`_send_later` and not answered yet
        self._later = 0
        #: set while a reply is handled (:meth:`_settle`)
        self._settling = False
        self._closed = False

    def submit(self, order: Order) -> asyncio.Future[Trade]:
        """Queue ``order`` on its market's book; the future gets its trade or its rejection."""
        future: asyncio.Future[Trade] = asyncio.get_running_loop().create_future()
        if self._closed:
            future.set_exception(Unavailable("the engine is closed"))
            return future
        book = self.books.get(order.market_id)
        if book is None:
            if len(self.books) >= MAX_IDLE_BOOKS:
                self._drop_idle()
            market_id = order.market_id
            book = self.books[market_id] = MarketBook(market_id, market_keys(self.keys, market_id))
        book.queue.append(Pending(order, future))
        self._mark_ready(book)
        return future

    async def close(self) -> None:
        """Stop trading: calls already sent get their answers; every order still waiting is refused."""
        self._closed = True
        waits: list[asyncio.Future[Any]] = [*self._tasks]
        if self._written:
            self._drained = asyncio.get_running_loop().create_future()
            waits.append(self._drained)
        if waits:
            await asyncio.wait(waits, timeout=CLOSE_WAIT_S)
        for task in [*self._tasks, *([self._loop] if self._loop else [])]:
            task.cancel()
        closed = Unavailable("the engine is closed")
        for book in self.books.values():
            _fail(book.take(book.waiting), closed)
        await self._trade.close()

    def _drop_idle(self) -> None:
        for market_id in [m for m, book in self.books.items() if book.idle and not book.ready]:
            del self.books[market_id]

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _mark_ready(self, book: MarketBook) -> None:
        if not book.ready:
            book.ready = True
            self._ready.append(book)
        if not self._settling:  # else once the whole reply is handled (_settle)
            self._wake()

    def _wake(self) -> None:
        """Start the loop, or wake it where it waits for orders."""
        idle = self._idle
        if idle is not None:
            self._idle = None
            if not idle.done():
                # With no call in flight no reply can wake callers between now and the loop's turn.
                idle.set_result(self._calls_in_flight == 0)
        elif self._loop is None and not self._closed:
            self._loop = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        first_in_line = False
        try:
            while not self._closed:
                if not self._ready:
                    # Parked until an order arrives (_wake): cheaper than a task per lone order.
                    self._idle = loop.create_future()
                    first_in_line = await self._idle
                    continue
                await self._slots.acquire()
                if not first_in_line:
                    # Let the callers woken by the last reply queue their next orders first. (Woken
                    # with no call in flight, the loop runs after every caller there can be: a lone
                    # order is sent at once.)
                    await asyncio.sleep(0)
                first_in_line = False
                parts = self._build() if not self._closed else []
                if parts:
                    self._calls_in_flight += 1
                    self._send(parts)
                else:
                    self._slots.release()
        finally:
            self._loop = self._idle = None

    def _build(self) -> list[_Part]:
        """Price the ready books' batches for one script call, up to max_batch orders.

        With no call in flight, only half of the ready markets (and of a long queue)
        go: the rest follows in a second call right behind, so Redis runs one while
        Python prices the other.
        """
        idle = self._calls_in_flight == 0
        ready = self._ready
        markets = (len(ready) + 1) // 2 if idle else len(ready)
        budget = self._max_batch
        now = time.monotonic()
        parts: list[_Part] = []
        again: list[MarketBook] = []
        while ready and markets > 0 and budget > 0:
            book = ready.popleft()
            book.ready = False
            markets -= 1
            alone = now >= book.contended_until
            if book.in_flight:
                if book.predicted is None or not alone:
                    continue  # readied again when its reply arrives
                base = book.predicted
            elif book.state is None:
                self._load(book)
                continue
            else:
                base = book.state
            waiting = book.waiting
            split = idle and not book.in_flight and alone and waiting >= self._split_from
            take = (waiting + 1) // 2 if split else waiting
            batch = book.take(min(take, budget))
            try:
                priced = price(book, batch, base)
                if priced:
                    part = _Part(book, priced, predict(base, priced), *encode(book, priced, base, self.keys))
                    parts.append(part)
                    book.in_flight += 1
                    book.predicted = part.predicted
                    budget -= len(priced)
            except Exception as exc:  # a bug: fail these orders, keep the others going
                _fail(batch, exc)
            if book.waiting:
                again.append(book)
        for book in again:
            if not book.ready:
                book.ready = True
                ready.append(book)
        return parts

    def _shortfall(self) -> None:
        self.stats.replica_shortfalls += 1

    def _send(self, parts: list[_Part]) -> None:
        """Send one script call of ``parts``: written at once where the channel can (its reply settles
        the parts as it is read: no task per call), else by a task that waits to write it."""
        keys = list(self._head_keys)
        args = list(self._head_args)
        for part in parts:
            keys += part.keys
            args += part.args
        self.stats.script_calls += 1
        # Behind a call still waiting to be written, this one waits too: calls reach Redis in order.
        if self._later or not self._trade.call_now(keys, args, functools.partial(self._answered, parts, keys, args)):
            self._send_later(parts, keys, args)
        else:
            self._written += 1

    def _answered(self, parts: list[_Part], keys: list[str], args: list[str | int],
                  replies: Any, error: Exception | None) -> None:
        """The reply to a call written at once (:meth:`_send`)."""
        self._written -= 1
        if not self._written and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if isinstance(error, NoScriptError):
            # Redis lost the script (a restart, SCRIPT FLUSH): sent again once it is loaded. Nothing ran.
            self._send_later(parts, keys, args)
        else:
            self._settle(parts, replies, error)

    def _send_later(self, parts: list[_Part], keys: list[str], args: list[str | int]) -> None:
        """The call by a task, through the script's full path (connecting, loading the script, following
        MOVED); calls sent after it wait behind it (:meth:`_send`)."""
        self._later += 1
        self._spawn(self._call(parts, keys, args))

    async def _call(self, parts: list[_Part], keys: list[str], args: list[str | int]) -> None:
        try:
            replies = await self._trade(keys, args)
        except BaseException as exc:
            self._settle(parts, None, exc)
            if not isinstance(exc, Exception):
                raise
        else:
            self._settle(parts, replies, None)
        finally:
            self._later -= 1

    def _settle(self, parts: list[_Part], replies: list[Any] | None, exc: BaseException | None) -> None:
        """Settle each market's part of a call from its replies (or the call's failure); frees its slot.

        The loop is woken (if books are ready) only once every part is settled: woken by the first
        market with orders to retry, it would run before the callers of the later parts, whose
        next orders would then miss the next call.
        """
        self._settling = True
        try:
            if exc is not None or replies is None:
                error = exc if isinstance(exc, Exception) else Unavailable("the trade was interrupted")
                for part in parts:
                    self._finish(part, None, error)
            else:
                for part, reply in zip(parts, replies, strict=True):
                    self._finish(part, reply, None)
        finally:
            self._settling = False
            self._calls_in_flight -= 1
            self._slots.release()
            if self._ready:
                self._wake()

    def _finish(self, part: _Part, reply: list[Any] | None, error: Exception | None) -> None:
        """Settle one market's part of a call from its reply (or the call's failure)."""
        book = part.book
        book.in_flight -= 1
        try:
            if error is not None:
                raise error
            assert reply is not None
            self._apply(part, reply)
        except Exception as exc:
            if not isinstance(exc, EngineError):
                book.state = None  # unknown after a failed call: load it afresh
            book.predicted = None
            _fail([item.pending for item in part.priced], _as_failure(exc))
        if not book.in_flight:
            book.predicted = None
        if book.waiting:
            self._mark_ready(book)

    def _apply(self, part: _Part, reply: list[Any]) -> None:
        book = part.book
        if reply[0] == "NOT_FOUND":
            book.state = None
            raise NotFound(f"no market {book.market_id}")
        state = state_from(*reply[1:5])
        book.state = state
        if reply[0] == "CONFLICT":
            self.stats.conflicts += 1
            book.contended_until = time.monotonic() + CONTENDED_S
            book.predicted = None
            too_contended = Unavailable(f"market {book.market_id} is too contended; retry")
            for item in part.priced:
                pending = item.pending
                pending.conflicts += 1
                if pending.conflicts > self._max_conflicts:
                    _fail([pending], too_contended)
                else:
                    book.retry.append(pending)
            return
        if not same_state(state, part.predicted):
            book.predicted = None  # a rejection or SKIPPED: what was priced ahead will conflict
        for pending in hand_out_results(book, part.priced, reply[6], int(str(reply[5])), self.stats):
            if pending.conflicts > self._max_conflicts:  # a sell_all whose holding kept changing
                _fail([pending], Unavailable(f"the position in market {book.market_id} kept changing; retry"))
            else:
                book.retry.append(pending)

    def _load(self, book: MarketBook) -> None:
        if not book.loading:
            book.loading = True
            self._spawn(self._load_state(book))

    async def _load_state(self, book: MarketBook) -> None:
        try:
            # The whole hash, once per book: a market of other labels than YES/NO keeps one field per label.
            fields = cast(dict[str, str], await self.redis.hgetall(book.keys[0]))
            if not fields:
                raise NotFound(f"no market {book.market_id}")
            book.b = int(fields["b"])
            book.state, book.labels = state_of(fields)
            book.yes_no = book.labels == YES_NO
        except Exception as exc:
            _fail(book.take(book.waiting), _as_failure(exc))
        finally:
            book.loading = False
            if book.waiting:
                self._mark_ready(book)
