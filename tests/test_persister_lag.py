"""The persister group's lag is counted (pending + entries after the last-delivered id), never taken
from ``XINFO GROUPS``, whose ``lag`` Redis 7.0 gets wrong for good after an AOF restart.

The counting runs on the shared Redis under the test's own prefix; the restart runs a whole
deployment (persister and API replica as subprocesses) on a private AOF ``redis-server``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from predmarket.engine.keys import Keys
from predmarket.persister.lag import count_after, group_lag
from predmarket.persister.stream import GROUP

from tests.support.api import Api
from tests.support.faults import cli, deployment, patient
from tests.support.redis_server import AofRedisServer
from tests.support.waiting import wait_for, wait_until


def add(client: sync_redis.Redis, stream: str, n: int) -> list[str]:
    return [str(client.xadd(stream, {"i": i})) for i in range(n)]


# --------------------------------------------------------------------------- counting

@pytest.mark.parametrize("page", [1, 3, 1000])
def test_count_after_is_exact_from_either_side(redis_client: sync_redis.Redis, prefix: str, page: int) -> None:
    stream = Keys(prefix).events
    ids = add(redis_client, stream, 25)
    redis_client.xtrim(stream, minid=ids[5], approximate=False)  # trimmed as the persister trims: the oldest entries go
    kept = ids[5:]
    for position, last in [(-1, "0-0"), *enumerate(kept)]:
        # Small pages make both sides take turns: near either end the short side decides.
        assert count_after(redis_client, stream, last, len(kept), page) == len(kept) - position - 1, (last, page)


def test_group_lag_counts_pending_and_undelivered(redis_client: sync_redis.Redis, prefix: str) -> None:
    stream = Keys(prefix).events
    assert group_lag(redis_client, stream, GROUP) is None  # no stream
    ids = add(redis_client, stream, 10)
    assert group_lag(redis_client, stream, GROUP) is None  # no group
    redis_client.xgroup_create(stream, GROUP, id="0")
    assert group_lag(redis_client, stream, GROUP) == group_lag(redis_client, stream, GROUP, page=2)
    lag = group_lag(redis_client, stream, GROUP)
    assert lag is not None and (lag.pending, lag.undelivered, lag.entries) == (0, 10, 10)
    redis_client.xreadgroup(GROUP, "c1", {stream: ">"}, count=4)
    redis_client.xack(stream, GROUP, ids[0])
    lag = group_lag(redis_client, stream, GROUP, page=2)
    assert lag is not None and (lag.pending, lag.undelivered, lag.last_delivered) == (3, 6, ids[3])
    redis_client.xreadgroup(GROUP, "c1", {stream: ">"})
    redis_client.xack(stream, GROUP, *ids)
    lag = group_lag(redis_client, stream, GROUP)
    assert lag is not None and lag.entries == 0


# --------------------------------------------------------------------------- after a Redis restart

def rewrite_aof(client: sync_redis.Redis) -> None:
    """BGREWRITEAOF and wait until the rewritten file is in place."""
    done_before = int(client.info("persistence").get("aof_rewrites", 0))
    client.bgrewriteaof()

    def finished() -> bool:
        info = client.info("persistence")
        return (not int(info["aof_rewrite_in_progress"]) and not int(info["aof_rewrite_scheduled"])
                and int(info.get("aof_rewrites", done_before + 1)) > done_before)

    wait_until(finished, 30, "the AOF rewrite to finish")
    assert client.info("persistence")["aof_last_bgrewrite_status"] == "ok"


def xinfo_lag(client: sync_redis.Redis, stream: str) -> int | None:
    groups: list[dict[str, Any]] = client.xinfo_groups(stream)
    lag = next(g for g in groups if g["name"] == GROUP)["lag"]
    return None if lag is None else int(lag)


def redis_ms(client: sync_redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def reported_lag(api: Api, client: sync_redis.Redis, since_ms: int) -> tuple[float] | None:
    """The lag /metrics shows, once the persister has reported after ``since_ms`` (Redis's clock)."""
    if int(client.hget(Keys(api.stack.prefix).persister_stats, "updated_ms") or 0) <= since_ms:
        return None
    found = re.search(r"^predmarket_persister_lag_entries (\S+)$", api.request("GET", "/metrics").text, re.M)
    assert found, "no persister lag in /metrics"
    return (float(found.group(1)),)


@pytest.mark.slow
def test_lag_returns_to_zero_and_audit_passes_after_redis_is_killed_and_restarted(
    database_url: str, tmp_path: Path,
) -> None:
    with AofRedisServer(tmp_path / "redis") as server, \
            deployment("lag", database_url, server.url, tmp_path, replicas=1) as (_, api):
        lag_after_restart(server, api)


def lag_after_restart(server: AofRedisServer, api: Api) -> None:
    stack = api.stack
    events = stack.events_key
    market = api.create_market("1000")
    user = api.create_user("100000")
    with server.client() as client:
        for _ in range(30):
            api.buy(user, market, shares="1")
        stack.wait_persisted()
        rewrite_aof(client)
        # Read and acknowledged after the rewrite: in the AOF as XCLAIM ... LASTID and XACK.
        for _ in range(120):
            api.buy(user, market, shares="1")
        stack.wait_persisted()
        wait_until(lambda: xinfo_lag(client, events) == 0 and not client.xpending(events, GROUP)["pending"], 10,
                   "the group to acknowledge everything")

    server.stop()  # SIGKILL
    server.start()  # the same directory: the AOF is replayed
    with server.client() as client:
        # What Redis 7.0 reports now: entries-read is back at its value when the AOF was rewritten.
        stale = xinfo_lag(client, events)
        assert stale is not None and stale >= 100, f"XINFO lag {stale}: this Redis keeps entries-read"
        # Trading goes on; the persister reconnects and acknowledges the new entries.
        first = patient(lambda: api.trade(user, market, "BUY", "YES", shares="1"))
        assert first.status_code == 201, first.text
        for _ in range(5):
            api.buy(user, market, shares="1")
        stack.wait_persisted(timeout_s=30)
        counted = wait_for(lambda: (lag := group_lag(client, events, GROUP)) and lag.entries == 0 and lag, 15,
                           "the counted lag to reach 0")
        assert counted == group_lag(client, events, GROUP, page=7)  # the same counted from the other side
        assert (xinfo_lag(client, events) or 0) >= 100  # Redis still has it wrong
        caught_up_ms = redis_ms(client)
        # What operators see: the persister's next report says 0.
        assert wait_for(lambda: reported_lag(api, client, caught_up_ms), 20, "a persister report") == (0.0,)
    done = cli(stack, "audit", "--wait", "10")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "audit passed" in done.stdout
