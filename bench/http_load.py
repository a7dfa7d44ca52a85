"""The HTTP load generator: a separate process (spawned) so it does not share a CPU slice with the bench.

It opens ``connections`` keep-alive connections spread evenly over the
replicas and trades the seed's random workload on each, one request in flight
per connection. Requests sent during the warm-up are not counted; after the
measured window no new request is sent and the ones in flight finish.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import multiprocessing.queues
import queue as queue_module
import random
import time
import traceback
from dataclasses import dataclass, field

import orjson

from bench.http_client import HttpConnection


@dataclass(frozen=True)
class LoadSpec:
    targets: tuple[tuple[str, int], ...]  # (host, port) of each replica
    users: tuple[tuple[str, str], ...]  # (user_id, api_key)
    markets: tuple[str, ...]
    connections: int
    seconds: float
    warmup_s: float
    seed: int | None = None


@dataclass
class LoadResult:
    trades: int = 0  # 201 answers to requests sent in the measured window
    elapsed_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)  # error code (or HTTP status) -> count
    connection_errors: int = 0


def _error_code(status: int, body: bytes) -> str:
    try:
        return str(orjson.loads(body)["error"]["code"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return f"HTTP {status}"


async def run_load(spec: LoadSpec) -> LoadResult:
    rng = random.Random(spec.seed)
    conns = [HttpConnection(*spec.targets[i % len(spec.targets)]) for i in range(spec.connections)]
    await asyncio.gather(*(c.connect() for c in conns))
    auth = [f"Bearer {key}".encode() for _, key in spec.users]
    paths = [f"/v1/markets/{m}/trades".encode() for m in spec.markets]
    held: dict[tuple[int, int, str], int] = {}  # (user, market, outcome) -> whole shares
    result = LoadResult()
    start = time.perf_counter() + spec.warmup_s
    end = start + spec.seconds

    async def drive(conn: HttpConnection) -> None:
        while (sent := time.perf_counter()) < end:
            u, m = rng.randrange(len(auth)), rng.randrange(len(paths))
            outcome, side, shares = rng.choice(("YES", "NO")), rng.choice(("BUY", "SELL")), rng.randint(10, 100)
            slot = (u, m, outcome)
            if side == "SELL":
                if held.get(slot, 0) >= shares:
                    held[slot] -= shares  # reserved now, so concurrent sells cannot oversell
                else:
                    side = "BUY"
            body = b'{"side":"%s","outcome":"%s","shares":"%d"}' % (side.encode(), outcome.encode(), shares)
            try:
                status, answer = await conn.post(paths[m], auth[u], body)
            except (OSError, ConnectionError, asyncio.IncompleteReadError):
                result.connection_errors += 1
                if side == "SELL":
                    held[slot] += shares
                await conn.close()
                continue
            measured = sent >= start
            if status == 201:
                if side == "BUY":
                    held[slot] = held.get(slot, 0) + shares
                if measured:
                    result.trades += 1
                    result.latencies.append(time.perf_counter() - sent)
            else:
                if side == "SELL":
                    held[slot] += shares
                if measured:
                    code = _error_code(status, answer)
                    result.rejected[code] = result.rejected.get(code, 0) + 1

    try:
        await asyncio.gather(*(drive(c) for c in conns))
    finally:
        result.elapsed_s = time.perf_counter() - start
        await asyncio.gather(*(c.close() for c in conns))
    return result


def _entry(results: multiprocessing.queues.Queue[LoadResult | str], spec: LoadSpec) -> None:
    try:
        import uvloop

        results.put(uvloop.run(run_load(spec)))
    except BaseException:
        results.put(traceback.format_exc())
        raise


def run_load_process(spec: LoadSpec, timeout_s: float = 60.0) -> LoadResult:
    """Run :func:`run_load` in a spawned process and return its result."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    process = ctx.Process(target=_entry, args=(results, spec), daemon=True)
    process.start()
    deadline = time.monotonic() + spec.warmup_s + spec.seconds + timeout_s
    try:
        while True:
            try:
                report = results.get(timeout=0.5)
                break
            except queue_module.Empty:
                if time.monotonic() > deadline or process.exitcode not in (None, 0):
                    raise RuntimeError("the HTTP load process failed or hung") from None
    finally:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
    if isinstance(report, str):
        raise RuntimeError(f"the HTTP load process failed:\n{report}")
    assert isinstance(report, LoadResult)
    return report
