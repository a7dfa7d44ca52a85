"""Markets of 2-16 outcome labels over the HTTP API (contract, "Markets with more outcomes, close times, other
resolutions"): request shapes, the market, trade and quote objects by label, and end to end over real HTTP.

The first part needs no engine: the request models and the conversion of engine records to the contract's
objects. The second drives real ``predmarket serve`` replicas (tests/support/api.py).
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import pydantic
import pytest
from predmarket.api.history import prices_of
from predmarket.api.requests import CreateMarket, Resolve, TradeBody
from predmarket.api.responses import market_json, quote_json, trade_json
from predmarket.engine.errors import ValidationError
from predmarket.engine.labels import check_labels
from predmarket.engine.models import Market, MarketStatus, Quote, Side, Trade
from predmarket.engine.resolutions import Resolution, ResolutionType

LABELS = ("Alice", "Bob", "Carol")
PRICES = (500_000, 250_000, 250_000)


# --------------------------------------------------------------------------- request shapes (no engine)

@pytest.mark.parametrize("label", ["A", "Alice", "b-2_c", "x" * 32, "YES", "yes", "NO"])
def test_a_trade_names_any_well_formed_label(label: str) -> None:
    body = TradeBody.model_validate({"side": "BUY", "outcome": label, "shares": "1"})
    assert body.outcome == label


@pytest.mark.parametrize("label", ["", "x" * 33, "no spaces", "é", "A,B", "CANCEL", "PROB", 1, None, ["A"],
                                   "YES\u0000"])
def test_a_malformed_label_is_the_request_s_own_defect(label: object) -> None:
    with pytest.raises(pydantic.ValidationError):
        TradeBody.model_validate({"side": "BUY", "outcome": label, "shares": "1"})
    with pytest.raises(pydantic.ValidationError):
        Resolve.model_validate({"outcome": label})
    if isinstance(label, str):
        with pytest.raises(pydantic.ValidationError):
            Resolve.model_validate({"probabilities": {label: "1", "Bob": "0"}})


def test_resolutions_name_any_well_formed_label_the_engine_then_checks() -> None:
    assert Resolve.model_validate({"outcome": "Carol"}).resolution() == Resolution.of_outcome("Carol")
    prob = Resolve.model_validate({"probabilities": {"Carol": "0.5", "Alice": 0.25, "Bob": "0.25"}}).resolution()
    assert prob.type is ResolutionType.PROB
    assert prob.check(LABELS).probabilities == (("Alice", 250_000), ("Bob", 250_000), ("Carol", 500_000))
    with pytest.raises(ValidationError):
        Resolution.of_outcome("Dave").check(LABELS)


@pytest.mark.parametrize("outcomes", [
    ["A"], [f"L{i}" for i in range(17)], ["A", "A"], ["A", "CANCEL"], ["PROB", "B"], ["A", "b c"], ["A", ""],
    ["A", "x" * 33], [],
])
def test_bad_label_lists_are_refused(outcomes: list[str]) -> None:
    body = CreateMarket.model_validate({"name": "n", "liquidity_b": "10", "outcomes": outcomes})
    with pytest.raises(ValidationError):
        check_labels(body.outcomes)


@pytest.mark.parametrize("outcomes", ["A,B", [1, 2], [None, "A"], {"A": 1}])
def test_label_lists_of_the_wrong_type_are_refused_by_the_body(outcomes: object) -> None:
    with pytest.raises(pydantic.ValidationError):
        CreateMarket.model_validate({"name": "n", "liquidity_b": "10", "outcomes": outcomes})


def test_good_label_lists_keep_their_order() -> None:
    sixteen = [f"L{i}" for i in range(16)]
    assert check_labels(sixteen) == tuple(sixteen)
    assert check_labels(["Zed", "Amy"]) == ("Zed", "Amy")
    assert check_labels(None) == ("YES", "NO")


# --------------------------------------------------------------------------- response objects (no engine)

def market(outcomes: tuple[str, ...], totals: tuple[int, ...], prices: tuple[int, ...], **fields: Any) -> Market:
    yes_no = outcomes == ("YES", "NO")
    base: dict[str, Any] = {
        "market_id": "m1", "name": "Who wins?", "status": MarketStatus.OPEN, "outcome": None,
        "liquidity_b": 100_000_000, "yes_shares": totals[0] if yes_no else 0,
        "no_shares": totals[1] if yes_no else 0, "price_yes": prices[0] if yes_no else 0,
        "price_no": prices[1] if yes_no else 0, "pool": 110_000_000, "version": 3, "created_ms": 1_796_000_000_000,
        "updated_ms": 1_796_000_001_000, "outcomes": outcomes, "totals": totals, "prices": prices,
        "settled": (0,) * len(outcomes),
    }
    return Market(**{**base, **fields})


def test_a_market_of_labels_lists_them_in_order_and_has_no_yes_no_figures() -> None:
    answer = market_json(market(LABELS, (30_000_000, 0, 1_500_000), PRICES))
    assert answer["outcomes"] == [
        {"outcome": "Alice", "shares": "30.000000", "price": "0.500000"},
        {"outcome": "Bob", "shares": "0.000000", "price": "0.250000"},
        {"outcome": "Carol", "shares": "1.500000", "price": "0.250000"},
    ]
    assert (answer["yes_shares"], answer["no_shares"], answer["price_yes"], answer["price_no"]) == (None,) * 4
    assert answer["resolution"] is None and answer["outcome"] is None and answer["close_time"] is None


def test_a_yes_no_market_keeps_its_fields() -> None:
    answer = market_json(market(("YES", "NO"), (5_000_000, 0), (512_497, 487_503), close_ms=1_900_000_000_000))
    assert (answer["yes_shares"], answer["no_shares"], answer["price_yes"], answer["price_no"]) == (
        "5.000000", "0.000000", "0.512497", "0.487503")
    assert answer["outcomes"] == [{"outcome": "YES", "shares": "5.000000", "price": "0.512497"},
                                  {"outcome": "NO", "shares": "0.000000", "price": "0.487503"}]
    assert answer["close_time"] == "2030-03-17T17:46:40.000000Z"


@pytest.mark.parametrize(("fields", "resolution"), [
    ({"outcome": "Bob"}, {"type": "OUTCOME", "outcome": "Bob"}),
    ({"outcome": "CANCEL"}, {"type": "CANCEL"}),
    ({"outcome": "PROB", "probabilities": (("Alice", 200_000), ("Bob", 0), ("Carol", 800_000))},
     {"type": "PROB", "probabilities": {"Alice": "0.200000", "Bob": "0.000000", "Carol": "0.800000"}}),
])
def test_a_resolved_market_of_labels_says_how(fields: dict[str, Any], resolution: dict[str, Any]) -> None:
    answer = market_json(market(LABELS, (0, 0, 0), PRICES, status=MarketStatus.RESOLVED, **fields))
    assert answer["resolution"] == resolution and answer["outcome"] == fields["outcome"]


def test_trades_and_quotes_carry_every_label_s_price() -> None:
    trade = Trade(trade_id=7, market_id="m1", user_id="u1", side=Side.BUY, outcome="Carol", shares=2_000_000,
                  cost=600_000, avg_price=300_000, price_yes=0, price_no=0, created_ms=1_796_000_000_000,
                  outcomes=LABELS, prices=PRICES)
    answer = trade_json(trade)
    assert answer["outcome"] == "Carol" and (answer["price_yes"], answer["price_no"]) == (None, None)
    assert answer["prices"] == {"Alice": "0.500000", "Bob": "0.250000", "Carol": "0.250000"}
    assert list(answer["prices"]) == list(LABELS)
    quote = quote_json(Quote(Side.SELL, "Bob", 1_000_000, 200_000, 200_000, 0, 0, outcomes=LABELS, prices=PRICES))
    assert quote["outcome"] == "Bob" and (quote["price_yes"], quote["price_no"]) == (None, None)
    assert quote["prices"] == answer["prices"]


def test_a_yes_no_trade_keeps_its_prices_and_lists_them_too() -> None:
    trade = Trade(trade_id=7, market_id="m1", user_id="u1", side=Side.BUY, outcome="YES", shares=2_000_000,
                  cost=1_010_000, avg_price=505_000, price_yes=509_999, price_no=490_001,
                  created_ms=1_796_000_000_000)  # no prices: an idempotent reply stored before they existed
    answer = trade_json(trade)
    assert (answer["price_yes"], answer["price_no"]) == ("0.509999", "0.490001")
    assert answer["prices"] == {"YES": "0.509999", "NO": "0.490001"}


Row = namedtuple("Row", ["price_yes", "price_no", "prices"])


def test_a_recorded_trade_s_prices() -> None:
    assert prices_of(Row("0.600000", "0.400000", None)) == {"YES": "0.600000", "NO": "0.400000"}  # type: ignore[arg-type]
    text = '{"Carol":"0.100000","Alice":"0.450000","Bob":"0.450000"}'
    got = prices_of(Row(None, None, text))  # type: ignore[arg-type]
    assert got == {"Carol": "0.100000", "Alice": "0.450000", "Bob": "0.450000"}
    assert list(got) == ["Carol", "Alice", "Bob"]  # label order, as recorded
