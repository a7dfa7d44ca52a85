"""The views bench (issue 16): its generated record is what the persister would have written, and the
section runs end to end on a small record (readers of every route, the persister's ingest, the rollup switch)."""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from predmarket.api.pages import trade_cursor as api_trade_cursor
from predmarket.persister.candles import candle_rows
from predmarket.record.database import drop_database
from sqlalchemy import create_engine, text

from bench.options import DEFAULT_SECTIONS, SECTIONS, BenchOptions, Sizes, parse_sections
from bench.runner import RESULTS_FILE, run_bench
from bench.views_readers import CANDLES, MARKET_TRADES, MY_TRADES, POSITIONS, ROUTES, ReaderResult, trade_cursor
from bench.views_record import RecordFacts, RecordSize, _lambda_for, _url, api_key, ensure_record
from bench.views_results import NO_READERS, IngestRun, ReadPhase, ViewsResult
from tests.support.services import PG_SERVER_URL, real_services

#: Small enough to generate in a few seconds; its own sizes, so its own kept database (dropped here).
SMALL = RecordSize(trades=6_000, markets=20, users=120, seed=16)


@pytest.fixture(scope="module")
def small_record() -> Iterator[str]:
    real_services()
    name, _ = ensure_record(PG_SERVER_URL, SMALL, rebuild=True, say=lambda _line: None)
    url = _url(PG_SERVER_URL, name)
    yield url
    drop_database(url)


def _rows(url: str, sql: str) -> list[dict[str, Any]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


@pytest.mark.slow
def test_the_record_holds_the_sizes_and_a_valid_history(small_record: str) -> None:
    (counts,) = _rows(small_record, "SELECT count(*) AS trades, count(DISTINCT market_id) AS markets, "
                                    "max(trade_id) AS last, count(DISTINCT event_id) AS events FROM trades")
    assert counts == {"trades": SMALL.trades, "markets": SMALL.markets, "last": SMALL.trades, "events": SMALL.trades}
    # No holding ever goes negative, replaying each position's trades in id order.
    held: dict[tuple[object, object, object], int] = {}
    for r in _rows(small_record, "SELECT user_id, market_id, outcome, side, (shares * 1000000)::bigint AS s "
                                 "FROM trades ORDER BY trade_id"):
        key = (r["user_id"], r["market_id"], r["outcome"])
        held[key] = held.get(key, 0) + (r["s"] if r["side"] == "BUY" else -r["s"])
        assert held[key] > 0, key
    # position_state is the sum of the trades; every user holds 5 to 50 positions.
    stored = {(r["user_id"], r["market_id"], r["outcome"]): r["s"] for r in _rows(
        small_record, "SELECT user_id, market_id, outcome, (shares * 1000000)::bigint AS s FROM position_state")}
    assert stored == held
    per_user = _rows(small_record, "SELECT min(n) AS lo, max(n) AS hi, count(*) AS users FROM "
                                   "(SELECT count(*) AS n FROM position_state GROUP BY user_id) c")[0]
    assert 5 <= per_user["lo"] <= per_user["hi"] <= 50 and per_user["users"] == SMALL.users
    # Each market's pool covers the shares outstanding of either outcome (solvency), prices sum to 1.
    for m in _rows(small_record, "SELECT pool, yes_shares, no_shares, price_yes + price_no AS one FROM markets "
                                 "WHERE market_id LIKE 'vm%'"):
        assert m["pool"] >= max(m["yes_shares"], m["no_shares"]) and m["one"] == 1
    # A user's key is the one the readers send.
    (user,) = _rows(small_record, "SELECT api_key_hash FROM users WHERE user_id = 'vu0000007'")
    assert user["api_key_hash"] == hashlib.sha256(api_key(7).encode()).hexdigest()


@pytest.mark.slow
def test_the_records_candles_are_what_the_persister_folds(small_record: str) -> None:
    trades = _rows(small_record, "SELECT trade_id, market_id, created_at, shares::text AS shares, cost::text AS cost, "
                                 "price_yes::text AS price_yes, price_no::text AS price_no FROM trades")
    random.Random(3).shuffle(trades)  # the fold does not depend on the order
    expected = candle_rows(trades, {int(r["trade_id"]) for r in trades})
    stored = _rows(small_record, "SELECT market_id, outcome, interval_s, start, open::text AS open, "
                                 "high::text AS high, low::text AS low, close::text AS close, open_trade_id, "
                                 "close_trade_id, "
                                 "volume_shares::text AS volume_shares, volume_cost::text AS volume_cost, trades "
                                 "FROM candles ORDER BY market_id, outcome, interval_s, start")
    assert len(stored) == len(expected) > 0
    assert stored == expected


def test_trades_per_position_have_the_mean_asked_for() -> None:
    rng = random.Random(1)
    for mean in (1.5, 3.8, 10.0):
        lam = _lambda_for(mean)
        draws = [1 + math.floor(-math.log(1 - rng.random()) * lam) for _ in range(200_000)]
        assert sum(draws) / len(draws) == pytest.approx(mean, rel=0.02)
    assert _lambda_for(1.0) == 0.0


def test_the_readers_cursor_is_the_apis() -> None:
    for trade_id in (1, 999, 10_000_000, 2**63 - 1):
        assert trade_cursor(trade_id) == api_trade_cursor(trade_id)


def test_read_phases_merge_and_rank_latencies() -> None:
    first, second = ReaderResult(elapsed_s=1.0), ReaderResult(elapsed_s=1.0)
    first.latencies[POSITIONS] = [i / 1000 for i in range(1, 51)]
    second.latencies[POSITIONS] = [i / 1000 for i in range(51, 101)]
    second.errors[CANDLES] = {503: 2}
    phase = ReadPhase.of([first, second])
    stats = phase.routes[POSITIONS]
    assert (stats.requests, stats.p50_ms, stats.p99_ms, stats.max_ms) == (100, 51.0, 100.0, 100.0)
    assert phase.routes[CANDLES].errors == {503: 2} and phase.routes[MY_TRADES].requests == 0
    assert phase.requests_per_s == 50.0


def test_views_is_a_section_left_out_by_default() -> None:
    assert "views" in SECTIONS and "views" not in DEFAULT_SECTIONS
    assert parse_sections("views") == ("views",)
    assert IngestRun(NO_READERS, True, 10, 100, 2.0).events_per_s == 50.0


@pytest.mark.slow
def test_views_section_end_to_end(tmp_path: Path) -> None:
    settings = real_services()
    sizes = Sizes(users=10, views_trades=8_000, views_markets=20, views_users=150, views_readers=8,
                  views_seconds=1.0, views_warmup_s=0.3, views_paced_rates=(40.0,), views_paced_seconds=1.0,
                  views_ingest_rate=40.0, views_ingest_trades=300, views_ingest_markets=3, views_ingest_runs=1,
                  views_rollup_runs=1)
    size = RecordSize(sizes.views_trades, sizes.views_markets, sizes.views_users)
    lines: list[str] = []
    try:
        results = run_bench(BenchOptions(settings, sections=("views",), sizes=sizes, out=tmp_path, quick=True, seed=4),
                            say=lines.append)
    finally:
        drop_database(_url(settings.database_url, size.database_name()))
    views = results.views
    assert views is not None
    record = views.record
    assert (record.trades, record.markets, record.users) == (8_000, 20, 150)
    assert record.sizes["trades"][0] > record.sizes["trades"][1] > 0 and record.database_bytes > 0
    assert any("invariants hold on the recovered record" in line for line in lines)
    for phase in (views.alone, *views.paced.values(), *views.during_ingest.values()):
        for route in ROUTES:
            stats = phase.routes[route]
            assert stats.requests > 0 and not stats.errors, (route, stats)
            assert 0 < stats.p50_ms <= stats.p99_ms <= stats.max_ms, (route, stats)
        assert 0 < phase.routes[MARKET_TRADES].items_per_answer <= 100
        assert 5 <= phase.routes[POSITIONS].items_per_answer <= 50
    # A market with 1,000 one-minute candles was found, and its answers hold 1,000.
    if record.candle_markets:
        assert views.alone.routes[CANDLES].items_per_answer == 1000
    modes = [(r.readers, r.rollup) for r in views.ingest]
    assert modes == [(NO_READERS, True), ("closed loop", True), ("40/s", True), (NO_READERS, False), (NO_READERS, True)]
    assert all(r.trades == 300 and r.events > 600 and r.drain_s > 0 for r in views.ingest)
    assert views.rate_without_readers and views.rollup_cost is not None
    written = json.loads((tmp_path / RESULTS_FILE).read_text())["views"]
    assert written["record"]["trades"] == 8_000 and set(written["during_ingest"]) == {"closed loop", "40/s"}



def test_the_rollups_cost_is_read_from_its_back_to_back_pairs() -> None:
    facts = RecordFacts("db", 1, 1, 1, 1, 1.0, True, {}, {}, 0, (1, 1.0, 1), [], [1])
    idle = ReadPhase(1.0, {}, 0)
    runs = [IngestRun(NO_READERS, True, 10, 1_000, 0.5),  # 2,000/s: a quiet moment, not part of a pair
            IngestRun("closed loop", True, 10, 1_000, 2.0),  # 500/s
            IngestRun(NO_READERS, False, 10, 1_000, 1.0, rollup_pair=True),  # 1,000/s
            IngestRun(NO_READERS, True, 10, 1_000, 1.25, rollup_pair=True)]  # 800/s
    result = ViewsResult(facts, 0.0, 0.0, 0.0, 32, idle, {}, {}, runs)
    assert result.rollup_cost == pytest.approx(0.2)
    assert result.rate_without_readers == pytest.approx(1_400)
    assert result.ingest_slowdown("closed loop") == pytest.approx(1 - 500 / 1_400)
    assert result.reader_modes() == ["closed loop"]
