"""``predmarket bench --only streams`` end to end, tiny: subscribers connect, get every entry in order, figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.options import BenchOptions, Sizes
from bench.runner import RESULTS_FILE, run_bench
from tests.support.services import real_services


@pytest.mark.slow
def test_streams_section_measures_with_and_without_subscribers(tmp_path: Path) -> None:
    settings = real_services()
    sizes = Sizes(users=10, http_markets=(5,), http_connections=8, http_seconds=0.5, http_warmup_s=0.1,
                  stream_sse=20, stream_websockets=5, stream_markers=3)
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
    assert len(streams.runs_without) == 2 and len(streams.runs_with) == 2
    assert any("KiB per subscriber" in line for line in lines)
    written = json.loads((tmp_path / RESULTS_FILE).read_text())["streams"]
    assert written["complete"] == 25 and "kib_per_subscriber" in written
