"""Helpers for the recovery and fault tests: whole deployments as subprocesses, HTTP load with
Idempotency-Key retries, full Redis snapshots, exactly-once checks.

Nothing here touches the shared Redis except keys under a test's own prefix. Every wait polls a
condition with a deadline; only clients pace their retries (a few ms), nothing sleeps as
synchronisation.
"""

from __future__ import annotations

import random
import secrets
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, cast

import httpx
import redis as sync_redis
from predmarket.engine.keys import Keys
from predmarket.engine.units import micro_from_decimal
from predmarket.persister.janitor import Janitor
from sqlalchemy import create_engine, text

from tests.support.api import Api, Stack, User
from tests.support.processes import run_predmarket, stop_all
from tests.support.waiting import wait_until

CLI_TIMEOUT_S = 60.0


# --------------------------------------------------------------------------- deployments

@contextmanager
def deployment(name: str, database_url: str, redis_url: str, workdir: Path, *, replicas: int = 2,
               persister_env: dict[str, str] | None = None, prefix: str | None = None,
               **overrides: str) -> Iterator[tuple[Stack, Api]]:
    """Persister ``p0`` (with ``persister_env`` on top of the stack's environment) and ``replicas``
    API servers on their own key prefix (``prefix``, or a fresh one); every process stopped on the way out."""
    prefix = prefix or f"pmfault-{name}-{uuid.uuid4().hex[:8]}"
    stack = Stack(name=name, prefix=prefix, database_url=database_url,
                  redis_url=redis_url, admin_token="adm_" + secrets.token_urlsafe(24), workdir=workdir,
                  overrides=overrides)
    api: Api | None = None
    try:
        stack.start_persister("p0", **(persister_env or {}))
        stack.start_servers(replicas)
        api = Api(stack)
        yield stack, api
    finally:
        if api is not None:
            api.close()
        stop_all([*stack.servers, *stack.persisters])


def cli(stack: Stack, *args: str, timeout_s: float = CLI_TIMEOUT_S, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``predmarket <args>`` with the stack's environment; output captured."""
    return run_predmarket(*args, env={**stack.env, **env}, timeout_s=timeout_s)


def assert_audit_passes(stack: Stack) -> None:
    """``predmarket audit --wait 30`` on the stack passes (Redis, PostgreSQL, and the two agree)."""
    done = cli(stack, "audit", "--wait", "30")
    assert done.returncode == 0 and "audit passed" in done.stdout, done.stdout + done.stderr


#: The janitor's "now" at which every idle user without positions qualifies for eviction.
FAR_FUTURE_MS = 10**14


def evict_idle_users(stack: Stack, user_id: str) -> None:
    """Evict every idle user without positions, as the janitor does once PostgreSQL holds them;
    ``user_id`` must be among them."""
    stack.wait_persisted()
    with stack.redis() as client:
        for shard, keys in enumerate(stack.shard_keys()):  # over shards, each shard's sub-wallets
            janitor = Janitor(client, keys, user_idle_ttl_s=0.001, market_archive_after_s=0)
            janitor.sweep(stack.committed(shard), now_ms=FAR_FUTURE_MS)
        assert not client.exists(stack.home_keys(user_id).user(user_id)), "the user was not evicted"


# --------------------------------------------------------------------------- full snapshots

#: Keys that are bookkeeping, not state: the event stream (history, not state; recovery starts a new
#: one), dead letters, the idle-flush queue, the persister's mark and stats, rate-limit buckets, the
#: evicted users' last events (a load's freshness check), the replication fence (PM_REPLICA_ACKS).
OPERATIONAL = frozenset({"events", "events:dead", "dirty", "persister:committed", "persister:stats", "persister:fence",
                         "evicted", "apikeys:unsaved"})
#: Market hash fields that are cursors, not state: ``version`` is a compare-and-set token (recovery only
#: moves it on), ``last_event`` points into the old stream.
MARKET_CURSORS = ("version", "last_event")
#: User hash fields that are cursors, not state: the user's newest stream entry (the hot set evicts a
#: user once it is committed) and when the hot set (re)loaded it.
USER_CURSORS = ("last_event", "loaded_ms")
#: Fields of a stored first response (``trade.lua``, engine/wire.py's StoredReply): fingerprint, trade_id,
#: side, outcome, shares, cost, avg, prices, ms -- the last one after them (the event id a durable wait
#: waits for) is a cursor too. A reply of the release before labels had price_yes|price_no: one more.
IDEMPOTENCY_FIELDS = -1


def full_snapshot(client: sync_redis.Redis, prefix: str) -> dict[str, Any]:
    """Every state key under ``prefix`` with its full contents (see OPERATIONAL and MARKET_CURSORS)."""
    out: dict[str, Any] = {}
    for key in client.scan_iter(match=Keys(prefix).pattern, count=1000):
        name = key[len(prefix) + 1:]
        if name in OPERATIONAL or name.startswith("rl:"):
            continue
        kind = client.type(key)
        value: Any
        if name.startswith("idem:"):
            stored, ttl = client.get(key), client.ttl(key)
            assert stored is not None and ttl > 0, (key, stored, ttl)
            value = "|".join(str(stored).split("|")[:IDEMPOTENCY_FIELDS])
        elif kind == "hash":
            value = _normalised_hash(name, cast(dict[str, str], client.hgetall(key)))
        elif kind == "string":
            value = client.get(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            value = sorted(client.smembers(key))
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        else:
            value = f"<{kind!s}>"
        out[name] = value
    return out


def _normalised_hash(name: str, value: dict[str, str]) -> dict[str, str]:
    if name.endswith((":pos", ":cost")):
        return value
    if name.startswith("{m:"):
        for cursor in MARKET_CURSORS:
            value.pop(cursor, None)
        value.setdefault("last_trade_id", "0")  # absent until the first trade
    elif name.startswith("u:"):
        for cursor in USER_CURSORS:
            value.pop(cursor, None)
    elif name == "totals":  # counters absent until their first HINCRBY
        value = {"deposits": "0", "withdrawals": "0", **value}
    return value


def without_last_uses(snapshot: dict[str, Any]) -> dict[str, Any]:
    """``snapshot`` without the API keys' last uses (``apikeys:used``): with replicas running, each
    writes its keys' uses there every few seconds and the persister copies them to the record as
    often, so what a recovery restores may lag what Redis had by one such period (the contract's
    ``last_used_at`` is exact to that; tests/test_api_keys.py checks it is recovered once saved)."""
    return {name: value for name, value in snapshot.items() if name != "apikeys:used"}


def diff(before: dict[str, Any], after: dict[str, Any], limit: int = 20) -> list[str]:
    """Readable differences between two snapshots (empty when equal)."""
    lines: list[str] = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key, "<absent>"), after.get(key, "<absent>")
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            for f in sorted(set(a) | set(b)):
                if a.get(f) != b.get(f):
                    lines.append(f"{key}.{f}: {a.get(f, '<absent>')!r} -> {b.get(f, '<absent>')!r}")
        else:
            lines.append(f"{key}: {a!r} -> {b!r}")
    return lines[:limit] + ([f"... {len(lines) - limit} more"] if len(lines) > limit else [])


def patient(request: Callable[[], httpx.Response], timeout_s: float = 10.0) -> httpx.Response:
    """``request()`` again while it answers 503 (as a client honouring Retry-After does): right after
    Redis comes back, each connection a replica pooled before the outage fails once."""
    deadline = time.monotonic() + timeout_s
    while (r := request()).status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.05)  # the client's retry pacing, not synchronisation
    return r


def api_view(api: Api, user_ids: list[str]) -> dict[str, Any]:
    """What clients see: every market and every named account, as the API serves them."""
    r = patient(lambda: api.request("GET", "/v1/markets"))
    assert r.status_code == 200, r.text
    view: dict[str, Any] = {"markets": r.json()["markets"]}
    for user_id in user_ids:
        r = patient(partial(api.admin, "GET", f"/v1/users/{user_id}"))
        assert r.status_code == 200, r.text
        view[f"account {user_id}"] = r.json()
    return view


# --------------------------------------------------------------------------- load with Idempotency-Key retries

@dataclass(eq=False)
class Trader(threading.Thread):
    """One user trading through the API, one request at a time, each with its own Idempotency-Key.

    A request whose answer is lost (transport error) or a 503 is retried with the same key and body --
    on the next replica if ``failover`` -- until it gets a definite answer (or ``give_up_s`` passes:
    then it is ``unresolved`` and the test fails). So every key ends acknowledged or rejected, and the
    user's holdings are known exactly from the acknowledgements.
    """

    label: str
    urls: list[str]
    user: User
    markets: list[str]
    stop: threading.Event
    max_trades: int = 1_000_000
    failover: bool = False
    replica: int = 0
    request_timeout_s: float = 10.0
    give_up_s: float = 30.0
    seed: int = 0
    #: Idempotency-Key -> the acknowledged trade (2xx body)
    acks: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Idempotency-Key -> (status, code) of a definite rejection
    rejected: dict[str, tuple[int, str]] = field(default_factory=dict)
    unresolved: list[str] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    #: keys sent more than once (their first answer was lost or a 503)
    retried: set[str] = field(default_factory=set)
    slowest_503_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    #: (market, outcome) -> micro-shares held according to the acknowledged trades
    held: Counter[tuple[str, str]] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, name=self.label, daemon=True)

    def run(self) -> None:
        rng = random.Random(self.seed)
        clients = [httpx.Client(base_url=url, timeout=self.request_timeout_s) for url in self.urls]
        try:
            n = 0
            while not self.stop.is_set() and len(self.acks) < self.max_trades:
                n += 1
                market_id, body = self._order(rng)
                self._submit(clients, f"{self.label}-{n}", market_id, body)
        except Exception as exc:  # reported by the test, never lost in a thread
            self.errors.append(repr(exc))
        finally:
            for client in clients:
                client.close()

    def _order(self, rng: random.Random) -> tuple[str, dict[str, Any]]:
        market, outcome = rng.choice(self.markets), rng.choice(("YES", "NO"))
        held = self.held[(market, outcome)]
        if held >= 1_000_000 and rng.random() < 0.3:
            return market, {"side": "SELL", "outcome": outcome, "shares": str(rng.randint(1, held // 1_000_000))}
        return market, {"side": "BUY", "outcome": outcome, "shares": str(rng.randint(1, 5))}

    def _submit(self, clients: list[httpx.Client], key: str, market_id: str, body: dict[str, Any]) -> None:
        headers = {"Authorization": f"Bearer {self.user.api_key}", "Idempotency-Key": key}
        give_up = time.monotonic() + self.give_up_s
        for attempt in range(1_000_000):
            if attempt == 1:
                self.retried.add(key)
            started = time.monotonic()
            self.requests += 1
            try:
                r = clients[self.replica % len(clients)].post(
                    f"/v1/markets/{market_id}/trades", json=body, headers=headers)
            except httpx.TransportError as exc:
                self.statuses[f"transport:{exc.__class__.__name__}"] += 1
                if self.failover:
                    self.replica += 1
            else:
                self.statuses[str(r.status_code)] += 1
                if r.status_code in (200, 201, 202):
                    self._acknowledged(key, r.json())
                    return
                if r.status_code == 503:
                    self.slowest_503_s = max(self.slowest_503_s, time.monotonic() - started)
                elif r.status_code >= 500:
                    self.errors.append(f"{key}: {r.status_code} {r.text[:200]}")
                else:
                    self.rejected[key] = (r.status_code, r.json()["error"]["code"])
                    return
            if time.monotonic() > give_up:
                self.unresolved.append(key)
                return
            time.sleep(0.02)  # the client's retry pacing, not synchronisation

    def _acknowledged(self, key: str, trade: dict[str, Any]) -> None:
        self.acks[key] = trade
        shares = micro_from_decimal(Decimal(trade["shares"]))
        sign = 1 if trade["side"] == "BUY" else -1
        self.held[(trade["market_id"], trade["outcome"])] += sign * shares


class Load:
    """Several :class:`Trader` threads (one user each) over the stack's replicas."""

    def __init__(self, api: Api, markets: list[str], traders: int, *, balance: str = "100000",
                 failover: bool = False, spread: bool = True, max_trades: int = 1_000_000) -> None:
        self.stop = threading.Event()
        self.balance = balance
        urls = api.stack.urls
        self.traders = [
            Trader(label=f"t{i}-{uuid.uuid4().hex[:6]}", urls=urls, user=api.create_user(balance),
                   markets=markets, stop=self.stop, failover=failover, replica=i if spread else 0, seed=i,
                   max_trades=max_trades)
            for i in range(traders)
        ]

    def start(self) -> Load:
        for t in self.traders:
            t.start()
        return self

    @property
    def acked(self) -> int:
        return sum(len(t.acks) for t in self.traders)

    def wait_acked(self, n: int, timeout_s: float, what: str = "") -> None:
        wait_until(lambda: self.acked >= n or self.failed(), timeout_s, what or f"{n} acknowledged trades")
        assert not self.failed(), self.problems()

    def failed(self) -> bool:
        return any(t.errors or t.unresolved for t in self.traders)

    def problems(self) -> list[str]:
        return [f"{t.label}: errors {t.errors[:3]} unresolved {t.unresolved[:3]}" for t in self.traders
                if t.errors or t.unresolved]

    def complete(self, timeout_s: float = 40.0) -> None:
        """Wait until every trader has made its ``max_trades`` trades."""
        wait_until(lambda: not any(t.is_alive() for t in self.traders), timeout_s, "the traders to finish")
        assert not self.failed(), self.problems()

    def finish(self, timeout_s: float = 40.0) -> None:
        """Stop issuing new requests; wait until every one in flight has its definite answer."""
        self.stop.set()
        deadline = time.monotonic() + timeout_s
        for t in self.traders:
            t.join(max(0.1, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self.traders), "a trader did not finish"
        assert not self.failed(), self.problems()

    @property
    def acks(self) -> dict[str, dict[str, Any]]:
        return {k: v for t in self.traders for k, v in t.acks.items()}

    @property
    def rejected(self) -> dict[str, tuple[int, str]]:
        return {k: v for t in self.traders for k, v in t.rejected.items()}

    @property
    def requests(self) -> int:
        return sum(t.requests for t in self.traders)

    @property
    def retried(self) -> set[str]:
        return {k for t in self.traders for k in t.retried}

    @property
    def statuses(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for t in self.traders:
            total.update(t.statuses)
        return total

    @property
    def slowest_503_s(self) -> float:
        return max((t.slowest_503_s for t in self.traders), default=0.0)


# --------------------------------------------------------------------------- what reached the stores

@dataclass(frozen=True)
class PgTrade:
    trade_id: int
    event_id: str
    user_id: str
    idempotency_key: str | None


def pg_trades(database_url: str) -> list[PgTrade]:
    pg = create_engine(database_url)
    try:
        with pg.connect() as conn:
            rows = conn.execute(text("SELECT trade_id, event_id, user_id, idempotency_key FROM trades"))
            return [PgTrade(r.trade_id, r.event_id, r.user_id, r.idempotency_key) for r in rows]
    finally:
        pg.dispose()


def stream_trades(client: sync_redis.Redis, prefix: str) -> list[dict[str, str]]:
    """Every TradeExecuted entry still in the stream, oldest first."""
    entries = cast(list[tuple[str, dict[str, str]]], client.xrange(Keys(prefix).events))
    return [f for _, f in entries if f.get("type") == "TradeExecuted"]


def trade_seq(client: sync_redis.Redis, prefix: str) -> int:
    return int(client.get(Keys(prefix).trade_seq) or 0)


def assert_acks_exactly_once(acks: dict[str, dict[str, Any]], rejected: Iterable[str], rows: list[PgTrade], *,
                             seq: int) -> tuple[int, int]:
    """Every acknowledged trade (Idempotency-Key -> 2xx body) in ``rows`` once, under its own id, user and
    key; nothing executed that no client was told about (no row for a rejected key, no row beyond the
    trade id counter). Returns (trades lost, duplicates) -- both asserted 0."""
    by_id = Counter(r.trade_id for r in rows)
    by_event = Counter(r.event_id for r in rows)
    by_key = Counter((r.user_id, r.idempotency_key) for r in rows if r.idempotency_key)
    duplicates = sum(n - 1 for counter in (by_id, by_event, by_key) for n in counter.values() if n > 1)
    recorded = {r.trade_id: r for r in rows}
    lost = [k for k, t in acks.items() if t["trade_id"] not in recorded
            or (recorded[t["trade_id"]].idempotency_key, recorded[t["trade_id"]].user_id) != (k, t["user_id"])]
    assert lost == [], f"acknowledged trades missing or under another key: {lost[:10]}"
    assert duplicates == 0, f"duplicates: {[k for k, n in by_key.items() if n > 1][:10]}"
    assert not {r.idempotency_key for r in rows} & set(rejected), "a rejected request executed"
    assert len(rows) == seq == max(by_id, default=0), f"{len(rows)} trades recorded, trade_seq {seq}"
    return len(lost), duplicates


def assert_accounts_match_acks(client: sync_redis.Redis, prefix: str, load: Load) -> None:
    """Each trader's balance and positions in Redis are exactly what its acknowledged trades made of
    its deposit: every acknowledged trade took effect once, nothing else did."""
    keys = Keys(prefix)
    for t in load.traders:
        stored = cast(dict[str, str], client.hgetall(keys.user_positions(t.user.user_id)))
        positions = {tuple(f.rsplit(":", 1)): int(v) for f, v in stored.items()}
        assert positions == {k: v for k, v in t.held.items() if v}, (t.label, positions, dict(t.held))
        cash = micro_from_decimal(Decimal(load.balance))
        for trade in t.acks.values():
            cost = micro_from_decimal(Decimal(trade["cost"]))
            cash += -cost if trade["side"] == "BUY" else cost
        available = int(client.hget(keys.user(t.user.user_id), "available") or -1)
        assert available == cash, (t.label, available, cash)


# --------------------------------------------------------------------------- reliability figures

@dataclass
class Reliability:
    """One row of docs/RELIABILITY.md's table, printed at the end of a test (run with -s)."""

    test: str
    load: str = ""
    faults: str = ""
    trades: int = 0
    requests: int = 0
    lost: int = 0
    duplicates: int = 0
    notes: str = ""
    started: float = field(default_factory=time.monotonic)

    def report(self) -> str:
        line = (f"RELIABILITY | {self.test} | load: {self.load} | trades acknowledged: {self.trades} | "
                f"requests: {self.requests} | faults: {self.faults} | trades lost: {self.lost} | "
                f"duplicates: {self.duplicates} | {time.monotonic() - self.started:.1f} s"
                + (f" | {self.notes}" if self.notes else ""))
        print(line)
        return line
