"""Live streams against trading: one replica's trade rate with and without N idle SSE + M WebSocket subscribers.

The subscribers (a separate process) follow a quiet market, so they are idle
while the HTTP load trades the other markets: what is measured is what holding
them costs the replica. Then a few trades in the quiet market check delivery:
every subscriber must get every entry of that market, in stream order. The
replica's resident memory before and after the subscribers connect gives the
memory per subscriber. The trade rate without subscribers is measured before
they connect and again after they left; the figure is the mean of the two.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
import redis
from predmarket.engine.keys import Keys
from predmarket.engine.settings import Settings

from bench.http_load import LoadResult, LoadSpec, run_load_process
from bench.options import Sizes
from bench.replicas import Replicas, replica_env
from bench.scratch import scratch_database, scratch_prefix
from bench.stream_subscribers import SubscriberProcess, SubscriberSpec
from predmarket.http_sim import setup_http

MARKER_TIMEOUT_S = 30.0


@dataclass
class StreamResult:
    sse: int
    websockets: int
    connected: int
    connect_errors: dict[str, int]
    trades_per_s_without: float
    trades_per_s_with: float
    rss_before_mib: float
    rss_with_mib: float
    marker_entries: int
    complete: int  # subscribers that received every marker entry in order
    incomplete: int
    out_of_order: int
    connections: int
    seconds: float
    cpu_us_without: float  # the replica's CPU time per trade
    cpu_us_with: float
    runs_without: list[float] = field(default_factory=list)
    runs_with: list[float] = field(default_factory=list)

    @property
    def slowdown(self) -> float:
        """Relative loss of trade rate with the subscribers (0.05 = 5 % slower)."""
        if self.trades_per_s_without <= 0:
            return 0.0
        return 1 - self.trades_per_s_with / self.trades_per_s_without

    @property
    def cpu_overhead(self) -> float:
        """Relative extra replica CPU per trade with the subscribers (0.05 = 5 % more)."""
        return self.cpu_us_with / self.cpu_us_without - 1 if self.cpu_us_without > 0 else 0.0

    @property
    def kib_per_subscriber(self) -> float:
        if self.connected <= 0:
            return 0.0
        return (self.rss_with_mib - self.rss_before_mib) * 1024 / self.connected

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "slowdown": round(self.slowdown, 4), "cpu_overhead": round(self.cpu_overhead, 4),
                "kib_per_subscriber": round(self.kib_per_subscriber, 1)}


def _mean(runs: list[tuple[float, float]], index: int) -> float:
    return sum(run[index] for run in runs) / len(runs)


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` (Linux /proc), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def _marker_trades(url: str, api_key: str, market_id: str, count: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30,
                                 headers={"Authorization": f"Bearer {api_key}"}) as client:
        for i in range(count):
            r = await client.post(f"/v1/markets/{market_id}/trades",
                                  json={"side": "BUY", "outcome": "YES" if i % 2 else "NO", "shares": "1"})
            if r.status_code != 201:
                raise RuntimeError(f"marker trade refused: {r.status_code} {r.text[:200]}")


def _market_entries(redis_url: str, keys: Keys, market_id: str) -> list[str]:
    client = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=30)
    try:
        entries = cast(list[tuple[str, dict[str, str]]], client.xrange(keys.events))
        return [entry_id for entry_id, fields in entries if fields.get("market_id") == market_id]
    finally:
        client.close()


def cpu_s(pid: int) -> float:
    """User + system CPU time process ``pid`` has used so far (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Meter:
    """Runs the HTTP load and measures the trade rate and the replica's CPU time per trade.

    The rate is what the issue's target names, but on a shared 2-core machine it moves
    by tens of per cent between identical runs; the replica's own CPU per trade (every
    trade of the run, warm-up included, counted in Redis) is barely touched by that noise.
    """

    def __init__(self, spec: LoadSpec, pid: int, redis_url: str, keys: Keys, say: Callable[[str], None]) -> None:
        self.spec, self.pid, self.say = spec, pid, say
        self._redis = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=30)
        self._counter = keys.trade_seq

    def _trades(self) -> int:
        return int(cast(str | None, self._redis.get(self._counter)) or 0)

    def run(self, what: str) -> tuple[float, float]:
        """(trades/s, replica CPU µs per trade) of one load run."""
        cpu, trades = cpu_s(self.pid), self._trades()
        result: LoadResult = run_load_process(self.spec)
        cpu, trades = cpu_s(self.pid) - cpu, self._trades() - trades
        if result.trades == 0 or trades == 0:
            raise RuntimeError(f"streams bench, {what}: no trade succeeded ({result.rejected})")
        rate, per_trade = result.trades / result.elapsed_s, cpu * 1e6 / trades
        refused = ", ".join(f"{code} {n}" for code, n in sorted(result.rejected.items())) or "none"
        self.say(f"{what}: {rate:,.0f} trades/s, replica CPU {per_trade:,.0f} µs/trade (refused: {refused}, "
                 f"{result.connection_errors} connection errors)")
        return rate, per_trade

    def close(self) -> None:
        self._redis.close()


def streams_section(settings: Settings, sizes: Sizes, say: Callable[[str], None], seed: int | None) -> StreamResult:
    token = "bench-" + secrets.token_urlsafe(16)
    log_path = Path(tempfile.mkdtemp(prefix="predmarket-bench-")) / "stream-replica.log"
    subscribers = sizes.stream_sse + sizes.stream_websockets
    with scratch_prefix(settings, "streams") as scoped, \
            scratch_database(scoped, "streams", migrated=True) as db_url:
        env = {**replica_env(scoped.redis_url, db_url, scoped.key_prefix, token),
               "PM_MAX_SUBSCRIBERS": str(max(subscribers + 16, 5_000))}
        with Replicas(env, 1, log_path) as replicas:
            url = replicas.urls[0]
            host, port = urlsplit(url).hostname or "127.0.0.1", urlsplit(url).port or 80
            market_ids, users = asyncio.run(setup_http(url, token, sizes.http_markets[-1], sizes.users))
            (quiet,), (marker_user,) = asyncio.run(setup_http(url, token, 1, 1))
            spec = LoadSpec(((host, port),), tuple((u.user_id, u.api_key) for u in users), tuple(market_ids),
                            sizes.http_connections, sizes.http_seconds, sizes.http_warmup_s, seed)
            pid = replicas.pids[0]
            meter = Meter(spec, pid, scoped.redis_url, Keys(scoped.key_prefix), say)
            first = meter.run("1 replica, no subscribers")
            rss_before = rss_mib(pid)
            sub_spec = SubscriberSpec(host, port, quiet, sizes.stream_sse, sizes.stream_websockets)
            with SubscriberProcess(sub_spec) as held:
                connected, errors = held.connected()
                rss_with = rss_mib(pid)
                say(f"{connected:,} of {subscribers:,} subscribers connected ({sizes.stream_sse:,} SSE + "
                    f"{sizes.stream_websockets:,} WebSocket); replica RSS {rss_before:.0f} -> {rss_with:.0f} MiB"
                    + (f"; not connected: {errors}" if errors else ""))
                # Twice, as the rate without them is taken twice (before and after): the machine's noise
                # (other processes, Redis's own state) weighs the same on both sides.
                runs_with = [meter.run(f"1 replica, {connected:,} idle subscribers") for _ in range(2)]
                asyncio.run(_marker_trades(url, marker_user.api_key, quiet, sizes.stream_markers))
                expected = _market_entries(scoped.redis_url, Keys(scoped.key_prefix), quiet)
                # The quiet market's own creation and opening came before the subscribers.
                expected = expected[-2 * sizes.stream_markers:]
                delivery = held.verify(expected, MARKER_TIMEOUT_S)
                say(f"delivery of {len(expected)} entries: {delivery.complete:,} subscribers complete and in "
                    f"order, {delivery.incomplete:,} incomplete, {delivery.out_of_order:,} out of order")
            second = meter.run("1 replica, no subscribers (again)")
            meter.close()
    runs_without = [first, second]
    result = StreamResult(
        sizes.stream_sse, sizes.stream_websockets, connected, errors, _mean(runs_without, 0), _mean(runs_with, 0),
        rss_before, rss_with, len(expected), delivery.complete, delivery.incomplete, delivery.out_of_order,
        sizes.http_connections, sizes.http_seconds, _mean(runs_without, 1), _mean(runs_with, 1),
        [r for r, _ in runs_without], [r for r, _ in runs_with])
    say(f"trade rate with subscribers {result.trades_per_s_with:,.0f}/s against {result.trades_per_s_without:,.0f}/s "
        f"without ({-result.slowdown:+.1%}); replica CPU per trade {result.cpu_us_with:,.0f} against "
        f"{result.cpu_us_without:,.0f} µs ({result.cpu_overhead:+.1%}); {result.kib_per_subscriber:.1f} KiB per "
        "subscriber")
    return result
