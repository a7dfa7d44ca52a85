"""``predmarket bench --only streams`` end to end, tiny: subscribers connect, get every entry in order, figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.options import BenchOptions, Sizes
from bench.runner import RESULTS_FILE, run_bench
from bench.stream_runs import StreamResult
from tests.support.services import real_services


@pytest.mark.slow
def test_streams_section_measures_with_and_without_subscribers(tmp_path: Path) -> None:
    settings = real_services()
    sizes = Sizes(users=10, http_markets=(5,), http_connections=8, http_seconds=0.5, http_warmup_s=0.1,
                  stream_sse=20, stream_websockets=5, stream_markers=3, stream_pairs=2)
    lines: list[str] = []
    results = run_bench(BenchOptions(settings, sections=("streams",), sizes=sizes, out=tmp_path, quick=True,
                                     seed=11), say=lines.append)
    streams = results.streams
    assert streams is not None
    assert streams.connected == 25 and not streams.connect_errors
    assert streams.marker_entries == 6  # TradeExecuted and PriceUpdated per marker trade
    assert (streams.complete, streams.incomplete, streams.out_of_order) == (25, 0, 0)
    assert streams.trades_per_s_without > 0 and streams.trades_per_s_with > 0
    assert streams.cpu_us_without > 0 and streams.cpu_us_with > 0
    # without, with, without, with, without: each run with them between two without
    assert len(streams.runs_without) == 3 and len(streams.runs_with) == 2
    assert len(streams.cpu_runs_without) == 3 and len(streams.cpu_runs_with) == 2
    assert len(streams.paired_slowdowns) == 2
    assert streams.slowdown == pytest.approx(sorted(streams.paired_slowdowns)[0] / 2
                                             + sorted(streams.paired_slowdowns)[1] / 2)
    assert any("KiB per subscriber" in line for line in lines)
    written = json.loads((tmp_path / RESULTS_FILE).read_text())["streams"]
    assert written["complete"] == 25 and "kib_per_subscriber" in written


def test_each_run_with_subscribers_is_set_against_the_runs_without_around_it() -> None:
    result = StreamResult(
        sse=1, websockets=0, connected=1, connect_errors={}, trades_per_s_without=0, trades_per_s_with=0,
        rss_before_mib=0, rss_with_mib=0, marker_entries=0, complete=0, incomplete=0, out_of_order=0, connections=1,
        seconds=1, cpu_us_without=0, cpu_us_with=0,
        # a drifting machine: the rate without falls from 120 to 60 over the runs
        runs_without=[120, 100, 80, 60], runs_with=[99, 81, 35],
        cpu_runs_without=[100, 100, 100, 100], cpu_runs_with=[110, 130, 105])
    assert result.paired_slowdowns == pytest.approx([0.1, 0.1, 0.5])
    assert result.slowdown == pytest.approx(0.1)  # the odd third pair moves the median not at all
    assert result.cpu_overhead == pytest.approx(0.1)
