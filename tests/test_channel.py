"""The ordered script channel's ties to its libraries: hiredis's packer and redis-py's connection.

``engine.channel`` packs its calls with ``hiredis.pack_command`` (public) and
reads two private attributes of redis-py's asyncio connection to tell a
connection the server closed while idle. These tests fail the day either
library changes what the channel relies on.
"""

from __future__ import annotations

import asyncio

import hiredis
from hypothesis import given
from hypothesis import strategies as st
from predmarket.engine.channel import OrderedScript, _closed_by_peer
from redis.asyncio.connection import Connection

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
