"""Cursor pages over real HTTP: a market's trades, the caller's trades, the market list with ``q``;
and the plan of every trade page query on a table large enough for the planner to choose.

The contract: newest first, ``limit`` 1-1000 (default 100), ``{"trades", "next_cursor"}``,
following ``next_cursor`` to the end yields every trade exactly once even while new trades arrive,
the market's public list omits ``user_id``; ``GET /v1/markets`` with ``q``, paginated alike.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest
from predmarket.api.history import IN_INDEX_ORDER, trade_page_query
from sqlalchemy import create_engine, text
from sqlalchemy.dialects import postgresql

from tests.support.api import HTTP_TIMEOUT_S, TRADE_KEYS, Api, User, assert_error, bearer, unique
from tests.support.waiting import wait_until

PUBLIC_TRADE_KEYS = TRADE_KEYS - {"user_id"}


def get_page(api: Api, path: str, token: str | None = None, **params: str) -> dict[str, Any]:
    r = api.request("GET", path, token=token, params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def walk(api: Api, path: str, key: str, token: str | None = None, **params: str) -> Iterator[list[dict[str, Any]]]:
    """Every page of ``path``, following ``next_cursor`` to the end."""
    cursor: str | None = None
    while True:
        page = get_page(api, path, token, **params, **({"cursor": cursor} if cursor else {}))
        assert set(page) == {key, "next_cursor"}, page
        yield page[key]
        cursor = page["next_cursor"]
        if cursor is None:
            return
        assert isinstance(cursor, str) and cursor


def trades_of(api: Api, path: str, token: str | None = None, **params: str) -> list[dict[str, Any]]:
    return [t for page in walk(api, path, "trades", token, **params) for t in page]


def b64(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


# --------------------------------------------------------------------------- a market's trades

def test_paging_a_market_while_trades_keep_arriving_yields_each_trade_once(api: Api) -> None:
    market_id = api.create_market(b="1000")
    users = [api.create_user("100000") for _ in range(3)]
    before = [api.buy(users[i % 3], market_id, "YES" if i % 2 else "NO", "1")["trade_id"] for i in range(24)]
    api.stack.wait_persisted()
    path = f"/v1/markets/{market_id}/trades"
    arrived: list[int] = []
    stop = threading.Event()

    def keep_trading() -> None:
        with httpx.Client(base_url=api.stack.urls[1], timeout=HTTP_TIMEOUT_S) as client:
            while not stop.is_set():
                r = client.post(path, headers=bearer(users[len(arrived) % 3].api_key),
                                json={"side": "BUY", "outcome": "YES", "shares": "1"})
                assert r.status_code == 201, r.text
                arrived.append(r.json()["trade_id"])

    def newest() -> int:
        return int(get_page(api, path, limit="1")["trades"][0]["trade_id"])

    def wait_past(top: int) -> None:
        wait_until(lambda: newest() > top, 15, f"a trade newer than {top} in the record")

    trader = threading.Thread(target=keep_trading, daemon=True)
    trader.start()
    seen: list[int] = []
    pages = 0
    try:
        for page in walk(api, path, "trades", limit="5"):
            assert 1 <= len(page) <= 5
            seen += [t["trade_id"] for t in page]
            pages += 1
            # Before the next page, at least one new trade reaches the record (ahead of page one):
            # an offset-based page would now repeat a trade of this one.
            wait_past(newest())
    finally:
        stop.set()
        trader.join(timeout=15)
    assert not trader.is_alive()
    assert pages >= 5 and len(arrived) >= pages, "trades kept arriving while the pages were read"
    assert seen == sorted(set(seen), reverse=True), "newest first, each trade once"
    assert set(before) <= set(seen)
    # Exactly the record up to the first page's newest trade: nothing below it skipped (one persister
    # commits in stream order, so no trade below the cursor appears late).
    api.stack.wait_persisted()
    everything = [t["trade_id"] for t in trades_of(api, path, limit="1000")]
    assert set(arrived) | set(before) == set(everything)
    assert seen == [t for t in everything if t <= seen[0]]


def test_public_list_omits_user_id_and_the_admin_sees_it(api: Api) -> None:
    market_id = api.create_market()
    user = api.create_user("100")
    trade = api.buy(user, market_id, "YES", "2")
    api.stack.wait_persisted()
    path = f"/v1/markets/{market_id}/trades"
    public = {k: v for k, v in trade.items() if k != "user_id"}
    for token in (None, user.api_key):
        page = get_page(api, path, token)
        assert page == {"trades": [public], "next_cursor": None}
        assert set(page["trades"][0]) == PUBLIC_TRADE_KEYS
    assert get_page(api, path, api.admin_token)["trades"] == [trade]
    assert_error(api.request("GET", path, token="pmk_not-a-key"), 401, "UNAUTHENTICATED")


def test_default_limit_is_100_and_pages_cover_the_market(api: Api) -> None:
    market_id = api.create_market(b="1000")
    user = api.create_user("100000")
    ids = [api.buy(user, market_id, "YES", "0.5")["trade_id"] for _ in range(103)]
    api.stack.wait_persisted()
    path = f"/v1/markets/{market_id}/trades"
    first = get_page(api, path)
    assert [t["trade_id"] for t in first["trades"]] == ids[::-1][:100]
    rest = get_page(api, path, cursor=first["next_cursor"])
    assert [t["trade_id"] for t in rest["trades"]] == ids[::-1][100:] and rest["next_cursor"] is None
    # A page that ends exactly at the last trade says so at once (no empty page to fetch).
    assert get_page(api, path, limit="103")["next_cursor"] is None
    assert [len(p) for p in walk(api, path, "trades", limit="1000")] == [103]
    assert get_page(api, path, cursor=b64(f"t:{ids[0]}")) == {"trades": [], "next_cursor": None}


def test_trades_of_an_unknown_market_are_404(api: Api) -> None:
    assert_error(api.request("GET", f"/v1/markets/{unique('ghost')}/trades"), 404, "NOT_FOUND")
    assert_error(api.request("GET", f"/v1/markets/{unique('ghost')}/trades", params={"cursor": b64("t:5")}),
                 404, "NOT_FOUND")


# --------------------------------------------------------------------------- the caller's trades

@pytest.fixture
def two_traders(api: Api) -> tuple[User, User, str, str, list[dict[str, Any]]]:
    """Alice and Bob trading in two markets, interleaved; every trade persisted."""
    alice, bob = api.create_user("1000"), api.create_user("1000")
    m1, m2 = api.create_market(), api.create_market()
    made = [api.buy(alice if i % 3 else bob, m1 if i % 2 else m2, "YES", "1") for i in range(14)]
    api.stack.wait_persisted()
    return alice, bob, m1, m2, made


def test_my_trades_are_only_mine_newest_first_in_pages(
        api: Api, two_traders: tuple[User, User, str, str, list[dict[str, Any]]]) -> None:
    alice, bob, m1, m2, made = two_traders
    for user in (alice, bob):
        # Newest first by trade id: execution order on one shard (over shards ids rise within a market only).
        mine = sorted((t for t in made if t["user_id"] == user.user_id), key=lambda t: t["trade_id"], reverse=True)
        assert trades_of(api, "/v1/me/trades", user.api_key) == mine
        pages = list(walk(api, "/v1/me/trades", "trades", user.api_key, limit="2"))
        assert [t for p in pages for t in p] == mine
        assert [len(p) for p in pages] == [2] * (len(mine) // 2) + ([1] if len(mine) % 2 else [])
        for market_id in (m1, m2):
            wanted = [t for t in mine if t["market_id"] == market_id]
            assert trades_of(api, "/v1/me/trades", user.api_key, market_id=market_id, limit="1") == wanted
    untouched = api.create_market(open=False)
    assert get_page(api, "/v1/me/trades", alice.api_key, market_id=untouched) == {"trades": [], "next_cursor": None}
    newcomer = api.create_user("1")
    assert get_page(api, "/v1/me/trades", newcomer.api_key) == {"trades": [], "next_cursor": None}


def test_my_trades_errors(api: Api, two_traders: tuple[User, User, str, str, list[dict[str, Any]]]) -> None:
    alice = two_traders[0]
    assert_error(api.request("GET", "/v1/me/trades"), 401, "UNAUTHENTICATED")
    assert_error(api.request("GET", "/v1/me/trades", token="pmk_nobody"), 401, "UNAUTHENTICATED")
    assert_error(api.admin("GET", "/v1/me/trades"), 403, "FORBIDDEN")
    ghost = unique("ghost")
    assert_error(api.request("GET", "/v1/me/trades", token=alice.api_key, params={"market_id": ghost}),
                 404, "NOT_FOUND")
    for bad in ("", "has space", "x" * 65, "é"):
        assert_error(api.request("GET", "/v1/me/trades", token=alice.api_key, params={"market_id": bad}),
                     422, "VALIDATION_ERROR")
    # The request's shape comes before existence: a bad limit on a ghost market is 422.
    assert_error(api.request("GET", "/v1/me/trades", token=alice.api_key,
                             params={"market_id": ghost, "limit": "0"}), 422, "VALIDATION_ERROR")


# --------------------------------------------------------------------------- bad limits and cursors

BAD_LIMITS = ["0", "1001", "-1", "abc", "1.5", "", "1e2", "١", " 5"]
BAD_CURSORS = {
    "empty": "",
    "not base64": "!!!",
    "junk": "abc",
    "padded": b64("t:5") + "=",
    "plain id": "5",
    "market cursor for trades": b64("m:5:x"),
    "negative": b64("t:-5"),
    "leading zero": b64("t:05"),
    "past BIGINT": b64(f"t:{2**63}"),
    "huge": b64("t:" + "9" * 40),
    "too long": "A" * 500,
    "non-ASCII": "é",
}
MARKET_BAD_CURSORS = {
    **{k: v for k, v in BAD_CURSORS.items() if k != "market cursor for trades"},
    "trade cursor for markets": b64("t:5"),
    "bad market id": b64("m:5:a b"),
    "missing id": b64("m:5"),
}


@pytest.fixture
def page_paths(api: Api) -> dict[str, tuple[str, str | None]]:
    user = api.create_user("10")
    market_id = api.create_market()
    api.buy(user, market_id, "YES", "1")
    return {"market": (f"/v1/markets/{market_id}/trades", None), "me": ("/v1/me/trades", user.api_key),
            "markets": ("/v1/markets", None)}


@pytest.mark.parametrize("route", ["market", "me", "markets"])
def test_bad_limits_are_422(api: Api, page_paths: dict[str, tuple[str, str | None]], route: str) -> None:
    path, token = page_paths[route]
    for limit in BAD_LIMITS:
        r = api.request("GET", path, token=token, params={"limit": limit})
        assert_error(r, 422, "VALIDATION_ERROR")


@pytest.mark.parametrize("route", ["market", "me", "markets"])
def test_bad_cursors_are_422(api: Api, page_paths: dict[str, tuple[str, str | None]], route: str) -> None:
    path, token = page_paths[route]
    for case, cursor in (MARKET_BAD_CURSORS if route == "markets" else BAD_CURSORS).items():
        r = api.request("GET", path, token=token, params={"cursor": cursor})
        assert r.status_code == 422, (case, r.text)
        assert_error(r, 422, "VALIDATION_ERROR")


# --------------------------------------------------------------------------- the market list

def test_markets_q_search_and_pages(api: Api) -> None:
    tag = unique("Zebra").replace("-", "")
    made = [api.create_market(name=f"{prefix} {tag} {i}", open=i % 2 == 0)
            for i, prefix in enumerate(["Will", "DOES", "is the", "Rain?", "snow"])]
    api.create_market(name="unrelated to the tag")
    lower = get_page(api, "/v1/markets", q=tag.lower())
    assert set(lower) == {"markets"}, "without limit or cursor: every match at once, as before"
    assert [m["market_id"] for m in lower["markets"]] == made
    assert get_page(api, "/v1/markets", q=tag.upper()) == lower
    assert [m["market_id"] for m in get_page(api, "/v1/markets", q=f"does {tag.swapcase()}")["markets"]] == [made[1]]
    opened = get_page(api, "/v1/markets", q=tag, status="OPEN")["markets"]
    assert [m["market_id"] for m in opened] == made[0::2]
    assert get_page(api, "/v1/markets", q=tag + "-nothing") == {"markets": []}

    pages = list(walk(api, "/v1/markets", "markets", q=tag, limit="2"))
    assert [[m["market_id"] for m in p] for p in pages] == [made[0:2], made[2:4], made[4:]]
    assert get_page(api, "/v1/markets", q=tag, limit="5")["next_cursor"] is None

    # A market created mid-walk comes after every earlier one: the walk ends with it, nothing repeated.
    first = get_page(api, "/v1/markets", q=tag, limit="3")
    late = api.create_market(name=f"late {tag}")
    cursor: str | None = first["next_cursor"]
    rest: list[str] = []
    while cursor:
        page = get_page(api, "/v1/markets", q=tag, limit="3", cursor=cursor)
        rest += [m["market_id"] for m in page["markets"]]
        cursor = page["next_cursor"]
    assert [m["market_id"] for m in first["markets"]] + rest == [*made, late]
    # A cursor without limit: every match after it, and no further page.
    after = get_page(api, "/v1/markets", q=tag, cursor=first["next_cursor"])
    assert [m["market_id"] for m in after["markets"]] == [*made[3:], late] and after["next_cursor"] is None


def test_markets_pages_cover_every_market_once(api: Api) -> None:
    for _ in range(3):
        api.create_market(open=False)
    everything = [m["market_id"] for m in get_page(api, "/v1/markets")["markets"]]
    paged = [m["market_id"] for page in walk(api, "/v1/markets", "markets", limit="7") for m in page]
    assert paged == everything and len(set(paged)) == len(paged)


def test_pages_match_the_published_document(api: Api) -> None:
    """Each page answer (public, admin, the caller's, the market list with and without a page)
    validates against the schema /openapi.json gives for it."""
    document = api.request("GET", "/openapi.json").json()
    user = api.create_user("10")
    market_id = api.create_market()
    api.buy(user, market_id, "NO", "1")
    api.buy(user, market_id, "YES", "1")
    api.stack.wait_persisted()
    calls = [
        ("/v1/markets/{market_id}/trades", f"/v1/markets/{market_id}/trades", None, {"limit": "1"}),
        ("/v1/markets/{market_id}/trades", f"/v1/markets/{market_id}/trades", api.admin_token, {}),
        ("/v1/me/trades", "/v1/me/trades", user.api_key, {"limit": "1"}),
        ("/v1/markets", "/v1/markets", None, {"limit": "1"}),
        ("/v1/markets", "/v1/markets", None, {"status": "OPEN"}),
    ]
    for template, path, token, params in calls:
        r = api.request("GET", path, token=token, params=params)
        assert r.status_code == 200, r.text
        schema = document["paths"][template]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        jsonschema.Draft202012Validator({**schema, "components": document["components"]}).validate(r.json())
    assert document["paths"]["/v1/me/trades"]["get"]["security"] == [{"HTTPBearer": []}]
    public = document["components"]["schemas"]["MarketTrade"]
    assert "user_id" in public["properties"] and "user_id" not in public["required"]


# --------------------------------------------------------------------------- the plans

def insert_trades(conn: Any, rows_sql: str) -> None:
    """Trades made in SQL for the plan and query tests: ``rows_sql`` (a SELECT or VALUES) gives, in order,
    trade_id, event_id, user_id, market_id, side, outcome, shares, price, cost, price_yes, price_no,
    yes_shares, no_shares, pool, created_at."""
    conn.execute(text("INSERT INTO trades (trade_id, event_id, user_id, market_id, side, outcome, shares, price, "
                      "cost, price_yes, price_no, yes_shares, no_shares, pool, created_at) " + rows_sql))


def explain(conn: Any, **page: Any) -> str:
    """The plan of a page as the API reads it (in a transaction with its setting)."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]  # SQLAlchemy leaves the dialect's __init__ bare
    query = trade_page_query(100, **page).compile(dialect=dialect, compile_kwargs={"literal_binds": True})
    with conn.begin():
        conn.execute(IN_INDEX_ORDER)
        return "\n".join(row[0] for row in conn.execute(text(f"EXPLAIN {query}")))


def test_every_trade_page_is_one_index_range_scan(database_url: str) -> None:
    """On 200,000 trades (200 users of 1,000 trades, 500 markets of about 400, each user in 5 markets;
    user w in 2 markets only), every page, first or deep, is a backward range scan of the owner's
    index under the LIMIT: no Sort, no Filter, no scan of the table or of another index. (An owner
    with fewer rows than a page may get a bitmap scan of them all and a sort: a page's worth.)"""
    pg = create_engine(database_url)
    try:
        with pg.begin() as conn:
            insert_trades(conn, """
                SELECT i, i || '-0',
                       CASE WHEN i % 200 = 0 THEN 'w' ELSE 'u' || (i % 200) END,
                       CASE WHEN i % 200 = 0 THEN 'm' || (7 + i / 200 % 2) ELSE 'm' || (i % 500) END,
                       'BUY', 'YES', 1, 0.5, 0.5, 0.5, 0.5, 1, 1, 1, now()
                FROM generate_series(1, 200000) AS i""")
            conn.execute(text("ANALYZE trades"))
        with pg.connect() as conn:
            cases: dict[str, list[dict[str, Any]]] = {
                "ix_trades_market_trade": [{"market_id": "m42"}, {"market_id": "m42", "before": 100_000}],
                "ix_trades_user_trade": [{"user_id": "u42"}, {"user_id": "u42", "before": 100_000},
                                         {"user_id": "w"}, {"user_id": "w", "before": 100_000}],
                "ix_trades_user_market_trade": [{"user_id": "u42", "market_id": "m42"},
                                                {"user_id": "u42", "market_id": "m42", "before": 100_000},
                                                {"user_id": "w", "market_id": "m7"},
                                                {"user_id": "w", "market_id": "m7", "before": 100_000}],
            }
            for index, pages in cases.items():
                for page in pages:
                    plan = explain(conn, **page)
                    lines = plan.splitlines()
                    assert lines[0].startswith("Limit"), plan
                    assert f"Index Scan Backward using {index} on trades" in lines[1], plan
                    assert "Filter" not in plan and "Sort" not in plan, plan
            # A first page bounded by the committed mark: the same scan, filtering the rows it meets.
            plan = explain(conn, market_id="m42", committed=(150_000, 0))
            assert "Index Scan Backward using ix_trades_market_trade on trades" in plan.splitlines()[1], plan
            assert "Sort" not in plan, plan
    finally:
        pg.dispose()


def test_pages_read_the_record_through_the_same_query(database_url: str) -> None:
    """The page query on a real table: ids below the cursor, newest first, one row past the page."""
    pg = create_engine(database_url)
    try:
        with pg.begin() as conn:
            insert_trades(conn, """
                SELECT i, i || '-0', 'u' || (i % 2), 'm' || (i % 3), 'BUY', 'YES', 1, 0.5, 0.5,
                       0.5, 0.5, 1, 1, 1, now()
                FROM generate_series(1, 30) AS i""")
        with pg.connect() as conn:
            def ids(limit: int, **page: Any) -> list[int]:
                return [r.trade_id for r in conn.execute(trade_page_query(limit, **page))]

            assert ids(3, market_id="m1") == [28, 25, 22, 19]
            assert ids(3, market_id="m1", before=19) == [16, 13, 10, 7]
            assert ids(2, user_id="u0", market_id="m0", before=24) == [18, 12, 6]
            assert ids(100, user_id="u1") == list(range(29, 0, -2))
            with pytest.raises(ValueError):
                trade_page_query(3)
    finally:
        pg.dispose()


def test_a_first_page_holds_only_committed_trades(database_url: str) -> None:
    """Two persisters: trade 8 written, trade 7 not yet (the group's mark is before 7's event). A first
    page showing 8 would send the walk below it and 7 would never be seen; bounded by the mark it
    starts at 6, and once 7 is in and the mark passes 8 a first page shows both."""
    pg = create_engine(database_url)
    try:
        with pg.begin() as conn:
            insert_trades(conn, """
                SELECT i, (1000 + i) || '-' || (i % 3), 'u', 'm', 'BUY', 'YES', 1, 0.5, 0.5, 0.5, 0.5, 1, 1, 1, now()
                FROM generate_series(1, 10) AS i WHERE i <> 7""")
        with pg.connect() as conn:
            def ids(**page: Any) -> list[int]:
                return [r.trade_id for r in conn.execute(trade_page_query(100, market_id="m", **page))]

            assert ids() == [10, 9, 8, 6, 5, 4, 3, 2, 1]  # unbounded: the gap a walk would step over
            assert ids(committed=(1006, 2)) == [6, 5, 4, 3, 2, 1]  # 7's event is 1007-1: not committed
            assert ids(committed=(1005, 1)) == [4, 3, 2, 1]  # 5 is 1005-2: (ms, seq) compared as numbers
            assert ids(before=6, committed=(1006, 2)) == [5, 4, 3, 2, 1]  # later pages: no bound
            insert_trades(conn, """
                VALUES (7, '1007-1', 'u', 'm', 'BUY', 'YES', 1, 0.5, 0.5, 0.5, 0.5, 1, 1, 1, now())""")
            conn.commit()
            assert ids(committed=(1008, 2)) == [8, 7, 6, 5, 4, 3, 2, 1]
            assert ids(committed=(99999, 0)) == [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]
            # A mark just below a pending entry 1009-0, as the persister computes it:
            assert ids(committed=(1008, 2**64 - 1)) == [8, 7, 6, 5, 4, 3, 2, 1]
    finally:
        pg.dispose()


def test_a_market_without_trades_is_one_empty_page(api: Api) -> None:
    market_id = api.create_market(open=False)
    assert list(walk(api, f"/v1/markets/{market_id}/trades", "trades")) == [[]]
