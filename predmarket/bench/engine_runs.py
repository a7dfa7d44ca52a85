"""The engine direct: the seed's random trades (predmarket.simulate) in 1 or 2 processes.

The workload is simulate's own (``setup`` and ``run_worker``, same Plan); only
the clock differs. ``simulate.run`` starts its clock before spawning the
workers, so each figure includes a process start and the import of the
engine (~0.6 s here: 2,000 trades from one task showed 1.8k/s where the
trading itself ran at 3.3-3.8k/s). Here every worker imports, then waits at a
barrier; each times its own trading (first order to last answer, after its
connections are set up), and the run's elapsed time is the slowest worker's.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import queue as queue_module
import time
import traceback
from collections.abc import Callable
from typing import Any

from engine.market_engine import MarketEngine
from engine.settings import Settings
from predmarket.bench.invariants import check_redis
from predmarket.bench.options import Sizes
from predmarket.bench.results import ENGINE, Row
from predmarket.bench.scratch import scratch_prefix
from predmarket.bench.stats import p50_p99_ms
from predmarket.simulate import Plan, Summary, WorkerResult, run_worker, setup

#: Spawned workers that have not reported by then are a failure, not a hang.
WORKER_TIMEOUT_S = 300.0


def _worker(results: Any, barrier: Any, settings: Settings, users: list[str], markets: list[str],
            count: int, concurrency: int, seed: int | None) -> None:
    try:
        barrier.wait(timeout=60)
        result = run_worker(settings, users, markets, count, concurrency, seed)
        results.put((result, result.trading_s))
    except BaseException:
        results.put(traceback.format_exc())
        raise


async def _setup(settings: Settings, plan: Plan) -> tuple[list[str], list[str]]:
    engine = MarketEngine.from_settings(settings)
    try:
        return await setup(engine, plan)
    finally:
        await engine.close()


def run_plan(settings: Settings, plan: Plan) -> Summary:
    """Set up and run ``plan`` like ``simulate.run``, timing only the trading."""
    users, markets = asyncio.run(_setup(settings, plan))
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    barrier = ctx.Barrier(plan.processes)
    n = plan.processes
    workers = [
        ctx.Process(target=_worker, args=(
            results, barrier, settings, users[i::n] or users, markets, plan.trades // n + (i < plan.trades % n),
            plan.concurrency, None if plan.seed is None else plan.seed + i,
        ), daemon=True)
        for i in range(n)
    ]
    for w in workers:
        w.start()
    reports: list[tuple[WorkerResult, float]] = []
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    try:
        while len(reports) < n:
            try:
                report = results.get(timeout=0.5)
            except queue_module.Empty:
                if time.monotonic() > deadline or any(w.exitcode not in (None, 0) for w in workers):
                    raise RuntimeError("an engine worker process failed or hung") from None
                continue
            if isinstance(report, str):
                raise RuntimeError(f"an engine worker process failed:\n{report}")
            reports.append(report)
    finally:
        for w in workers:
            w.join(timeout=10)
            if w.is_alive():
                w.kill()
    p50, p99 = p50_p99_ms(lat for r, _ in reports for lat in r.latencies)
    rejected: dict[str, int] = {}
    for r, _ in reports:
        for code, count in r.rejected.items():
            rejected[code] = rejected.get(code, 0) + count
    return Summary(
        plan=plan, elapsed_s=max(seconds for _, seconds in reports), trades=sum(r.trades for r, _ in reports),
        rejected=rejected, p50_ms=p50, p99_ms=p99, script_calls=sum(r.script_calls for r, _ in reports),
        conflicts=sum(r.conflicts for r, _ in reports), market_ids=markets,
    )


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
