"""The HTTP API: two ``predmarket serve`` replicas loaded by a separate process over 64 keep-alive connections."""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from predmarket.engine.settings import Settings

from bench.http_load import LoadSpec, run_load_process
from bench.invariants import check_redis
from bench.options import Sizes
from bench.replicas import Replicas, replica_env
from bench.results import HTTP, Row
from bench.scratch import scratch_database, scratch_prefix
from bench.stats import p50_p99_ms
from predmarket.http_sim import setup_http

REPLICAS = 2


def http_section(settings: Settings, sizes: Sizes, say: Callable[[str], None], seed: int | None) -> list[Row]:
    rows: list[Row] = []
    token = "bench-" + secrets.token_urlsafe(16)
    log_path = Path(tempfile.mkdtemp(prefix="predmarket-bench-")) / "replicas.log"
    with scratch_prefix(settings, "http") as scoped, scratch_database(scoped, "http", migrated=True) as db_url:
        env = replica_env(scoped.redis_url, db_url, scoped.key_prefix, token)
        with Replicas(env, REPLICAS, log_path) as replicas:
            targets = tuple((urlsplit(u).hostname or "127.0.0.1", urlsplit(u).port or 80) for u in replicas.urls)
            for markets in sizes.http_markets:
                # Users and markets through the admin API, as a client would create them.
                market_ids, users = asyncio.run(setup_http(replicas.urls[0], token, markets, sizes.users))
                spec = LoadSpec(targets, tuple((u.user_id, u.api_key) for u in users), tuple(market_ids),
                                sizes.http_connections, sizes.http_seconds, sizes.http_warmup_s, seed)
                result = run_load_process(spec)
                name = f"HTTP, {REPLICAS} replicas, {markets} market(s), {sizes.http_connections} connections"
                check_redis(scoped, name)
                if result.trades == 0:
                    raise RuntimeError(f"{name}: no trade succeeded ({result.rejected}); see {log_path}")
                p50, p99 = p50_p99_ms(result.latencies)
                row = Row(HTTP, REPLICAS, markets, sizes.http_connections, result.trades, result.elapsed_s,
                          p50, p99, None, result.rejected)
                rows.append(row)
                refused = ", ".join(f"{code} {n}" for code, n in sorted(result.rejected.items())) or "none"
                say(f"{name}: {row.trades:,} trades (201) in {row.elapsed_s:.2f} s = {row.trades_per_s:,.0f}/s, "
                    f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, refused: {refused}, "
                    f"{result.connection_errors} connection errors; invariants hold")
    return rows
