"""The persister draining a burst: trades made with no persister running, then drained from the stream.

The engine makes the burst (the seed's workload over 100 markets) into a
fresh prefix whose consumer group does not exist yet; then the production
loop (``Persister.run``, pipelined) starts in a thread with its default
settings, and the clock runs until the group has nothing pending or
undelivered and every trade is in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from sqlalchemy import create_engine, text

from engine.settings import Settings
from persister.stream import GROUP
from persister.worker import Persister, build
from predmarket.bench.compare import state_differences
from predmarket.bench.engine_runs import run_plan
from predmarket.bench.invariants import check_redis, read_state, require
from predmarket.bench.options import Sizes
from predmarket.bench.results import PersisterResult
from predmarket.bench.scratch import scratch_database, scratch_prefix
from predmarket.simulate import Plan
from record.pg_state import read_pg_state

POLL_S = 0.02


class PersisterFailed(RuntimeError):
    pass


def _caught_up(client: redis.Redis, stream: str) -> bool:
    """Pending + lag of the persister group == 0 (lag compared by id when Redis cannot count it)."""
    groups: list[dict[str, Any]] = client.xinfo_groups(stream)
    group = next((g for g in groups if g["name"] == GROUP), None)
    if group is None or int(group["pending"]):
        return False
    if group.get("lag") is not None:
        return int(group["lag"]) == 0
    last: str = client.xinfo_stream(stream)["last-generated-id"]
    return bool(group["last-delivered-id"] == last)


def _drain(persister: Persister, client: redis.Redis, stream: str, pg_url: str, trades: int,
           timeout_s: float) -> float:
    """Run the persister until it caught up; returns the seconds it took."""
    counter = create_engine(pg_url)
    thread = threading.Thread(target=persister.run, name="bench-persister", daemon=True)
    started = time.perf_counter()
    thread.start()
    try:
        while True:
            if not thread.is_alive():
                raise PersisterFailed("the persister stopped before it caught up")
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
        persister.stopping = True
        thread.join(timeout=30)
        counter.dispose()


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


def persister_section(settings: Settings, sizes: Sizes, say: Callable[[str], None],
                      seed: int | None) -> PersisterResult:
    with scratch_prefix(settings, "persister") as scoped, \
            scratch_database(scoped, "persister", migrated=True) as pg_url:
        scoped = scoped.model_copy(update={"database_url": pg_url})
        plan = Plan(markets=sizes.persister_markets, users=sizes.users, trades=sizes.persister_trades,
                    concurrency=32, processes=2, seed=seed)
        say(f"persister: making a burst of {plan.trades:,} trades over {plan.markets} markets (no persister)")
        burst = run_plan(scoped, plan)
        check_redis(scoped, "the persister's burst")
        client = redis.Redis.from_url(scoped.redis_url, decode_responses=True, socket_timeout=30)
        stream = f"{scoped.key_prefix}:events"
        persister = build(scoped, consumer="bench")
        try:
            events = int(client.xlen(stream))
            say(f"persister: {burst.trades:,} trades made at {burst.trades_per_s:,.0f}/s; draining {events:,} events")
            drain_s = _drain(persister, client, stream, pg_url, burst.trades, sizes.persister_timeout_s)
            writes = persister.flusher.writes
            _compare(scoped, persister, pg_url)
        finally:
            persister.pg.dispose()
            persister.stream.redis.close()
            client.close()
    result = PersisterResult(burst.trades, events, drain_s, writes, burst.trades_per_s, pg_equals_redis=True)
    say(f"persister: {events:,} events in {drain_s:.2f} s = {result.events_per_s:,.0f} events/s; lag 0 after "
        f"{drain_s:.2f} s; {writes} market row writes = {result.writes_per_trade:.4f} per trade "
        "(1.0 if written on every trade); PostgreSQL equals Redis")
    return result
