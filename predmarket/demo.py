"""``predmarket demo``: the whole system in one process tree, with a live view, for a first look.

Finds or starts Redis and PostgreSQL (see predmarket.services), migrates, runs
two API replicas and the persister, creates users and markets, trades the
seed's random simulation through the HTTP API (YES/NO markets and one of four
labels), and shows markets, prices, trades/s and persister lag until Ctrl-C (or
``--duration``). Every ``--resolve-every`` seconds one market, in turn, is
closed (every other one), resolved (a label, another label, PROB, CANCEL, in
turns), settled, and replaced by a fresh one of the same name and labels, so the
whole lifecycle runs while trading goes on. On the way out it
stops everything it started, removes the demo's keys and database when it
created them itself, and removes its temporary directory (servers' data, log).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from predmarket.engine.labels import YES_NO
from predmarket.engine.settings import Settings, get_settings
from predmarket.http_settle import HttpSettled, close_resolve_settle
from predmarket.http_sim import HttpStats, fund_house, open_market, setup_http, trade_forever
from predmarket.services import Service, free_port, postgres_service, redis_service, wait_ready

SPARK = "▁▂▃▄▅▆▇█"
#: (name, labels) of the demo's markets, in creation order (more than five go round again)
MARKETS: list[tuple[str, tuple[str, ...]]] = [
    ("Will it rain in Lisbon tomorrow?", YES_NO), ("Who wins the cup final?", ("Lions", "Tigers", "Bears", "Draw")),
    ("Will BTC close above 100k?", YES_NO), ("Will the launch happen this week?", YES_NO),
    ("Will the bill pass the senate?", YES_NO),
]
LIQUIDITY = "1000"


@dataclass
class DemoOptions:
    markets: int = 5
    users: int = 20
    concurrency: int = 8
    rate_per_s: float = 200.0
    duration_s: float | None = None
    #: seconds between two markets' resolutions (None: markets are never resolved)
    resolve_every_s: float | None = 30.0


@dataclass
class View:
    prices: dict[str, deque[float]] = field(default_factory=dict)
    markets: list[dict[str, Any]] = field(default_factory=list)
    lag: str = "?"
    rate: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=20))
    #: the latest resolutions, newest last
    settled: deque[HttpSettled] = field(default_factory=lambda: deque(maxlen=4))


def _given(settings: Settings, name: str) -> str | None:
    """A setting the user set (PM_*), or None where the demo picks its own instead of the default."""
    return str(getattr(settings, name)) if name in settings.model_fields_set else None


def sparkline(values: deque[float]) -> str:
    return "".join(SPARK[min(len(SPARK) - 1, int(v * len(SPARK)))] for v in values)


class Demo:
    def __init__(self, options: DemoOptions, console: Console) -> None:
        self.options = options
        self.console = console
        self.workdir = tempfile.mkdtemp(prefix="predmarket-demo-")
        self.processes: list[subprocess.Popen[bytes]] = []
        self.services: list[Service] = []
        self.settings = get_settings()
        self.admin_token = _given(self.settings, "admin_token") or "demo-" + secrets.token_urlsafe(12)
        self.ports = [free_port(), free_port()]
        self.env: dict[str, str] = {}
        self.cleanups: list[Any] = []
        self.prefix = ""
        self.log_path = os.path.join(self.workdir, "processes.log")
        self.log: IO[bytes] | None = None
        #: Kept up to date while trading, so a summary can be printed however the run ends.
        self.stats = HttpStats()
        #: A simulated user's key, shown so a person can paste it into the web page and trade too.
        self.page_key = ""
        #: Every market resolved and settled so far, for the summary at the end.
        self.settled: list[HttpSettled] = []

    # ------------------------------------------------------------------ setup and teardown

    def start(self) -> None:
        redis_svc = redis_service(_given(self.settings, "redis_url"), self.workdir)
        self.services.append(redis_svc)
        pg_svc = postgres_service(_given(self.settings, "database_url"), self.workdir)
        self.services.append(pg_svc)
        prefix = self.prefix = _given(self.settings, "key_prefix") or f"demo-{secrets.token_hex(3)}"
        database_url = pg_svc.url
        if pg_svc.origin != "environment":
            database_url = re.sub(r"/[^/]*$", f"/predmarket_{prefix.replace('-', '_')}", pg_svc.url)
            self.cleanups.append(("database", database_url))
        if redis_svc.origin != "environment" and _given(self.settings, "key_prefix") is None:
            self.cleanups.append(("keys", (redis_svc.url, prefix)))
        self.env = {**os.environ, "PM_REDIS_URL": redis_svc.url, "PM_DATABASE_URL": database_url,
                    "PM_KEY_PREFIX": prefix, "PM_ADMIN_TOKEN": self.admin_token, "PM_RATE_LIMIT_PER_S": "0",
                    "PM_IDLE_FLUSH_S": "1"}
        self.console.print(f"Redis: {redis_svc.url} ({redis_svc.origin})")
        self.console.print(f"PostgreSQL: {database_url} ({pg_svc.origin})")
        self.console.print(f"key prefix: {prefix}")
        self.console.print(f"log: {self.log_path}")
        subprocess.run([sys.executable, "-m", "predmarket.cli", "migrate"], env=self.env, check=True,
                       stdout=subprocess.DEVNULL)
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed by stop()
        for port in self.ports:
            self._spawn(["serve", "--port", str(port), "--no-access-log"], self.log)
        self._spawn(["persister"], self.log)
        self._wait_ready()
        self.console.print(f"ready: API replicas at {' '.join(self.urls)}")
        self.console.print(f"web page: {self.urls[0]}/  (open it in a browser)")

    def _spawn(self, args: list[str], log: IO[bytes] | None) -> None:
        self.processes.append(subprocess.Popen([sys.executable, "-m", "predmarket.cli", *args], env=self.env,
                                               stdout=log, stderr=log, start_new_session=True))

    def _wait_ready(self) -> None:
        wait_ready(self.urls, self.processes, self.log_path)

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    def log_tail(self, lines: int = 20) -> str:
        """The end of the processes' log (shown when something failed: the log goes with the workdir)."""
        try:
            with open(self.log_path, "rb") as f:
                return b"".join(f.readlines()[-lines:]).decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> list[str]:
        """Stop and remove everything the demo started or made; returns what could not be removed.

        Ctrl-C, SIGTERM and SIGHUP are ignored meanwhile: a second one (an impatient user, or the
        terminal's SIGHUP after a Ctrl-C) must not cut the cleanup short and orphan the rest.
        """
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        left: list[str] = []
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.log is not None:
            self.log.close()
        for kind, target in self.cleanups:
            try:
                _cleanup(kind, target)
            except Exception as exc:  # report it and go on: the rest must still be cleaned up
                left.append(f"{kind} {target}: {exc}")
        for service in reversed(self.services):
            if service.stop:
                try:
                    service.stop()
                except Exception as exc:
                    left.append(f"{service.origin}: {exc}")
        shutil.rmtree(self.workdir, ignore_errors=True)
        if os.path.exists(self.workdir):
            left.append(self.workdir)
        return left

    # ------------------------------------------------------------------ run

    async def run(self) -> HttpStats:
        opts = self.options
        markets, users = await setup_http(self.urls[0], self.admin_token, opts.markets, opts.users, LIQUIDITY,
                                          names=[name for name, _ in MARKETS],
                                          labels=lambda j: MARKETS[j % len(MARKETS)][1])
        labels = {market_id: MARKETS[j % len(MARKETS)][1] for j, market_id in enumerate(markets)}
        stats, stop, view = self.stats, asyncio.Event(), View()
        self.page_key = users[0].api_key if users else ""
        trading = asyncio.create_task(trade_forever(
            self.urls, markets, users, opts.concurrency, stats, stop, rate_per_s=opts.rate_per_s, labels=labels))
        lifecycle = (asyncio.create_task(self._lifecycle(markets, labels, view, stop, opts.resolve_every_s))
                     if opts.resolve_every_s else None)
        deadline = time.monotonic() + opts.duration_s if opts.duration_s else None
        try:
            with Live(self._render(stats, view), console=self.console, refresh_per_second=4) as live:
                async with httpx.AsyncClient(base_url=self.urls[0], timeout=5) as client:
                    while deadline is None or time.monotonic() < deadline:
                        await self._poll(client, view, stats)
                        live.update(self._render(stats, view))
                        if trading.done() or (lifecycle is not None and lifecycle.done()):
                            break
                        await asyncio.sleep(0.5)
        finally:
            stop.set()
            await trading
            if lifecycle is not None:
                await lifecycle  # a failed resolution surfaces here
        return stats

    async def _lifecycle(self, markets: list[str], labels: dict[str, tuple[str, ...]], view: View,
                         stop: asyncio.Event, every_s: float) -> None:
        """Every ``every_s``: the next market in turn is swapped for a fresh one of the same name and
        labels (trading moves to it at once), then closed or not, resolved and settled."""
        rng = random.Random()
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        async with httpx.AsyncClient(base_url=self.urls[0], headers=headers, timeout=30) as admin:
            for turn in itertools.count():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), every_s)
                if stop.is_set():
                    return
                slot = turn % len(markets)
                old = markets[slot]
                name, outcomes = MARKETS[slot % len(MARKETS)]
                fresh = await self._replacement(admin, old, name, outcomes)
                labels[fresh] = outcomes
                markets[slot] = fresh
                settled = await close_resolve_settle(admin, old, outcomes, turn, rng)
                view.settled.append(settled)
                self.settled.append(settled)

    async def _replacement(self, admin: httpx.AsyncClient, old: str, name: str, outcomes: Sequence[str]) -> str:
        await fund_house(admin, LIQUIDITY, [outcomes])
        base = old.split("_")[0]  # sim-<run>-m<j>, and _<hex> for each replacement
        return await open_market(admin, f"{base}_{secrets.token_hex(3)}", name, LIQUIDITY, outcomes)

    async def _poll(self, client: httpx.AsyncClient, view: View, stats: HttpStats) -> None:
        with contextlib.suppress(httpx.HTTPError):
            view.markets = (await client.get("/v1/markets", params={"status": "OPEN"})).json()["markets"]
            for m in view.markets:
                first = m["outcomes"][0]["price"]  # YES in a YES/NO market
                view.prices.setdefault(m["market_id"], deque(maxlen=40)).append(float(first))
            metrics = (await client.get("/metrics")).text
            found = re.search(r"^predmarket_persister_lag_entries (\S+)$", metrics, re.M)
            view.lag = f"{float(found.group(1)):.0f} entries" if found else "?"
        view.rate.append((time.monotonic(), stats.trades))

    def _render(self, stats: HttpStats, view: View) -> Group:
        header = Panel.fit(
            f"web page: {self.urls[0]}/\nAPI key to paste there (a simulated trader's): {self.page_key or '-'}\n"
            f"API replicas: {'  '.join(self.urls)}\nadmin token: {self.admin_token}\n"
            f"key prefix: {self.prefix}   log: {self.log_path}\n"
            f"try: curl -s {self.urls[0]}/v1/markets | python3 -m json.tool\n"
            f"     curl -s -N {self.urls[1]}/v1/events          (live events; Ctrl-C to stop the demo)",
            title="predmarket demo")
        table = Table(expand=False)
        for column in ("market", "prices", "first label's price", "pool"):
            table.add_column(column, justify="right" if column == "pool" else "left")
        for m in view.markets:
            prices = "  ".join(f"{o['outcome']} {o['price'][:5]}" for o in m["outcomes"])
            table.add_row(m["name"][:40], prices,
                          sparkline(view.prices.get(m["market_id"], deque())), m["pool"])
        rate = 0.0
        if len(view.rate) >= 2:
            (t0, n0), (t1, n1) = view.rate[0], view.rate[-1]
            rate = (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(stats.rejected.items())) or "none"
        footer = (f"trades {stats.trades:,}   trades/s {rate:,.0f}   persister lag {view.lag}   "
                  f"rejected: {rejected}")
        resolved = [f"{s.market_id} resolved {s.outcome}{' after closing' if s.closed_first else ''}: "
                    f"{s.payouts_total} paid to {s.holders_paid} holder(s)" for s in view.settled]
        return Group(header, table, footer, *resolved)


def _cleanup(kind: str, target: Any) -> None:
    if kind == "database":
        from predmarket.record.database import drop_database

        drop_database(target)
    elif kind == "keys":
        from predmarket.engine.connection import connect_sync

        url, prefix = target
        client = connect_sync(url, 30.0, decode_responses=False)
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.unlink(key)
        client.close()
