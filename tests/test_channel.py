"""The ordered script channel's ties to its libraries: hiredis's packer and redis-py's connection.

``engine.channel`` packs its calls with ``hiredis.pack_command`` (public) and
reads two private attributes of redis-py's asyncio connection to tell a
connection the server closed while idle. These tests fail the day either
library changes what the channel relies on.
"""

from __future__ import annotations

import asyncio
from typing import Any

import hiredis
import pytest
from hypothesis import given
from hypothesis import strategies as st
from predmarket.engine.channel import Channels, OrderedScript, _closed_by_peer, _write
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tests.support.services import new_redis

ARGS = st.lists(st.one_of(st.text(), st.integers(min_value=-(2**63), max_value=2**63 - 1)), max_size=50)


@given(ARGS)
def test_hiredis_packs_what_redis_py_would_send(args: list[str | int]) -> None:
    reference = b"".join(Connection().pack_command("EVALSHA", *args))
    assert hiredis.pack_command(("EVALSHA", *args)) == reference  # type: ignore[arg-type]  # hiredis's stub: a 1-tuple


def test_pack_command_of_a_trade_argument() -> None:
    order = "u1\tBUY\tYES\t10000000\t5012345\t0.512345\t0.487655\t0.501234\t\t\t"
    assert hiredis.pack_command(("EVALSHA", 2, order, "é")) == (  # type: ignore[arg-type]  # hiredis's stub: a 1-tuple
        b"*4\r\n$7\r\nEVALSHA\r\n$1\r\n2\r\n$" + str(len(order)).encode() + b"\r\n" + order.encode()
        + b"\r\n$2\r\n\xc3\xa9\r\n")


async def test_redis_py_connection_keeps_the_private_stream_pair() -> None:
    """``_closed_by_peer`` reads ``_reader``/``_writer``: present while connected, gone once closed."""
    redis = new_redis()
    try:
        conn = await redis.connection_pool.get_connection()  # type: ignore[no-untyped-call]  # untyped in redis-py
        try:
            reader, writer = getattr(conn, "_reader", None), getattr(conn, "_writer", None)
            assert isinstance(reader, asyncio.StreamReader), f"redis-py moved _reader: {reader!r}"
            assert isinstance(writer, asyncio.StreamWriter), f"redis-py moved _writer: {writer!r}"
            assert not _closed_by_peer(conn)
            await conn.disconnect()
            assert _closed_by_peer(conn)
        finally:
            await redis.connection_pool.release(conn)
    finally:
        await redis.aclose()


async def test_ordered_script_calls_answer_in_order() -> None:
    redis = new_redis()
    script = OrderedScript(redis, "return ARGV[1]")
    try:
        replies = await asyncio.gather(*(script([], [str(i)]) for i in range(50)))
        assert replies == [str(i) for i in range(50)]
    finally:
        await script.close()
        await redis.aclose()


async def test_a_call_is_written_without_a_task_of_its_own() -> None:
    """redis-py's send_packed_command wraps each write in asyncio.wait_for (a task per call on Python
    3.11); the channel writes itself, so lone calls make one task each: the reader that answers them."""
    redis = new_redis()
    script = OrderedScript(redis, "return ARGV[1]")
    loop = asyncio.get_running_loop()
    made: list[str] = []

    def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        made.append(coro.__qualname__)
        return asyncio.Task(coro, loop=loop, **kwargs)

    try:
        await script([], ["warm"])  # connects: the pool's own work is not counted
        loop.set_task_factory(counting)
        for i in range(20):
            assert await script([], [str(i)]) == str(i)
        # One reader per call. The connection's health check (a PING once it sat idle a second, under
        # redis-py's wait_for) may add a task on a stalled machine; a wait_for per write adds twenty.
        assert made.count("Channel._read") == 20
        assert len(made) < 30, made
    finally:
        loop.set_task_factory(None)
        await script.close()
        await redis.aclose()


async def test_a_call_written_at_once_never_overtakes_one_still_on_its_way() -> None:
    """call_now writes only when nothing waits ahead of it: with no connection yet, or a call still
    connecting, it sends nothing (False) and the caller takes the slow path, behind the others.
    A call it did write is answered through its handler, in order, as the reply is read."""
    redis = new_redis()
    script = OrderedScript(redis, "return ARGV[1]")
    channel = Channels.of(redis).single()
    answers: list[tuple[Any, Exception | None]] = []

    def told(reply: Any, error: Exception | None) -> None:
        answers.append((reply, error))

    try:
        assert not script.call_now([], ["0"], told)  # no connection yet: nothing sent
        first = asyncio.ensure_future(script([], ["1"]))  # connects, then loads the script (NOSCRIPT)
        for _ in range(1_000):  # until the first call is on its slow path
            if channel._sending:
                break
            await asyncio.sleep(0)
        assert channel._sending
        assert not script.call_now([], ["2"], told)
        assert await asyncio.wait_for(first, timeout=10) == "1"
        assert all(script.call_now([], [str(i)], told) for i in range(3, 8))  # connected, idle: written
        assert await script([], ["8"]) == "8"  # answered after the five before it
        assert answers == [(str(i), None) for i in range(3, 8)]
        async with redis.client() as other:
            await other.script_flush()
        assert script.call_now([], ["9"], told)
        assert await script([], ["10"]) == "10"  # NOSCRIPT, loaded, sent again
        reply, error = answers[-1]
        assert reply is None and isinstance(error, NoScriptError)
    finally:
        await Channels.of(redis).release()  # the reference taken above
        await script.close()
        await redis.aclose()


async def _connection_to(redis: Redis) -> Connection:
    conn = await redis.connection_pool.get_connection()  # type: ignore[no-untyped-call]  # untyped in redis-py
    assert isinstance(conn, Connection)
    return conn


async def test_a_write_to_a_closed_connection_fails_as_a_connection_error() -> None:
    redis = new_redis()
    conn = await _connection_to(redis)
    try:
        writer = getattr(conn, "_writer")  # noqa: B009  # the private attribute the channel writes to
        writer.close()
        with pytest.raises(RedisConnectionError):
            await _write(conn, hiredis.pack_command(("PING",)), check_health=False)
    finally:
        await conn.disconnect()
        await redis.connection_pool.release(conn)
        await redis.aclose()


async def test_a_write_the_server_does_not_read_times_out() -> None:
    """A peer that stops reading fills the socket: the wait for it is bounded by the socket timeout."""
    stalled: list[asyncio.StreamWriter] = []

    async def never_read(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stalled.append(writer)  # kept open, never read

    server = await asyncio.start_server(never_read, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    redis = new_redis()
    conn = await _connection_to(redis)
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    real_writer, real_timeout = getattr(conn, "_writer"), conn.socket_timeout  # noqa: B009
    try:
        conn._writer, conn.socket_timeout = writer, 0.2  # the stalled peer
        with pytest.raises(RedisTimeoutError):
            await _write(conn, b"x" * (64 << 20), check_health=False)
    finally:
        conn._writer, conn.socket_timeout = real_writer, real_timeout
        writer.transport.abort()
        for w in stalled:
            w.transport.abort()
        server.close()
        await redis.connection_pool.release(conn)
        await redis.aclose()
