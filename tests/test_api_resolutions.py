"""POST /v1/markets/{id}/resolve over HTTP: the three body forms, the market object's ``outcome`` and
``resolution``, refusals that change nothing, and who sees a ``Refund`` on the event streams."""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal
from typing import Any

import pytest

from tests.support.api import SHARDED, Api, Stack, assert_error, assert_market, dec
from tests.support.event_streams import Message, SseStream, atrade, sse
from tests.support.faults import evict_idle_users


def settle(api: Api, market_id: str) -> dict[str, Any]:
    r = api.admin("POST", f"/v1/markets/{market_id}/settle")
    assert r.status_code == 200, r.text
    assert_market(r.json()["market"])
    return dict(r.json())


def resolve(api: Api, market_id: str, body: dict[str, Any]) -> dict[str, Any]:
    r = api.admin("POST", f"/v1/markets/{market_id}/resolve", json=body)
    assert r.status_code == 200, r.text
    assert_market(r.json())
    return dict(r.json())


def available(api: Api, user_id: str) -> Decimal:
    return dec(api.account(user_id)["available"])


def without_reads(market: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in market.items() if k != "last_updated"}


@pytest.mark.parametrize("body", [
    {},
    {"outcome": "YES", "cancel": True},
    {"outcome": "YES", "probabilities": {"YES": "1", "NO": "0"}},
    {"outcome": "MAYBE"},
    {"outcome": "PROB"},
    {"outcome": "CANCEL"},
    {"outcome": None},
    {"cancel": False},
    {"cancel": "true"},
    {"probabilities": {"YES": "0.5", "NO": "0.4"}},
    {"probabilities": {"YES": "0.5", "NO": "0.500001"}},
    {"probabilities": {"YES": "1"}},
    {"probabilities": {"YES": "0.5", "NO": "0.5", "MAYBE": "0"}},
    {"probabilities": {"YES": "1.5", "NO": "-0.5"}},
    {"probabilities": {"YES": "0.1234567", "NO": "0.8765433"}},
    {"probabilities": {"YES": True, "NO": "0"}},
    {"probabilities": ["YES", "NO"]},
    {"probabilities": {}},
    {"cancel": True, "reason": "ill-posed"},
], ids=lambda body: str(body))
def test_a_resolve_body_not_exactly_one_valid_form_is_422_and_changes_nothing(
        api: Api, body: dict[str, Any]) -> None:
    market_id = api.create_market("10")
    user = api.create_user("100")
    api.buy(user, market_id, "YES", "3")
    before = api.market(market_id)
    assert_error(api.admin("POST", f"/v1/markets/{market_id}/resolve", json=body), 422, "VALIDATION_ERROR")
    after = api.market(market_id)
    assert without_reads(after) == without_reads(before) and after["status"] == "OPEN"
    assert after["resolution"] is None and after["outcome"] is None


def test_an_outcome_resolution_names_its_label(api: Api) -> None:
    market_id = api.create_market("10")
    market = resolve(api, market_id, {"outcome": "NO"})
    assert (market["status"], market["outcome"]) == ("RESOLVED", "NO")
    assert market["resolution"] == {"type": "OUTCOME", "outcome": "NO"}


def test_prob_over_http_pays_each_holder_the_floor_of_its_weighted_shares(api: Api) -> None:
    market_id = api.create_market("20")
    yes, no, both = api.create_user("100"), api.create_user("100"), api.create_user("100")
    api.buy(yes, market_id, "YES", "7.333333")
    api.buy(no, market_id, "NO", "5")
    api.buy(both, market_id, "YES", "1.000001")
    api.buy(both, market_id, "NO", "2.5")
    before = {u.user_id: available(api, u.user_id) for u in (yes, no, both)}
    pool = dec(api.market(market_id)["pool"])

    market = resolve(api, market_id, {"probabilities": {"NO": 0.75, "YES": "0.25"}})  # a number and a string
    assert (market["status"], market["outcome"]) == ("RESOLVED", "PROB")
    assert market["resolution"] == {"type": "PROB", "probabilities": {"YES": "0.250000", "NO": "0.750000"}}
    settled = settle(api, market_id)

    def floor6(value: Decimal) -> Decimal:
        return value.quantize(Decimal("0.000001"), rounding=ROUND_FLOOR)

    p = {"YES": Decimal("0.25"), "NO": Decimal("0.75")}
    expected = {yes.user_id: floor6(p["YES"] * Decimal("7.333333")), no.user_id: floor6(p["NO"] * 5),
                both.user_id: floor6(p["YES"] * Decimal("1.000001") + p["NO"] * Decimal("2.5"))}
    for user_id, paid in expected.items():
        assert available(api, user_id) == before[user_id] + paid, user_id
    assert dec(settled["payouts_total"]) == sum(expected.values())
    assert settled["market"]["status"] == "SETTLED" and settled["market"]["resolution"] == market["resolution"]
    assert dec(settled["market"]["pool"]) == 0 and pool >= sum(expected.values())


async def until_settled(stream: SseStream, market_id: str) -> list[Message]:
    """Messages up to and including the market's MarketSettled (the last event of its settlement)."""
    got = [await stream.next()]
    while not (got[-1].event == "MarketSettled" and got[-1].data.get("market_id") == market_id):
        got.append(await stream.next())
    return got


async def test_cancel_over_http_refunds_net_costs_and_each_refund_reaches_only_its_user(
        api: Api, api_stack: Stack) -> None:
    market_id = api.create_market("20")
    me, other, out = api.create_user("100"), api.create_user("100"), api.create_user("100")
    mine = await atrade(api_stack, me, market_id, "BUY", "YES", "6")
    theirs = await atrade(api_stack, other, market_id, "BUY", "NO", "4")
    bought = await atrade(api_stack, out, market_id, "BUY", "NO", "3")
    sold = await atrade(api_stack, out, market_id, "SELL", "NO", "3")  # sold out, at a loss: still refunded
    refunds = {me.user_id: dec(mine["cost"]), other.user_id: dec(theirs["cost"]),
               out.user_id: dec(bought["cost"]) - dec(sold["cost"])}
    assert refunds[out.user_id] > 0 and sum(refunds.values()) <= dec(api.market(market_id)["pool"])
    before = {u: available(api, u) for u in refunds}

    async with sse(api_stack.urls[1], token=me.api_key, path="/v1/me/events") as my_stream, \
            sse(api_stack.url, token=other.api_key, path="/v1/me/events") as their_stream, \
            sse(api_stack.url) as public, sse(api_stack.urls[1], token=api.admin_token) as admin:
        market = resolve(api, market_id, {"cancel": True})
        assert (market["outcome"], market["resolution"]) == ("CANCEL", {"type": "CANCEL"})
        settled = settle(api, market_id)
        seen = {name: await until_settled(stream, market_id) for name, stream in (
            ("me", my_stream), ("other", their_stream), ("public", public), ("admin", admin))}

    for user_id, refund in refunds.items():
        assert available(api, user_id) == before[user_id] + refund, user_id
    assert dec(settled["payouts_total"]) == sum(refunds.values())
    assert settled["holders_paid"] == 3

    def refunds_in(messages: list[Message]) -> dict[str, dict[str, Any]]:
        return {m.data["user_id"]: m.data for m in messages if m.event == "Refund"}

    assert set(refunds_in(seen["me"])) == {me.user_id}
    assert set(refunds_in(seen["other"])) == {other.user_id}
    assert refunds_in(seen["public"]) == {}
    assert set(refunds_in(seen["admin"])) == set(refunds)
    for name, user in (("me", me), ("other", other)):
        event = refunds_in(seen[name])[user.user_id]
        assert (event["market_id"], dec(event["amount"])) == (market_id, refunds[user.user_id])
        if not SHARDED:  # over shards an event's balance is the sub-wallet's in its shard (docs/SCALING.md)
            assert dec(event["available"]) == before[user.user_id] + refunds[user.user_id]  # whole: with the balance
    resolved = [m.data for m in seen["public"] if m.event == "MarketResolved"]
    assert resolved == [{k: v for k, v in resolved[0].items() if k in {"type", "ts", "market_id", "outcome"}}]
    assert resolved[0]["outcome"] == "CANCEL"


def test_a_refund_owed_to_an_evicted_user_loads_it_and_pays_it(api: Api, api_stack: Stack) -> None:
    """A user who sold out holds nothing, so the hot set may evict it; CANCEL still owes it its net cost:
    settlement loads it from PostgreSQL and refunds it (once: settling again is refused)."""
    market_id = api.create_market("10")
    out, holder = api.create_user("100"), api.create_user("100")
    bought = api.buy(out, market_id, "YES", "4")
    api.buy(holder, market_id, "NO", "6")  # YES falls: out sells at a loss
    sold = api.trade(out, market_id, "SELL", "YES", shares="4")
    assert sold.status_code == 201, sold.text
    refund = dec(bought["cost"]) - dec(sold.json()["cost"])
    assert refund > 0
    before = available(api, out.user_id)
    evict_idle_users(api_stack, out.user_id)
    resolve(api, market_id, {"cancel": True})
    settled = settle(api, market_id)
    assert available(api, out.user_id) == before + refund
    assert dec(settled["payouts_total"]) >= refund and settled["holders_paid"] == 2
    assert_error(api.admin("POST", f"/v1/markets/{market_id}/settle"), 409, "INVALID_STATE")
    assert available(api, out.user_id) == before + refund
