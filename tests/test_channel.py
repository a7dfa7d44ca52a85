"""The trade call's own RESP encoder: byte for byte what redis-py would send."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection

from engine.channel import pack_command

ARGS = st.lists(st.one_of(st.text(), st.integers(min_value=-(2**63), max_value=2**63 - 1)), max_size=50)


@given(ARGS)
def test_pack_command_matches_redis_py(args: list[str | int]) -> None:
    reference = b"".join(Connection().pack_command("EVALSHA", *args))
    assert pack_command(["EVALSHA", *args]) == reference


def test_pack_command_of_a_trade_argument() -> None:
    order = "u1\tBUY\tYES\t10000000\t5012345\t0.512345\t0.487655\t0.501234\t\t\t"
    assert pack_command(["EVALSHA", 2, order, "é"]) == (
        b"*4\r\n$7\r\nEVALSHA\r\n$1\r\n2\r\n$" + str(len(order)).encode() + b"\r\n" + order.encode()
        + b"\r\n$2\r\n\xc3\xa9\r\n")
