"""The order line and the stored idempotent reply (engine/wire.py) across Python -> Lua -> Python.

Each format is encoded by one class and read by the same class: an order line built in Python is
executed by the real ``trade`` script on real Redis, and what the script wrote (its events, its
stored reply) decodes back to the fields that went in. Recovery's rebuild of a stored reply is
compared byte for byte with the script's in tests/test_recovery.py (full snapshots).
"""

from __future__ import annotations

import hashlib
from typing import cast

import pytest
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import Order, Outcome, Side
from predmarket.engine.units import MICRO, format_micro
from predmarket.engine.wire import OrderLine, StoredReply, WireError, request_hash

from tests.support.factories import MarketFactory, UserFactory

BUY, SELL, YES, NO = Side.BUY, Side.SELL, Outcome.YES, Outcome.NO


def test_an_order_line_round_trips_every_field() -> None:
    priced = OrderLine("u-1", SELL, NO, 2_500_000, 1_234_567, (412_345, 587_655), 493_827,
                       "ab" * 32, "", "key with spaces")
    assert OrderLine.decode(priced.encode()) == priced
    sell_all = priced._replace(sell_all=True)
    assert OrderLine.decode(sell_all.encode()) == sell_all
    rejected = OrderLine("u-2", BUY, YES, 0, 0, None, None, "", "SLIPPAGE_EXCEEDED cost\t1 > 0", "")
    line = rejected.encode()
    assert line.count("\t") == 10  # the tab in the free-text rejection cannot shift a field
    decoded = OrderLine.decode(line)
    assert decoded.rejection == "SLIPPAGE_EXCEEDED cost 1 > 0"
    assert (decoded.prices, decoded.avg_price) == (None, None)
    labelled = OrderLine("u-3", BUY, "Team_B-2", MICRO, 400_000, (333_333, 333_334, 333_333), 400_000, "", "", "")
    assert OrderLine.decode(labelled.encode()) == labelled


def test_a_stored_reply_round_trips_every_field() -> None:
    reply = StoredReply("cd" * 32, 41, BUY, YES, 7 * MICRO, 3_999_999, 571_428, (600_001, 399_999),
                        1_700_000_000_123, "1700000000123-7")
    assert StoredReply.decode(reply.encode()) == reply
    three = StoredReply("ef" * 32, 42, SELL, "C", MICRO, 1, 1, (1, 2, 999_997), 1_700_000_000_124, "1-0")
    assert StoredReply.decode(three.encode()) == three


def test_a_stored_reply_of_the_release_before_labels_still_reads() -> None:
    """Keys stored before markets had labels of their own (price_yes|price_no apart) replay after an upgrade."""
    old = "|".join(("cd" * 32, "41", "BUY", "YES", "7000000", "3999999", "0.571428", "0.600001", "0.399999",
                    "1700000000123", "1700000000123-7"))
    assert StoredReply.decode(old) == StoredReply("cd" * 32, 41, BUY, YES, 7 * MICRO, 3_999_999, 571_428,
                                                  (600_001, 399_999), 1_700_000_000_123, "1700000000123-7")


@pytest.mark.parametrize("text", ["a\tb", "u\tBUY\tYES\t1\t1\t\t\t\t\t\t\t"])
def test_an_order_line_of_the_wrong_length_is_refused(text: str) -> None:
    with pytest.raises(WireError):
        OrderLine.decode(text)


def test_the_fingerprint_is_hashed_once_in_one_place() -> None:
    assert request_hash("") == ""
    assert request_hash("m|BUY|YES") == hashlib.sha256(b"m|BUY|YES").hexdigest()


async def test_an_order_line_from_python_runs_in_lua_and_its_stored_reply_decodes_to_the_trade(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory,
) -> None:
    user = (await make_user(1_000)).user_id
    market = (await make_market(100)).market_id
    await engine.execute_trade(Order(user, market, BUY, NO, shares=5 * MICRO))
    order = Order(user, market, SELL, NO, shares=2 * MICRO, min_proceeds=0,
                  idempotency_key="wire key", fingerprint=f"{market}|SELL|NO|2")
    trade = await engine.execute_trade(order)

    stored = await engine.redis.get(engine.keys.idempotency(user, "wire key"))
    assert isinstance(stored, str)  # the engine's client decodes
    reply = StoredReply.decode(stored)
    assert reply == StoredReply(
        request_hash(order.fingerprint), trade.trade_id, SELL, NO, trade.shares, trade.cost, trade.avg_price,
        (trade.price_yes, trade.price_no), trade.created_ms, trade.event_id)

    # The script read every field of the line by name: the TradeExecuted event carries them back.
    # redis-py types the reply for either decoding; the engine's client decodes, so ids and fields are str.
    entries = cast(list[tuple[str, dict[str, str]]], await engine.redis.xrevrange(engine.keys.events, count=2))
    executed = next(fields for _, fields in entries if fields["type"] == "TradeExecuted")
    assert executed["user_id"] == user and executed["side"] == "SELL" and executed["outcome"] == "NO"
    assert executed["idempotency_key"] == "wire key"
    assert executed["request_hash"] == reply.request_hash
    assert (executed["price_yes"], executed["price_no"], executed["avg_price"]) == (
        format_micro(trade.price_yes), format_micro(trade.price_no), format_micro(trade.avg_price))

    again = await engine.execute_trade(order)
    assert again.replayed and again.trade_id == trade.trade_id and again.cost == trade.cost
