"""Price candles: recomputed independently from the trades and compared exactly.

Over real HTTP: trades through the API, the persister's candles once it has
written them, every outcome and interval; the parameters' errors. On the
persister's writer directly (trades at chosen times): several minutes, hours and
days with empty intervals between them, batches merged in any order and written
twice, the window ``[start, end)``, the 1,000-candle cap and paging back with ``end``.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from predmarket.api.candles import candle_query, read_candles
from predmarket.persister.events import Batch
from predmarket.persister.writer import write_batch
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.support.api import Api, assert_error, unique

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
INTERVALS = {"1m": 60, "5m": 300, "1h": 3600, "1d": 86400}
CANDLE_KEYS = {"start", "open", "high", "low", "close", "volume_shares", "volume_cost", "trades"}


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def six(value: Decimal) -> str:
    return f"{value:.6f}"


def reference(trades: Iterable[dict[str, Any]], outcome: str, interval_s: int) -> list[dict[str, Any]]:
    """Candles computed from trade objects (``created_at``, ``price_yes``/``price_no``, ``shares``, ``cost``)."""
    step = timedelta(seconds=interval_s)
    buckets: dict[datetime, list[dict[str, Any]]] = {}
    for t in trades:
        start = EPOCH + ((parse_time(t["created_at"]) - EPOCH) // step) * step
        buckets.setdefault(start, []).append(t)
    candles = []
    for start in sorted(buckets):
        group = sorted(buckets[start], key=lambda t: t["trade_id"])
        prices = [Decimal(t[f"price_{outcome.lower()}"]) for t in group]
        candles.append({
            "start": start.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "open": six(prices[0]), "high": six(max(prices)), "low": six(min(prices)), "close": six(prices[-1]),
            "volume_shares": six(sum((Decimal(t["shares"]) for t in group), Decimal(0))),
            "volume_cost": six(sum((Decimal(t["cost"]) for t in group), Decimal(0))),
            "trades": len(group),
        })
    return candles


# --------------------------------------------------------------------------- over HTTP

def candles(api: Api, market_id: str, **params: str) -> list[dict[str, Any]]:
    r = api.request("GET", f"/v1/markets/{market_id}/candles", params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"candles"}, body
    for c in body["candles"]:
        assert set(c) == CANDLE_KEYS, c
    return list(body["candles"])


def test_candles_of_trades_through_the_api_match_a_recomputation(api: Api) -> None:
    market_id = api.create_market(b="50")
    alice, bob = api.create_user("5000"), api.create_user("5000")
    assert candles(api, market_id, outcome="YES", interval="1m") == []  # a known market without trades
    ids = set()
    for user, side, outcome, shares in [
        (alice, "BUY", "YES", "10"), (bob, "BUY", "NO", "25.5"), (alice, "BUY", "YES", "3.000001"),
        (bob, "SELL", "NO", "5"), (alice, "SELL", "YES", "7"), (bob, "BUY", "YES", "40"),
        (alice, "BUY", "NO", "0.000001"), (bob, "SELL", "YES", "12.25"),
    ]:
        r = api.trade(user, market_id, side, outcome, shares=shares)
        assert r.status_code == 201, r.text
        ids.add(r.json()["trade_id"])
    trades = [t for t in api.wait_history(market_id, ids) if t["trade_id"] in ids]
    assert len(trades) == len(ids)
    for outcome in ("YES", "NO"):
        for interval, seconds in INTERVALS.items():
            got = candles(api, market_id, outcome=outcome, interval=interval)
            assert got == reference(trades, outcome, seconds), (outcome, interval)
            assert sum(c["trades"] for c in got) == len(ids)
    # The other replica reads the same record; a window that ends before the first trade is empty.
    first = min(parse_time(t["created_at"]) for t in trades)
    assert candles(api, market_id, outcome="NO", interval="1d") == reference(trades, "NO", 86400)
    before = (first - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert candles(api, market_id, outcome="YES", interval="1m", end=before) == []
    r = api.request("GET", f"/v1/markets/{market_id}/candles", params={"outcome": "YES", "interval": "1h"},
                    replica=1)
    assert r.status_code == 200 and r.json()["candles"] == reference(trades, "YES", 3600)


@pytest.mark.parametrize("params", [
    {"interval": "1m"},
    {"outcome": "MAY BE", "interval": "1m"},  # no label has a space
    {"outcome": "x" * 33, "interval": "1m"},  # nor 33 characters
    {"outcome": "CANCEL", "interval": "1m"},  # reserved
    {"outcome": "YES"},
    {"outcome": "YES", "interval": "2m"},
    {"outcome": "YES", "interval": "1M"},
    {"outcome": "YES", "interval": "1m", "start": "yesterday"},
    {"outcome": "YES", "interval": "1m", "start": "2026-12-06T10:00:00"},  # no offset
    {"outcome": "YES", "interval": "1m", "start": "2026-12-06T10:00:00 01:00"},  # an unencoded '+'
    {"outcome": "YES", "interval": "1m", "start": "2026-02-30T10:00:00Z"},
    {"outcome": "YES", "interval": "1m", "end": "0000-01-01T00:00:00Z"},
    {"outcome": "YES", "interval": "1m", "start": "0001-01-01T00:00:00+01:00"},
    {"outcome": "YES", "interval": "1m", "start": "1700000000"},
    {"outcome": "YES", "interval": "1m", "start": "2026-12-06T10:00:00Z", "end": "2026-12-06T10:00:00Z"},
    {"outcome": "YES", "interval": "1m", "start": "2026-12-06T11:00:00Z", "end": "2026-12-06T10:00:00+00:00"},
])
def test_bad_parameters_are_validation_errors(api: Api, params: dict[str, str]) -> None:
    market_id = api.create_market()
    assert_error(api.request("GET", f"/v1/markets/{market_id}/candles", params=params), 422, "VALIDATION_ERROR")
    # The request's shape is checked before the market's existence.
    assert_error(api.request("GET", f"/v1/markets/{unique('ghost')}/candles", params=params), 422,
                 "VALIDATION_ERROR")


@pytest.mark.parametrize("outcome", ["MAYBE", "yes"])
def test_a_well_formed_label_the_market_lacks_is_422_after_the_market_is_found(api: Api, outcome: str) -> None:
    params = {"outcome": outcome, "interval": "1m"}
    market_id = api.create_market()
    assert_error(api.request("GET", f"/v1/markets/{market_id}/candles", params=params), 422, "VALIDATION_ERROR")
    api.stack.wait_persisted()  # the record knows the market now: its labels are read from there
    assert_error(api.request("GET", f"/v1/markets/{market_id}/candles", params=params), 422, "VALIDATION_ERROR")
    assert_error(api.request("GET", f"/v1/markets/{unique('ghost')}/candles", params=params), 404, "NOT_FOUND")


def test_unknown_market_is_404_and_good_times_are_accepted(api: Api) -> None:
    ok = {"outcome": "NO", "interval": "5m"}
    assert_error(api.request("GET", f"/v1/markets/{unique('ghost')}/candles", params=ok), 404, "NOT_FOUND")
    assert_error(api.request("GET", "/v1/markets/bad%20id/candles", params=ok), 404, "NOT_FOUND")
    market_id = api.create_market()
    for start, end in [("2026-12-06T10:00:00Z", "2026-12-06T10:00:00.000001Z"),
                       ("2026-12-06t10:00:00.123456789z", "2026-12-07 10:00:00+05:30"),
                       ("1970-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z")]:
        assert candles(api, market_id, **ok, start=start, end=end) == []


def test_the_route_is_documented(api: Api) -> None:
    doc = api.request("GET", "/openapi.json").json()
    operation = doc["paths"]["/v1/markets/{market_id}/candles"]["get"]
    assert {p["name"] for p in operation["parameters"]} >= {"outcome", "interval", "start", "end"}
    assert "1,000" in operation["summary"] and "end" in operation["summary"]


# --------------------------------------------------------------------------- on the writer, at chosen times

def trade_row(trade_id: int, market_id: str, when: datetime, rng: random.Random) -> dict[str, Any]:
    yes = rng.randrange(1, 1_000_000)
    shares, cost = rng.randrange(1, 10**12), rng.randrange(0, 10**12)

    def dec(micro: int) -> str:
        return f"{micro // 10**6}.{micro % 10**6:06d}"

    return {
        "trade_id": trade_id, "event_id": f"{trade_id}-0", "user_id": "u1", "market_id": market_id,
        "side": rng.choice(["BUY", "SELL"]), "outcome": rng.choice(["YES", "NO"]), "shares": dec(shares),
        "price": dec(rng.randrange(0, 10**6)), "cost": dec(cost), "price_yes": dec(yes),
        "price_no": dec(10**6 - yes), "yes_shares": "0.000000", "no_shares": "0.000000", "pool": "0.000000",
        "created_at": when, "idempotency_key": None, "request_hash": None,
    }


def as_object(row: dict[str, Any]) -> dict[str, Any]:
    """A trade row as the API's trade object (what :func:`reference` reads)."""
    return {**row, "created_at": row["created_at"].isoformat()}


def write(database_url: str, batches: list[list[dict[str, Any]]]) -> None:
    engine = create_engine(database_url)
    try:
        for rows in batches:
            with engine.begin() as conn:
                write_batch(conn, Batch(trades=[dict(r) for r in rows]), {})
    finally:
        engine.dispose()


@pytest.fixture
async def pg(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url, pool_size=2)
    try:
        yield engine
    finally:
        await engine.dispose()


async def read(pg: AsyncEngine, market_id: str, outcome: str, interval: str, start: str | None = None,
               end: str | None = None) -> list[dict[str, Any]]:
    got, known = await read_candles(pg, market_id, candle_query(outcome, interval, start, end))
    assert known or not got
    return [dict(c) for c in got]


async def test_batches_in_any_order_and_written_twice_give_the_recomputed_candles(
        database_url: str, pg: AsyncEngine) -> None:
    rng = random.Random(16)
    base = datetime(2026, 3, 1, 23, 58, 30, tzinfo=UTC)
    rows: list[dict[str, Any]] = []
    # Bursts minutes, hours and days apart (so every interval has empty stretches), two markets interleaved.
    for trade_id in range(1, 401):
        burst = trade_id // 40
        when = base + timedelta(days=burst // 3, hours=burst * 5, minutes=burst * 7,
                                milliseconds=rng.randrange(0, 150_000))
        rows.append(trade_row(trade_id, rng.choice(["m-a", "m-b"]), when, rng))
    cuts = sorted(rng.sample(range(1, len(rows)), 12))
    batches = [rows[a:b] for a, b in zip([0, *cuts], [*cuts, len(rows)], strict=True)]
    rng.shuffle(batches)  # several persisters commit in any order
    write(database_url, batches + batches[:5])  # and redelivered batches write nothing twice
    for market_id in ("m-a", "m-b"):
        mine = [as_object(r) for r in rows if r["market_id"] == market_id]
        for outcome in ("YES", "NO"):
            for interval, seconds in INTERVALS.items():
                expected = reference(mine, outcome, seconds)
                assert await read(pg, market_id, outcome, interval) == expected, (market_id, outcome, interval)
                assert len(expected) > 1 and sum(c["trades"] for c in expected) == len(mine)
        # The window [start, end): the candle holding start comes whole; end excludes the candle starting there.
        all_1h = reference(mine, "YES", 3600)
        middle = parse_time(all_1h[2]["start"]) + timedelta(minutes=30)
        window = await read(pg, market_id, "YES", "1h", start=middle.isoformat(), end=all_1h[5]["start"])
        assert window == all_1h[2:5]
    assert await read(pg, "m-c", "YES", "1m") == []


async def test_at_most_1000_candles_the_newest_and_end_pages_back(database_url: str, pg: AsyncEngine) -> None:
    rng = random.Random(1000)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [trade_row(i, "m-many", base + timedelta(minutes=2 * i, seconds=rng.randrange(60)), rng)
            for i in range(1, 1_251)]
    write(database_url, [rows[i:i + 500] for i in range(0, len(rows), 500)])
    expected = reference([as_object(r) for r in rows], "NO", 60)
    assert len(expected) == 1_250
    newest = await read(pg, "m-many", "NO", "1m")
    assert newest == expected[-1000:]
    older = await read(pg, "m-many", "NO", "1m", end=newest[0]["start"])
    assert older == expected[:250]
    oldest = await read(pg, "m-many", "NO", "1m", start=expected[0]["start"], end=expected[10]["start"])
    assert oldest == expected[:10]
    five = reference([as_object(r) for r in rows], "NO", 300)
    assert len(five) == 501 and await read(pg, "m-many", "NO", "5m") == five  # under the cap: every one
