"""Markets of 2-16 outcome labels over the HTTP API (contract, "Markets with more outcomes, close times, other
resolutions"): request shapes, the market, trade and quote objects by label, and end to end over real HTTP.

The first part needs no engine: the request models and the conversion of engine records to the contract's
objects. The second drives real ``predmarket serve`` replicas (tests/support/api.py).
"""

from __future__ import annotations

import json
from collections import namedtuple
from decimal import ROUND_FLOOR, Decimal
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

from tests.support import reference_n
from tests.support.api import (
    QUOTE_KEYS,
    Api,
    Stack,
    User,
    assert_error,
    assert_market,
    assert_quote,
    assert_trade,
    dec,
    fmt,
    unique,
)
from tests.support.event_streams import atrade, sse

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


# --------------------------------------------------------------------------- end to end over HTTP

MICRO_D = Decimal("0.000001")


def floor6(value: Decimal) -> Decimal:
    return value.quantize(MICRO_D, rounding=ROUND_FLOOR)


def micro(value: str) -> int:
    return int(Decimal(value) * 1_000_000)


def units(value: int) -> str:
    return fmt(Decimal(value) / 1_000_000)


def create_labelled(api: Api, labels: list[str], b: str = "10", open: bool = True) -> dict[str, Any]:
    """A market of ``labels`` (house funded with exactly its subsidy ceil(b ln n) first)."""
    api.deposit("house", units(reference_n.subsidy(micro(b), len(labels))))
    r = api.admin("POST", "/v1/markets", json={"name": "Who wins?", "liquidity_b": b, "outcomes": labels,
                                               "market_id": unique("mkt")})
    assert r.status_code == 201, r.text
    market = dict(r.json())
    if open:
        r = api.admin("POST", f"/v1/markets/{market['market_id']}/open")
        assert r.status_code == 200, r.text
        market = dict(r.json())
    assert_market(market)
    return market


def expected_prices(labels: list[str], totals: list[int], b: int) -> dict[str, str]:
    return {label: units(reference_n.price_half_even(totals, k, b)[0]) for k, label in enumerate(labels)}


def rejected_state(api: Api, user: User, market_id: str) -> tuple[Any, ...]:
    """What a refused request must leave unchanged."""
    market = api.market(market_id)
    return api.me(user), {k: v for k, v in market.items() if k != "last_updated"}, api.stack.last_event_id()


def test_a_three_outcome_market_takes_ceil_b_ln_3_from_house_and_lists_its_labels(api: Api) -> None:
    labels = ["Alice", "Bob", "Carol"]
    house = dec(api.account("house")["available"])
    market = create_labelled(api, labels, b="10", open=False)
    subsidy = reference_n.subsidy(10_000_000, 3)
    assert subsidy == 10_986_123
    assert market["pool"] == units(subsidy) and market["status"] == "CREATED"
    assert dec(api.account("house")["available"]) == house  # the deposit was exactly the subsidy
    assert market["outcomes"] == [{"outcome": label, "shares": "0.000000", "price": "0.333333"} for label in labels]
    assert [market[k] for k in ("yes_shares", "no_shares", "price_yes", "price_no")] == [None] * 4
    assert (market["outcome"], market["resolution"], market["close_time"]) == (None, None, None)
    assert api.market(market["market_id"], replica=1) == market
    listed = api.request("GET", "/v1/markets", params={"status": "CREATED"}).json()["markets"]
    assert [m for m in listed if m["market_id"] == market["market_id"]] == [market]
    # Two labels of any names are a market of other labels too: no YES/NO fields.
    pair = create_labelled(api, ["NO", "YES"])
    assert [o["outcome"] for o in pair["outcomes"]] == ["NO", "YES"] and pair["price_yes"] is None


def test_buy_sell_and_quote_by_label_price_every_label(api: Api) -> None:
    labels, b = ["A", "B", "C", "D"], 20_000_000
    market_id = create_labelled(api, labels, b="20")["market_id"]
    user = api.create_user("1000")
    totals = [0, 0, 0, 0]

    quote = api.quote(market_id, side="BUY", outcome="C", shares="12.5")
    assert quote.status_code == 200, quote.text
    assert_quote(quote.json())
    bought = api.buy(user, market_id, "C", "12.5")
    assert_trade(bought)
    assert {k: quote.json()[k] for k in QUOTE_KEYS} == {k: bought[k] for k in QUOTE_KEYS}
    assert bought["cost"] == units(reference_n.buy_cost(totals, 2, 12_500_000, b).ceil())
    totals[2] += 12_500_000
    assert bought["prices"] == expected_prices(labels, totals, b)
    assert (bought["price_yes"], bought["price_no"]) == (None, None) and bought["outcome"] == "C"

    r = api.trade(user, market_id, "SELL", "C", shares="4")
    assert r.status_code == 201, r.text
    sold = r.json()
    assert_trade(sold)
    assert sold["cost"] == units(reference_n.sell_proceeds(totals, 2, 4_000_000, b).floor())
    totals[2] -= 4_000_000
    assert sold["prices"] == expected_prices(labels, totals, b)

    r = api.trade(user, market_id, "BUY", "A", amount="3")
    assert r.status_code == 201, r.text
    by_amount = r.json()
    shares = micro(by_amount["shares"])
    assert reference_n.buy_cost(totals, 0, shares, b).ceil() <= 3_000_000
    assert reference_n.buy_cost(totals, 0, shares + 1, b).ceil() > 3_000_000
    totals[0] += shares

    market = api.market(market_id)
    assert_market(market)
    assert market["outcomes"] == [{"outcome": label, "shares": units(q), "price": p}
                                  for (label, p), q in zip(expected_prices(labels, totals, b).items(), totals,
                                                           strict=True)]
    positions = {p["outcome"]: p for p in api.me(user)["positions"] if p["market_id"] == market_id}
    assert {k: p["shares"] for k, p in positions.items()} == {"A": by_amount["shares"], "C": "8.500000"}
    assert positions["C"]["net_cost"] == fmt(dec(bought["cost"]) - dec(sold["cost"]))

    history = api.wait_history(market_id, {bought["trade_id"], sold["trade_id"], by_amount["trade_id"]})
    assert [t["trade_id"] for t in history] == [by_amount["trade_id"], sold["trade_id"], bought["trade_id"]]
    for recorded, answered in zip(history, (by_amount, sold, bought), strict=True):
        assert recorded == answered
    mine = api.request("GET", "/v1/me/trades", token=user.api_key, params={"market_id": market_id}).json()
    assert mine["trades"] == history


def test_a_label_the_market_lacks_is_422_after_404_and_409_and_changes_nothing(api: Api) -> None:
    market_id = create_labelled(api, ["Red", "Green", "Blue"])["market_id"]
    created = create_labelled(api, ["Red", "Green", "Blue"], open=False)["market_id"]
    user = api.create_user("100")
    api.buy(user, market_id, "Red", "2")
    before = rejected_state(api, user, market_id)
    for label in ("Yellow", "YES", "red"):
        assert_error(api.trade(user, market_id, "BUY", label, shares="1"), 422, "VALIDATION_ERROR")
        assert_error(api.quote(market_id, side="BUY", outcome=label, shares="1"), 422, "VALIDATION_ERROR")
    assert rejected_state(api, user, market_id) == before
    # A malformed label is the request's shape (422 before the id); a well-formed one an unknown market lacks, 404.
    ghost = unique("ghost")
    assert_error(api.trade(user, ghost, "BUY", "no such", shares="1"), 422, "VALIDATION_ERROR")
    assert_error(api.quote(ghost, side="BUY", outcome="x" * 33, shares="1"), 422, "VALIDATION_ERROR")
    assert_error(api.trade(user, ghost, "BUY", "Yellow", shares="1"), 404, "NOT_FOUND")
    assert_error(api.quote(ghost, side="BUY", outcome="Yellow", shares="1"), 404, "NOT_FOUND")
    # The market's state (409) before the business rule that the label is not the market's.
    assert_error(api.trade(user, created, "BUY", "Yellow", shares="1"), 409, "MARKET_NOT_OPEN")
    assert_error(api.quote(created, side="BUY", outcome="Yellow", shares="1"), 409, "MARKET_NOT_OPEN")
    # Resolving with a label the market lacks is refused likewise.
    for body in ({"outcome": "YES"}, {"probabilities": {"Red": "0.5", "Green": "0.5"}},
                 {"probabilities": {"Red": "0.5", "Green": "0.25", "Blue": "0.25", "Pink": "0"}}):
        assert_error(api.admin("POST", f"/v1/markets/{market_id}/resolve", json=body), 422, "VALIDATION_ERROR")
    assert rejected_state(api, user, market_id) == before


def test_selling_all_of_a_label_the_market_lacks_is_a_validation_error(api: Api) -> None:
    market_id = create_labelled(api, ["Red", "Green", "Blue"])["market_id"]
    user = api.create_user("100")
    before = rejected_state(api, user, market_id)
    assert_error(api.trade(user, market_id, "SELL", "Yellow", shares="all"), 422, "VALIDATION_ERROR")
    assert rejected_state(api, user, market_id) == before


@pytest.mark.parametrize("outcomes", [
    ["Solo"], [f"L{i}" for i in range(17)], ["A", "B", "A"], ["A", "CANCEL"], ["PROB", "B"], ["A", "b c"],
    ["A", "x" * 33], ["A", "é"], [], "A,B", ["A", 1], {"A": 1},
], ids=lambda o: repr(o)[:30])
def test_bad_label_lists_at_creation_are_422_and_change_nothing(api: Api, outcomes: object) -> None:
    market_id = unique("mkt")
    api.deposit("house", "100")
    house, last = api.account("house")["available"], api.stack.last_event_id()
    body = {"name": "Bad", "liquidity_b": "10", "market_id": market_id, "outcomes": outcomes}
    assert_error(api.admin("POST", "/v1/markets", json=body), 422, "VALIDATION_ERROR")
    assert (api.account("house")["available"], api.stack.last_event_id()) == (house, last)
    assert_error(api.request("GET", f"/v1/markets/{market_id}"), 404, "NOT_FOUND")


def test_sixteen_labels_are_served(api: Api) -> None:
    labels = [f"L{i:02d}" for i in range(16)]
    market = create_labelled(api, labels, b="5")
    assert market["pool"] == units(reference_n.subsidy(5_000_000, 16))
    user = api.create_user("100")
    trade = api.buy(user, market["market_id"], "L15", "1")
    assert list(trade["prices"]) == labels
    assert trade["prices"] == expected_prices(labels, [0] * 15 + [1_000_000], 5_000_000)


def holders(api: Api, market_id: str, buys: dict[str, list[tuple[str, str]]]) -> dict[str, User]:
    """Users named by ``buys``, each buying (label, shares) in turn."""
    users = {}
    for name, orders in buys.items():
        users[name] = api.create_user("100")
        for label, shares in orders:
            api.buy(users[name], market_id, label, shares)
    return users


def test_an_outcome_resolution_with_a_label_pays_its_holders(api: Api) -> None:
    market_id = create_labelled(api, ["Ann", "Ben", "Cat"])["market_id"]
    users = holders(api, market_id, {"ann": [("Ann", "5")], "ben": [("Ben", "3")],
                                     "both": [("Ben", "2"), ("Cat", "4")]})
    before = {name: dec(api.account(u.user_id)["available"]) for name, u in users.items()}
    pool = dec(api.market(market_id)["pool"])
    r = api.admin("POST", f"/v1/markets/{market_id}/resolve", json={"outcome": "Ben"})
    assert r.status_code == 200, r.text
    market = r.json()
    assert_market(market)
    assert (market["status"], market["outcome"], market["resolution"]) == (
        "RESOLVED", "Ben", {"type": "OUTCOME", "outcome": "Ben"})
    house = dec(api.account("house")["available"])
    r = api.admin("POST", f"/v1/markets/{market_id}/settle")
    assert r.status_code == 200, r.text
    settled = r.json()
    assert_market(settled["market"])
    assert (settled["payouts_total"], settled["holders_paid"]) == ("5.000000", 2)
    paid = {name: dec(api.account(u.user_id)["available"]) - before[name] for name, u in users.items()}
    assert paid == {"ann": 0, "ben": 3, "both": 2}
    assert dec(api.account("house")["available"]) == house + pool - 5
    assert settled["market"]["status"] == "SETTLED" and dec(settled["market"]["pool"]) == 0


def test_prob_and_cancel_resolutions_of_a_labelled_market(api: Api) -> None:
    prob_id = create_labelled(api, ["X", "Y", "Z"])["market_id"]
    users = holders(api, prob_id, {"x": [("X", "3.333333")], "yz": [("Y", "2"), ("Z", "1.5")]})
    before = {name: dec(api.account(u.user_id)["available"]) for name, u in users.items()}
    r = api.admin("POST", f"/v1/markets/{prob_id}/resolve",
                  json={"probabilities": {"Z": "0.5", "X": 0.3, "Y": "0.2"}})
    assert r.status_code == 200, r.text
    assert_market(r.json())
    assert r.json()["resolution"] == {"type": "PROB",
                                      "probabilities": {"X": "0.300000", "Y": "0.200000", "Z": "0.500000"}}
    r = api.admin("POST", f"/v1/markets/{prob_id}/settle")
    assert r.status_code == 200, r.text
    expected = {"x": floor6(Decimal("0.3") * Decimal("3.333333")),
                "yz": floor6(Decimal("0.2") * 2 + Decimal("0.5") * Decimal("1.5"))}
    assert {name: dec(api.account(u.user_id)["available"]) - before[name] for name, u in users.items()} == expected
    assert dec(r.json()["payouts_total"]) == sum(expected.values())

    cancel_id = create_labelled(api, ["P", "Q", "R"])["market_id"]
    buyer, exited = api.create_user("100"), api.create_user("100")
    cost = dec(api.buy(buyer, cancel_id, "Q", "6")["cost"])
    paid = dec(api.buy(exited, cancel_id, "R", "4")["cost"])
    r = api.trade(exited, cancel_id, "SELL", "R", shares="all")
    assert r.status_code == 201, r.text
    net = paid - dec(r.json()["cost"])
    before_cancel = {u.user_id: dec(api.account(u.user_id)["available"]) for u in (buyer, exited)}
    r = api.admin("POST", f"/v1/markets/{cancel_id}/resolve", json={"cancel": True})
    assert r.status_code == 200, r.text
    assert (r.json()["outcome"], r.json()["resolution"]) == ("CANCEL", {"type": "CANCEL"})
    r = api.admin("POST", f"/v1/markets/{cancel_id}/settle")
    assert r.status_code == 200, r.text
    assert dec(api.account(buyer.user_id)["available"]) == before_cancel[buyer.user_id] + cost
    assert dec(api.account(exited.user_id)["available"]) == before_cancel[exited.user_id] + net
    assert dec(r.json()["payouts_total"]) == cost + net


def test_the_trader_s_positions_name_labels_and_value_them_by_lmsr(api: Api) -> None:
    labels, b = ["Up", "Flat", "Down"], 10_000_000
    market_id = create_labelled(api, labels)["market_id"]
    user = api.create_user("100")
    bought = api.buy(user, market_id, "Down", "4")
    api.buy(user, market_id, "Up", "1")
    r = api.request("GET", "/v1/me/positions", token=user.api_key)
    assert r.status_code == 200, r.text
    mine = {p["outcome"]: p for p in r.json()["positions"] if p["market_id"] == market_id}
    assert set(mine) == {"Up", "Down"}
    totals = [1_000_000, 0, 4_000_000]
    down = mine["Down"]
    assert (down["shares"], down["net_cost"], down["status"]) == ("4.000000", bought["cost"], "OPEN")
    assert down["price"] == expected_prices(labels, totals, b)["Down"]
    assert down["value"] == units(reference_n.sell_proceeds(totals, 2, 4_000_000, b).floor())
    assert down["pnl"] == fmt(dec(down["value"]) - dec(down["net_cost"]))


def test_candles_of_a_label(api: Api) -> None:
    labels, b = ["Up", "Flat", "Down"], 10_000_000
    market_id = create_labelled(api, labels)["market_id"]
    user = api.create_user("100")
    bought = api.buy(user, market_id, "Down", "4")
    api.buy(user, market_id, "Up", "1")
    api.stack.wait_persisted()
    for label, k in (("Down", 2), ("Flat", 1)):
        r = api.request("GET", f"/v1/markets/{market_id}/candles", params={"outcome": label, "interval": "1d"})
        assert r.status_code == 200, r.text
        [candle] = r.json()["candles"]
        final = expected_prices(labels, [1_000_000, 0, 4_000_000], b)[label]
        assert (candle["open"], candle["close"], candle["trades"]) == (bought["prices"][label], final, 2), k
    assert_error(api.request("GET", f"/v1/markets/{market_id}/candles", params={"outcome": "YES", "interval": "1d"}),
                 422, "VALIDATION_ERROR")


def test_a_yes_no_market_keeps_its_fields_and_lists_its_prices(api: Api) -> None:
    market_id = api.create_market("10")
    user = api.create_user("100")
    trade = api.buy(user, market_id, "NO", "2")
    assert_trade(trade)
    assert trade["prices"] == {"YES": trade["price_yes"], "NO": trade["price_no"]}
    market = api.market(market_id)
    assert_market(market)
    assert market["no_shares"] == "2.000000" and market["price_no"] == trade["price_no"]
    quote = api.quote(market_id, side="SELL", outcome="NO", shares="1").json()
    assert_quote(quote)
    assert [t["prices"] for t in api.wait_history(market_id, {trade["trade_id"]})] == [trade["prices"]]


def test_a_keyed_and_a_durable_trade_of_a_label_answer_the_same_body(api: Api) -> None:
    market_id = create_labelled(api, ["One", "Two", "Three"])["market_id"]
    user = api.create_user("100")
    key = {"Idempotency-Key": unique("key")}
    first = api.trade(user, market_id, "BUY", "Two", shares="3", headers=key)
    assert first.status_code == 201, first.text
    again = api.trade(user, market_id, "BUY", "Two", shares="3", headers=key, replica=1)
    assert (again.status_code, again.json()) == (201, first.json())
    assert_error(api.trade(user, market_id, "BUY", "Three", shares="3", headers=key), 409, "IDEMPOTENCY_KEY_REUSED")
    durable = api.trade(user, market_id, "SELL", "Two", shares="1", headers={"Prefer": "durable=postgres"})
    assert durable.status_code == 201 and durable.headers["Preference-Applied"] == "durable=postgres", durable.text
    assert_trade(durable.json())
    recorded = api.history(market_id)
    assert recorded == [durable.json(), first.json()]


async def test_public_events_of_a_labelled_market_carry_every_label(api: Api, api_stack: Stack) -> None:
    labels = ["North", "South", "East", "West"]
    market_id = create_labelled(api, labels)["market_id"]
    user = api.create_user("100")
    async with sse(api_stack.url, (market_id,)) as public:
        trade = await atrade(api_stack, user, market_id, "BUY", "East", "2")
        executed, updated = await public.next(), await public.next()
    assert (executed.event, updated.event) == ("TradeExecuted", "PriceUpdated")
    assert executed.data["outcome"] == "East" and "user_id" not in executed.data and "available" not in executed.data
    assert json.loads(executed.data["prices"]) == trade["prices"]
    assert json.loads(updated.data["prices"]) == trade["prices"]
    assert json.loads(updated.data["shares"]) == {"North": "0.000000", "South": "0.000000", "East": "2.000000",
                                                  "West": "0.000000"}
    assert "price_yes" not in executed.data and "price_yes" not in updated.data


def test_settled_positions_of_a_labelled_market_show_realized_pnl_by_label(api: Api) -> None:
    market_id = create_labelled(api, ["Ant", "Bee", "Cow"])["market_id"]
    user = api.create_user("100")
    ant = api.buy(user, market_id, "Ant", "6")
    bee = api.buy(user, market_id, "Bee", "2")
    r = api.trade(user, market_id, "SELL", "Bee", shares="all")
    assert r.status_code == 201, r.text
    bee_net = dec(bee["cost"]) - dec(r.json()["cost"])
    assert api.admin("POST", f"/v1/markets/{market_id}/resolve", json={"outcome": "Ant"}).status_code == 200
    assert api.admin("POST", f"/v1/markets/{market_id}/settle").status_code == 200
    api.stack.wait_persisted()
    r = api.request("GET", "/v1/me/positions", token=user.api_key)
    assert r.status_code == 200, r.text
    settled = {p["outcome"]: p for p in r.json()["positions"] if p["market_id"] == market_id}
    assert {label: (p["status"], p["net_cost"], p["price"], p["value"], p["realized_pnl"])
            for label, p in settled.items()} == {
        "Ant": ("SETTLED", ant["cost"], "1.000000", "6.000000", fmt(6 - dec(ant["cost"]))),
        "Bee": ("SETTLED", fmt(bee_net), "0.000000", "0.000000", fmt(-bee_net)),
    }
