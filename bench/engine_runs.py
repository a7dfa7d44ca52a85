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

#: The tasks per process the headline figures (and the labelled rows) use.
HEADLINE_TASKS = 32
#: A run that has not finished by then is a failure, not a hang.
WORKER_TIMEOUT_S = 300.0


def run_plan(settings: Settings, plan: Plan) -> Summary:
    """Set up and run ``plan`` (simulate's workload and clock), failing rather than hanging."""
    return run(settings, plan, timeout_s=WORKER_TIMEOUT_S)


def _measure(settings: Settings, plan: Plan, name: str, say: Callable[[str], None]) -> Row:
    """One workload in its own key prefix, its invariants checked (every label's) before the row counts."""
    with scratch_prefix(settings, "engine") as scoped:
        summary = run_plan(scoped, plan)
        check_redis(scoped, name)
    row = Row(ENGINE, plan.processes, plan.markets, plan.concurrency, summary.trades, summary.elapsed_s,
              summary.p50_ms, summary.p99_ms, summary.retries_per_trade, summary.rejected, plan.outcomes)
    say(f"{name}: {row.trades:,} trades in {row.elapsed_s:.2f} s = {row.trades_per_s:,.0f}/s, "
        f"p50 {row.p50_ms:.2f} ms, p99 {row.p99_ms:.2f} ms, "
        f"{summary.retries_per_trade:.3f} retries/trade, "
        f"{summary.trades / max(summary.script_calls, 1):.1f} trades/script call; invariants hold")
    return row


def engine_section(settings: Settings, sizes: Sizes, say: Callable[[str], None], seed: int | None) -> list[Row]:
    """The YES/NO markets' rows: every process count, market count and concurrency of ``sizes``."""
    rows = []
    for processes in sizes.engine_processes:
        for markets in sizes.engine_markets:
            for concurrency in sizes.engine_concurrency:
                plan = Plan(markets=markets, users=sizes.users, trades=sizes.trades_for(concurrency),
                            concurrency=concurrency, processes=processes, seed=seed)
                rows.append(_measure(settings, plan, f"engine, {processes} process(es), {markets} market(s), "
                                                     f"{concurrency} tasks", say))
    return rows


def outcome_concurrency(sizes: Sizes) -> int:
    """The tasks of the labelled rows: the headline 32 where the YES/NO rows have it, to compare with."""
    return HEADLINE_TASKS if HEADLINE_TASKS in sizes.engine_concurrency else max(sizes.engine_concurrency)


def outcomes_section(settings: Settings, sizes: Sizes, say: Callable[[str], None], seed: int | None) -> list[Row]:
    """The same workload on markets of ``sizes.engine_outcomes`` labels (a random label bought or sold
    each trade), one process: what more labels cost a trade (pricing over n totals, n fields read and
    compared by the script), beside the YES/NO row of the same markets and tasks."""
    rows = []
    concurrency = outcome_concurrency(sizes)
    for outcomes in sizes.engine_outcomes:
        for markets in sizes.engine_markets:
            plan = Plan(markets=markets, users=sizes.users, trades=sizes.trades_for(concurrency),
                        concurrency=concurrency, processes=1, seed=seed, outcomes=outcomes)
            rows.append(_measure(settings, plan, f"engine, 1 process, {markets} market(s) of {outcomes} labels, "
                                                 f"{concurrency} tasks", say))
    return rows
