"""Issue 16's benchmark: the trader's views on a large record, with and without the persister ingesting.

1. The record (bench/views_record.py): kept between runs under its fingerprint, generated if absent;
   this run works on a file copy of it, dropped at the end.
2. ``predmarket recover`` puts its live state (users, keys, balances, markets, positions, net costs)
   into a fresh key prefix, deleted at the end; the invariants are checked on it.
3. One ``predmarket serve`` replica on the copy; the readers (bench/views_readers.py, a separate
   process, 32 keep-alive connections) read the four views alone for ``views_seconds``.
4. The persister's ingest: the engine makes a burst with no persister running (new users and markets
   of the same prefix), then one persister (a thread here, the production loop) drains it into the
   big record; the clock runs until its group has nothing pending or undelivered and every trade of
   the burst is in PostgreSQL. Without readers and with the readers reading meanwhile, alternated
   (the machine is noisy); then without the candle rollup (the writer's ``candle_rows`` stubbed out
   in this process: the bench's switch, not a setting) to price it.
"""

from __future__ import annotations

import secrets
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from unittest.mock import patch
from urllib.parse import urlsplit

import redis
from predmarket.engine.connection import connect_sync
from predmarket.engine.keys import Keys
from predmarket.engine.settings import Settings
from predmarket.persister import writer
from predmarket.persister.lag import group_lag
from predmarket.persister.recover import recover
from predmarket.persister.stream import GROUP
from predmarket.persister.worker import build
from sqlalchemy import create_engine, text

from bench.engine_runs import run_plan
from bench.invariants import check_redis
from bench.options import Sizes
from bench.persister_runs import PersisterFailed
from bench.replicas import Replicas, replica_env
from bench.scratch import scratch_prefix
from bench.views_readers import ReaderProcess, ReaderResult, ReaderSpec
from bench.views_record import RecordSize, ensure_record, market_id, record_copy, record_facts
from bench.views_results import NO_READERS, IngestRun, ReadPhase, ViewsResult, reader_mode
from predmarket.simulate import Plan

POLL_S = 0.05


def _used_mb(client: redis.Redis) -> float:
    return int(client.info("memory")["used_memory"]) / 2**20


def _stream_backlog(client: redis.Redis, stream: str) -> int:
    """Entries the persister group has still to write (the whole stream before the group exists)."""
    lag = group_lag(client, stream, GROUP)
    return int(client.xlen(stream)) if lag is None else lag.entries


def _without_rollup() -> AbstractContextManager[object]:
    """The persister of this process writes no candle rows (the rollup's cost is the difference)."""
    return patch.object(writer, "candle_rows", lambda trades, inserted: [])


def _drain(settings: Settings, client: redis.Redis, pg_url: str, base_trade: int, trades: int,
           timeout_s: float) -> float:
    """Run one persister until its group caught up and the burst's trades are all written; the seconds."""
    stream = Keys(settings.key_prefix).events
    persister = build(settings, consumer="bench-views")
    counter = create_engine(pg_url, pool_size=1)
    thread = threading.Thread(target=persister.run, name="bench-views-persister", daemon=True)
    started = time.perf_counter()
    thread.start()
    try:
        while True:
            if not thread.is_alive():
                raise PersisterFailed("the persister stopped before it caught up")
            elapsed = time.perf_counter() - started
            if elapsed > timeout_s:
                raise PersisterFailed(f"the persister did not catch up within {timeout_s:.0f} s")
            lag = group_lag(client, stream, GROUP)
            if lag is not None and lag.entries == 0:
                with counter.connect() as conn:
                    # A range of the primary key: count(*) of the whole table would scan 10M rows per poll.
                    written = int(conn.execute(text("SELECT count(*) FROM trades WHERE trade_id > :b"),
                                               {"b": base_trade}).scalar_one())
                if written == trades:
                    return time.perf_counter() - started
                if written > trades:
                    raise PersisterFailed(f"{written} new trades in PostgreSQL, {trades} executed")
            time.sleep(POLL_S)  # polling a condition with a deadline (above), as persister_runs does
    finally:
        persister.stopping = True
        thread.join(timeout=30)
        persister.pg.dispose()
        persister.stream.redis.close()
        counter.dispose()


def _ingest(scoped: Settings, sizes: Sizes, client: redis.Redis, pg_url: str, seed: int | None,
            readers: ReaderProcess | None, rollup: bool, say: Callable[[str], None]) -> tuple[IngestRun,
                                                                                          ReaderResult | None]:
    stream = Keys(scoped.key_prefix).events
    base_trade = int(client.get(Keys(scoped.key_prefix).trade_seq) or 0)
    plan = Plan(markets=sizes.views_ingest_markets, users=sizes.users, trades=sizes.views_ingest_trades,
                concurrency=32, processes=2, seed=seed)
    burst = run_plan(scoped, plan)
    events = _stream_backlog(client, stream)
    read: ReaderResult | None = None
    if readers is not None:
        readers.start()
    try:
        if rollup:
            drain_s = _drain(scoped, client, pg_url, base_trade, burst.trades, sizes.views_ingest_timeout_s)
        else:
            with _without_rollup():
                drain_s = _drain(scoped, client, pg_url, base_trade, burst.trades, sizes.views_ingest_timeout_s)
    finally:
        if readers is not None:
            read = readers.stop()
    run = IngestRun(NO_READERS if readers is None else reader_mode(readers.spec.rate_per_s), rollup, burst.trades,
                    events, drain_s)
    say(f"views ingest (readers: {run.readers}, rollup {'on' if rollup else 'off'}): "
        f"{run.trades:,} trades made at {burst.trades_per_s:,.0f}/s, {run.events:,} events drained in "
        f"{run.drain_s:.2f} s = {run.events_per_s:,.0f} events/s"
        + (f"; readers {sum(len(v) for v in read.latencies.values()) / max(read.elapsed_s, 1e-9):,.0f} req/s"
           if read is not None else ""))
    return run, read


def _describe(phase: ReadPhase, what: str, say: Callable[[str], None]) -> None:
    for route, s in phase.routes.items():
        errors = f", errors {s.errors}" if s.errors else ""
        say(f"views {what}: {route}: {s.requests:,} answers, p50 {s.p50_ms:.2f} ms, p95 {s.p95_ms:.2f} ms, "
            f"p99 {s.p99_ms:.2f} ms, max {s.max_ms:.1f} ms, {s.items_per_answer:.1f} items each{errors}")
    say(f"views {what}: {phase.requests_per_s:,.0f} requests/s over {phase.seconds:.1f} s, "
        f"{phase.connection_errors} connection errors")


def views_section(settings: Settings, sizes: Sizes, say: Callable[[str], None], seed: int | None,
                  rebuild: bool = False) -> ViewsResult:
    size = RecordSize(sizes.views_trades, sizes.views_markets, sizes.views_users)
    name, reused = ensure_record(settings.database_url, size, rebuild=rebuild, say=say)
    started = time.perf_counter()
    with record_copy(settings.database_url, name) as db_url, scratch_prefix(settings, "views") as scoped:
        copy_s = time.perf_counter() - started
        facts = record_facts(db_url, name, size, reused)
        say(f"views: record copied in {copy_s:.1f} s; {facts.database_bytes / 2**30:.2f} GiB, "
            f"{facts.positions:,} positions ({facts.positions_per_user[0]}-{facts.positions_per_user[2]} per user, "
            f"mean {facts.positions_per_user[1]:.1f}), {len(facts.candle_markets)} markets with >= 1,000 "
            f"one-minute candles")
        scoped = scoped.model_copy(update={"database_url": db_url})
        keys = Keys(scoped.key_prefix)
        client = connect_sync(scoped.redis_url, 60.0)
        pg = create_engine(db_url)
        try:
            before_mb = _used_mb(client)
            report = recover(pg, client, keys, idempotency_ttl_s=scoped.idempotency_ttl_s)
            redis_mb = _used_mb(client) - before_mb
            say(f"views: recovered {report.users:,} users, {report.positions:,} positions, {report.markets:,} "
                f"markets into Redis in {report.seconds:.1f} s (+{redis_mb:,.0f} MiB in Redis)")
            if sizes.views_check_state:
                check_redis(scoped, "the views record recovered")
                say("views: invariants hold on the recovered record")
            max_trade = int(client.get(keys.trade_seq) or 0)
            token = "bench-" + secrets.token_urlsafe(16)
            log_path = Path(tempfile.mkdtemp(prefix="predmarket-bench-")) / "views-replica.log"
            env = replica_env(scoped.redis_url, db_url, scoped.key_prefix, token)
            with Replicas(env, 1, log_path) as replica:
                url = urlsplit(replica.urls[0])
                spec = ReaderSpec(
                    url.hostname or "127.0.0.1", url.port or 80, sizes.views_readers, size.users,
                    tuple(market_id(j) for j in range(size.markets)), tuple(facts.market_trades),
                    tuple(facts.candle_markets), max_trade, sizes.views_warmup_s, 3600.0, seed)
                alone = ReadPhase.of([ReaderProcess(spec).run_for(sizes.views_seconds)])
                _describe(alone, "readers alone, closed loop", say)
                paced: dict[str, ReadPhase] = {}
                for rate in sizes.views_paced_rates:
                    at_rate = replace(spec, rate_per_s=rate)
                    paced[reader_mode(rate)] = phase = ReadPhase.of([ReaderProcess(at_rate).run_for(
                        sizes.views_paced_seconds)])
                    _describe(phase, f"readers alone at {rate:g} requests/s", say)
                runs: list[IngestRun] = []
                during: dict[str, list[ReaderResult]] = {}
                modes: tuple[ReaderSpec | None, ...] = (None, spec, replace(spec, rate_per_s=sizes.views_ingest_rate))
                for i in range(sizes.views_ingest_runs):
                    for readers in modes:
                        run, read = _ingest(scoped, sizes, client, db_url, None if seed is None else seed + i,
                                            None if readers is None else ReaderProcess(readers), True, say)
                        runs.append(run)
                        if read is not None:
                            during.setdefault(run.readers, []).append(read)
                for i in range(sizes.views_rollup_runs):
                    # Rollup off, then on again beside it: the pair is what the cost is read from.
                    for rollup in (False, True):
                        run, _ = _ingest(scoped, sizes, client, db_url, None if seed is None else seed + 100 + i,
                                         None, rollup, say)
                        runs.append(replace(run, rollup_pair=True))
            during_phases = {mode: ReadPhase.of(results) for mode, results in during.items()}
            for mode, phase in during_phases.items():
                _describe(phase, f"readers ({mode}) during ingest", say)
            if sizes.views_check_state:
                check_redis(scoped, "the views bench's ingest")
        finally:
            pg.dispose()
            client.close()
    result = ViewsResult(facts, copy_s, report.seconds, redis_mb, sizes.views_readers, alone, paced, during_phases,
                         runs)
    with_readers = [f"{result.rate_with(m) or 0:,.0f} with readers {m} ({-(result.ingest_slowdown(m) or 0):+.1%})"
                    for m in result.reader_modes()]
    cost = result.rollup_cost
    say(f"views: persister {result.rate_without_readers or 0:,.0f} events/s without readers, "
        + ", ".join(with_readers) + (f"; candle rollup costs {cost:+.1%} of the rate" if cost is not None else ""))
    return result
