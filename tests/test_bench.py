"""``predmarket bench``: a tiny run of the engine and the peers end to end, and its small parts alone."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
from predmarket.engine.settings import Settings
from predmarket.engine.state import Breach, MarketRecord, State, UserRecord
from rich.console import Console

from bench.compare import state_differences
from bench.http_client import HttpConnection, ProtocolError, _parse_head
from bench.invariants import InvariantBroken, require
from bench.options import SECTIONS, BenchOptions, Sizes, parse_sections
from bench.policy_runs import POLICIES
from bench.report import print_report
from bench.results import ENGINE, NAIVE_CAS, PG_ONLY
from bench.runner import RESULTS_FILE, run_bench
from predmarket.cli import main as cli_main
from predmarket.commands.bench import SECTIONS_HELP
from tests.support.services import real_services

TINY = Sizes(
    users=10, engine_processes=(1,), engine_markets=(1, 100), engine_concurrency=(1, 8),
    engine_trades={1: 100, 8: 400}, engine_outcomes=(4,), peer_markets=(1, 100), peer_concurrency=(8,),
    peer_seconds=0.3,
)


@pytest.mark.slow
def test_quick_bench_of_engine_and_peers(tmp_path: Path) -> None:
    settings = real_services()
    lines: list[str] = []
    results = run_bench(BenchOptions(settings, sections=("engine", "peers"), sizes=TINY, out=tmp_path,
                                     quick=True, seed=7), say=lines.append)

    expected = {(system, markets, tasks) for markets in (1, 100)
                for system, tasks in ((ENGINE, 1), (ENGINE, 8), (PG_ONLY, 8), (NAIVE_CAS, 8))}
    assert {(r.system, r.markets, r.concurrency) for r in results.rows} == expected
    for row in results.rows:
        assert row.trades > 0 and row.trades_per_s > 0, row
        assert 0 < row.p50_ms <= row.p99_ms, row
        assert (row.retries_per_trade is None) == (row.system == PG_ONLY), row
    # Every workload's invariants were checked (a breach raises instead).
    # The labelled rows: 4-label markets at the largest concurrency (8 here), beside YES/NO's.
    assert {(r.system, r.outcomes, r.markets, r.concurrency, r.processes) for r in results.outcome_rows} == {
        (ENGINE, 4, markets, 8, 1) for markets in (1, 100)}
    assert all(r.trades > 0 and 0 < r.p50_ms <= r.p99_ms for r in results.outcome_rows)
    runs = [line for line in lines if " trades in " in line]
    assert len(runs) == len(expected) + 2 and all(line.endswith("invariants hold") for line in runs)
    assert {(r.peer, r.markets) for r in results.ratios()} == {(p, m) for p in (PG_ONLY, NAIVE_CAS) for m in (1, 100)}
    assert all(r.factor > 0 for r in results.ratios())
    written = json.loads((tmp_path / RESULTS_FILE).read_text())
    assert len(written["rows"]) == len(expected) and written["machine"]["cpus"]
    assert [r["outcomes"] for r in written["outcome_rows"]] == [4, 4]
    out = io.StringIO()
    print_report(Console(file=out, width=200), results)
    labelled = out.getvalue().split("by labels per market")[1].split("\n")
    # Per market count: the YES/NO row at the same tasks (ratio 1.00), then the 4-label row.
    assert [line.split("│")[1].strip() for line in labelled if line.startswith("│")][:4] == ["2", "4", "2", "4"]


@pytest.mark.slow
def test_policy_section_measures_every_policy(tmp_path: Path) -> None:
    settings = real_services()
    sizes = Sizes(users=10, engine_markets=(1,), engine_trades={32: 300})
    lines: list[str] = []
    results = run_bench(BenchOptions(settings, sections=("policy",), sizes=sizes, out=tmp_path, quick=True,
                                     seed=3), say=lines.append)
    assert [p.policy for p in results.policy] == [name for name, _ in POLICIES]
    assert all(p.row.trades == 300 and p.row.trades_per_s > 0 for p in results.policy)
    assert sum(line.endswith("invariants hold") for line in lines) == len(POLICIES)
    assert len(json.loads((tmp_path / RESULTS_FILE).read_text())["policy"]) == len(POLICIES)


@pytest.mark.slow
def test_persister_section_drains_with_one_and_with_two_persisters(tmp_path: Path) -> None:
    settings = real_services()
    sizes = Sizes(users=10, persister_trades=600, persister_markets=5)
    lines: list[str] = []
    results = run_bench(BenchOptions(settings, sections=("persister",), sizes=sizes, out=tmp_path, quick=True,
                                     seed=5), say=lines.append)
    single, pair = results.persister, results.persister_pair
    assert single is not None and pair is not None
    assert (single.persisters, pair.persisters) == (1, 2)
    for result in (single, pair):
        assert result.trades == 600 and result.events > 1_200  # two entries per trade, plus the setup's
        assert result.drain_s > 0 and result.pg_equals_redis
    assert sum("PostgreSQL equals Redis" in line for line in lines) == 2
    assert json.loads((tmp_path / RESULTS_FILE).read_text())["persister_pair"]["persisters"] == 2


def test_every_policy_is_a_valid_engine_setting() -> None:
    base = Settings().model_dump()
    for _, changes in POLICIES:
        validated = Settings.model_validate({**base, **changes})
        assert all(getattr(validated, name) == value for name, value in changes.items())


def test_a_breach_names_itself() -> None:
    state = State(users={"u1": UserRecord("u1", 5, 0)}, deposits=4)
    with pytest.raises(InvariantBroken, match=r"after engine run: conservation"):
        require("engine run", state)


def test_state_differences_name_the_field() -> None:
    market = MarketRecord("OPEN", "", 100, 3, 0, 70)
    left = State(users={"u": UserRecord("u", 10, 0)}, markets={"m": market}, deposits=80)
    right = State(users={"u": UserRecord("u", 11, 0)}, markets={"m": market}, deposits=80)
    assert state_differences(left, left) == []
    (difference,) = state_differences(left, right)
    assert difference.startswith("user u: redis UserRecord(username='u', available=10")


def test_sections_are_parsed_in_run_order() -> None:
    assert parse_sections("peers, engine") == ("engine", "peers")
    with pytest.raises(ValueError, match="unknown section"):
        parse_sections("engine,warp")


def test_http_head_parsing() -> None:
    assert _parse_head(b"HTTP/1.1 201 Created\r\ncontent-length: 12\r\n\r\n") == (201, 12, True)
    assert _parse_head(b"HTTP/1.1 503 X\r\nConnection: close\r\nContent-Length: 0\r\n\r\n") == (503, 0, False)
    with pytest.raises(ProtocolError):
        _parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")


async def test_http_client_keeps_the_connection_alive() -> None:
    accepted = 0
    requests: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            requests.append(head + await reader.readexactly(length))
            writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conn = HttpConnection("127.0.0.1", port)
    try:
        for _ in range(3):
            assert await conn.post(b"/v1/markets/m/trades", b"Bearer k", b'{"a":1}') == (201, b"{}")
    finally:
        await conn.close()
        server.close()
        await server.wait_closed()
    assert accepted == 1 and len(requests) == 3
    assert requests[0].startswith(b"POST /v1/markets/m/trades HTTP/1.1\r\n")
    assert b"Authorization: Bearer k\r\n" in requests[0] and requests[0].endswith(b'{"a":1}')


def test_bench_command_exits_1_naming_the_breach(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    def broken(options: BenchOptions, say: object) -> None:
        raise InvariantBroken("engine, 1 process(es), 1 market(s), 8 tasks",
                              [Breach("conservation", "all accounts and pools", "10.000000", "10.000001")])

    monkeypatch.setattr("bench.runner.run_bench", broken)
    assert cli_main(["bench", "--only", "engine", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "BENCH FAILED" in out and "conservation [all accounts and pools]" in out and "8 tasks" in out


@pytest.mark.parametrize(("args", "where"), [
    ([], "docs"), (["--quick"], None), (["--only", "http"], None), (["--stream-sse", "10"], None),
    (["--only", "http", "--out", "/tmp/elsewhere"], "/tmp/elsewhere"), (["--quick", "--out", "x"], "x"),
])
def test_only_a_full_bench_run_replaces_the_committed_figures(monkeypatch: pytest.MonkeyPatch, args: list[str],
                                                              where: str | None) -> None:
    seen: list[Path | None] = []

    def record(options: BenchOptions, say: object) -> None:
        seen.append(options.out)
        raise InvariantBroken("stop here", [])

    monkeypatch.setattr("bench.runner.run_bench", record)
    assert cli_main(["bench", *args]) == 1
    root = Path(__file__).resolve().parents[1]
    assert seen == [None if where is None else root / "docs" if where == "docs" else Path(where)]


def test_the_bench_commands_help_names_the_benchs_sections() -> None:
    assert ",".join(SECTIONS) == SECTIONS_HELP


@pytest.mark.slow
def test_shards_section_compares_one_shard_with_eight_on_a_primary_and_a_cluster(tmp_path: Path) -> None:
    settings = real_services()
    sizes = Sizes(shards_users=6, shards_markets=12, shards_trades=300)
    lines: list[str] = []
    results = run_bench(BenchOptions(settings, sections=("shards",), sizes=sizes, out=tmp_path, quick=True,
                                     seed=4), say=lines.append)
    assert results.shards is not None
    rows = {row.layout: row for row in results.shards.rows}
    assert list(rows) == ["1 shard, 1 primary", "8 shards, 1 primary", "8 shards, 1 primary, money at home",
                          "1 shard, 3-master cluster", "8 shards, 3-master cluster"]
    for row in rows.values():
        assert row.trades + row.rejected == 300 and row.trades_per_s > 0
        assert len(row.cpu_us_per_trade) == row.primaries and max(row.cpu_us_per_trade) > 0
    assert rows["1 shard, 1 primary"].first_trade_p50_ms is None
    assert all(rows[name].first_trade_p50_ms and rows[name].transfer_p50_ms
               for name in ("8 shards, 1 primary", "8 shards, 3-master cluster"))
    # Two rows' streams drained by a persister (a loop per shard over 8): every entry, a rate.
    drained = [name for name, row in rows.items() if row.drain_entries_per_s]
    assert drained == ["1 shard, 1 primary", "8 shards, 1 primary, money at home"]
    assert rows["8 shards, 1 primary, money at home"].drain_entries > 2 * 300  # type: ignore[operator]  # drained
    assert len(json.loads((tmp_path / RESULTS_FILE).read_text())["shards"]["rows"]) == 5
    out = io.StringIO()
    print_report(Console(file=out, width=200), results)
    assert "the engine over shards" in out.getvalue()
