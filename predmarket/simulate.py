"""The seed's random-trade simulation against the engine, in one or several processes.

Each trade picks a random market and a random user, a whole quantity of 10-100
shares, and randomly buys or sells one of the market's labels (YES or NO, or with
``Plan.outcomes`` = N > 2 one of O1..ON; a sell only of shares the user holds;
otherwise it buys). Users are split between worker processes so each
process knows its users' holdings without asking Redis.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import multiprocessing.process
import multiprocessing.queues
import multiprocessing.sharedctypes
import multiprocessing.synchronize
import queue as queue_module
import random
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import redis
import uvloop
from sqlalchemy.ext.asyncio import create_async_engine

from predmarket.collector import tune_collector
from predmarket.engine.deployment import Engine, engine_for
from predmarket.engine.errors import EngineError
from predmarket.engine.keys import Keys
from predmarket.engine.labels import YES_NO
from predmarket.engine.models import HOUSE, Order
from predmarket.engine.pricing_n import subsidy_n
from predmarket.engine.settings import Settings
from predmarket.engine.shards import shard_keys
from predmarket.engine.units import MICRO
from predmarket.record.loader import load_from
from predmarket.workload import LabelTrades, outcome_labels

USER_FUNDS = 1_000_000 * MICRO
#: Every username and market id a simulation makes starts with this (here and in predmarket.http_sim).
SIMULATED = "sim-"


def live_deployment(client: redis.Redis, prefix: str, shards: int = 1) -> str | None:
    """What shows that the prefix holds a live deployment, or None.

    Live means: a user (other than ``house``) or a market that no simulation made. A
    persister or an API running against the prefix does not count by itself (simulating
    with a persister running, then auditing, is the usual way to test a setup); real
    users and markets do, since the simulation would mix its users, money and trades
    into theirs.
    """
    # Over shards the usernames are the deployment's directory, the markets each shard's.
    for username, _ in client.hscan_iter(Keys(prefix).usernames, count=1000):
        if username != HOUSE and not username.startswith(SIMULATED):
            return f"user {username!r}"
    each_shard = [Keys(prefix)] if shards == 1 else [shard_keys(prefix, k, shards) for k in range(shards)]
    for keys in each_shard:
        for market_id, _ in client.zscan_iter(keys.markets, count=1000):
            if not market_id.startswith(SIMULATED):
                return f"market {market_id!r}"
    return None


@dataclass(frozen=True)
class Plan:
    markets: int = 10
    users: int = 100
    trades: int = 10_000
    concurrency: int = 32
    processes: int = 1
    liquidity: int = 1_000 * MICRO
    seed: int | None = None
    #: labels per market: 2 is YES/NO (the seed's markets), 3-16 are O1..ON
    outcomes: int = 2

    @property
    def labels(self) -> tuple[str, ...]:
        return outcome_labels(self.outcomes)


@dataclass
class WorkerResult:
    latencies: list[float] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)
    script_calls: int = 0
    conflicts: int = 0
    trades: int = 0
    #: seconds from the first order to the last answer (no process start, no connecting)
    trading_s: float = 0.0


# Strings: typeshed makes these generic, the classes are not subscriptable at run time.
#: What each worker process sends back: its result, or the traceback of its failure.
Results: TypeAlias = "multiprocessing.queues.Queue[WorkerResult | str]"
#: Trades done so far, summed over the worker processes.
Progress: TypeAlias = "multiprocessing.sharedctypes.Synchronized[int]"


@dataclass
class Summary:
    plan: Plan
    elapsed_s: float
    trades: int
    rejected: dict[str, int]
    p50_ms: float
    p99_ms: float
    script_calls: int
    conflicts: int
    market_ids: list[str]

    @property
    def trades_per_s(self) -> float:
        return self.trades / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def retries_per_trade(self) -> float:
        """Script calls repeated because another process changed the market first."""
        return self.conflicts / self.trades if self.trades else 0.0


async def setup(engine: Engine, plan: Plan) -> tuple[list[str], list[str]]:
    """Create and fund the simulation's users and open its markets."""
    run = uuid.uuid4().hex[:8]
    await engine.start()
    subsidy_total = plan.markets * subsidy_n(plan.liquidity, plan.outcomes)  # ceil(b ln n) each
    await engine.accounts.deposit(HOUSE, subsidy_total)
    users: list[str] = []
    for i in range(plan.users):
        account = await engine.accounts.create(f"sim-{run}-{i}", f"sim-{run}-u{i}")
        await engine.accounts.deposit(account.user_id, USER_FUNDS)
        users.append(account.user_id)
    markets: list[str] = []
    for j in range(plan.markets):
        market = await engine.markets.create(f"Simulated market {j}", plan.liquidity, f"sim-{run}-m{j}",
                                             outcomes=None if plan.outcomes == 2 else plan.labels)
        await engine.markets.open(market.market_id)
        markets.append(market.market_id)
    return users, markets


async def _trade_loop(
    engine: Engine, users: list[str], markets: list[str], count: int,
    concurrency: int, rng: random.Random, result: WorkerResult, tick: Callable[[], None],
    labels: Sequence[str] = YES_NO,
) -> None:
    trades = LabelTrades(rng, users, markets, labels)
    remaining = count

    async def one() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            o = trades.next()
            start = time.perf_counter()
            try:
                await engine.execute_trade(Order(o.user, o.market, o.side, o.outcome, shares=o.shares))
            except EngineError as exc:
                result.rejected[exc.code] = result.rejected.get(exc.code, 0) + 1
                trades.done(o, executed=False)
            else:
                result.latencies.append(time.perf_counter() - start)
                trades.done(o, executed=True)
            tick()

    await asyncio.gather(*(one() for _ in range(concurrency)))


def run_worker(
    settings: Settings, users: list[str], markets: list[str], count: int, concurrency: int,
    seed: int | None, progress: Progress | None = None, labels: Sequence[str] = YES_NO,
) -> WorkerResult:
    """One process's share of the trades; returns its latencies and counters."""
    result = WorkerResult()
    pending = 0

    def tick() -> None:
        nonlocal pending
        pending += 1
        if progress is not None and pending >= 100:
            with progress.get_lock():
                progress.value += pending
            pending = 0

    async def main() -> None:
        engine = engine_for(settings)
        # Users idle past PM_USER_IDLE_TTL_S may have been evicted by a running persister.
        pg = create_async_engine(settings.database_url, pool_size=2, pool_pre_ping=True)
        load_from(pg, engine)
        tune_collector()  # a trading process, as `predmarket serve` sets its own (predmarket/collector.py)
        try:
            start = time.perf_counter()
            await _trade_loop(engine, users, markets, count, concurrency, random.Random(seed), result, tick,
                              labels)
            result.trading_s = time.perf_counter() - start
        finally:
            result.script_calls = engine.stats.script_calls
            result.conflicts = engine.stats.conflicts
            result.trades = engine.stats.trades
            await engine.close()
            await pg.dispose()

    uvloop.run(main())  # the event loop the API runs on too: measured ~1.5x faster here
    if progress is not None and pending:
        with progress.get_lock():
            progress.value += pending
    return result


#: How long the workers may take to import and connect before the clock starts.
START_TIMEOUT_S = 60.0


def _worker_entry(results: Results, barrier: multiprocessing.synchronize.Barrier, *args: Any) -> None:
    """A spawned worker: imported and set up before the barrier, so the clock measures trading only."""
    try:
        barrier.wait(timeout=START_TIMEOUT_S)
        results.put(run_worker(*args))
    except BaseException:
        results.put(traceback.format_exc())
        raise


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def run(settings: Settings, plan: Plan, on_progress: Callable[[int], None] | None = None,
        timeout_s: float | None = None) -> Summary:
    """Set up, run ``plan.trades`` trades over ``plan.processes`` processes, summarise.

    The elapsed time is the slowest worker's trading (first order to last
    answer): process start, imports and connecting are outside the clock
    (~0.6 s per run here, which made short runs look several times slower).
    A worker that crashes, or ``timeout_s`` passing, raises RuntimeError.
    """
    users, markets = asyncio.run(_setup(settings, plan))
    ctx = mp.get_context("spawn")
    progress = ctx.Value("q", 0)
    results = ctx.Queue()
    barrier = ctx.Barrier(plan.processes)
    n = plan.processes
    workers = [
        ctx.Process(target=_worker_entry, args=(
            results, barrier, settings, users[i::n] or users, markets, plan.trades // n + (i < plan.trades % n),
            plan.concurrency, None if plan.seed is None else plan.seed + i, progress, plan.labels,
        ), daemon=True)
        for i in range(n)
    ]
    for w in workers:
        w.start()
    try:
        reports = _collect(results, workers, progress, on_progress, timeout_s)
    finally:
        for w in workers:
            w.join(timeout=10)
            if w.is_alive():
                w.kill()
    if on_progress is not None:
        on_progress(plan.trades)
    return _summarise(plan, reports, markets)


def _collect(results: Results, workers: Sequence[multiprocessing.process.BaseProcess], progress: Progress,
             on_progress: Callable[[int], None] | None,
             timeout_s: float | None) -> list[WorkerResult]:
    """Every worker's result; reports progress while waiting; raises if a worker fails or time runs out."""
    reports: list[WorkerResult] = []
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while len(reports) < len(workers):
        try:
            report = results.get(timeout=0.2)
        except queue_module.Empty:  # nothing finished yet: report progress, check for crashes
            if any(w.exitcode not in (None, 0) for w in workers):
                raise RuntimeError("a simulation worker process failed") from None
            if deadline is not None and time.monotonic() > deadline:
                raise RuntimeError(f"the simulation did not finish within {timeout_s:.0f} s") from None
        else:
            if isinstance(report, str):
                raise RuntimeError(f"a simulation worker process failed:\n{report}")
            reports.append(report)
        if on_progress is not None:
            on_progress(progress.value)
    return reports


def _summarise(plan: Plan, reports: list[WorkerResult], markets: list[str]) -> Summary:
    latencies = sorted(lat for r in reports for lat in r.latencies)
    rejected: dict[str, int] = {}
    for r in reports:
        for code, count in r.rejected.items():
            rejected[code] = rejected.get(code, 0) + count
    return Summary(
        plan=plan, elapsed_s=max(r.trading_s for r in reports), trades=sum(r.trades for r in reports),
        rejected=rejected, p50_ms=_percentile(latencies, 0.50) * 1000, p99_ms=_percentile(latencies, 0.99) * 1000,
        script_calls=sum(r.script_calls for r in reports),
        conflicts=sum(r.conflicts for r in reports), market_ids=markets,
    )


async def _setup(settings: Settings, plan: Plan) -> tuple[list[str], list[str]]:
    engine = engine_for(settings)
    try:
        return await setup(engine, plan)
    finally:
        await engine.close()
