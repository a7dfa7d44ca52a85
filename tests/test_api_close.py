"""Close times over HTTP (contract, "Markets with more outcomes, close times, other resolutions": **Create**,
**Close**): ``close_time`` on creation, ``POST /v1/markets/{id}/close``, and trades and quotes answering
``409 MARKET_NOT_OPEN`` once a market is CLOSED, on either replica, with one public ``MarketClosed`` event.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.support.api import Api, assert_error, assert_market, assert_timestamp, fmt, subsidy, unique
from tests.support.event_streams import sse
from tests.support.waiting import wait_for


def create(api: Api, **fields: object) -> httpx.Response:
    api.deposit("house", fmt(subsidy("100")))
    return api.admin("POST", "/v1/markets", json={"name": "Closes", "liquidity_b": "100", **fields})


def in_future(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_a_market_with_a_close_time_shows_it_and_its_outcomes(api: Api) -> None:
    r = create(api, close_time="2099-01-02T03:04:05.5+01:00", outcomes=["YES", "NO"])
    assert r.status_code == 201, r.text
    market = r.json()
    assert_market(market)
    assert market["close_time"] == "2099-01-02T02:04:05.500000Z"
    assert [o["outcome"] for o in market["outcomes"]] == ["YES", "NO"]
    plain = api.market(api.create_market())
    assert_market(plain)
    assert plain["close_time"] is None


@pytest.mark.parametrize("fields", [
    {"close_time": "2000-01-01T00:00:00Z"},          # in the past
    {"close_time": "2099-01-01T00:00:00"},           # no zone
    {"close_time": "tomorrow"},
    {"close_time": "2099-13-01T00:00:00Z"},          # no such month
    {"close_time": 4102444800},                      # a number, not RFC 3339 text
    {"outcomes": ["YES"]},
    {"outcomes": ["YES", "YES"]},
    {"outcomes": ["YES", "CANCEL"]},
    {"outcomes": ["YES", "no spaces"]},
    {"outcomes": "YES,NO"},
])
def test_bad_close_times_and_outcome_lists_are_refused_and_change_nothing(api: Api, fields: dict[str, object]) -> None:
    market_id = unique("mkt")
    house = api.account("house")["available"]
    r = api.admin("POST", "/v1/markets", json={"name": "Bad", "liquidity_b": "100", "market_id": market_id, **fields})
    assert_error(r, 422, "VALIDATION_ERROR")
    assert api.account("house")["available"] == house
    assert_error(api.request("GET", f"/v1/markets/{market_id}"), 404, "NOT_FOUND")


def test_the_admin_closes_a_market_and_both_replicas_refuse_trades_and_quotes(api: Api) -> None:
    user = api.create_user("1000")
    market_id = api.create_market()
    api.buy(user, market_id, "YES", "5", replica=1)

    assert_error(api.request("POST", f"/v1/markets/{market_id}/close"), 401, "UNAUTHENTICATED")
    assert_error(api.request("POST", f"/v1/markets/{market_id}/close", token=user.api_key), 403, "FORBIDDEN")
    r = api.admin("POST", f"/v1/markets/{market_id}/close", replica=1)
    assert r.status_code == 200, r.text
    assert_market(r.json())
    assert r.json()["status"] == "CLOSED" and r.json()["outcome"] is None

    for replica in (0, 1):
        assert api.market(market_id, replica=replica)["status"] == "CLOSED"
        assert_error(api.trade(user, market_id, "SELL", "YES", shares="1", replica=replica), 409, "MARKET_NOT_OPEN")
        r = api.request("GET", f"/v1/markets/{market_id}/quote", replica=replica,
                        params={"side": "BUY", "outcome": "NO", "shares": "1"})
        assert_error(r, 409, "MARKET_NOT_OPEN")
    assert_error(api.admin("POST", f"/v1/markets/{market_id}/close"), 409, "INVALID_STATE")
    assert_error(api.admin("POST", f"/v1/markets/{unique('mkt')}/close"), 404, "NOT_FOUND")
    listed = api.request("GET", "/v1/markets", params={"status": "CLOSED"}).json()["markets"]
    assert market_id in {m["market_id"] for m in listed}
    # Resolution follows a close as it follows OPEN.
    assert api.resolve(market_id, "YES")["status"] == "RESOLVED"


async def test_a_close_time_stops_trading_with_one_public_market_closed_event(api: Api) -> None:
    user = api.create_user("1000")
    r = create(api, close_time=in_future(1.5), market_id=unique("mkt"))
    assert r.status_code == 201, r.text
    market_id = r.json()["market_id"]
    close_at = assert_timestamp(r.json()["close_time"])
    assert api.admin("POST", f"/v1/markets/{market_id}/open").status_code == 200
    async with sse(api.stack.urls[0], market_ids=(market_id,)) as stream:
        traded = api.buy(user, market_id, "NO", "2", replica=1)
        assert assert_timestamp(traded["created_at"]) < close_at

        def refused() -> bool:
            r = api.trade(user, market_id, "BUY", "NO", shares="1", replica=0)
            if r.status_code == 201:
                assert assert_timestamp(r.json()["created_at"]) < close_at
                return False
            assert_error(r, 409, "MARKET_NOT_OPEN")
            return True

        wait_for(refused, 15, "a trade refused after the close time", interval_s=0.1)
        kinds = []
        while "MarketClosed" not in kinds:
            message = await stream.next()
            kinds.append(message.event)
            if message.event == "MarketClosed":
                assert message.data["market_id"] == market_id
    market = api.market(market_id, replica=1)
    assert market["status"] == "CLOSED" and market["close_time"] == r.json()["close_time"]
    assert_error(api.trade(user, market_id, "BUY", "YES", shares="1", replica=1), 409, "MARKET_NOT_OPEN")
