"""Runs the chosen sections in order, printing progress, and writes the JSON and the chart."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from bench.chart import write_chart
from bench.engine_runs import engine_section, outcomes_section
from bench.hotset_runs import hotset_section
from bench.http_runs import http_section
from bench.machine import load_average, machine_facts
from bench.options import BenchOptions
from bench.persister_runs import persister_section
from bench.policy_runs import policy_section
from bench.results import BenchResults
from bench.stream_runs import streams_section

RESULTS_FILE = "bench-results.json"
CHART_FILE = "bench-throughput.png"


def run_bench(options: BenchOptions, say: Callable[[str], None] = print) -> BenchResults:
    """Run every section of ``options``; raises ``InvariantBroken`` (or another error) on the first failure."""
    settings, sizes, seed = options.settings, options.sizes, options.seed
    results = BenchResults(machine=machine_facts(settings), quick=options.quick,
                           started_at=datetime.now(UTC).isoformat(timespec="seconds"))
    began = time.perf_counter()

    def progress(message: str) -> None:
        say(f"[{time.perf_counter() - began:6.1f} s] {message}")

    for section in options.sections:
        started = time.perf_counter()
        progress(f"--- {section} ---")
        if section == "engine":
            results.rows += engine_section(settings, sizes, progress, seed)
            results.outcome_rows = outcomes_section(settings, sizes, progress, seed)
        elif section == "policy":
            results.policy = policy_section(settings, sizes, progress, seed)
        elif section == "http":
            results.rows += http_section(settings, sizes, progress, seed)
        elif section == "persister":
            results.persister, results.persister_pair = persister_section(settings, sizes, progress, seed)
        elif section == "hotset":
            results.hotset = hotset_section(settings, sizes, progress, seed)
        elif section == "streams":
            results.streams = streams_section(settings, sizes, progress, seed)
        elif section == "shards":
            from bench.shard_runs import shards_section

            results.shards = shards_section(settings, sizes, progress, seed)
        elif section == "views":
            # Imported only when run: it brings the record generator and the readers.
            from bench.views_runs import views_section

            results.views = views_section(settings, sizes, progress, seed, rebuild=options.rebuild_views)
        elif section == "peers":
            # Needs psycopg_pool (the 'bench' extra); imported only when the peers run.
            from bench.peer_runs import peers_section

            results.rows += peers_section(settings, sizes, progress, seed)
        else:
            raise ValueError(f"unknown section {section!r}")
        results.section_seconds[section] = time.perf_counter() - started
    results.machine["load average at end"] = load_average()
    if options.out is not None:
        results.write_json(options.out / RESULTS_FILE)
        progress(f"results written to {options.out / RESULTS_FILE}")
        progress(write_chart(results, options.out / CHART_FILE))
    else:
        progress("results not written (a partial or --quick run leaves docs/ as it is; --out DIR keeps them)")
    return results
