"""The API contract suite's harness: real ``predmarket serve`` replicas and a persister, over real HTTP.

A :class:`Stack` is ``predmarket serve`` replicas on free ports (and maybe
persisters) sharing one Redis key prefix and one PostgreSQL database (cloned
from the session's migrated template); :class:`StackFactory` starts stacks on
demand and removes them at the end of the session; :class:`Api` is a client of
one stack with the suite's helper requests; ``assert_*`` check bodies against
the contract. The fixtures (``api_stack``, ``api``, ``stacks``, ...) are in
``tests/conftest.py``. Every wait polls a condition with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal, localcontext
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import httpx
import pytest
import redis as sync_redis
from predmarket.engine.connection import connect_sync, is_cluster_url
from predmarket.engine.keys import Keys
from predmarket.engine.shards import home_of, shard_keys, shard_of

from tests.support.database import clone_database, drop_database
from tests.support.network import free_port
from tests.support.processes import PREDMARKET, Process, environment, start_persister, stop_all
from tests.support.redis_data import delete_prefix
from tests.support.services import REDIS_URL
from tests.support.waiting import wait_for

START_TIMEOUT_S = 30.0
#: Where this run's stacks run: "" (one shard of the shared primary), "shards" (8 shards of it:
#: make suite-shards), "cluster" (one shard, a tagged prefix, on a private 3-master cluster) or
#: "cluster-shards" (8 shards spread over that cluster's masters: make suite-cluster).
LAYOUT = os.environ.get("PM_TEST_LAYOUT", "")
#: Shards of every stack under a sharded layout.
TEST_SHARDS = 8
#: Whether this run's stacks run over shards.
SHARDED = LAYOUT in ("shards", "cluster-shards")
#: A test comparing what a stream sends with the entries of the one Redis stream (``stack.events_key``):
#: over shards each shard has a stream and event ids are composite (api/merged_streaming.py); the
#: same properties are checked over shards in tests/test_api_sharded_streams.py.
one_stream = pytest.mark.skipif(SHARDED, reason="compares events with the one Redis stream of a one-shard "
                                "deployment; over shards: tests/test_api_sharded_streams.py")
HTTP_TIMEOUT_S = 10.0

DECIMAL = re.compile(r"^[0-9]+\.[0-9]{6}$")
RFC3339_UTC = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|\+00:00)$")
STREAM_ID = re.compile(r"^[0-9]+-[0-9]+$")
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MICRO = Decimal("0.000001")

ACCOUNT_KEYS = {"user_id", "username", "available", "locked", "positions"}
MARKET_KEYS = {"market_id", "name", "status", "outcome", "liquidity_b", "yes_shares", "no_shares", "price_yes",
               "price_no", "pool", "created_at", "last_updated", "outcomes", "close_time", "resolution"}
TRADE_KEYS = {"trade_id", "market_id", "user_id", "side", "outcome", "shares", "cost", "avg_price", "price_yes",
              "price_no", "prices", "created_at"}
QUOTE_KEYS = {"side", "outcome", "shares", "cost", "avg_price", "price_yes", "price_no", "prices"}
LABEL_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
ERROR_STATUS = {
    "UNAUTHENTICATED": 401, "FORBIDDEN": 403, "NOT_FOUND": 404, "MARKET_NOT_OPEN": 409, "INVALID_STATE": 409,
    "ALREADY_EXISTS": 409, "IDEMPOTENCY_KEY_REUSED": 409, "VALIDATION_ERROR": 422, "INSUFFICIENT_FUNDS": 422,
    "INSUFFICIENT_SHARES": 422, "SLIPPAGE_EXCEEDED": 422, "RATE_LIMITED": 429, "UNAVAILABLE": 503,
}

T = TypeVar("T")


# --------------------------------------------------------------------------- ids and amounts

def unique(prefix: str) -> str:
    """A fresh id matching ``^[A-Za-z0-9_-]{1,64}$``."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def subsidy(b: str | Decimal) -> Decimal:
    """``ceil(b ln 2)`` rounded up to the micro-unit, as the contract defines it."""
    with localcontext() as ctx:
        ctx.prec = 60
        return (Decimal(b) * Decimal(2).ln()).quantize(MICRO, rounding=ROUND_CEILING)


def dec(value: str) -> Decimal:
    assert isinstance(value, str) and DECIMAL.fullmatch(value), f"not a 6-decimal string: {value!r}"
    return Decimal(value)


def fmt(value: Decimal) -> str:
    return str(value.quantize(MICRO))


# --------------------------------------------------------------------------- stacks

@dataclass
class Stack:
    """Servers (and maybe a persister) sharing one key prefix and one database."""

    name: str
    prefix: str
    database_url: str
    redis_url: str
    admin_token: str
    workdir: Path
    overrides: dict[str, str] = field(default_factory=dict)
    servers: list[Process] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    persisters: list[Process] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        env = environment(key_prefix=self.prefix, redis_url=self.redis_url, database_url=self.database_url,
                          PM_ADMIN_TOKEN=self.admin_token, PM_IDLE_FLUSH_S="0.2", PM_CLAIM_IDLE_S="1",
                          PM_RATE_LIMIT_PER_S="0")
        if os.environ.get("PM_TEST_AGGRESSIVE_EVICTION") == "1":
            # The hot set at its most eager: every idle user and settled market leaves Redis
            # after a second; the contract must hold all the same (`make test-evicting`).
            env.update({"PM_USER_IDLE_TTL_S": "1", "PM_MARKET_ARCHIVE_AFTER_S": "1"})
        if SHARDED:
            env["PM_SHARDS"] = str(TEST_SHARDS)  # the contract over 8 shards of one primary or of a cluster
        env.update(self.overrides)
        return env

    @property
    def shards(self) -> int:
        return int(self.env.get("PM_SHARDS", "1"))

    def shard_keys(self) -> list[Keys]:
        """Each shard's keys (one shard: the stack's prefix's own)."""
        return [shard_keys(self.prefix, k, self.shards) for k in range(self.shards)]

    def market_keys(self, market_id: str) -> Keys:
        """The keys of the shard holding ``market_id``."""
        return self.shard_keys()[shard_of(market_id, self.shards)]

    def home_keys(self, user_id: str) -> Keys:
        """The keys of the user's home shard (its profile and API keys)."""
        return self.shard_keys()[home_of(user_id, self.shards)]

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    @property
    def url(self) -> str:
        return self.urls[0]

    def ws_url(self, replica: int = 0) -> str:
        return f"ws://127.0.0.1:{self.ports[replica]}"

    def start_servers(self, replicas: int, wait_house: bool = True) -> None:
        pending = [self._spawn_server(i) for i in range(replicas)]
        for index, process in enumerate(pending):
            for _attempt in range(3):
                if self._await_healthy(process, self.ports[index]):
                    break
                # Most likely the free port was taken meanwhile: try another one.
                process.stop()
                process = self._spawn_server(index, replace=True)
            else:
                raise RuntimeError(f"{process.name} did not start:\n{process.log_tail()}")
            pending[index] = process
        self.servers = pending
        if wait_house:
            with httpx.Client(timeout=HTTP_TIMEOUT_S) as client:
                for url in self.urls:
                    def house_exists(base: str = url) -> bool:
                        return client.get(f"{base}/v1/users/house", headers=bearer(self.admin_token)).status_code == 200

                    wait_for(house_exists, START_TIMEOUT_S, f"house account via {url}")

    def _spawn_server(self, index: int, replace: bool = False) -> Process:
        port = free_port()
        if replace:
            self.ports[index] = port
        else:
            self.ports.append(port)
        process = Process(f"{self.name}-serve{index}",
                          [str(PREDMARKET), "serve", "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
                          self.env, self.workdir / f"{self.name}-serve{index}-{port}.log")
        process.start()
        return process

    def _await_healthy(self, process: Process, port: int) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if not process.alive():
                    return False
                with contextlib.suppress(httpx.TransportError):
                    if client.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                        return True
                time.sleep(0.05)
        return False

    def start_persister(self, consumer: str | None = None, **env: str) -> Process:
        """``predmarket persister`` with the stack's environment (plus ``env``), as consumer ``consumer``
        (by default ``<stack>-p<n>``)."""
        consumer = consumer or f"{self.name}-p{len(self.persisters)}"
        process = start_persister({**self.env, **env}, consumer, self.workdir / f"{self.name}-{consumer}.log",
                                  name=f"{self.name}-{consumer}")
        self.persisters.append(process)
        return process

    def stop(self) -> None:
        stop_all([*self.servers, *self.persisters])

    # ---- Redis-side views (reading only; never FLUSH anything)

    def redis(self) -> sync_redis.Redis:
        if is_cluster_url(self.redis_url):
            return connect_sync(self.redis_url, 5)  # the product's cluster client, typed as Redis
        return sync_redis.Redis.from_url(self.redis_url, decode_responses=True, socket_timeout=5)

    @property
    def events_key(self) -> str:
        return Keys(self.prefix).events

    def last_event_id(self, shard: int = 0) -> str:
        with self.redis() as r:
            last = r.xrevrange(self.shard_keys()[shard].events, count=1)
        return str(last[0][0]) if last else "0-0"

    def committed(self, shard: int = 0) -> str:
        with self.redis() as r:
            return str(r.get(self.shard_keys()[shard].committed) or "0-0")

    def wait_persisted(self, timeout_s: float = 15.0) -> None:
        """Wait until the persister has committed every entry written so far (in every shard)."""
        for shard in range(self.shards):
            target = stream_id(self.last_event_id(shard))
            wait_for(lambda shard=shard, target=target: stream_id(self.committed(shard)) >= target,  # type: ignore[misc]
                     timeout_s, f"the persister to catch up in shard {shard}")


def stream_id(value: str) -> tuple[int, int]:
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


class StackFactory:
    """Starts stacks on demand during the session; stops them and removes their data at its end."""

    def __init__(self, template: str, workdir: Path, redis_url: str = REDIS_URL) -> None:
        """``redis_url``: where stacks run unless told otherwise (a ``redis+cluster://`` URL runs
        every stack on that cluster, each under a prefix with a hash tag)."""
        self.template = template
        self.workdir = workdir
        self.redis_url = redis_url
        self.stacks: list[Stack] = []
        self.databases: list[str] = []
        self.admin_token = "adm_" + secrets.token_urlsafe(24)

    def database(self) -> str:
        url = clone_database(self.template, "pmtest_api")
        self.databases.append(url)
        return url

    def start(self, name: str, *, replicas: int = 2, persister: bool = True, database_url: str | None = None,
              redis_url: str | None = None, wait_house: bool = True, prefix: str | None = None,
              **overrides: str) -> Stack:
        """``prefix``: the key prefix (by default a fresh one; tagged on a cluster with one shard,
        where every key of the deployment must share one slot; over shards each shard's keys carry
        their own tag)."""
        redis_url = redis_url or self.redis_url
        fresh = f"pmtest-api-{name}-{uuid.uuid4().hex[:8]}"
        if prefix is None:
            one_slot = is_cluster_url(redis_url) and int(overrides.get("PM_SHARDS", TEST_SHARDS if SHARDED else 1)) == 1
            prefix = f"{{{fresh}}}" if one_slot else fresh
        stack = Stack(name=name, prefix=prefix,
                      database_url=database_url or self.database(), redis_url=redis_url,
                      admin_token=self.admin_token, workdir=self.workdir, overrides=overrides)
        self.stacks.append(stack)
        if persister:
            stack.start_persister()
        stack.start_servers(replicas, wait_house=wait_house)
        return stack

    def close(self) -> None:
        stop_all([p for stack in self.stacks for p in (*stack.servers, *stack.persisters)])
        for stack in self.stacks:
            if stack.redis_url in (REDIS_URL, self.redis_url):
                delete_prefix(stack.prefix, stack.redis_url)
        for url in self.databases:
            drop_database(url)


# --------------------------------------------------------------------------- HTTP helpers

def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class User(NamedTuple):
    user_id: str
    api_key: str


class Api:
    """Sync httpx clients of every replica of one stack, with the suite's helper requests."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.clients = [httpx.Client(base_url=url, timeout=HTTP_TIMEOUT_S) for url in stack.urls]
        self.admin_token = stack.admin_token

    def close(self) -> None:
        for client in self.clients:
            client.close()

    @property
    def admin_headers(self) -> dict[str, str]:
        return bearer(self.admin_token)

    def request(self, method: str, path: str, *, token: str | None = None, replica: int = 0,
                **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if token is not None:
            headers.update(bearer(token))
        return self.clients[replica % len(self.clients)].request(method, path, headers=headers, **kwargs)

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.request(method, path, token=self.admin_token, **kwargs)

    # ---- accounts

    def create_user(self, balance: str | None = "1000", username: str | None = None) -> User:
        """A new user (funded with ``balance`` if given) -> (user_id, api_key)."""
        r = self.admin("POST", "/v1/users", json={"username": username or unique("user")})
        assert r.status_code == 201, r.text
        user = User(r.json()["user_id"], r.json()["api_key"])
        if balance:
            self.deposit(user.user_id, balance)
        return user

    def deposit(self, user_id: str, amount: str) -> dict[str, Any]:
        r = self.admin("POST", f"/v1/users/{user_id}/deposits", json={"amount": amount})
        assert r.status_code == 201, r.text
        return dict(r.json())

    def account(self, user_id: str) -> dict[str, Any]:
        r = self.admin("GET", f"/v1/users/{user_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def me(self, user: User, replica: int = 0) -> dict[str, Any]:
        r = self.request("GET", "/v1/me", token=user.api_key, replica=replica)
        assert r.status_code == 200, r.text
        return dict(r.json())

    # ---- markets

    def create_market(self, b: str = "100", open: bool = True, market_id: str | None = None,
                      name: str = "Will it rain?") -> str:
        """A new market (house funded with exactly its subsidy first), opened unless ``open=False``."""
        self.deposit("house", fmt(subsidy(b)))
        r = self.admin("POST", "/v1/markets",
                       json={"name": name, "liquidity_b": b, "market_id": market_id or unique("mkt")})
        assert r.status_code == 201, r.text
        market_id = str(r.json()["market_id"])
        if open:
            r = self.admin("POST", f"/v1/markets/{market_id}/open")
            assert r.status_code == 200, r.text
        return market_id

    def market(self, market_id: str, replica: int = 0) -> dict[str, Any]:
        r = self.request("GET", f"/v1/markets/{market_id}", replica=replica)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def resolve(self, market_id: str, outcome: str) -> dict[str, Any]:
        r = self.admin("POST", f"/v1/markets/{market_id}/resolve", json={"outcome": outcome})
        assert r.status_code == 200, r.text
        return dict(r.json())

    # ---- trading

    def trade(self, user: User, market_id: str, side: str = "BUY", outcome: str = "YES", *,
              shares: str | None = None, amount: str | None = None, replica: int = 0,
              headers: dict[str, str] | None = None, **extra: Any) -> httpx.Response:
        body: dict[str, Any] = {"side": side, "outcome": outcome, **extra}
        if shares is not None:
            body["shares"] = shares
        if amount is not None:
            body["amount"] = amount
        return self.request("POST", f"/v1/markets/{market_id}/trades", token=user.api_key, replica=replica,
                            json=body, headers=headers)

    def buy(self, user: User, market_id: str, outcome: str = "YES", shares: str = "10",
            replica: int = 0) -> dict[str, Any]:
        r = self.trade(user, market_id, "BUY", outcome, shares=shares, replica=replica)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def quote(self, market_id: str, **params: str) -> httpx.Response:
        return self.request("GET", f"/v1/markets/{market_id}/quote", params=params)

    def history(self, market_id: str, limit: int | None = None, replica: int = 0) -> list[dict[str, Any]]:
        """The market's newest trades as the admin reads them (whole: the public list omits user_id)."""
        params = {"limit": str(limit)} if limit is not None else None
        r = self.admin("GET", f"/v1/markets/{market_id}/trades", params=params, replica=replica)
        assert r.status_code == 200, r.text
        return list(r.json()["trades"])

    def wait_history(self, market_id: str, trade_ids: set[int], timeout_s: float = 15.0) -> list[dict[str, Any]]:
        """The market's trade history once it contains every id in ``trade_ids``."""
        def complete() -> list[dict[str, Any]] | None:
            history = self.history(market_id, limit=1000)
            return history if trade_ids <= {t["trade_id"] for t in history} else None

        return wait_for(complete, timeout_s, f"trades {sorted(trade_ids)} in the history of {market_id}",
                        interval_s=0.05)


# --------------------------------------------------------------------------- contract checks

def assert_error(response: httpx.Response, status: int, code: str) -> None:
    """The response is ``status`` with exactly the contract's error body carrying ``code``."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body


def assert_error_body(response: httpx.Response) -> str:
    """Any contract error: 4xx/5xx (never 500) with the error body whose code matches the status; the code."""
    assert 400 <= response.status_code < 600 and response.status_code != 500, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    code = body["error"]["code"]
    assert isinstance(body["error"]["message"], str), body
    if response.status_code == 413:
        assert code == "VALIDATION_ERROR", body
    else:
        assert ERROR_STATUS.get(code) == response.status_code, (response.status_code, body)
    return str(code)


def assert_timestamp(value: Any) -> datetime:
    assert isinstance(value, str) and RFC3339_UTC.fullmatch(value), f"not RFC 3339 UTC: {value!r}"
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.utcoffset() == timedelta(0)
    return parsed


def near_one(prices: list[Decimal]) -> bool:
    """Prices each rounded half-even on their own sum to 1 within half a micro-unit per label."""
    return abs(sum(prices, Decimal(0)) - 1) <= MICRO * len(prices) / 2


def assert_prices(obj: dict[str, Any]) -> None:
    """A YES/NO market's, trade's or quote's two prices (``price_no = 1 - price_yes``); null for a
    market of other labels. A trade or quote also lists every label's price in ``prices``."""
    labels = list(obj["prices"]) if "prices" in obj else [o["outcome"] for o in obj.get("outcomes", [])]
    if "prices" in obj:
        assert all(LABEL_RE.fullmatch(label) for label in labels) and 2 <= len(labels) <= 16, obj
        assert all(Decimal(0) <= dec(p) <= Decimal(1) for p in obj["prices"].values()), obj
        assert near_one([dec(p) for p in obj["prices"].values()]), obj
    if labels and labels != ["YES", "NO"]:
        assert (obj["price_yes"], obj["price_no"]) == (None, None), obj
        return
    yes, no = dec(obj["price_yes"]), dec(obj["price_no"])
    assert Decimal(0) <= yes <= Decimal(1), obj
    assert no == Decimal(1) - yes, obj
    if "prices" in obj:
        assert obj["prices"] == {"YES": obj["price_yes"], "NO": obj["price_no"]}, obj


def assert_account(obj: Any, user_id: str | None = None) -> None:
    assert isinstance(obj, dict) and set(obj) == ACCOUNT_KEYS, obj
    assert ID_RE.fullmatch(obj["user_id"]) and isinstance(obj["username"], str)
    if user_id is not None:
        assert obj["user_id"] == user_id
    dec(obj["available"])
    dec(obj["locked"])
    assert isinstance(obj["positions"], list)
    for p in obj["positions"]:
        assert set(p) == {"market_id", "outcome", "shares", "net_cost"}, p
        assert LABEL_RE.fullmatch(p["outcome"]), p
        assert dec(p["shares"]) > 0, "positions with zero shares are left out"
        assert re.fullmatch(r"-?[0-9]+\.[0-9]{6}", p["net_cost"]), p  # negative after a profitable exit


def assert_market(obj: Any) -> None:
    assert isinstance(obj, dict) and set(obj) == MARKET_KEYS, obj
    assert ID_RE.fullmatch(obj["market_id"]) and isinstance(obj["name"], str)
    assert obj["status"] in ("CREATED", "OPEN", "CLOSED", "RESOLVED", "SETTLED")
    labels = [o["outcome"] for o in obj["outcomes"]]
    assert 2 <= len(labels) <= 16 and len(set(labels)) == len(labels), obj
    assert all(LABEL_RE.fullmatch(label) and label not in ("PROB", "CANCEL") for label in labels), obj
    assert obj["outcome"] in (None, *labels, "PROB", "CANCEL")
    assert (obj["outcome"] is None) == (obj["status"] in ("CREATED", "OPEN", "CLOSED")), obj
    assert_resolution(obj)
    for key in ("liquidity_b", "pool"):
        dec(obj[key])
    for o in obj["outcomes"]:
        assert set(o) == {"outcome", "shares", "price"}, obj
        dec(o["shares"])
        assert Decimal(0) <= dec(o["price"]) <= Decimal(1), obj
    assert_prices(obj)
    assert assert_timestamp(obj["created_at"]) <= assert_timestamp(obj["last_updated"])
    if labels == ["YES", "NO"]:
        # A YES/NO market lists both outcomes, in that order, with the same figures as its own fields.
        assert obj["outcomes"] == [
            {"outcome": "YES", "shares": obj["yes_shares"], "price": obj["price_yes"]},
            {"outcome": "NO", "shares": obj["no_shares"], "price": obj["price_no"]},
        ], obj
    else:
        assert (obj["yes_shares"], obj["no_shares"]) == (None, None), obj
        assert near_one([dec(o["price"]) for o in obj["outcomes"]]), obj
    if obj["close_time"] is not None:
        assert_timestamp(obj["close_time"])


def assert_resolution(obj: dict[str, Any]) -> None:
    """``resolution`` says what ``outcome`` does: null until resolved, then its type and its terms."""
    resolution, outcome = obj["resolution"], obj["outcome"]
    if outcome is None:
        assert resolution is None, obj
    elif outcome == "CANCEL":
        assert resolution == {"type": "CANCEL"}, obj
    elif outcome == "PROB":
        assert set(resolution) == {"type", "probabilities"} and resolution["type"] == "PROB", obj
        assert list(resolution["probabilities"]) == [o["outcome"] for o in obj["outcomes"]], obj
        assert sum(dec(p) for p in resolution["probabilities"].values()) == 1, obj
    else:
        assert resolution == {"type": "OUTCOME", "outcome": outcome}, obj


def assert_avg_price(obj: dict[str, Any]) -> None:
    shares, cost = dec(obj["shares"]), dec(obj["cost"])
    assert shares > 0
    assert dec(obj["avg_price"]) == (cost / shares).quantize(MICRO, rounding=ROUND_HALF_EVEN), obj


def assert_trade(obj: Any) -> None:
    assert isinstance(obj, dict) and set(obj) == TRADE_KEYS, obj
    assert isinstance(obj["trade_id"], int) and not isinstance(obj["trade_id"], bool) and obj["trade_id"] > 0
    assert obj["side"] in ("BUY", "SELL") and obj["outcome"] in obj["prices"]
    assert ID_RE.fullmatch(obj["market_id"]) and ID_RE.fullmatch(obj["user_id"])
    assert_avg_price(obj)
    assert_prices(obj)
    assert_timestamp(obj["created_at"])


def assert_quote(obj: Any) -> None:
    assert isinstance(obj, dict) and set(obj) == QUOTE_KEYS, obj
    assert obj["side"] in ("BUY", "SELL") and obj["outcome"] in obj["prices"]
    assert_avg_price(obj)
    assert_prices(obj)
