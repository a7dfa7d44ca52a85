"""``predmarket simulate``: the command end to end, its exit code on a breached invariant,
and the invariant checker naming what is broken and where."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from typing import cast

import pytest
from predmarket.engine.keys import Keys
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import HOUSE, Order, Outcome, Side
from predmarket.engine.settings import Settings
from predmarket.engine.sharded import ShardedEngine
from predmarket.engine.shards import shard_keys
from predmarket.engine.state import check_invariants, read_redis_state
from predmarket.engine.units import MICRO, parse_micro

from predmarket.cli import main as cli_main
from predmarket.sim_settle import random_probabilities, resolution_for
from predmarket.workload import outcome_labels
from tests.support.factories import MarketFactory, UserFactory
from tests.support.processes import environment, run_predmarket
from tests.support.redis_data import delete_prefix, stream_entries
from tests.support.replay import assert_replay_matches
from tests.support.services import REDIS_URL, new_redis


def run_cli(prefix: str, *args: str, timeout_s: float = 120,
            extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = environment(key_prefix=prefix, redis_url=REDIS_URL, COLUMNS="200", NO_COLOR="1", TERM="dumb",
                      **(extra or {}))
    return run_predmarket(*args, env=env, timeout_s=timeout_s)


@pytest.fixture
def cli_prefix(prefix: str) -> Iterator[str]:
    """A prefix for a command run in a subprocess; its keys are deleted afterwards."""
    try:
        yield prefix
    finally:
        delete_prefix(prefix)


def figure(output: str, name: str) -> str:
    match = re.search(rf"{re.escape(name)}\s*│\s*([^│]+?)\s*│", output)
    assert match, f"no {name!r} row in:\n{output}"
    return match.group(1)


def test_simulate_command_runs_and_checks_invariants(cli_prefix: str) -> None:
    result = run_cli(cli_prefix, "simulate", "--markets", "2", "--users", "20", "--trades", "2000",
                     "--concurrency", "8", "--seed", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all invariants hold" in result.stdout
    assert "trades/s" in result.stdout
    assert "INVARIANT BREACH" not in result.stdout
    trades = int(figure(result.stdout, "trades"))
    rejected = figure(result.stdout, "rejected")
    refused = sum(int(n) for n in re.findall(r"\d+", rejected)) if rejected != "none" else 0
    assert trades + refused == 2000

    async def check() -> None:
        redis = new_redis()
        try:
            keys = Keys(cli_prefix)
            replay = await assert_replay_matches(redis, keys)
            assert len(replay.trades) == trades
            assert len(await redis.zrange(keys.markets, 0, -1)) == 2
        finally:
            await redis.aclose()

    asyncio.run(check())


def test_simulate_settle_resolves_every_kind_and_the_invariants_hold(cli_prefix: str) -> None:
    result = run_cli(cli_prefix, "simulate", "--markets", "4", "--users", "10", "--trades", "400",
                     "--concurrency", "4", "--seed", "3", "--settle")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all invariants hold" in result.stdout and "settlements" in result.stdout

    async def check() -> None:
        redis = new_redis()
        try:
            keys = Keys(cli_prefix)
            events = await stream_entries(redis, keys.events)
            resolved = [fields for _, fields in events if fields["type"] == "MarketResolved"]
            assert sorted(f["outcome"] for f in resolved) == ["CANCEL", "NO", "PROB", "YES"]
            closed = [fields for _, fields in events if fields["type"] == "MarketClosed"]
            assert len(closed) == 2
            market_ids = cast(list[str], await redis.zrange(keys.markets, 0, -1))  # the client decodes: str
            statuses = {await redis.hget(keys.market(m), "status") for m in market_ids}
            assert statuses == {"SETTLED"}
            refunds = [fields for _, fields in events if fields["type"] == "Refund"]
            assert refunds, "the CANCEL market refunded its traders"
        finally:
            await redis.aclose()

    asyncio.run(check())


def test_simulate_outcomes_trades_every_label_settles_every_kind_and_the_invariants_hold(cli_prefix: str) -> None:
    result = run_cli(cli_prefix, "simulate", "--outcomes", "4", "--markets", "4", "--users", "10", "--trades", "600",
                     "--concurrency", "4", "--seed", "5", "--settle")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all invariants hold" in result.stdout and "INVARIANT BREACH" not in result.stdout
    assert "settlements" in result.stdout and "price_yes" not in result.stdout
    labels = ["O1", "O2", "O3", "O4"]
    assert re.search(r"market\s*┃\s*O1\s*┃\s*O2\s*┃\s*O3\s*┃\s*O4\s*┃\s*pool", result.stdout), result.stdout

    async def check() -> None:
        redis = new_redis()
        try:
            keys = Keys(cli_prefix)
            events = await stream_entries(redis, keys.events)
            created = [fields for _, fields in events if fields["type"] == "MarketCreated"]
            assert len(created) == 4 and all(json.loads(f["outcomes"]) == labels for f in created)
            traded = {fields["outcome"] for _, fields in events if fields["type"] == "TradeExecuted"}
            assert traded == set(labels)
            resolved = [fields for _, fields in events if fields["type"] == "MarketResolved"]
            assert sorted(f["outcome"] for f in resolved) == ["CANCEL", "O1", "O2", "PROB"]
            prob = next(f for f in resolved if f["outcome"] == "PROB")
            probabilities = json.loads(prob["probabilities"])
            assert list(probabilities) == labels
            assert sum(parse_micro(p) for p in probabilities.values()) == MICRO
            assert len([f for _, f in events if f["type"] == "MarketClosed"]) == 2
            assert [f for _, f in events if f["type"] == "Refund"], "the CANCEL market refunded its traders"
            market_ids = cast(list[str], await redis.zrange(keys.markets, 0, -1))  # the client decodes: str
            assert {await redis.hget(keys.market(m), "status") for m in market_ids} == {"SETTLED"}
            assert check_invariants(await read_redis_state(redis, keys)) == []
        finally:
            await redis.aclose()

    asyncio.run(check())


def test_simulate_over_shards_moves_money_between_sub_wallets_settles_and_the_invariants_hold(
        cli_prefix: str) -> None:
    """Two processes trade 3-label markets spread over 4 shards: a trader's money follows its trades
    between sub-wallets (transfers), every market is settled into its shard, and the invariants hold
    shard by shard and across shards (ShardedEngine.invariants)."""
    shards = 4
    result = run_cli(cli_prefix, "simulate", "--outcomes", "3", "--markets", "8", "--users", "12", "--trades", "800",
                     "--concurrency", "4", "--processes", "2", "--settle", extra={"PM_SHARDS": str(shards)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all invariants hold" in result.stdout and "settlements" in result.stdout
    trades = int(figure(result.stdout, "trades"))

    async def check() -> None:
        redis = new_redis()
        try:
            events = [fields for k in range(shards)
                      for _, fields in await stream_entries(redis, shard_keys(cli_prefix, k, shards).events)]
            kinds = Counter(f["type"] for f in events)
            assert kinds["TradeExecuted"] == trades and kinds["MarketSettled"] == 8
            assert kinds["TransferIn"] > 0 and kinds["TransferIn"] == kinds["TransferOut"]
            resolved = sorted(f["outcome"] for f in events if f["type"] == "MarketResolved")
            assert resolved == sorted(["O1", "O2", "PROB", "CANCEL", "O3", "O1", "PROB", "CANCEL"])
            assert len({k for k in range(shards) if await redis.zcard(shard_keys(cli_prefix, k, shards).markets)}) > 1
        finally:
            await redis.aclose()

    asyncio.run(check())


def test_simulate_over_shards_refuses_a_prefix_with_a_real_market_in_any_shard(cli_prefix: str) -> None:
    shards = 4
    engine = ShardedEngine(new_redis(), Settings(key_prefix=cli_prefix, redis_url=REDIS_URL, shards=shards))

    async def real_market() -> str:
        try:
            await engine.start()
            await engine.deposit(HOUSE, 1_000 * MICRO)
            market = await engine.create_market("a real question", 100 * MICRO)
            return market.market_id
        finally:
            await engine.close()

    market_id = asyncio.run(real_market())
    result = run_cli(cli_prefix, "simulate", "--trades", "1", extra={"PM_SHARDS": str(shards)})
    assert result.returncode == 2
    assert f"holds a live deployment (market {market_id!r}" in result.stderr


def test_bench_refuses_pm_shards_it_picks_its_own() -> None:
    done = run_predmarket("bench", "--quick", env={**os.environ, "PM_SHARDS": "8"}, timeout_s=60)
    assert done.returncode == 2
    assert "PM_SHARDS=8: bench picks its shard counts itself" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("bad", ["1", "17", "0", "three"])
def test_simulate_refuses_outcomes_outside_2_to_16(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main(["simulate", "--outcomes", bad])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--outcomes" in err
    assert ("2 to 16 outcomes" in err) if bad.isdigit() else ("not a whole number" in err)


def test_simulate_over_the_api_refuses_settle(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["simulate", "--api", "http://127.0.0.1:1", "--settle"]) == 2
    assert "--settle applies to the engine, not to --api" in capsys.readouterr().err


def test_simulated_labels_and_resolutions_take_turns_over_every_label() -> None:
    assert outcome_labels(2) == ("YES", "NO")
    assert outcome_labels(16) == tuple(f"O{i}" for i in range(1, 17))
    rng = random.Random(1)
    for n in range(2, 17):
        for _ in range(50):
            probabilities = random_probabilities(rng, n)
            assert len(probabilities) == n and sum(probabilities) == MICRO and min(probabilities) >= 0
    labels = outcome_labels(3)
    shown = [resolution_for(i, rng, labels) for i in range(8)]
    assert [r.outcome for r in shown] == ["O1", "O2", "PROB", "CANCEL", "O3", "O1", "PROB", "CANCEL"]
    prob = shown[2].probabilities
    assert prob is not None and [label for label, _ in prob] == list(labels) and sum(p for _, p in prob) == MICRO
    # a YES/NO market's turns are the seed's: YES, NO, PROB, CANCEL
    assert [resolution_for(i, rng, ("YES", "NO")).outcome for i in range(4)] == ["YES", "NO", "PROB", "CANCEL"]


def test_simulate_command_exits_1_on_a_breach(cli_prefix: str) -> None:
    async def corrupt() -> None:
        engine = MarketEngine(new_redis(), _settings(cli_prefix))
        try:
            await engine.start()
            account = await engine.accounts.create("victim", "victim")
            await engine.accounts.deposit(account.user_id, 10 * MICRO)
            await engine.redis.hincrby(engine.keys.user("victim"), "available", 5 * MICRO)  # money from nowhere
        finally:
            await engine.close()

    asyncio.run(corrupt())
    # --into-live: the victim is a user simulate did not make, which it would otherwise refuse to mix with
    result = run_cli(cli_prefix, "simulate", "--markets", "1", "--users", "4", "--trades", "50", "--concurrency", "4",
                     "--into-live")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "INVARIANT BREACH" in result.stdout
    assert "conservation" in result.stdout
    assert "all invariants hold" not in result.stdout


def test_simulate_rejects_bad_arguments() -> None:
    with pytest.raises(SystemExit, match="--trades must be at least 1"):
        cli_main(["simulate", "--trades", "0"])


def _settings(prefix: str) -> Settings:
    return Settings(key_prefix=prefix, redis_url=REDIS_URL)


# --------------------------------------------------------------------------- the checker names the breach


async def _traded(engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory) -> tuple[str, str]:
    user = (await make_user(1_000)).user_id
    market = (await make_market(100)).market_id
    await engine.execute_trade(Order(user, market, Side.BUY, Outcome.YES, shares=20 * MICRO))
    await engine.execute_trade(Order(user, market, Side.BUY, Outcome.NO, shares=5 * MICRO))
    assert check_invariants(await read_redis_state(engine.redis, engine.keys)) == []
    return user, market


async def test_money_from_nowhere_breaks_conservation(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory
) -> None:
    user, _ = await _traded(engine, make_user, make_market)
    await engine.redis.hincrby(engine.keys.user(user), "available", 1)
    breaches = check_invariants(await read_redis_state(engine.redis, engine.keys))
    assert [b.invariant for b in breaches] == ["conservation"]
    text = str(breaches[0])
    assert text.startswith("conservation")
    # one micro-unit too much, and both totals shown to the micro-unit
    net = re.search(r"expected (\d+\.\d{6})", text)
    found = re.search(r"found (\d+\.\d{6})", text)
    assert net and found
    assert parse_micro(found.group(1)) - parse_micro(net.group(1)) == 1


async def test_negative_balance_names_the_user(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory
) -> None:
    user, _ = await _traded(engine, make_user, make_market)
    available = int(cast(str, await engine.redis.hget(engine.keys.user(user), "available")))  # decoded: a str
    await engine.redis.hincrby(engine.keys.user(user), "available", -(available + 3))
    breaches = check_invariants(await read_redis_state(engine.redis, engine.keys))
    assert {b.invariant for b in breaches} == {"conservation", "non-negative"}
    negative = next(b for b in breaches if b.invariant == "non-negative")
    assert user in str(negative) and "available" in str(negative) and "-0.000003" in str(negative)


async def test_shares_from_nowhere_name_the_market(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory
) -> None:
    user, market = await _traded(engine, make_user, make_market)
    await engine.redis.hincrby(engine.keys.user_positions(user), f"{market}:YES", 7)
    breaches = check_invariants(await read_redis_state(engine.redis, engine.keys))
    assert [b.invariant for b in breaches] == ["shares"]
    assert f"market {market} YES" in str(breaches[0])
    assert "20.000000 outstanding" in str(breaches[0]) and "20.000007 held" in str(breaches[0])


async def test_drained_pool_names_the_market(
    engine: MarketEngine, make_user: UserFactory, make_market: MarketFactory
) -> None:
    _, market = await _traded(engine, make_user, make_market)
    pool = int(cast(str, await engine.redis.hget(engine.keys.market(market), "pool")))  # decoded: a str
    await engine.redis.hincrby(engine.keys.market(market), "pool", -(pool - 19 * MICRO))  # below q_yes = 20
    breaches = check_invariants(await read_redis_state(engine.redis, engine.keys))
    assert {b.invariant for b in breaches} == {"conservation", "solvency"}
    solvency = next(b for b in breaches if b.invariant == "solvency")
    assert f"market {market}" in str(solvency) and "pool >= 20.000000" in str(solvency)


@pytest.mark.parametrize(("env", "expected"), [
    ({"PM_REDIS_URL": "redis://127.0.0.1:1/0"}, "cannot reach Redis at redis://127.0.0.1:1/0"),
    # no seed answers: explained at once (not retried as a failover would be), the URL not garbled
    ({"PM_REDIS_URL": "redis+cluster://127.0.0.1:1,127.0.0.1:2", "PM_KEY_PREFIX": "{pm}"},
     "cannot reach Redis at redis+cluster://127.0.0.1:1,127.0.0.1:2"),
    ({"PM_MAX_BATCH": "abc"}, "PM_MAX_BATCH"),
    ({"PM_SHARDS": "8", "PM_KEY_PREFIX": "{pm}"}, "PM_KEY_PREFIX must not carry a hash tag with PM_SHARDS=8"),
    ({"PM_ENVIRONMENT": "production", "PM_ADMIN_TOKEN": "changeme"}, "PM_ADMIN_TOKEN must be set"),
])
def test_wrong_configuration_is_explained_not_a_traceback(env: dict[str, str], expected: str) -> None:
    done = run_predmarket("simulate", "--trades", "1", env={**os.environ, **env}, timeout_s=60)
    assert done.returncode == 2
    assert expected in done.stderr
    assert "Traceback" not in done.stderr


def test_unreachable_postgresql_is_explained() -> None:
    env = {**os.environ, "PM_DATABASE_URL": "postgresql+psycopg://postgres:hunter2@127.0.0.1:1/x"}
    done = run_predmarket("migrate", env=env, timeout_s=60)
    assert done.returncode == 2
    assert "cannot reach PostgreSQL" in done.stderr and "hunter2" not in done.stderr
    assert "Traceback" not in done.stderr
