"""Live streams against trading: one replica's trade rate with and without N idle SSE + M WebSocket subscribers.

The subscribers (a separate process) follow a quiet market, so they are idle
while the HTTP load trades the other markets: what is measured is what holding
them costs the replica. The runs alternate: without them, with them (they
connect before the run and leave after it), without, and so on, ``stream_pairs``
times. Each run with them is set against the mean of the runs just before and
after it, and the figure is the median of those pairs: on a shared machine the
rate drifts by more than the effect between runs minutes apart, and one odd run
moves a median less than a mean. In the last pair a few trades in the quiet
market check delivery: every subscriber must get every entry of that market, in
stream order. The replica's resident memory before and after the first connection
gives the memory per subscriber.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
import redis
from predmarket.api.stream_hub import FREEZE_FROM
from predmarket.engine.keys import Keys
from predmarket.engine.settings import Settings

from bench.http_load import LoadResult, LoadSpec, run_load_process
from bench.options import Sizes
from bench.replicas import Replicas, replica_env
from bench.scratch import scratch_database, scratch_prefix
from bench.stream_subscribers import Delivery, SubscriberProcess, SubscriberSpec
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
    #: trades/s of each run, in order (one more run without than with: they alternate, without first)
    runs_without: list[float] = field(default_factory=list)
    runs_with: list[float] = field(default_factory=list)
    #: the replica's CPU µs per trade of each run, likewise
    cpu_runs_without: list[float] = field(default_factory=list)
    cpu_runs_with: list[float] = field(default_factory=list)

    @property
    def slowdown(self) -> float:
        """Relative loss of trade rate with the subscribers (0.05 = 5 % slower): the median over the pairs."""
        return -_paired_median(self.runs_with, self.runs_without)

    @property
    def cpu_overhead(self) -> float:
        """Relative extra replica CPU per trade with the subscribers (0.05 = 5 % more): the median over the pairs."""
        return _paired_median(self.cpu_runs_with, self.cpu_runs_without)

    @property
    def paired_slowdowns(self) -> list[float]:
        return [-change for change in _paired(self.runs_with, self.runs_without)]

    @property
    def kib_per_subscriber(self) -> float:
        if self.connected <= 0:
            return 0.0
        return (self.rss_with_mib - self.rss_before_mib) * 1024 / self.connected

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "slowdown": round(self.slowdown, 4), "cpu_overhead": round(self.cpu_overhead, 4),
                "paired_slowdowns": [round(value, 4) for value in self.paired_slowdowns],
                "kib_per_subscriber": round(self.kib_per_subscriber, 1)}


def _paired(with_: list[float], without: list[float]) -> list[float]:
    """Each run with the subscribers against the mean of the runs without just before and after it (0.05 = 5 % more)."""
    changes = []
    for index, value in enumerate(with_):
        base = (without[index] + without[index + 1]) / 2
        if base > 0:
            changes.append(value / base - 1)
    return changes


def _paired_median(with_: list[float], without: list[float]) -> float:
    changes = _paired(with_, without)
    return statistics.median(changes) if changes else 0.0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


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


#: a replica is idle when it used less than this share of a core over IDLE_WINDOW_S
IDLE_SHARE = 0.05
IDLE_WINDOW_S = 0.5
SETTLE_TIMEOUT_S = 20.0


def wait_idle(pid: int) -> bool:
    """Wait until process ``pid`` is idle; False if it was not within SETTLE_TIMEOUT_S.

    What connecting subscribers leave the replica to do (their first keep-alives, say) is done
    before the next run begins, not during it.
    """
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        before = cpu_s(pid)
        time.sleep(IDLE_WINDOW_S)
        if cpu_s(pid) - before < IDLE_SHARE * IDLE_WINDOW_S:
            return True
    return False


def full_collections(url: str) -> int | None:
    """How many full collections the replica's garbage collector has made (its /metrics); None if not shown."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith('python_gc_collections_total{generation="2"}'):
            return int(float(line.split()[-1]))
    return None


def wait_reclaimed(url: str, collections: int | None, say: Callable[[str], None]) -> None:
    """Wait for the full collection a replica makes at its hub's next tick once most frozen subscribers
    have left (api/stream_hub.py, ``_follow_population``): some 100 ms of CPU, which the next run
    without subscribers would otherwise bear."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while collections is not None and time.monotonic() < deadline:
        now = full_collections(url)
        if now is None or now > collections:
            return
        time.sleep(0.2)
    if collections is not None:
        say(f"the replica made no full collection within {SETTLE_TIMEOUT_S:.0f} s of the subscribers leaving")


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
        """(trades/s, replica CPU µs per trade) of one load run, begun once the replica is idle."""
        settled = wait_idle(self.pid)
        if not settled:
            self.say(f"{what}: the replica was still busy after {SETTLE_TIMEOUT_S:.0f} s; measuring anyway")
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
    if sizes.stream_pairs < 1:
        raise ValueError("the streams section needs at least one run with the subscribers")
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
            runs_without = [meter.run("1 replica, no subscribers")]
            runs_with: list[tuple[float, float]] = []
            sub_spec = SubscriberSpec(host, port, quiet, sizes.stream_sse, sizes.stream_websockets)
            for pair in range(1, sizes.stream_pairs + 1):
                before = rss_mib(pid)
                with SubscriberProcess(sub_spec) as held:
                    connected, errors = held.connected()
                    if pair == 1:
                        rss_before, rss_with = before, rss_mib(pid)
                        say(f"{connected:,} of {subscribers:,} subscribers connected ({sizes.stream_sse:,} SSE + "
                            f"{sizes.stream_websockets:,} WebSocket); replica RSS {rss_before:.0f} -> "
                            f"{rss_with:.0f} MiB" + (f"; not connected: {errors}" if errors else ""))
                    runs_with.append(meter.run(f"1 replica, {connected:,} idle subscribers "
                                               f"({pair} of {sizes.stream_pairs})"))
                    if pair == sizes.stream_pairs:
                        expected, delivery = _check_delivery(url, marker_user.api_key, quiet, scoped.redis_url,
                                                             Keys(scoped.key_prefix), sizes.stream_markers, held)
                        say(f"delivery of {len(expected)} entries: {delivery.complete:,} subscribers complete "
                            f"and in order, {delivery.incomplete:,} incomplete, {delivery.out_of_order:,} out of order")
                    # Frozen out of the collector's passes only from FREEZE_FROM on (and reclaimed when they leave).
                    collections = full_collections(url) if connected >= FREEZE_FROM else None
                wait_reclaimed(url, collections, say)
                runs_without.append(meter.run("1 replica, no subscribers (they left)"))
            meter.close()
    rates_without, rates_with = [r for r, _ in runs_without], [r for r, _ in runs_with]
    cpu_without, cpu_with = [c for _, c in runs_without], [c for _, c in runs_with]
    result = StreamResult(
        sizes.stream_sse, sizes.stream_websockets, connected, errors, _mean(rates_without), _mean(rates_with),
        rss_before, rss_with, len(expected), delivery.complete, delivery.incomplete, delivery.out_of_order,
        sizes.http_connections, sizes.http_seconds, _mean(cpu_without), _mean(cpu_with),
        rates_without, rates_with, cpu_without, cpu_with)
    pairs = ", ".join(f"{-value:+.1%}" for value in result.paired_slowdowns)
    say(f"trade rate with subscribers {result.trades_per_s_with:,.0f}/s against {result.trades_per_s_without:,.0f}/s "
        f"without; median of the pairs {-result.slowdown:+.1%} ({pairs}); replica CPU per trade "
        f"{result.cpu_us_with:,.0f} against {result.cpu_us_without:,.0f} µs (median of the pairs "
        f"{result.cpu_overhead:+.1%}); {result.kib_per_subscriber:.1f} KiB per subscriber")
    return result


def _check_delivery(url: str, api_key: str, quiet: str, redis_url: str, keys: Keys, markers: int,
                    held: SubscriberProcess) -> tuple[list[str], Delivery]:
    """Trades in the quiet market; every subscriber must get each of their entries, in stream order."""
    asyncio.run(_marker_trades(url, api_key, quiet, markers))
    # The quiet market's own creation and opening came before the subscribers.
    expected = _market_entries(redis_url, keys, quiet)[-2 * markers:]
    return expected, held.verify(expected, MARKER_TIMEOUT_S)
