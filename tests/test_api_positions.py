"""GET /v1/me/positions: each position valued now, profit and loss, realized profit, totals.

Recomputed independently: shares and net cost from the trades' acknowledgements, values from the
50-digit reference LMSR (tests/support/reference.py) on the market's state as GET /v1/markets/{id}
shows it, floored as a SELL is; settled markets from what settlement paid.
"""

from __future__ import annotations

import re
from collections import defaultdict
from decimal import Decimal
from typing import Any

from tests.support import reference
from tests.support.api import Api, User, assert_error

MICRO = 1_000_000


SIGNED = re.compile(r"^-?[0-9]+\.[0-9]{6}$")


def micro(value: str) -> int:
    """A signed 6-decimal string (net cost and P&L may be negative) as micro-units."""
    assert isinstance(value, str) and SIGNED.fullmatch(value), value
    return int(Decimal(value) * MICRO)


def positions(api: Api, user: User, replica: int = 0) -> dict[str, Any]:
    r = api.request("GET", "/v1/me/positions", token=user.api_key, replica=replica)
    assert r.status_code == 200, r.text
    return dict(r.json())


def trade(api: Api, user: User, market_id: str, side: str, outcome: str, shares: str, replica: int,
          book: dict[tuple[str, str], list[int]]) -> None:
    r = api.trade(user, market_id, side, outcome, shares=shares, replica=replica)
    assert r.status_code == 201, r.text
    done = r.json()
    held, cost = book[(market_id, outcome)]
    sign = 1 if side == "BUY" else -1
    book[(market_id, outcome)] = [held + sign * micro(done["shares"]), cost + sign * micro(done["cost"])]


def test_positions_are_valued_now_with_exact_lmsr_proceeds(api: Api) -> None:
    user, other = api.create_user("5000"), api.create_user("5000")
    m1, m2 = api.create_market("150"), api.create_market("80")
    book: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    trade(api, user, m1, "BUY", "YES", "10", 0, book)
    trade(api, user, m1, "BUY", "NO", "5.5", 1, book)
    trade(api, user, m1, "SELL", "YES", "3.25", 0, book)
    trade(api, user, m2, "BUY", "YES", "20", 1, book)
    api.buy(other, m2, "YES", "40")  # the price rises: the user's exit is at a profit
    trade(api, user, m2, "SELL", "YES", "20", 0, book)
    api.buy(other, m1, "NO", "12")  # moves m1 after the user's last trade there

    for replica in (0, 1):
        answer = positions(api, user, replica)
        got = {(p["market_id"], p["outcome"]): p for p in answer["positions"]}
        assert set(got) == set(book)  # the exited position stays: its net cost is its profit
        total_value = total_cost = 0
        for (market_id, outcome), (held, net_cost) in book.items():
            market = api.market(market_id)
            q_yes, q_no, b = micro(market["yes_shares"]), micro(market["no_shares"]), micro(market["liquidity_b"])
            mine, theirs = (q_yes, q_no) if outcome == "YES" else (q_no, q_yes)
            value = reference.sell_proceeds(mine, theirs, held, b).floor() if held else 0
            p = got[(market_id, outcome)]
            assert p["status"] == "OPEN" and p["realized_pnl"] is None, p
            assert (micro(p["shares"]), micro(p["net_cost"]), micro(p["value"]), micro(p["pnl"])) == \
                (held, net_cost, value, value - net_cost), (market_id, outcome, p)
            assert p["price"] == market["price_yes" if outcome == "YES" else "price_no"]
            total_value, total_cost = total_value + value, total_cost + net_cost
        exit_ = got[(m2, "YES")]
        assert micro(exit_["shares"]) == 0 and micro(exit_["pnl"]) > 0  # sold higher than bought
        totals = answer["totals"]
        assert (micro(totals["value"]), micro(totals["net_cost"]), micro(totals["pnl"]),
                micro(totals["realized_pnl"])) == (total_value, total_cost, total_value - total_cost, 0)
        assert answer["available"] == api.account(user.user_id)["available"]  # nothing traded since
        assert answer["locked"] == "0.000000"


def test_resolved_then_settled_positions_show_the_payout_and_realized_pnl(api: Api) -> None:
    user = api.create_user("1000")
    market_id = api.create_market("100")
    book: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    trade(api, user, market_id, "BUY", "YES", "10", 0, book)
    trade(api, user, market_id, "BUY", "NO", "4", 1, book)
    trade(api, user, market_id, "SELL", "NO", "1", 0, book)
    api.resolve(market_id, "YES")
    (yes_held, yes_cost), (_, no_cost) = book[(market_id, "YES")], book[(market_id, "NO")]

    resolved = {p["outcome"]: p for p in positions(api, user)["positions"]}
    assert {o: (p["status"], p["price"], micro(p["value"]), p["realized_pnl"]) for o, p in resolved.items()} == {
        "YES": ("RESOLVED", "1.000000", yes_held, None), "NO": ("RESOLVED", "0.000000", 0, None)}

    r = api.admin("POST", f"/v1/markets/{market_id}/settle")
    assert r.status_code == 200, r.text
    api.stack.wait_persisted()
    for replica in (0, 1):
        answer = positions(api, user, replica)
        settled = {p["outcome"]: p for p in answer["positions"] if p["market_id"] == market_id}
        assert {o: (p["status"], micro(p["shares"]), micro(p["net_cost"]), micro(p["value"]),
                    micro(p["realized_pnl"])) for o, p in settled.items()} == {
            "YES": ("SETTLED", 0, yes_cost, yes_held, yes_held - yes_cost),
            "NO": ("SETTLED", 0, no_cost, 0, -no_cost)}
        assert all(p["pnl"] == p["realized_pnl"] for p in settled.values())
        totals = answer["totals"]
        assert micro(totals["realized_pnl"]) == yes_held - yes_cost - no_cost
        assert (totals["value"], totals["net_cost"], totals["pnl"]) == ("0.000000",) * 3
        # The balance it pairs with has the payout in it.
        assert micro(answer["available"]) == 1000 * MICRO - yes_cost - no_cost + yes_held


def split(total: int, weights: dict[str, int]) -> dict[str, int]:
    """The contract leaves open how one per-user payment shows per position; the README's rule:
    pro rata to the weights, floored, the rest to the heaviest (the first of equals)."""
    whole = sum(weights.values())
    parts = {k: total * w // whole for k, w in weights.items()} if whole else {k: 0 for k in weights}
    if whole:
        parts[max(weights, key=lambda k: weights[k])] += total - sum(parts.values())
    return parts


def settle_and_read(api: Api, user: User, market_id: str) -> dict[str, Any]:
    r = api.admin("POST", f"/v1/markets/{market_id}/settle")
    assert r.status_code == 200, r.text
    api.stack.wait_persisted()
    return positions(api, user, replica=1)


def test_a_prob_resolution_values_positions_at_the_users_one_payout(api: Api) -> None:
    user = api.create_user("1000")
    market_id = api.create_market("100")
    book: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    trade(api, user, market_id, "BUY", "YES", "10.333333", 0, book)
    trade(api, user, market_id, "BUY", "NO", "7.777777", 1, book)
    r = api.admin("POST", f"/v1/markets/{market_id}/resolve",
                  json={"probabilities": {"YES": "0.333333", "NO": "0.666667"}})
    assert r.status_code == 200, r.text
    held = {o: book[(market_id, o)][0] for o in ("YES", "NO")}
    cost = {o: book[(market_id, o)][1] for o in ("YES", "NO")}
    p = {"YES": 333_333, "NO": 666_667}
    payout = sum(p[o] * held[o] for o in p) // MICRO
    values = split(payout, {o: p[o] * held[o] for o in p})

    resolved = {q["outcome"]: q for q in positions(api, user)["positions"] if q["market_id"] == market_id}
    assert {o: (q["status"], q["price"], micro(q["value"])) for o, q in resolved.items()} == {
        "YES": ("RESOLVED", "0.333333", values["YES"]), "NO": ("RESOLVED", "0.666667", values["NO"])}

    answer = settle_and_read(api, user, market_id)
    settled = {q["outcome"]: q for q in answer["positions"] if q["market_id"] == market_id}
    assert {o: (q["status"], micro(q["value"]), micro(q["realized_pnl"])) for o, q in settled.items()} == {
        o: ("SETTLED", values[o], values[o] - cost[o]) for o in p}
    assert micro(answer["available"]) == 1000 * MICRO - sum(cost.values()) + payout


def test_a_cancel_resolution_values_positions_at_the_refund(api: Api) -> None:
    user, whale = api.create_user("1000"), api.create_user("100000")
    market_id = api.create_market("50")
    book: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    trade(api, user, market_id, "BUY", "NO", "30", 0, book)
    api.buy(whale, market_id, "NO", "200")  # the user's NO rises: selling part of it is a profit
    trade(api, user, market_id, "SELL", "NO", "10", 1, book)
    trade(api, user, market_id, "BUY", "YES", "5", 0, book)
    r = api.admin("POST", f"/v1/markets/{market_id}/resolve", json={"cancel": True})
    assert r.status_code == 200, r.text
    cost = {o: book[(market_id, o)][1] for o in ("YES", "NO")}
    refund = max(0, sum(cost.values()))  # no scaling: nobody exited at a profit beyond the pool
    values = split(refund, {o: max(0, c) for o, c in cost.items()})

    resolved = {q["outcome"]: q for q in positions(api, user)["positions"] if q["market_id"] == market_id}
    assert {o: (q["status"], q["price"], micro(q["value"])) for o, q in resolved.items()} == {
        o: ("RESOLVED", "0.000000", values[o]) for o in cost}
    assert sum(micro(q["pnl"]) for q in resolved.values()) == refund - sum(cost.values())

    answer = settle_and_read(api, user, market_id)
    settled = {q["outcome"]: q for q in answer["positions"] if q["market_id"] == market_id}
    assert {o: (q["status"], micro(q["value"]), micro(q["realized_pnl"])) for o, q in settled.items()} == {
        o: ("SETTLED", values[o], values[o] - cost[o]) for o in cost}
    assert micro(answer["available"]) == 1000 * MICRO - sum(cost.values()) + refund


def test_positions_are_the_callers_own(api: Api) -> None:
    assert_error(api.admin("GET", "/v1/me/positions"), 403, "FORBIDDEN")
    assert_error(api.request("GET", "/v1/me/positions"), 401, "UNAUTHENTICATED")
    fresh = api.create_user("1")
    answer = positions(api, fresh)
    assert answer["positions"] == [] and answer["available"] == "1.000000"
    assert answer["totals"] == {"value": "0.000000", "net_cost": "0.000000", "pnl": "0.000000",
                                "realized_pnl": "0.000000"}
