"""Commands that could do harm or mislead on the wrong target: simulate into a live prefix,
recover --force and the consumer groups it deletes, audit of an empty or wrong prefix."""

from __future__ import annotations

import subprocess

import redis as sync_redis
from predmarket.engine.keys import Keys
from sqlalchemy import create_engine, text

from tests.support.factories import UserFactory
from tests.support.processes import environment, run_predmarket
from tests.support.services import REDIS_URL


def run_cli(*args: str, prefix: str, database_url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = environment(key_prefix=prefix, redis_url=REDIS_URL, database_url=database_url or None, COLUMNS="200",
                      NO_COLOR="1", TERM="dumb")
    return run_predmarket(*args, env=env)


# --------------------------------------------------------------------------- simulate into a live prefix

SMALL_RUN = ("simulate", "--markets", "1", "--users", "3", "--trades", "50", "--concurrency", "2")


async def test_simulate_refuses_a_prefix_with_users_it_did_not_make(
        prefix: str, make_user: UserFactory, redis_client: sync_redis.Redis) -> None:
    for _ in range(2):  # what simulate made itself does not make the prefix live
        result = run_cli(*SMALL_RUN, prefix=prefix)
        assert result.returncode == 0, result.stdout + result.stderr
    assert len(set(redis_client.hkeys(Keys(prefix).usernames)) - {"house"}) == 6  # both runs' users
    await make_user(username="alice")
    names_before = redis_client.hgetall(Keys(prefix).usernames)
    refused = run_cli(*SMALL_RUN, prefix=prefix)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "live deployment" in refused.stderr and "'alice'" in refused.stderr and "--into-live" in refused.stderr
    assert redis_client.hgetall(Keys(prefix).usernames) == names_before, "a refused simulate changed the prefix"
    forced = run_cli(*SMALL_RUN, "--into-live", prefix=prefix)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "all invariants hold" in forced.stdout


# --------------------------------------------------------------------------- recover --force

def test_recover_force_names_every_consumer_group_it_deletes(
        prefix: str, database_url: str, redis_client: sync_redis.Redis) -> None:
    keys = Keys(prefix)
    redis_client.hset(keys.usernames, "alice", "u-alice")  # state under the prefix, no stream: nothing to warn of
    quiet = run_cli("recover", "--force", prefix=prefix, database_url=database_url)
    assert quiet.returncode == 0 and "consumer group" not in quiet.stderr, quiet.stdout + quiet.stderr
    redis_client.hset(keys.usernames, "alice", "u-alice")
    redis_client.xadd(keys.events, {"type": "Noop"})
    redis_client.xgroup_create(keys.events, "persister", id="0")
    redis_client.xgroup_create(keys.events, "analytics", id="0")
    redis_client.xreadgroup("analytics", "reader-1", {keys.events: ">"}, count=1)
    result = run_cli("recover", "--force", prefix=prefix, database_url=database_url)
    assert result.returncode == 0, result.stdout + result.stderr
    warning = result.stderr
    assert "warning" in warning and keys.events in warning
    assert "'persister' (0 consumers, 0 pending)" in warning
    assert "'analytics' (1 consumers, 1 pending)" in warning and "'analytics' must be recreated" in warning
    assert not redis_client.exists(keys.events), "recover --force kept the stream (the warning would be wrong)"


# --------------------------------------------------------------------------- audit of an empty or wrong prefix

def _lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


def test_audit_of_an_empty_prefix_and_database_says_so_in_one_line(prefix: str, database_url: str) -> None:
    result = run_cli("audit", "--wait", "1", prefix=prefix, database_url=database_url)
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = _lines(result)
    assert "nothing to audit" in line and f"'{prefix}'" in line


def test_audit_of_a_wrong_prefix_says_so_in_one_line(prefix: str, database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO users (user_id, username, created_at, event_id) "
                              "VALUES ('alice', 'alice', now(), '1-1')"))
    finally:
        engine.dispose()
    result = run_cli("audit", "--wait", "1", prefix=prefix, database_url=database_url)
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = _lines(result)
    assert "wrong PM_KEY_PREFIX" in line and "1 users" in line
