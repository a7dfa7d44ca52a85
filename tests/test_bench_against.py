"""``predmarket bench --against``: the engine section in two installs by turns, compared row by row."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from bench.against import (
    AGAINST_FILE,
    RowKey,
    against_section,
    compare,
    engine_rates,
    print_against,
    run_engine_section,
)
from bench.runner import RESULTS_FILE
from predmarket.cli import main as cli_main
from tests.support.services import real_services


def test_rows_are_compared_by_their_paired_ratios() -> None:
    pairs: list[tuple[dict[RowKey, float], dict[RowKey, float]]] = [
        ({(1, 1, 1): 90.0, (1, 100, 8): 200.0}, {(1, 1, 1): 100.0, (1, 100, 8): 100.0}),
        ({(1, 1, 1): 120.0, (1, 100, 8): 100.0}, {(1, 1, 1): 100.0, (1, 100, 8): 100.0}),
        # A row one side lacks in any pair (an install without it) is left out, not compared with nothing.
        ({(1, 1, 1): 100.0, (1, 100, 8): 100.0, (2, 1, 1): 5.0}, {(1, 1, 1): 100.0, (1, 100, 8): 100.0}),
    ]
    one, hundred = compare(pairs)
    assert (one.processes, one.markets, one.tasks) == (1, 1, 1)
    assert one.median_ratio == 1.0 and one.this_median == 100.0 and one.that_median == 100.0
    assert one.geometric_ratio == pytest.approx((0.9 * 1.2 * 1.0) ** (1 / 3))
    assert (one.below, one.pairs) == (1, 3)
    assert hundred.median_ratio == 1.0 and hundred.geometric_ratio == pytest.approx(2 ** (1 / 3))
    assert hundred.below == 0
    assert compare([]) == []


def test_only_the_yes_no_engine_rows_are_read_from_either_releases_results() -> None:
    rows = [
        # The release before labels wrote no "outcomes" field: its rows are YES/NO.
        {"system": "engine", "processes": 1, "markets": 1, "concurrency": 8, "trades_per_s": 10.5},
        {"system": "engine", "processes": 2, "markets": 100, "concurrency": 1, "trades_per_s": 3.0, "outcomes": 2},
        {"system": "engine", "processes": 1, "markets": 1, "concurrency": 32, "trades_per_s": 7.0, "outcomes": 4},
        {"system": "http", "processes": 2, "markets": 1, "concurrency": 64, "trades_per_s": 9.0},
    ]
    assert engine_rates({"rows": rows}) == {(1, 1, 8): 10.5, (2, 100, 1): 3.0}


def test_the_installs_take_turns_and_the_comparison_is_written(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    calls: list[str] = []

    def fake_section(python: str, out: Path, env: object, seed: int, quick: bool) -> dict[RowKey, float]:
        assert seed == 11 and quick
        calls.append(out.name)
        return {(1, 1, 1): 80.0 if python == "/old/python" else 100.0}

    monkeypatch.setattr("bench.against.run_engine_section", fake_section)
    lines: list[str] = []
    result = against_section(real_services(), "/old/python", 3, 11, True, tmp_path, lines.append)

    # Swapped every pair, so a drift over the run favours neither install.
    assert calls == ["this-1", "that-1", "that-2", "this-2", "this-3", "that-3"]
    assert len(lines) == 6 and lines[0].startswith("pair 1 of 3, this install: 1/1/1 100")
    (row,) = result.rows
    assert row.median_ratio == pytest.approx(1.25) and result.geometric_ratio == pytest.approx(1.25)
    written = json.loads((tmp_path / AGAINST_FILE).read_text())
    assert written["pairs"] == 3 and written["runs"][0] == [{"1,1,1": 100.0}, {"1,1,1": 80.0}]
    out = io.StringIO()
    print_against(Console(file=out, width=200), result)
    assert "+25.0%" in out.getvalue() and "0 of 3" in out.getvalue()


def test_each_install_runs_isolated_from_the_directory_it_was_started_in(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    # Started in a checkout, `python -m` would import that checkout's predmarket, not the other install's.
    seen: dict[str, object] = {}

    def fake_run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        seen.update(command=command, **kwargs)
        rows = [{"system": "engine", "processes": 1, "markets": 1, "concurrency": 1, "trades_per_s": 5.0}]
        (tmp_path / RESULTS_FILE).write_text(json.dumps({"rows": rows}))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr("bench.against.subprocess.run", fake_run)
    assert run_engine_section("/old/python", tmp_path, {"PM_KEY_PREFIX": "x"}, 7, False) == {(1, 1, 1): 5.0}
    assert seen["command"] == ["/old/python", "-I", "-m", "predmarket.cli", "bench", "--only", "engine",
                               "--seed", "7", "--out", str(tmp_path)]
    assert seen["cwd"] == tmp_path and seen["env"] == {"PM_KEY_PREFIX": "x"}


def test_against_needs_the_engine_section_alone(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="engine section only"):
        cli_main(["bench", "--against", sys.executable, "--only", "engine,http"])
    with pytest.raises(SystemExit, match="at least 1"):
        cli_main(["bench", "--against", sys.executable, "--pairs", "0"])
    with pytest.raises(SystemExit, match="goes with --against"):
        cli_main(["bench", "--only", "engine", "--pairs", "3"])


@pytest.mark.slow
def test_a_quick_comparison_of_this_install_with_itself(tmp_path: Path) -> None:
    # Two real engine sections (quick sizes), one per "install": both are this one here.
    result = against_section(real_services(), sys.executable, 1, 7, True, tmp_path, lambda line: None)

    assert {(r.processes, r.markets, r.tasks) for r in result.rows} == {(1, m, t) for m in (1, 100) for t in (1, 32)}
    assert all(r.this_median > 0 and r.that_median > 0 and r.pairs == 1 for r in result.rows)
    assert math.isfinite(result.geometric_ratio) and result.geometric_ratio > 0
    assert (tmp_path / "this-1" / "bench.log").read_text().count("invariants hold") >= 4
    assert (tmp_path / "that-1" / "bench-results.json").is_file() and (tmp_path / AGAINST_FILE).is_file()
