"""API keys (contract, "Trader's views"): more keys per user, listed, revoked at once on every replica,
their last use recorded without a write per request, kept in PostgreSQL (reload of an evicted user,
``predmarket recover``, migration of the keys users were created with).

Over HTTP: the session's stack (two replicas, rate limit off: the key directory is read on every
request) and a stack of this module (two replicas, rate limit on: the directory is read by the
rate-limit script, and no janitor, so a test evicts exactly when it wants). In process: the engine,
a persister and ``predmarket recover`` on a throwaway database.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import redis as sync_redis
from alembic import command
from predmarket.api.auth import LAST_USED_FLUSH_S, hash_key, new_api_key
from predmarket.engine.api_keys import MAX_KEYS_PER_USER, KeyUse, key_id_for
from predmarket.engine.errors import NotFound
from predmarket.engine.keys import Keys
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.settings import Settings
from predmarket.record.database import alembic_config, drop_database, ensure_database
from sqlalchemy import create_engine, text

from tests.support.api import RFC3339_UTC, Api, Stack, StackFactory, User, assert_error, unique
from tests.support.faults import diff, evict_idle_users, full_snapshot
from tests.support.persister import catch_up, persister, persister_env
from tests.support.processes import run_predmarket
from tests.support.redis_data import stream_entries
from tests.support.services import REAL_REDIS, pg_url
from tests.support.waiting import wait_for

KEY_ID = r"^k_[0-9a-f]{20}$"


@pytest.fixture(scope="module")
def limited(stacks: StackFactory) -> Iterator[Api]:
    """Two replicas with the rate limit on (authentication through the rate-limit script), no janitor."""
    stack = stacks.start("apikeys", PM_RATE_LIMIT_PER_S="1000", PM_USER_IDLE_TTL_S="0",
                         PM_MARKET_ARCHIVE_AFTER_S="0")
    client = Api(stack)
    try:
        yield client
    finally:
        client.close()


def keys_of(api: Api, token: str, replica: int = 0) -> list[dict[str, Any]]:
    r = api.request("GET", "/v1/me/api-keys", token=token, replica=replica)
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"api_keys"}
    return list(r.json()["api_keys"])


def without_last_use(keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Listed keys without ``last_used_at``, which a replica's flush every few seconds may move between two
    listings (the requests that list them use them): for comparing which keys are listed."""
    return [{k: v for k, v in key.items() if k != "last_used_at"} for key in keys]


def make_key(api: Api, user: User, replica: int = 0) -> dict[str, Any]:
    r = api.request("POST", "/v1/me/api-keys", token=user.api_key, replica=replica)
    assert r.status_code == 201, r.text
    made = dict(r.json())
    assert set(made) == {"key_id", "api_key", "created_at"}
    return made


def status(api: Api, token: str, replica: int) -> int:
    return api.request("GET", "/v1/me", token=token, replica=replica).status_code


def assert_listed(entry: dict[str, Any], key_id: str, key: str) -> None:
    assert set(entry) == {"key_id", "created_at", "last_used_at", "last4"}
    assert entry["key_id"] == key_id and entry["last4"] == key[-4:]
    assert RFC3339_UTC.fullmatch(entry["created_at"])


# --------------------------------------------------------------------------- over HTTP

@pytest.mark.parametrize("which", ["directory read", "rate-limit script"])
def test_create_list_and_revoke_at_once_on_both_replicas(api: Api, limited: Api, which: str) -> None:
    client = api if which == "directory read" else limited
    user = client.create_user("10")
    [first] = keys_of(client, user.api_key)
    assert_listed(first, key_id_for(hash_key(user.api_key)), user.api_key)  # the key made at creation

    made = make_key(client, user, replica=1)
    assert made["key_id"] != first["key_id"] and RFC3339_UTC.fullmatch(made["created_at"])
    listed = keys_of(client, made["api_key"], replica=0)
    assert [k["key_id"] for k in listed] == [first["key_id"], made["key_id"]]  # oldest first
    assert_listed(listed[1], made["key_id"], made["api_key"])
    assert listed[1]["created_at"] == made["created_at"]
    assert "api_key" not in listed[1]

    # Both replicas have seen the key work; it is revoked on one, and the next request on the other fails.
    for revoke_on in (0, 1):
        extra = make_key(client, user)
        assert [status(client, extra["api_key"], replica) for replica in (0, 1, 0, 1)] == [200] * 4
        r = client.request("DELETE", f"/v1/me/api-keys/{extra['key_id']}", token=user.api_key, replica=revoke_on)
        assert r.status_code == 204 and r.content == b""
        assert_error(client.request("GET", "/v1/me", token=extra["api_key"], replica=1 - revoke_on),
                     401, "UNAUTHENTICATED")
        assert status(client, extra["api_key"], revoke_on) == 401
        assert_error(client.request("DELETE", f"/v1/me/api-keys/{extra['key_id']}", token=user.api_key),
                     404, "NOT_FOUND")  # revoked: gone
    assert [k["key_id"] for k in keys_of(client, user.api_key, replica=1)] == [first["key_id"], made["key_id"]]

    # The key made at creation can be revoked too; the other key goes on working.
    r = client.request("DELETE", f"/v1/me/api-keys/{first['key_id']}", token=made["api_key"], replica=1)
    assert r.status_code == 204
    assert (status(client, user.api_key, 0), status(client, user.api_key, 1)) == (401, 401)
    assert [k["key_id"] for k in keys_of(client, made["api_key"])] == [made["key_id"]]


def test_another_users_key_and_unknown_ids_are_404(api: Api) -> None:
    alice, bob = api.create_user(None), api.create_user(None)
    alices = make_key(api, alice)
    for key_id in (alices["key_id"], key_id_for(hash_key(alice.api_key)), "k_00000000000000000000", "x y"):
        assert_error(api.request("DELETE", f"/v1/me/api-keys/{key_id}", token=bob.api_key), 404, "NOT_FOUND")
        assert_error(api.admin("DELETE", f"/v1/users/{bob.user_id}/api-keys/{key_id}"), 404, "NOT_FOUND")
    assert status(api, alices["api_key"], 1) == 200 and status(api, alice.api_key, 1) == 200
    assert len(keys_of(api, alice.api_key)) == 2


def test_admin_routes_and_who_may_call_them(api: Api) -> None:
    user, other = api.create_user(None), api.create_user(None)
    base = f"/v1/users/{user.user_id}/api-keys"
    r = api.admin("POST", base)
    assert r.status_code == 201, r.text
    made = r.json()
    assert set(made) == {"key_id", "api_key", "created_at"}
    assert status(api, made["api_key"], 1) == 200
    r = api.admin("GET", base)
    assert r.status_code == 200
    assert [k["key_id"] for k in r.json()["api_keys"]] == [key_id_for(hash_key(user.api_key)), made["key_id"]]
    assert without_last_use(r.json()["api_keys"]) == without_last_use(keys_of(api, user.api_key))

    for method in ("GET", "POST"):  # a user is not the admin, even for itself
        assert_error(api.request(method, base, token=user.api_key), 403, "FORBIDDEN")
        assert_error(api.request(method, base, token=other.api_key), 403, "FORBIDDEN")
        assert_error(api.admin(method, "/v1/me/api-keys"), 403, "FORBIDDEN")
        assert_error(api.request(method, "/v1/me/api-keys"), 401, "UNAUTHENTICATED")
        assert_error(api.admin(method, f"/v1/users/{unique('ghost')}/api-keys"), 404, "NOT_FOUND")
    assert_error(api.request("DELETE", f"{base}/{made['key_id']}", token=user.api_key), 403, "FORBIDDEN")

    r = api.admin("DELETE", f"{base}/{made['key_id']}")
    assert r.status_code == 204
    assert status(api, made["api_key"], 0) == 401 and status(api, made["api_key"], 1) == 401
    assert [k["key_id"] for k in api.admin("GET", base).json()["api_keys"]] == [key_id_for(hash_key(user.api_key))]


def test_last_used_at_appears_within_the_flush_period(api: Api) -> None:
    user = api.create_user(None)
    made = make_key(api, user)
    assert [k["last_used_at"] for k in api.admin("GET", f"/v1/users/{user.user_id}/api-keys").json()["api_keys"]
            if k["key_id"] == made["key_id"]] == [None]
    before = datetime.now().astimezone()
    assert status(api, made["api_key"], 1) == 200  # one use, on the replica that did not make it

    def used() -> str | None:
        keys = api.admin("GET", f"/v1/users/{user.user_id}/api-keys").json()["api_keys"]
        last_used: str | None = next(k["last_used_at"] for k in keys if k["key_id"] == made["key_id"])
        return last_used

    when = wait_for(used, LAST_USED_FLUSH_S * 2 + 5, "the key's last use to be flushed", interval_s=0.2)
    assert RFC3339_UTC.fullmatch(when)
    seen = datetime.fromisoformat(when.replace("Z", "+00:00"))
    assert abs((seen - before).total_seconds()) < LAST_USED_FLUSH_S + 5


def test_an_evicted_user_reloads_its_live_keys(limited: Api) -> None:
    stack = limited.stack
    user = limited.create_user("5")
    kept, revoked = make_key(limited, user), make_key(limited, user, replica=1)
    assert limited.request("DELETE", f"/v1/me/api-keys/{revoked['key_id']}", token=user.api_key).status_code == 204
    listed = keys_of(limited, user.api_key)
    keys = stack.home_keys(user.user_id)
    evict_idle_users(stack, user.user_id)
    with stack.redis() as client:
        assert not client.exists(keys.user_api_keys(user.user_id))
        assert client.hget(keys.apikeys, hash_key(kept["api_key"])) == user.user_id  # the directory stays

    assert status(limited, kept["api_key"], 1) == 200  # reloads the user (GET /v1/me)
    assert without_last_use(keys_of(limited, kept["api_key"], replica=0)) == without_last_use(listed)
    assert status(limited, revoked["api_key"], 0) == 401 and status(limited, revoked["api_key"], 1) == 401

    # Listing alone reloads too, and revoking a key of an evicted user works at once.
    evict_idle_users(stack, user.user_id)
    r = limited.admin("DELETE", f"/v1/users/{user.user_id}/api-keys/{kept['key_id']}", replica=1)
    assert r.status_code == 204
    assert status(limited, kept["api_key"], 0) == 401
    assert [k["key_id"] for k in keys_of(limited, user.api_key)] == [listed[0]["key_id"]]



def test_the_keys_a_user_may_hold_are_capped(limited: Api) -> None:
    user = limited.create_user(None)
    for _ in range(MAX_KEYS_PER_USER - 1):
        make_key(limited, user)
    assert_error(limited.request("POST", "/v1/me/api-keys", token=user.api_key), 409, "INVALID_STATE")
    assert len(keys_of(limited, user.api_key)) == MAX_KEYS_PER_USER


# --------------------------------------------------------------------------- in process: engine, persister, recover

async def test_concurrent_lookups_share_round_trips_and_see_revocations(engine: MarketEngine) -> None:
    """Lookups made while one is in flight are answered together by the next HMGET, each from a read
    sent after it was asked: a revocation done before a lookup is always seen."""
    keys = engine.accounts.api_keys
    user = (await engine.accounts.create("batched")).user_id
    hashes = [new_api_key()[1] for _ in range(3)]
    for key_hash in hashes:
        await keys.create(user, key_hash, "abcd")
    sent = 0
    hmget = engine.redis.hmget

    async def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal sent
        sent += 1
        return await hmget(*args, **kwargs)

    engine.redis.hmget = counting  # type: ignore[method-assign]  # counts the HMGETs sent, then sends them
    try:
        asked = [*hashes * 20, "0" * 64]
        owners = await asyncio.gather(*(keys.owner(h) for h in asked))
        assert owners == [user] * 60 + [None]
        assert sent <= 2, sent  # the first lookup, then everything asked while it was in flight
        await keys.revoke(user, key_id_for(hashes[0]))
        assert await asyncio.gather(*(keys.owner(h) for h in hashes)) == [None, user, user]
    finally:
        engine.redis.hmget = hmget  # type: ignore[method-assign]  # the client's own method back


async def test_touch_skips_revoked_keys_and_never_moves_back(engine: MarketEngine) -> None:
    keys = engine.accounts.api_keys
    user = (await engine.accounts.create("toucher")).user_id
    (_, live), (_, gone) = new_api_key(), new_api_key()
    await keys.create(user, live, "abcd")
    await keys.create(user, gone, "efgh")
    await keys.revoke(user, key_id_for(gone))
    assert await keys.touch([KeyUse(live, user, 5_000), KeyUse(gone, user, 5_000)]) == 1
    assert await keys.touch([KeyUse(live, user, 4_000)]) == 0  # an older use (another replica, late)
    assert await keys.touch([KeyUse(live, "someone-else", 9_000)]) == 0  # not that user's key
    [listed] = await keys.of_user(user)
    assert (listed.key_id, listed.last_used_ms, listed.last4) == (key_id_for(live), 5_000, "abcd")
    # Not an event (a use changes no state a subscriber needs): held for the persister apart.
    assert not [f for _, f in await stream_entries(engine.redis, engine.keys.events) if "Used" in f["type"]]
    assert await engine.redis.hgetall(engine.keys.apikeys_unsaved) == {key_id_for(live): "5000"}
    with pytest.raises(NotFound):
        await keys.revoke(user, key_id_for(gone))


async def test_a_key_made_before_records_is_listed_and_revoked(engine: MarketEngine) -> None:
    """A user resident when this feature arrived: a directory entry and ``key_hash``, no record."""
    key, key_hash = new_api_key()
    user = (await engine.accounts.create("legacy", key_hash=key_hash, last4=key[-4:])).user_id
    await engine.redis.delete(engine.keys.user_api_keys(user))
    [legacy] = await engine.accounts.api_keys.of_user(user)
    assert (legacy.key_id, legacy.last4) == (key_id_for(key_hash), None)
    await engine.accounts.api_keys.revoke(user, legacy.key_id)
    assert await engine.accounts.user_for_key(key_hash) is None
    assert await engine.accounts.api_keys.of_user(user) == []


@pytest.mark.skipif(not REAL_REDIS, reason="recover runs as a subprocess on a real Redis")
async def test_keys_reach_postgres_and_recover_rebuilds_the_live_ones(
        engine: MarketEngine, pg_settings: Settings, redis_client: sync_redis.Redis) -> None:
    keys = engine.accounts.api_keys
    first, first_hash = new_api_key()
    user = (await engine.accounts.create("recovered", key_hash=first_hash, last4=first[-4:])).user_id
    (_, live), (_, gone) = new_api_key(), new_api_key()
    await keys.create(user, live, "live")
    await keys.create(user, gone, "gone")
    await keys.revoke(user, key_id_for(gone))
    await keys.touch([KeyUse(live, user, 1_700_000_000_123)])
    with persister(pg_settings) as p:
        catch_up(p)
        p.save_key_uses()  # (a chore of the persister's loop, every few seconds)
        assert not redis_client.exists(Keys(pg_settings.key_prefix).apikeys_unsaved)  # saved, then forgotten
    url = pg_settings.database_url
    pg = create_engine(url)
    try:
        with pg.connect() as conn:
            rows = {r.key_id: r for r in conn.execute(text("SELECT * FROM api_keys WHERE user_id = :u"), {"u": user})}
    finally:
        pg.dispose()
    assert set(rows) == {key_id_for(h) for h in (first_hash, live, gone)}
    assert rows[key_id_for(gone)].revoked_at is not None and rows[key_id_for(live)].revoked_at is None
    assert (rows[key_id_for(first_hash)].last4, rows[key_id_for(first_hash)].key_hash) == (first[-4:], first_hash)
    assert rows[key_id_for(live)].last_used_at.timestamp() == 1_700_000_000.123

    before = full_snapshot(redis_client, pg_settings.key_prefix)
    listed = await keys.of_user(user)
    done = run_predmarket("recover", "--force", env=persister_env(pg_settings))
    assert done.returncode == 0, done.stdout + done.stderr
    # Recovery always writes the counters, which nothing here had made yet.
    after = {k: v for k, v in full_snapshot(redis_client, pg_settings.key_prefix).items()
             if k in before or k not in ("totals", "trade_seq")}
    assert any(k.startswith("ukeys:") for k in before) and "apikeys:used" in before
    assert after == before, diff(before, after)
    assert await keys.of_user(user) == listed
    assert await engine.accounts.user_for_key(gone) is None
    assert await engine.accounts.user_for_key(live) == user


async def test_a_use_waits_until_its_key_is_in_the_record(engine: MarketEngine, pg_settings: Settings) -> None:
    """A last use whose key has no row yet (its creation event not yet written) is kept, not dropped."""
    keys = engine.accounts.api_keys
    user = (await engine.accounts.create("early")).user_id
    _, key_hash = new_api_key()
    await keys.create(user, key_hash, "wxyz")
    await keys.touch([KeyUse(key_hash, user, 7_000)])
    with persister(pg_settings) as p:
        assert p.save_key_uses() == 0  # nothing of the stream written yet: no row for the key
        assert await engine.redis.hgetall(engine.keys.apikeys_unsaved) == {key_id_for(key_hash): "7000"}
        catch_up(p)
        p.save_key_uses()
    assert await engine.redis.exists(engine.keys.apikeys_unsaved) == 0
    pg = create_engine(pg_settings.database_url)
    try:
        with pg.connect() as conn:
            used = conn.execute(text("SELECT last_used_at FROM api_keys WHERE key_id = :k"),
                                {"k": key_id_for(key_hash)}).scalar_one()
    finally:
        pg.dispose()
    assert used.timestamp() == 7.0


def test_migration_0005_makes_the_keys_users_were_created_with_live_rows() -> None:
    url = pg_url(f"pmtest_keys_{uuid.uuid4().hex[:10]}")
    ensure_database(url)
    pg = create_engine(url)
    try:
        command.upgrade(alembic_config(url), "0004")
        with pg.begin() as conn:
            conn.execute(text(
                "INSERT INTO users (user_id, username, api_key_hash, created_at, event_id) VALUES "
                "('old', 'old', :h, '2026-01-02T03:04:05.678+00:00', '1-0'), "
                "('keyless', 'keyless', NULL, '2026-01-02T03:04:05+00:00', '1-1')"), {"h": "ab" * 32})
        command.upgrade(alembic_config(url), "0005")
        with pg.connect() as conn:
            rows = conn.execute(text("SELECT key_id, user_id, key_hash, last4, revoked_at, event_order, "
                                     "created_at = '2026-01-02T03:04:05.678+00:00' AS same_time FROM api_keys")).all()
        assert [tuple(r) for r in rows] == [(key_id_for("ab" * 32), "old", "ab" * 32, None, None, 0, True)]
        command.downgrade(alembic_config(url), "0004")
    finally:
        pg.dispose()
        drop_database(url)


def test_the_document_lists_the_key_routes(api_stack: Stack) -> None:
    paths = httpx.get(f"{api_stack.url}/openapi.json", timeout=10).json()["paths"]
    assert set(paths["/v1/me/api-keys"]) == {"get", "post"}
    assert set(paths["/v1/users/{user_id}/api-keys"]) == {"get", "post"}
    for path in ("/v1/me/api-keys/{key_id}", "/v1/users/{user_id}/api-keys/{key_id}"):
        assert set(paths[path]) == {"delete"} and "204" in paths[path]["delete"]["responses"]
