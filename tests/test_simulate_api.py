"""``predmarket simulate --api URL``: the random trades through a running API, and the invariant check
it makes through that API."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis as sync_redis
from predmarket.engine.keys import Keys

from predmarket.http_sim import HttpStats, setup_http, trade_forever
from predmarket.http_simulate import check_over_api, micro_from_text
from tests.support.api import Stack, StackFactory

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sim_stack(stacks: StackFactory) -> Stack:
    """Two replicas and a persister of their own (the simulation's markets and users stay apart)."""
    return stacks.start("simapi")


@pytest.mark.slow
def test_simulate_over_http_trades_through_the_api_and_checks_the_invariants(sim_stack: Stack) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PM_")} | {
        "PM_ADMIN_TOKEN": sim_stack.admin_token, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    args = ["simulate", "--markets", "2", "--users", "5", "--trades", "300", "--concurrency", "4", "--liquidity", "100"]
    for url in sim_stack.urls:
        args += ["--api", url]
    result = subprocess.run([sys.executable, "-m", "predmarket.cli", *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all invariants hold" in result.stdout
    executed = re.search(r"trades executed\s*│\s*(\d+) of 300", result.stdout)
    assert executed and int(executed.group(1)) > 0, result.stdout
    # The trades went through this stack: its Redis counted them, its markets list shows the simulation's.
    client = sync_redis.Redis.from_url(sim_stack.redis_url, decode_responses=True)
    try:
        assert int(client.get(Keys(sim_stack.prefix).trade_seq) or 0) >= int(executed.group(1))
    finally:
        client.close()
    markets = httpx.get(f"{sim_stack.url}/v1/markets", timeout=10).json()["markets"]
    simulated = [m for m in markets if m["market_id"].startswith("sim-")]
    assert len(simulated) >= 2 and any(m["yes_shares"] != "0.000000" or m["no_shares"] != "0.000000"
                                       for m in simulated)


@pytest.mark.slow
def test_simulate_over_http_trades_markets_of_three_labels(sim_stack: Stack) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PM_")} | {
        "PM_ADMIN_TOKEN": sim_stack.admin_token, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    args = ["simulate", "--outcomes", "3", "--markets", "2", "--users", "5", "--trades", "300", "--concurrency", "4",
            "--liquidity", "100", "--api", sim_stack.url]
    result = subprocess.run([sys.executable, "-m", "predmarket.cli", *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all invariants hold" in result.stdout and "final prices (outstanding shares below)" in result.stdout
    run = re.search(r"(sim-\w+)-m0", result.stdout)
    assert run, result.stdout
    markets = [httpx.get(f"{sim_stack.url}/v1/markets/{run.group(1)}-m{j}", timeout=10).json() for j in (0, 1)]
    for market in markets:
        assert [o["outcome"] for o in market["outcomes"]] == ["O1", "O2", "O3"] and market["price_yes"] is None
    # 300 random trades over two markets of three labels: every label was bought somewhere.
    assert all(any(m["outcomes"][k]["shares"] != "0.000000" for m in markets) for k in range(3)), markets


@pytest.mark.slow
async def test_the_check_over_the_api_names_a_broken_invariant_of_a_label(sim_stack: Stack) -> None:
    labels = ("Red", "Green", "Blue")
    market_ids, users = await setup_http(sim_stack.url, sim_stack.admin_token, 1, 3, "100", labels=lambda _: labels)
    headers = {"Authorization": f"Bearer {sim_stack.admin_token}"}
    client = sync_redis.Redis.from_url(sim_stack.redis_url, decode_responses=True)
    async with httpx.AsyncClient(base_url=sim_stack.url, headers=headers, timeout=10) as admin:
        market = (await admin.get(f"/v1/markets/{market_ids[0]}")).json()
        assert [o["outcome"] for o in market["outcomes"]] == list(labels)
        opening = {market_ids[0]: micro_from_text(market["pool"])}
        stats, trade_ids = HttpStats(), []
        await trade_forever([sim_stack.url], market_ids, users, 2, stats, asyncio.Event(), limit=40,
                            on_trade=lambda t: trade_ids.append(t["trade_id"]), labels={market_ids[0]: labels})
        assert stats.trades > 0
        assert (await check_over_api(admin, market_ids, users, opening, trade_ids))[0] == []
        try:
            client.hincrby(Keys(sim_stack.prefix).market(market_ids[0]), "q:Green", 1_000_000)
            breaches, _ = await check_over_api(admin, market_ids, users, opening, trade_ids)
            assert any(b.startswith("invariant 3:") and "Green" in b for b in breaches), breaches
        finally:
            client.close()


@pytest.mark.slow
async def test_the_check_over_the_api_names_a_broken_invariant(sim_stack: Stack) -> None:
    """After honest trading the check passes; a micro-unit taken from a pool, or a share added to a market's
    outstanding total behind the API's back, is named."""
    market_ids, users = await setup_http(sim_stack.url, sim_stack.admin_token, 1, 3, "100")
    headers = {"Authorization": f"Bearer {sim_stack.admin_token}"}
    client = sync_redis.Redis.from_url(sim_stack.redis_url, decode_responses=True)
    market_key = Keys(sim_stack.prefix).market(market_ids[0])
    async with httpx.AsyncClient(base_url=sim_stack.url, headers=headers, timeout=10) as admin:
        opening = {market_ids[0]: micro_from_text((await admin.get(f"/v1/markets/{market_ids[0]}")).json()["pool"])}
        stats, trade_ids = HttpStats(), []
        await trade_forever([sim_stack.url], market_ids, users, 2, stats, asyncio.Event(), limit=40,
                            on_trade=lambda t: trade_ids.append(t["trade_id"]))
        assert stats.trades > 0
        breaches, _ = await check_over_api(admin, market_ids, users, opening, trade_ids)
        assert breaches == []
        try:
            client.hincrby(market_key, "pool", -1)
            breaches, _ = await check_over_api(admin, market_ids, users, opening, trade_ids)
            assert any(b.startswith("invariant 1:") and "-0.000001" in b for b in breaches), breaches
            client.hincrby(market_key, "pool", 1)
            client.hincrby(market_key, "q_yes", 1_000_000)
            breaches, _ = await check_over_api(admin, market_ids, users, opening, trade_ids)
            assert any(b.startswith("invariant 3:") and market_ids[0] in b for b in breaches), breaches
        finally:
            client.close()
