"""The engine direct: the seed's random trades (``predmarket simulate``) in 1 or 2 processes.

The workload and its clock are simulate's own: each worker imports and
connects, then waits at a barrier; each times its own trading (first order to
last answer), and the run's elapsed time is the slowest worker's.
"""

from __future__ import annotations

from collections.abc import Callable

from predmarket.engine.settings import Settings

from bench.invariants import check_redis
from bench.options import Sizes
from bench.results import ENGINE, Row
from bench.scratch import scratch_prefix
from predmarket.simulate import Plan, Summary, run

#: A run that has not finished by then is a failure, not a hang.
WORKER_TIMEOUT_S = 300.0


def run_plan(settings: Settings, plan: Plan) -> Summary:
    """Set up and run ``plan`` (simulate's workload and clock), failing rather than hanging."""
    return run(settings, plan, timeout_s=WORKER_TIMEOUT_S)


def engine_section(settings: Settings, sizes: Sizes, say: Callable[[str], None], seed: int | None) -> list[Row]:
    rows = []
    for processes in sizes.engine_processes:
        for markets in sizes.engine_markets:
            for concurrency in sizes.engine_concurrency:
                plan = Plan(markets=markets, users=sizes.users, trades=sizes.trades_for(concurrency),
                            concurrency=concurrency, processes=processes, seed=seed)
                name = f"engine, {processes} process(es), {markets} market(s), {concurrency} tasks"
                with scratch_prefix(settings, "engine") as scoped:
                    summary = run_plan(scoped, plan)
                    check_redis(scoped, name)
                row = Row(ENGINE, processes, markets, concurrency, summary.trades, summary.elapsed_s,
                          summary.p50_ms, summary.p99_ms, summary.retries_per_trade, summary.rejected)
                rows.append(row)
                say(f"{name}: {row.trades:,} trades in {row.elapsed_s:.2f} s = {row.trades_per_s:,.0f}/s, "
                    f"p50 {row.p50_ms:.2f} ms, p99 {row.p99_ms:.2f} ms, "
                    f"{summary.retries_per_trade:.3f} retries/trade, "
                    f"{summary.trades / max(summary.script_calls, 1):.1f} trades/script call; invariants hold")
    return rows
