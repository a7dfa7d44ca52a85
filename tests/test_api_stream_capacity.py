"""Live streams cannot starve the API: a subscriber cap answered at once, no trading-pool connection per
subscriber, and a clean close of every stream when the server stops.

Each test here runs its own stack (real ``predmarket serve`` and persister); the connection count is
taken on a private redis-server, where every client is the stack's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.api import Api, Stack, StackFactory, assert_error, bearer
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_for

WAIT_S = 10.0
DURABLE = {"Prefer": "durable=postgres"}


class RawSse:
    """One SSE connection on a bare socket: hundreds of them cost the test next to nothing."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, base_url: str, path: str = "/v1/events", token: str | None = None) -> RawSse:
        parts = urlsplit(base_url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        stream = cls(reader, writer)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n{auth}\r\n".encode())
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
            assert head.startswith(b"HTTP/1.1 200"), head
            await asyncio.wait_for(reader.readuntil(b": connected\n\n"), WAIT_S)
        except BaseException:
            await stream.close()
            raise
        return stream

    async def rest(self) -> bytes:
        """Everything until the server closes the connection."""
        return await asyncio.wait_for(self.reader.read(), WAIT_S)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@asynccontextmanager
async def subscribers(base_url: str, count: int) -> AsyncIterator[list[RawSse]]:
    opened: list[RawSse] = []
    try:
        for _ in range(count):
            opened.append(await RawSse.open(base_url))
        yield opened
    finally:
        await asyncio.gather(*(s.close() for s in opened))


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(Path(tmp_path_factory.mktemp("stream-redis"))) as server:
        yield server


@pytest.fixture(scope="module")
def capped_stack(stacks: StackFactory, private_redis: RedisServer) -> Iterator[Stack]:
    """One replica allowing 3 live-stream subscribers, with a persister, on a private Redis."""
    stack = stacks.start("streamcap", replicas=1, redis_url=private_redis.url, PM_MAX_SUBSCRIBERS="3")
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def wide_stack(stacks: StackFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One replica with a persister on a Redis of its own, default capacity."""
    with RedisServer(Path(tmp_path_factory.mktemp("stream-redis-wide"))) as server:
        stack = stacks.start("streamwide", replicas=1, redis_url=server.url)
        try:
            yield stack
        finally:
            stack.stop()


def durable_trade(api: Api, market_id: str) -> httpx.Response:
    user = api.create_user("100")
    return api.trade(user, market_id, "BUY", "YES", shares="1", headers=DURABLE)


async def test_past_capacity_a_subscriber_gets_503_at_once_and_trading_goes_on(capped_stack: Stack) -> None:
    api = Api(capped_stack)
    try:
        market_id = api.create_market()
        user = api.create_user("100")
        async with subscribers(capped_stack.url, 3) as held:
            async with httpx.AsyncClient(base_url=capped_stack.url, timeout=WAIT_S) as client:
                r = await client.get("/v1/events")
                assert_error(r, 503, "UNAVAILABLE")
                assert r.headers["Retry-After"].isdigit() and int(r.headers["Retry-After"]) >= 1
                r = await client.get("/v1/me/events", headers=bearer(user.api_key))
                assert_error(r, 503, "UNAVAILABLE")
                assert "Retry-After" in r.headers
            with pytest.raises(InvalidStatus) as refused:
                async with ws_connect(f"{capped_stack.ws_url(0)}/v1/ws", open_timeout=WAIT_S):
                    pass
            assert refused.value.response.status_code == 503
            assert refused.value.response.headers["Retry-After"].isdigit()
            # The API answers as usual, durable answers included (the persister is running).
            assert api.buy(user, market_id, "YES", "1")["shares"] == "1.000000"
            r = durable_trade(api, market_id)
            assert r.status_code == 201 and r.headers["Preference-Applied"] == "durable=postgres", r.text
            assert api.request("GET", "/readyz").status_code == 200
            # A place freed is a place taken again.
            await held.pop().close()
            again = await _eventually_admitted(capped_stack.url)
            await again.close()
    finally:
        api.close()


async def _eventually_admitted(base_url: str) -> RawSse:
    for _ in range(200):  # the server notices the closed socket within moments
        try:
            return await RawSse.open(base_url)
        except AssertionError:
            await asyncio.sleep(0.05)
    raise AssertionError("no subscriber admitted after one left")


def redis_clients(stack: Stack) -> list[dict[str, str]]:
    """Every client of the stack's private Redis (all of them the stack's, and this test's own one)."""
    with stack.redis() as r:
        return [dict(c) for c in r.client_list()]


async def test_many_subscribers_take_no_redis_connection_each(wide_stack: Stack) -> None:
    api = Api(wide_stack)
    try:
        market_id = api.create_market()
        user = api.create_user("100")
        async with subscribers(wide_stack.url, 1):  # warm: every pool the streams use exists now
            api.buy(user, market_id, "YES", "1")
        before = len(redis_clients(wide_stack))
        async with subscribers(wide_stack.url, 200) as opened:
            during = redis_clients(wide_stack)
            api.buy(user, market_id, "NO", "1")
            r = durable_trade(api, market_id)
            assert r.status_code == 201 and r.headers["Preference-Applied"] == "durable=postgres", r.text
            # Every subscriber still gets the live entries (one reader fans them out).
            trade = api.buy(user, market_id, "YES", "2")
            marker = f'"trade_id":"{trade["trade_id"]}"'.encode()
            for subscriber in opened:
                chunk = await asyncio.wait_for(subscriber.reader.readuntil(marker), WAIT_S)
                assert b"event: TradeExecuted" in chunk
        # One blocking XREAD for the whole replica (one per shard), not one per subscriber; the side pool is bounded.
        assert sum(1 for c in during if c.get("cmd") == "xread") <= api.stack.shards, during
        assert len(during) - before <= 8, (before, len(during))
    finally:
        api.close()


async def test_stopping_the_server_closes_every_stream_cleanly(stacks: StackFactory, api_stack: Stack) -> None:
    stack = stacks.start("streamstop", replicas=1, persister=False, database_url=api_stack.database_url)
    (process,) = stack.servers
    sse = await RawSse.open(stack.url)
    async with ws_connect(f"{stack.ws_url(0)}/v1/ws", open_timeout=WAIT_S) as socket:
        process.signal(signal.SIGTERM)
        tail = await sse.rest()  # ends: the server closed it
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                message = json.loads(await asyncio.wait_for(socket.recv(), WAIT_S))
                assert message.get("event") == "heartbeat", message
    await sse.close()
    assert b": closing" in tail, tail
    assert tail.endswith(b"0\r\n\r\n"), tail  # the chunked body's proper end, not a cut-off
    assert closed.value.rcvd is not None and closed.value.rcvd.code in (1001, 1012), closed.value
    wait_for(lambda: process.popen is None or process.popen.poll() is not None, WAIT_S, "the server to exit")
    log = process.log_tail(100_000)
    assert "CancelledError" not in log and "Traceback" not in log, log[-3000:]
    assert '"level":"error"' not in log and "ERROR" not in log, log[-3000:]
    stack.stop()
