"""Evicted users and archived markets under concurrent first requests from two API replicas (contract,
"Precise rules"): they answer exactly as resident ones, never a spurious 401 or 404, and nobody is
told to run ``predmarket recover``.

Two ``predmarket serve`` replicas and a persister run as subprocesses on the shared Redis (own key
prefix) and a throwaway database. The tests evict and archive themselves (the persister's janitor is
off), so each burst of requests starts the moment the user or market has left Redis.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as sync_redis
from predmarket.engine.keys import Keys
from predmarket.persister.janitor import Janitor

from tests.support.api import HTTP_TIMEOUT_S, Api, Stack, User, bearer
from tests.support.faults import FAR_FUTURE_MS, deployment, evict_idle_users
from tests.support.redis_data import delete_prefix
from tests.support.services import REDIS_URL
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

ROUNDS = 12
COPIES = 2  # of each request, on each replica, per round


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[Api]:
    with deployment("evicted", database_url, REDIS_URL, tmp_path, PM_USER_IDLE_TTL_S="0",
                    PM_MARKET_ARCHIVE_AFTER_S="0") as (stack, api):
        try:
            yield api
        finally:
            delete_prefix(stack.prefix)



def first_requests(stack: Stack, user: User, market_id: str, rng: random.Random) -> list[tuple[str, int, str]]:
    """Every request at once (a barrier releases them), shuffled over both replicas: (what, status, body)."""
    requests: list[tuple[str, int, str, str, dict[str, Any] | None]] = []
    for replica in range(len(stack.urls)):
        for _ in range(COPIES):
            requests += [
                ("me", replica, "GET", "/v1/me", None),
                ("account", replica, "GET", f"/v1/users/{user.user_id}", None),
                ("trade", replica, "POST", f"/v1/markets/{market_id}/trades",
                 {"side": "BUY", "outcome": "YES", "shares": "1"}),
            ]
    rng.shuffle(requests)
    barrier = threading.Barrier(len(requests))

    def send(what: str, replica: int, method: str, path: str, body: dict[str, Any] | None) -> tuple[str, int, str]:
        token = stack.admin_token if what == "account" else user.api_key
        with httpx.Client(base_url=stack.urls[replica], timeout=HTTP_TIMEOUT_S) as client:
            client.get("/healthz")  # connected before the barrier: the requests leave together
            barrier.wait(timeout=HTTP_TIMEOUT_S)
            r = client.request(method, path, json=body, headers=bearer(token))
        return f"{what}@{replica}", r.status_code, r.text

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(lambda request: send(*request), requests))


def error_lines(stack: Stack) -> list[str]:
    """Log lines of the replicas at level ERROR or above (JSON logs; plain text tolerated)."""
    found: list[str] = []
    for server in stack.servers:
        for line in server.log_path.read_text(errors="replace").splitlines():
            try:
                level = str(json.loads(line).get("level", "")).lower()
            except (ValueError, AttributeError):
                level = "error" if "ERROR" in line or "Traceback" in line else ""
            if level in ("error", "critical") or "predmarket recover" in line:
                found.append(f"{server.name}: {line}")
    return found


def test_evicted_users_answer_every_concurrent_first_request_on_both_replicas(api: Api) -> None:
    stack = api.stack
    market = api.create_market("1000")
    rng = random.Random(11)
    spurious: list[str] = []
    trades: dict[str, list[dict[str, Any]]] = {}
    for _ in range(ROUNDS):
        user = api.create_user("100")
        evict_idle_users(stack, user.user_id)
        answers = first_requests(stack, user, market, rng)
        for what, status, body in answers:
            expected = 201 if what.startswith("trade") else 200
            if status != expected:
                spurious.append(f"{user.user_id} {what}: {status} {body[:200]}")
            elif what.startswith(("me", "account")):
                assert json.loads(body)["user_id"] == user.user_id
        trades[user.user_id] = [json.loads(body) for what, status, body in answers
                                if what.startswith("trade") and status == 201]
    errors = error_lines(stack)
    assert not spurious and not errors, "\n".join([
        f"{len(spurious)} of {ROUNDS * 6 * COPIES} first requests answered wrongly:", *spurious,
        f"{len(errors)} ERROR log lines:", *errors[:10]])
    # Nothing lost or doubled by the loads racing each other: each account is its own trades.
    for user_id, done in trades.items():
        account = api.account(user_id)
        spent = sum(Decimal(t["cost"]) for t in done)
        assert Decimal(account["available"]) == Decimal("100") - spent, (user_id, account)
        assert [Decimal(p["shares"]) for p in account["positions"]] == [Decimal(len(done))], account
    with sync_redis.Redis.from_url(REDIS_URL, decode_responses=True) as client:
        assert int(client.get(Keys(stack.prefix).trade_seq) or 0) == sum(len(t) for t in trades.values())


def archive(stack: Stack, market_id: str) -> None:
    """Archive the settled market as the janitor does, once its settlement is flushed and committed."""
    keys = Keys(stack.prefix)
    with stack.redis() as client:
        janitor = Janitor(client, keys, user_idle_ttl_s=0, market_archive_after_s=0.001)

        def archived() -> bool:
            stack.wait_persisted()
            janitor.sweep(stack.committed(), now_ms=FAR_FUTURE_MS)
            return not client.exists(keys.market(market_id))

        wait_for(archived, 20, f"market {market_id} to be archived", interval_s=0.1)


def first_market_requests(stack: Stack, holder: User, market: str, final: dict[str, Any],
                          rng: random.Random) -> list[str]:
    """Reads and a trade of an archived market at once, over both replicas; what was answered wrongly."""
    requests: list[tuple[str, int, str, str, dict[str, Any] | None, int]] = []
    for replica in range(len(stack.urls)):
        for _ in range(COPIES):
            requests += [
                ("market", replica, "GET", f"/v1/markets/{market}", None, 200),
                ("trade", replica, "POST", f"/v1/markets/{market}/trades",
                 {"side": "BUY", "outcome": "YES", "shares": "1"}, 409),
            ]
    rng.shuffle(requests)
    barrier = threading.Barrier(len(requests))

    def send(request: tuple[str, int, str, str, dict[str, Any] | None, int]) -> str | None:
        what, replica, method, path, body, expected = request
        with httpx.Client(base_url=stack.urls[replica], timeout=HTTP_TIMEOUT_S) as client:
            client.get("/healthz")  # connected before the barrier: the requests leave together
            barrier.wait(timeout=HTTP_TIMEOUT_S)
            r = client.request(method, path, json=body, headers=bearer(holder.api_key))
        if r.status_code != expected:
            return f"{market} {what}@{replica}: {r.status_code} {r.text[:200]}"
        if what == "market" and r.json() != final:
            return f"{market} {what}@{replica}: {r.json()} instead of {final}"
        if what == "trade" and r.json()["error"]["code"] != "MARKET_NOT_OPEN":
            return f"{market} {what}@{replica}: {r.text[:200]}"
        return None

    with ThreadPoolExecutor(len(requests)) as pool:
        return [w for w in pool.map(send, requests) if w]


def test_archived_markets_answer_every_concurrent_first_request_on_both_replicas(api: Api) -> None:
    stack = api.stack
    holder = api.create_user("100")
    rng = random.Random(12)
    wrong: list[str] = []
    for _ in range(ROUNDS // 2):
        market = api.create_market("100")
        api.buy(holder, market, shares="2")
        api.resolve(market, "YES")
        settled = api.admin("POST", f"/v1/markets/{market}/settle")
        assert settled.status_code == 200, settled.text
        final = api.market(market)
        archive(stack, market)
        wrong += first_market_requests(stack, holder, market, final, rng)
    errors = error_lines(stack)
    assert not wrong and not errors, "\n".join([*wrong, f"{len(errors)} ERROR log lines:", *errors[:10]])
