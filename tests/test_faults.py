"""Fault tests of a whole deployment: ``predmarket serve`` replicas and a persister as subprocesses, on a
private ``redis-server`` (own port, own temp dir; AOF with ``appendfsync always`` where Redis itself is
killed) and a throwaway database. Never the shared Redis.

Clients are :class:`~tests.support.faults.Trader` threads: one user each, every trade with its own
Idempotency-Key, retried with that key (on the other replica where one died) until it gets a definite
answer. After each fault every acknowledged trade must be in Redis and in PostgreSQL exactly once, each
trader's balance and positions must be what its acknowledgements add up to, and ``predmarket audit``
must pass. Each test prints a ``RELIABILITY`` line (run with ``-s``) for docs/RELIABILITY.md.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import redis as sync_redis

from tests.support.api import Stack, User, assert_error, bearer, stream_id
from tests.support.faults import (
    Load,
    Reliability,
    api_view,
    assert_accounts_match_acks,
    assert_acks_exactly_once,
    assert_audit_passes,
    cli,
    deployment,
    diff,
    full_snapshot,
    patient,
    pg_trades,
    stream_trades,
    trade_seq,
    without_last_uses,
)
from tests.support.network import free_port
from tests.support.persister import pending
from tests.support.redis_server import AofRedisServer, RedisServer
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

DOWN_ANSWER_S = 3.0  # the API answers 503 within this while Redis is down


@contextlib.contextmanager
def private_redis(directory: Path, aof: bool = False) -> Iterator[RedisServer]:
    with (AofRedisServer if aof else RedisServer)(directory) as server:
        yield server


def redis_of(stack: Stack) -> sync_redis.Redis:
    return sync_redis.Redis.from_url(stack.redis_url, decode_responses=True, socket_timeout=5)


def settle_all(stack: Stack, load: Load, figures: Reliability) -> None:
    """Persisted, then checked: exactly once in PostgreSQL, accounts in Redis, the audit."""
    stack.wait_persisted(timeout_s=40)
    with redis_of(stack) as client:
        assert_accounts_match_acks(client, stack.prefix, load)
        seq = trade_seq(client, stack.prefix)
        executed = [int(f["trade_id"]) for f in stream_trades(client, stack.prefix)]
    assert len(executed) == len(set(executed)) == seq  # every trade id executed once in Redis
    assert {t["trade_id"] for t in load.acks.values()} <= set(executed)
    figures.lost, figures.duplicates = assert_acks_exactly_once(load.acks, load.rejected, pg_trades(stack.database_url),
                                                                seq=seq)
    assert_audit_passes(stack)
    figures.trades, figures.requests = len(load.acks), load.requests


# --------------------------------------------------------------------------- 1. persister SIGKILLed mid-batch

def test_persister_sigkilled_mid_batch_under_load_then_restarted(database_url: str, tmp_path: Path) -> None:
    figures = Reliability("persister SIGKILL mid-batch under API load, restarted")
    with private_redis(tmp_path / "redis") as server, \
            deployment("pkill", database_url, server.url, tmp_path, PM_PERSISTER_BATCH="100") as (stack, api):
        markets = [api.create_market("1000") for _ in range(2)]
        load = Load(api, markets, traders=8).start()
        victim = stack.persisters[0]
        with redis_of(stack) as client:
            load.wait_acked(300, 30)
            # Freeze the persister at a moment it holds a batch it has not acknowledged, then kill it.
            for _ in range(200):
                wait_until(lambda: pending(client, stack.events_key, "p0") > 0, 20,
                           "the persister to hold an unacknowledged batch", interval_s=0.001)
                victim.signal(signal.SIGSTOP)
                if pending(client, stack.events_key, "p0") > 0:
                    break
                victim.signal(signal.SIGCONT)
            held = [e["message_id"] for e in client.xpending_range(stack.events_key, "persister", "-", "+", 100_000,
                                                                   consumername="p0")]
            victim.kill()
            assert held, "killed without an unacknowledged batch"
            in_pg = {t.event_id for t in pg_trades(stack.database_url)}
            committed_unacked = sum(1 for e in held if e in in_pg)
            acked_at_kill = load.acked
            load.wait_acked(acked_at_kill + 300, 30, "trades while no persister runs")
            stack.start_persister("p0")  # restarted under its name: its own pending batch comes first
            load.wait_acked(acked_at_kill + 600, 30, "trades after the restart")
            load.finish()
        settle_all(stack, load, figures)
    figures.load = f"8 clients, 2 markets, {len(held)} entries pending at the kill"
    figures.faults = "1 persister SIGKILL (SIGSTOPped holding a batch)"
    figures.notes = f"{committed_unacked} trades of the killed batch already committed, not acknowledged"
    figures.report()


# --------------------------------------------------------------------------- 2. Redis SIGKILLed (AOF always)

def probe_down(stack: Stack, market_id: str, api_key: str) -> list[float]:
    """Every route needing Redis answers 503 UNAVAILABLE, quickly, on every replica; the answer times."""
    times: list[float] = []
    with httpx.Client(timeout=10) as client:
        for url in stack.urls:
            for method, path, token, body in (
                ("GET", "/readyz", None, None),
                ("GET", f"/v1/markets/{market_id}", None, None),
                ("GET", "/v1/users/house", stack.admin_token, None),
                ("POST", f"/v1/markets/{market_id}/trades", api_key, {"side": "BUY", "outcome": "YES",
                                                                       "shares": "1"}),
            ):
                started = time.monotonic()
                r = client.request(method, f"{url}{path}", json=body, headers=bearer(token) if token else {})
                times.append(time.monotonic() - started)
                assert r.status_code == 503, (method, path, r.status_code, r.text)
                if path != "/readyz":
                    assert_error(r, 503, "UNAVAILABLE")
    return times


def test_redis_sigkilled_under_load_with_aof_always_loses_no_acknowledged_trade(
    database_url: str, tmp_path: Path,
) -> None:
    figures = Reliability("Redis SIGKILL under API load (AOF appendfsync always), restarted on its port")
    with private_redis(tmp_path / "redis", aof=True) as server, \
            deployment("rkill", database_url, server.url, tmp_path) as (stack, api):
        markets = [api.create_market("1000") for _ in range(2)]
        load = Load(api, markets, traders=6).start()
        load.wait_acked(300, 30)
        server.stop()  # SIGKILL
        probes = probe_down(stack, markets[0], load.traders[0].user.api_key)
        assert max(probes) < DOWN_ANSWER_S, probes
        wait_until(lambda: load.statuses["503"] >= 30, 20, "clients to be answered 503 while Redis is down")
        acked_at_restart = load.acked
        server.start()  # same port, same directory: the AOF is replayed
        load.wait_acked(acked_at_restart + 300, 30, "the API to recover by itself")
        load.finish()
        statuses = load.statuses
        assert load.slowest_503_s < DOWN_ANSWER_S and "500" not in statuses, statuses
        settle_all(stack, load, figures)
        figures.load = f"6 clients, 2 markets; {statuses['503']} answers 503 while down, slowest " \
                       f"{load.slowest_503_s:.2f} s, {len(load.retried)} keys retried"
    figures.faults = "1 Redis SIGKILL + restart"
    figures.report()


# --------------------------------------------------------------------------- 3. Redis data lost entirely

def test_redis_data_lost_then_recover_restores_identical_state_and_trading_continues(
    database_url: str, tmp_path: Path,
) -> None:
    figures = Reliability("Redis data lost (new empty server), predmarket recover")
    with private_redis(tmp_path / "redis", aof=True) as server, \
            deployment("lost", database_url, server.url, tmp_path) as (stack, api):
        assert isinstance(server, AofRedisServer)
        live, resolved, settled = (api.create_market("500") for _ in range(3))
        load = Load(api, [live, resolved, settled], traders=6, max_trades=40).start()
        load.complete()
        keyed = api.create_user("1000")
        first = api.trade(keyed, live, "BUY", "NO", shares="3.5", headers={"Idempotency-Key": "before-the-loss"})
        assert first.status_code == 201, first.text
        api.resolve(resolved, "YES")
        api.resolve(settled, "NO")
        r = api.admin("POST", f"/v1/markets/{settled}/settle")
        assert r.status_code == 200 and r.json()["holders_paid"] > 0, r.text
        stack.wait_persisted()
        users = ["house", keyed.user_id, *(t.user.user_id for t in load.traders)]
        with redis_of(stack) as client:
            before, seen = full_snapshot(client, stack.prefix), api_view(api, users)
            seq = lost_at = trade_seq(client, stack.prefix)
        server.wipe()  # SIGKILL, data directory deleted, an empty server on the same port
        with redis_of(stack) as client:
            assert full_snapshot(client, stack.prefix) == {}
            # The running persister recreates its (empty) stream and group: bookkeeping, not state.
            wait_until(lambda: client.exists(stack.events_key) == 1, 20, "the persister to reconnect")
            done = cli(stack, "recover")
            assert done.returncode == 0, done.stdout + done.stderr
            after = without_last_uses(full_snapshot(client, stack.prefix))
            before = without_last_uses(before)
            assert after == before, diff(before, after)
            assert api_view(api, users) == seen  # clients see the same markets and accounts

            again = patient(lambda: api.trade(keyed, live, "BUY", "NO", shares="3.5",
                                              headers={"Idempotency-Key": "before-the-loss"}))
            assert (again.status_code, again.json()) == (201, first.json())
            assert trade_seq(client, stack.prefix) == seq  # the retry executed nothing
            more = Load(api, [live], traders=4, max_trades=50).start()
            more.complete()
            assert min(t["trade_id"] for t in more.acks.values()) == seq + 1
            stack.wait_persisted(timeout_s=40)
            assert_accounts_match_acks(client, stack.prefix, more)
            seq = trade_seq(client, stack.prefix)
        acks = {**load.acks, **more.acks, "before-the-loss": first.json()}
        figures.lost, figures.duplicates = assert_acks_exactly_once(
            acks, [*load.rejected, *more.rejected], pg_trades(stack.database_url), seq=seq)
        assert_audit_passes(stack)
    figures.trades, figures.requests = len(load.acks) + len(more.acks) + 1, load.requests + more.requests + 2
    figures.load = f"{len(before)} state keys compared, {lost_at} trades before the loss"
    figures.faults = "Redis SIGKILL + data directory deleted"
    figures.report()


# --------------------------------------------------------------------------- 4. PostgreSQL unreachable

def test_postgres_unreachable_under_load_trading_goes_on_and_the_persister_catches_up(
    database_url: str, tmp_path: Path,
) -> None:
    figures = Reliability("PostgreSQL unreachable for the persister under API load")
    port = free_port()
    proxied = database_url.replace("127.0.0.1:5432", f"127.0.0.1:{port}")
    assert proxied != database_url
    forwarder = TcpProxy(("127.0.0.1", 5432), port).start()
    try:
        with private_redis(tmp_path / "redis") as server, \
                deployment("pgdown", database_url, server.url, tmp_path,
                           persister_env={"PM_DATABASE_URL": proxied}) as (stack, api):
            markets = [api.create_market("1000") for _ in range(2)]
            load = Load(api, markets, traders=6).start()
            load.wait_acked(200, 30)
            stack.wait_persisted()
            forwarder.cut()  # every connection cut, new ones refused
            acked_at_outage = load.acked
            load.wait_acked(acked_at_outage + 400, 30, "trading while PostgreSQL is unreachable")
            wait_until(lambda: stream_id(stack.last_event_id()) > stream_id(stack.committed()), 10,
                       "the persister to fall behind")
            wait_until(lambda: "store unavailable" in stack.persisters[0].log_tail(), 20,
                       "the persister to find PostgreSQL unreachable")
            behind = load.acked - acked_at_outage
            forwarder.start()  # the same address comes back
            load.wait_acked(load.acked + 200, 30, "trades after PostgreSQL is back")
            load.finish()
            settle_all(stack, load, figures)
    finally:
        forwarder.cut()
    figures.load = f"6 clients, 2 markets, {behind}+ trades acknowledged during the outage"
    figures.faults = "1 PostgreSQL outage (connections cut and refused)"
    figures.report()


# --------------------------------------------------------------------------- 5. an API replica SIGKILLed

def held_requests(url: str, user: User, market_id: str, keys: list[str]) -> tuple[list[threading.Thread],
                                                                                dict[str, str]]:
    """Keyed trades with ``Prefer: durable=postgres`` sent to ``url``, one thread each: they execute, then
    wait for a persister that is frozen -- the replica holds their answers. key -> how each ended."""
    ended: dict[str, str] = {}

    def send(key: str) -> None:
        try:
            r = httpx.post(f"{url}/v1/markets/{market_id}/trades", json=HELD_BODY, timeout=60, headers={
                **bearer(user.api_key), "Idempotency-Key": key, "Prefer": "durable=postgres"})
            ended[key] = f"answered {r.status_code}"
        except httpx.TransportError as exc:
            ended[key] = f"cut: {exc.__class__.__name__}"

    threads = [threading.Thread(target=send, args=(key,), daemon=True) for key in keys]
    for thread in threads:
        thread.start()
    return threads, ended


HELD_BODY = {"side": "BUY", "outcome": "YES", "shares": "2"}


def test_api_replica_sigkilled_with_requests_in_flight_each_trade_executes_once(
    database_url: str, tmp_path: Path,
) -> None:
    figures = Reliability("API replica SIGKILL with requests in flight, clients fail over")
    with private_redis(tmp_path / "redis") as server, \
            deployment("apikill", database_url, server.url, tmp_path, PM_DURABLE_WAIT_S="60") as (stack, api):
        markets = [api.create_market("1000") for _ in range(2)]
        holder = api.create_user("1000")
        load = Load(api, markets, traders=12, failover=True, spread=False).start()  # all on replica 0
        load.wait_acked(300, 30)
        # Requests the replica executed and holds the answers of when it dies: durable answers waiting
        # for a frozen persister. (The load's own cut requests may or may not have executed.)
        persister = stack.persisters[0]
        persister.signal(signal.SIGSTOP)
        held_keys = [f"held-{i}" for i in range(4)]
        threads, ended = held_requests(stack.urls[0], holder, markets[0], held_keys)
        with redis_of(stack) as client:
            def executed() -> dict[str, int]:
                return {f["idempotency_key"]: int(f["trade_id"]) for f in stream_trades(client, stack.prefix)
                        if f["user_id"] == holder.user_id}

            wait_until(lambda: len(executed()) == len(held_keys), 20, "the held trades to execute")
            first = executed()
            stack.servers[0].kill()
            acked_at_kill = load.acked
            for thread in threads:
                thread.join(30)
            assert all(e.startswith("cut") for e in ended.values()), ended
            persister.signal(signal.SIGCONT)
            # Their clients retry on the other replica: the first answer, nothing executed again.
            for key in held_keys:
                r = patient(partial(api.trade, holder, markets[0], replica=1, headers={"Idempotency-Key": key},
                                    **HELD_BODY))
                assert r.status_code == 201 and r.json()["trade_id"] == first[key], r.text
            load.wait_acked(acked_at_kill + 300, 30, "trades through the surviving replica")
            load.finish()
            assert executed() == first
            keys = [(f["user_id"], f.get("idempotency_key")) for f in stream_trades(client, stack.prefix)]
        statuses = load.statuses
        in_flight = sum(n for s, n in statuses.items() if s.startswith("transport:"))
        assert in_flight > 0, statuses  # the load's requests were cut by the kill too, and retried
        assert len(keys) == len(set(keys)) == len(load.acks) + len(held_keys)  # each key executed once
        settle_all(stack, load, figures)
    figures.trades += len(held_keys)
    figures.load = (f"12 clients on one replica; {in_flight} requests cut in flight and retried on the other, "
                    f"+{len(held_keys)} executed whose answers the killed replica held")
    figures.faults = "1 API replica SIGKILL"
    figures.report()
