"""The persister draining a burst: trades made with no persister running, then drained from the stream.

The engine makes the burst (the seed's workload over 100 markets) into a
fresh prefix whose consumer group does not exist yet; then the production
loop (``Persister.run``, pipelined) starts in a thread with its default
settings, and the clock runs until the group has nothing pending or
undelivered and every trade is in PostgreSQL. Then the same with two
persister processes in the group, as ``docker-compose.yml`` runs them (the
clock starts once both have imported and connected).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import multiprocessing.synchronize
import threading
import time
from collections.abc import Callable

import redis
from predmarket.engine.connection import connect_sync
from predmarket.engine.keys import Keys
from predmarket.engine.settings import Settings
from predmarket.persister.lag import group_lag
from predmarket.persister.stream import GROUP
from predmarket.persister.worker import Persister, build
from predmarket.record.pg_state import read_pg_state
from sqlalchemy import create_engine, text

from bench.compare import state_differences
from bench.engine_runs import run_plan
from bench.invariants import check_redis, read_state, require
from bench.options import Sizes
from bench.results import PersisterResult
from bench.scratch import scratch_database, scratch_prefix
from predmarket.collector import tune_collector
from predmarket.simulate import Plan

POLL_S = 0.02


class PersisterFailed(RuntimeError):
    pass


def _caught_up(client: redis.Redis, stream: str) -> bool:
    """Nothing pending and nothing undelivered in the persister group."""
    lag = group_lag(client, stream, GROUP)
    return lag is not None and lag.entries == 0


def _wait_caught_up(running: Callable[[], bool], client: redis.Redis, stream: str, pg_url: str, trades: int,
                    timeout_s: float, started: float) -> float:
    """Poll until the group caught up and every trade is in PostgreSQL; returns the seconds since ``started``."""
    counter = create_engine(pg_url)
    try:
        while True:
            if not running():
                raise PersisterFailed("a persister stopped before it caught up")
            if time.perf_counter() - started > timeout_s:
                raise PersisterFailed(f"the persister did not catch up within {timeout_s:.0f} s")
            if _caught_up(client, stream):
                with counter.connect() as conn:
                    written = int(conn.execute(text("SELECT count(*) FROM trades")).scalar_one())
                if written == trades:
                    return time.perf_counter() - started
                if written > trades:
                    raise PersisterFailed(f"{written} trades in PostgreSQL, {trades} executed")
            time.sleep(POLL_S)
    finally:
        counter.dispose()


def _drain(persister: Persister, client: redis.Redis, stream: str, pg_url: str, trades: int,
           timeout_s: float) -> float:
    """Run one persister (a thread of this process) until it caught up; returns the seconds it took."""
    tune_collector()  # as `predmarket persister` sets its process
    thread = threading.Thread(target=persister.run, name="bench-persister", daemon=True)
    started = time.perf_counter()
    thread.start()
    try:
        return _wait_caught_up(thread.is_alive, client, stream, pg_url, trades, timeout_s, started)
    finally:
        persister.stopping = True
        thread.join(timeout=30)


def _persister_process(settings: Settings, consumer: str, barrier: multiprocessing.synchronize.Barrier,
                       stop: multiprocessing.synchronize.Event) -> None:
    """A spawned persister: built (imports, connections) before the barrier, run after it until ``stop``."""
    persister = build(settings, consumer=consumer)
    tune_collector()  # as `predmarket persister` sets its process

    def stop_when_told() -> None:
        stop.wait()
        persister.stopping = True

    threading.Thread(target=stop_when_told, daemon=True).start()
    barrier.wait(timeout=60)
    persister.run()


def _drain_in_processes(settings: Settings, count: int, client: redis.Redis, stream: str, pg_url: str,
                        trades: int, timeout_s: float) -> float:
    """Run ``count`` persister processes in one group until they caught up; the clock starts when all are built."""
    ctx = mp.get_context("spawn")
    barrier, stop = ctx.Barrier(count + 1), ctx.Event()
    workers = [ctx.Process(target=_persister_process, args=(settings, f"bench-{i}", barrier, stop), daemon=True)
               for i in range(count)]
    for w in workers:
        w.start()
    try:
        barrier.wait(timeout=60)
        started = time.perf_counter()
        return _wait_caught_up(lambda: all(w.is_alive() for w in workers), client, stream, pg_url, trades,
                               timeout_s, started)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=30)
            if w.is_alive():
                w.kill()


def _compare(settings: Settings, persister: Persister, pg_url: str) -> None:
    """PostgreSQL must equal Redis once every market row is flushed."""
    persister.flusher.idle_ms = 0  # flush every market now, not only the idle ones
    persister.flusher.flush(persister.stream.committed())
    redis_state = asyncio.run(read_state(settings))
    reader = create_engine(pg_url)
    try:
        with reader.connect() as conn:
            pg_state = read_pg_state(conn)
    finally:
        reader.dispose()
    require("the persister drain (PostgreSQL)", pg_state)
    differences = state_differences(redis_state, pg_state)
    if differences:
        raise PersisterFailed("PostgreSQL differs from Redis after the drain: " + "; ".join(differences))


def _burst_and_drain(settings: Settings, sizes: Sizes, say: Callable[[str], None], seed: int | None,
                     persisters: int) -> PersisterResult:
    """A burst made with no persister running, then drained by ``persisters`` persisters."""
    with scratch_prefix(settings, "persister") as scoped, \
            scratch_database(scoped, "persister", migrated=True) as pg_url:
        scoped = scoped.model_copy(update={"database_url": pg_url})
        plan = Plan(markets=sizes.persister_markets, users=sizes.users, trades=sizes.persister_trades,
                    concurrency=32, processes=2, seed=seed)
        say(f"persister: making a burst of {plan.trades:,} trades over {plan.markets} markets (no persister)")
        burst = run_plan(scoped, plan)
        check_redis(scoped, "the persister's burst")
        client = connect_sync(scoped.redis_url, 30.0)
        stream = Keys(scoped.key_prefix).events
        # One persister runs here (its flusher also serves the final comparison); more run as processes.
        persister = build(scoped, consumer="bench")
        try:
            events = int(client.xlen(stream))
            say(f"persister: {burst.trades:,} trades made at {burst.trades_per_s:,.0f}/s; draining {events:,} "
                f"events with {persisters} persister(s)")
            writes: int | None
            if persisters == 1:
                drain_s = _drain(persister, client, stream, pg_url, burst.trades, sizes.persister_timeout_s)
                writes = persister.flusher.writes
            else:
                drain_s = _drain_in_processes(scoped, persisters, client, stream, pg_url, burst.trades,
                                              sizes.persister_timeout_s)
                writes = None  # counted in the persister processes, not here
            _compare(scoped, persister, pg_url)
        finally:
            persister.pg.dispose()
            persister.stream.redis.close()
            client.close()
    result = PersisterResult(burst.trades, events, drain_s, writes, burst.trades_per_s, pg_equals_redis=True,
                             persisters=persisters)
    say(f"persister x{persisters}: {events:,} events in {drain_s:.2f} s = {result.events_per_s:,.0f} events/s; "
        f"lag 0 after {drain_s:.2f} s; PostgreSQL equals Redis"
        + (f"; {writes} market row writes = {result.writes_per_trade:.4f} per trade (1.0 if written on "
           "every trade)" if persisters == 1 else ""))
    return result


def persister_section(settings: Settings, sizes: Sizes, say: Callable[[str], None],
                      seed: int | None) -> tuple[PersisterResult, PersisterResult | None]:
    """One persister (the target's figure), then two processes sharing the group (as docker-compose runs)."""
    single = _burst_and_drain(settings, sizes, say, seed, persisters=1)
    pair = _burst_and_drain(settings, sizes, say, seed, persisters=2) if sizes.persister_pair else None
    return single, pair
