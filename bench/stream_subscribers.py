"""Idle live-stream subscribers for the streams bench: a spawned process holding N SSE and M WebSocket clients.

Each client follows one market (``?market_id=``) and records the entry ids it
receives. The bench asks the process, over a queue, to check that every client
got exactly the expected ids in order, then to close them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import multiprocessing.queues
import queue as queue_module
import time
import traceback
from dataclasses import dataclass
from typing import Any, TypeAlias

import orjson

CONNECT_BATCH = 250


@dataclass(frozen=True)
class SubscriberSpec:
    host: str
    port: int
    market_id: str
    sse: int
    websockets: int
    connect_timeout_s: float = 60.0


@dataclass
class Delivery:
    complete: int = 0  # clients that received exactly the expected ids, in order
    incomplete: int = 0
    out_of_order: int = 0  # clients that got every id, but not in order (or with duplicates)


async def _sse_client(spec: SubscriberSpec, received: list[str], ready: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection(spec.host, spec.port)
    try:
        writer.write(f"GET /v1/events?market_id={spec.market_id} HTTP/1.1\r\nHost: bench\r\n"
                     "Accept: text/event-stream\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
        ready.set()
        while line := await reader.readline():
            if line.startswith(b"id: "):
                received.append(line[4:].strip().decode())
    finally:
        writer.close()


async def _ws_client(spec: SubscriberSpec, received: list[str], ready: asyncio.Event) -> None:
    from websockets.asyncio.client import connect

    async with connect(f"ws://{spec.host}:{spec.port}/v1/ws?market_id={spec.market_id}",
                       open_timeout=spec.connect_timeout_s, ping_interval=None) as socket:
        ready.set()
        async for raw in socket:
            message = orjson.loads(raw)
            if "id" in message:
                received.append(str(message["id"]))


#: Messages between the processes: a kind, and a payload whose type that kind decides (hence Any).
Messages: TypeAlias = "multiprocessing.queues.Queue[tuple[str, Any]]"


async def _hold(spec: SubscriberSpec, reports: Messages, commands: Messages) -> None:
    clients: list[tuple[asyncio.Task[None], asyncio.Event, list[str]]] = []
    kinds = [_sse_client] * spec.sse + [_ws_client] * spec.websockets
    for start in range(0, len(kinds), CONNECT_BATCH):
        batch = []
        for kind in kinds[start:start + CONNECT_BATCH]:
            received: list[str] = []
            ready = asyncio.Event()
            task = asyncio.create_task(kind(spec, received, ready))
            clients.append((task, ready, received))
            batch.append((task, ready))
        # Batches, so the server's accept backlog is never the limit being measured.
        await asyncio.wait([asyncio.ensure_future(_ready_or_done(t, r)) for t, r in batch],
                           timeout=spec.connect_timeout_s)
    failed = [t for t, r, _ in clients if not r.is_set()]
    errors: dict[str, int] = {}
    for task in failed:
        error = task.exception() if task.done() and not task.cancelled() else None
        name = f"{error.__class__.__name__}: {error}"[:80] if error else "timeout"
        errors[name] = errors.get(name, 0) + 1
    reports.put(("connected", (len(clients) - len(failed), errors)))
    loop = asyncio.get_running_loop()
    while True:
        command, argument = await loop.run_in_executor(None, commands.get)
        if command == "verify":
            expected, timeout_s = argument
            reports.put(("verified", await _verify(clients, expected, timeout_s)))
        else:
            break
    for task, _, _ in clients:
        task.cancel()
    await asyncio.gather(*(t for t, _, _ in clients), return_exceptions=True)
    reports.put(("closed", None))


async def _ready_or_done(task: asyncio.Task[None], ready: asyncio.Event) -> None:
    waiter = asyncio.ensure_future(ready.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()


async def _verify(clients: list[tuple[asyncio.Task[None], asyncio.Event, list[str]]], expected: list[str],
                  timeout_s: float) -> Delivery:
    deadline = time.monotonic() + timeout_s
    live = [received for _, ready, received in clients if ready.is_set()]
    while time.monotonic() < deadline and any(len(r) < len(expected) for r in live):
        await asyncio.sleep(0.1)
    delivery = Delivery()
    wanted = set(expected)
    for received in live:
        if received == expected:
            delivery.complete += 1
        elif len(received) == len(expected) and set(received) == wanted:
            delivery.out_of_order += 1
        else:
            delivery.incomplete += 1
    return delivery


def _entry(spec: SubscriberSpec, reports: Messages, commands: Messages) -> None:
    try:
        import uvloop

        uvloop.run(_hold(spec, reports, commands))
    except BaseException:
        reports.put(("failed", traceback.format_exc()))
        raise


class SubscriberProcess:
    """The spawned process; a context manager that closes its clients and reaps it."""

    def __init__(self, spec: SubscriberSpec) -> None:
        ctx = mp.get_context("spawn")
        self._reports: Messages = ctx.Queue()
        self._commands: Messages = ctx.Queue()
        self._process = ctx.Process(target=_entry, args=(spec, self._reports, self._commands), daemon=True)
        self.spec = spec

    def __enter__(self) -> SubscriberProcess:
        self._process.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self._commands.put(("stop", None))
            self._report("closed", 30.0)
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()

    def _report(self, kind: str, timeout_s: float) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                got, value = self._reports.get(timeout=0.5)
            except queue_module.Empty:
                if time.monotonic() > deadline or self._process.exitcode not in (None, 0):
                    raise RuntimeError(f"the subscriber process did not report {kind!r}") from None
                continue
            if got == "failed":
                raise RuntimeError(f"the subscriber process failed:\n{value}")
            if got == kind:
                return value

    def connected(self) -> tuple[int, dict[str, int]]:
        """How many clients are connected, and why the others are not."""
        count, errors = self._report("connected", self.spec.connect_timeout_s * 2 + 60)
        return int(count), dict(errors)

    def verify(self, expected: list[str], timeout_s: float) -> Delivery:
        self._commands.put(("verify", (expected, timeout_s)))
        result = self._report("verified", timeout_s + 60)
        assert isinstance(result, Delivery)
        return result
