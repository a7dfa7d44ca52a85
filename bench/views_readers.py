"""The views' readers: a separate (spawned) process of concurrent keep-alive readers, one request in flight each.

Each reader cycles through the four views, so every route gets a quarter of the
requests: a market's trade pages (a walk of up to 5 pages following
``next_cursor``; one walk in four starts at a random depth with a cursor made
the way the API makes them), the caller's trade pages (up to 3 pages), the
caller's positions, and an outcome's one-minute candles of a market with at
least 1,000 of them (a 1,000-candle answer). Markets are picked with the
record's popularity (trades per market); users uniformly. Requests sent during
the warm-up are not counted; the process stops when told (or after
``max_seconds``) and reports latencies per route.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import itertools
import multiprocessing as mp
import multiprocessing.queues
import multiprocessing.synchronize
import random
import re
import time
import traceback
from dataclasses import dataclass, field

from bench.http_client import HttpConnection
from bench.views_record import api_key

MARKET_TRADES, MY_TRADES, POSITIONS, CANDLES = "market trades page", "my trades page", "positions", "1m candles"
ROUTES = (MARKET_TRADES, MY_TRADES, POSITIONS, CANDLES)
PAGE_LIMIT = 100
_NEXT = re.compile(rb'"next_cursor":"([A-Za-z0-9_-]+)"')


@dataclass(frozen=True)
class ReaderSpec:
    host: str
    port: int
    readers: int
    #: generated users are 0..users-1 (their keys derive from the number)
    users: int
    #: market ids and their trades (the pick weights)
    markets: tuple[str, ...]
    market_trades: tuple[int, ...]
    #: markets with at least 1,000 one-minute candles
    candle_markets: tuple[str, ...]
    #: the record's largest trade id (deep walks start below it)
    max_trade_id: int
    warmup_s: float
    max_seconds: float
    seed: int | None = None
    #: None: each reader sends its next request as soon as its answer is in (closed loop, the most load
    #: 32 readers can make). A rate: the readers together send this many requests per second, each on
    #: its own schedule, and a latency counts from the request's scheduled time (a reader held up by a
    #: slow answer sends late, and that wait counts: no coordinated omission).
    rate_per_s: float | None = None


@dataclass
class ReaderResult:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {r: [] for r in ROUTES})
    #: answers other than 200 (route: status -> count)
    errors: dict[str, dict[int, int]] = field(default_factory=dict)
    connection_errors: int = 0
    elapsed_s: float = 0.0
    #: items in the counted answers: trades per page, candles per candle answer
    items: dict[str, int] = field(default_factory=lambda: {r: 0 for r in ROUTES})


class GetConnection(HttpConnection):
    """The bench's keep-alive client with GET (the API answers with Content-Length bodies)."""

    async def get(self, path: bytes, authorization: bytes | None) -> tuple[int, bytes]:
        auth = b"\r\nAuthorization: " + authorization if authorization else b""
        return await self.exchange(b"".join((b"GET ", path, b" HTTP/1.1\r\nHost: ", self._host_header, auth,
                                             b"\r\n\r\n")))


def trade_cursor(trade_id: int) -> str:
    """A trade cursor as api/pages.py writes it (base64url of ``t:<id>``, no padding)."""
    return base64.urlsafe_b64encode(f"t:{trade_id}".encode()).decode().rstrip("=")


class _Walk:
    """A reader's walk through one list: the path without the cursor, the next cursor, pages left."""

    def __init__(self, path: str, cursor: str | None, pages: int, auth: bytes | None) -> None:
        self.path, self.cursor, self.pages, self.auth = path, cursor, pages, auth

    def request(self) -> bytes:
        return (self.path + (f"&cursor={self.cursor}" if self.cursor else "")).encode()


class _Readers:
    """What the readers of one process share: the picks (one seeded generator), the clock, the result."""

    def __init__(self, spec: ReaderSpec, stop: multiprocessing.synchronize.Event | None) -> None:
        self.spec, self.stop = spec, stop
        self.rng = random.Random(spec.seed)
        self.cumulative = list(itertools.accumulate(max(1, n) for n in spec.market_trades))
        self.candle_markets = spec.candle_markets or spec.markets[:1]
        self.interval = spec.readers / spec.rate_per_s if spec.rate_per_s else 0.0
        self.result = ReaderResult()
        self.start = time.perf_counter() + spec.warmup_s
        self.end = self.start + spec.max_seconds

    def stopped(self, now: float) -> bool:
        return now >= self.end or (self.stop is not None and self.stop.is_set())

    def _market(self) -> str:
        return self.spec.markets[bisect.bisect_right(self.cumulative, self.rng.random() * self.cumulative[-1])]

    def _auth(self) -> bytes:
        return f"Bearer {api_key(self.rng.randrange(self.spec.users))}".encode()

    def _new_walk(self, route: str) -> _Walk:
        if route == MY_TRADES:
            return _Walk(f"/v1/me/trades?limit={PAGE_LIMIT}", None, 3, self._auth())
        deep = self.rng.random() < 0.25
        cursor = trade_cursor(self.rng.randrange(1, self.spec.max_trade_id + 1)) if deep else None
        return _Walk(f"/v1/markets/{self._market()}/trades?limit={PAGE_LIMIT}", cursor, 5, None)

    def request_for(self, route: str, walks: dict[str, _Walk | None]) -> tuple[bytes, bytes | None, _Walk | None]:
        """(path, authorization, the walk it continues) of a reader's next request of ``route``."""
        if route in walks:
            walk = walks[route] or self._new_walk(route)
            return walk.request(), walk.auth, walk
        if route == POSITIONS:
            return b"/v1/me/positions", self._auth(), None
        outcome = "YES" if self.rng.random() < 0.5 else "NO"
        market = self.rng.choice(self.candle_markets)
        return f"/v1/markets/{market}/candles?outcome={outcome}&interval=1m".encode(), None, None

    def count(self, route: str, status: int, body: bytes, elapsed: float) -> None:
        if status != 200:
            by_status = self.result.errors.setdefault(route, {})
            by_status[status] = by_status.get(status, 0) + 1
            return
        self.result.latencies[route].append(elapsed)
        item = {CANDLES: b'"start"', POSITIONS: b'"market_id"'}.get(route, b'"trade_id"')
        self.result.items[route] += body.count(item)

    async def read(self, index: int, conn: GetConnection) -> None:
        walks: dict[str, _Walk | None] = {MARKET_TRADES: None, MY_TRADES: None}
        due = time.perf_counter() + self.rng.random() * self.interval
        for n in itertools.count(index):
            if self.interval:
                wait = due - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)  # the reader's schedule, not a synchronisation
                sent, due = due, due + self.interval
            else:
                sent = time.perf_counter()
            if self.stopped(sent):
                return
            route = ROUTES[n % len(ROUTES)]
            path, authorization, walk = self.request_for(route, walks)
            try:
                status, body = await conn.get(path, authorization)
            except (OSError, ConnectionError, asyncio.IncompleteReadError):
                self.result.connection_errors += 1
                await conn.close()
                continue
            elapsed = time.perf_counter() - sent
            if walk is not None:
                found = _NEXT.search(body) if status == 200 else None
                walk.pages -= 1
                walk.cursor = found.group(1).decode() if found else None
                walks[route] = walk if walk.cursor and walk.pages > 0 else None
            if sent >= self.start and not self.stopped(0.0):
                self.count(route, status, body, elapsed)


async def run_readers(spec: ReaderSpec, warm: multiprocessing.synchronize.Event | None,
                      stop: multiprocessing.synchronize.Event | None) -> ReaderResult:
    conns = [GetConnection(spec.host, spec.port) for _ in range(spec.readers)]
    await asyncio.gather(*(c.connect() for c in conns))
    readers = _Readers(spec, stop)

    async def signal_warm() -> None:
        await asyncio.sleep(max(0.0, readers.start - time.perf_counter()))
        if warm is not None:
            warm.set()

    try:
        await asyncio.gather(signal_warm(), *(readers.read(i, c) for i, c in enumerate(conns)))
    finally:
        readers.result.elapsed_s = time.perf_counter() - readers.start
        await asyncio.gather(*(c.close() for c in conns))
    return readers.result


def _entry(results: multiprocessing.queues.Queue[ReaderResult | str], spec: ReaderSpec,
           warm: multiprocessing.synchronize.Event, stop: multiprocessing.synchronize.Event) -> None:
    try:
        import uvloop

        results.put(uvloop.run(run_readers(spec, warm, stop)))
    except BaseException:
        results.put(traceback.format_exc())
        raise


class ReaderProcess:
    """The readers in a spawned process: ``start``, wait until ``warm``, ``stop`` and collect."""

    def __init__(self, spec: ReaderSpec) -> None:
        ctx = mp.get_context("spawn")
        self.spec = spec
        self._results: multiprocessing.queues.Queue[ReaderResult | str] = ctx.Queue()
        self._warm, self._stop = ctx.Event(), ctx.Event()
        self._process = ctx.Process(target=_entry, args=(self._results, spec, self._warm, self._stop), daemon=True)

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the readers and return once they are past their warm-up (measuring from now on)."""
        self._process.start()
        deadline = time.monotonic() + timeout_s + self.spec.warmup_s
        while not self._warm.wait(0.2):
            if time.monotonic() > deadline or self._process.exitcode is not None:
                self.kill()
                raise RuntimeError("the views' reader process failed to start")

    def stop(self, timeout_s: float = 60.0) -> ReaderResult:
        """Tell the readers to stop (the requests in flight finish uncounted) and return their figures."""
        self._stop.set()
        try:
            report = self._results.get(timeout=timeout_s)
        except Exception:
            self.kill()
            raise RuntimeError("the views' reader process did not report") from None
        self._process.join(timeout=10)
        self.kill()
        if isinstance(report, str):
            raise RuntimeError(f"the views' reader process failed:\n{report}")
        return report

    def run_for(self, seconds: float) -> ReaderResult:
        self.start()
        time.sleep(seconds)  # the measured window itself, not a synchronisation
        return self.stop()

    def kill(self) -> None:
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=10)
