"""Every key a script touches arrives in KEYS, spelled by engine/keys.py alone; every script opens
with its ``#!lua`` flags line, and that line is the first of what Redis receives."""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
from pathlib import Path
from typing import cast

import pytest
import redis as sync_redis
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import HOUSE, Order, Outcome, Side
from predmarket.engine.scripts import LIB, sources, with_library
from predmarket.engine.settings import Settings
from predmarket.engine.units import MICRO
from predmarket.lua import SCRIPT_DIR

from tests.support.redis_server import RedisServer

SCRIPTS = sorted(p for p in SCRIPT_DIR.glob("*.lua") if p.stem != LIB)
ALL_LUA = sorted(SCRIPT_DIR.glob("*.lua"))
#: Flags a script may carry: writing is the default, and no script may cross slots or be read-only
#: while it writes (see lua/lib.lua).
ALLOWED_FLAGS = {"allow-oom"}

#: Fragments of key names (engine/keys.py) that must not appear in a Lua string literal.
KEY_FRAGMENTS = (":u:", ":idem:", ":pos", ":cost", "{m:", ":rl:", ":usernames", ":apikeys", ":user_ids", ":markets",
                 ":archived", ":evicted", ":events", ":trade_seq", ":dirty", ":closing", ":totals", ":persister:",
                 ":xfer:", ":outbox")
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


def code_of(source: str) -> str:
    """The Lua without its comments (``--`` to the end of the line; no script uses block comments)."""
    assert "--[[" not in source
    lines = []
    for line in source.splitlines():
        # A '--' inside a string literal is not a comment: blank the strings before looking for it.
        blanked = _STRING.sub(lambda m: "_" * len(m.group()), line)
        cut = blanked.find("--")
        lines.append(line if cut < 0 else line[:cut])
    return "\n".join(lines)


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_every_script_opens_with_its_flags_line(path: Path) -> None:
    first = path.read_text().partition("\n")[0]
    assert first == "#!lua" or first.startswith("#!lua flags="), first
    flags = set(first.removeprefix("#!lua").removeprefix(" flags=").split(",")) - {""}
    assert flags <= ALLOWED_FLAGS, flags


def test_redis_receives_the_flags_line_first_then_the_library() -> None:
    lib = (SCRIPT_DIR / f"{LIB}.lua").read_text()
    assert not lib.startswith("#!")
    for path in SCRIPTS:
        shebang = path.read_text().partition("\n")[0]
        sent = sources()[path.stem]
        assert sent.partition("\n")[0] == shebang
        assert lib in sent


def test_a_script_without_its_flags_line_is_refused_at_load() -> None:
    with pytest.raises(RuntimeError, match="#!lua"):
        with_library("-- no flags\nreturn 1", "-- lib")


@pytest.mark.parametrize("path", ALL_LUA, ids=lambda p: p.stem)
def test_no_script_spells_a_key_name(path: Path) -> None:
    code = code_of(path.read_text())
    literals = _STRING.findall(code)
    spelled = [s for s in literals if any(fragment in s for fragment in KEY_FRAGMENTS)]
    assert not spelled, f"key names belong to engine/keys.py, passed in KEYS: {spelled}"
    assert not re.search(r"\bprefix\b", code), "a script builds a key from the prefix instead of taking it in KEYS"


def test_the_check_sees_a_key_built_in_a_script() -> None:
    built = "local k = prefix .. ':idem:' .. user .. ':' .. key -- a comment: ':u:'\n"
    code = code_of(built)
    assert "a comment" not in code
    assert any(":idem:" in s for s in _STRING.findall(code)) and re.search(r"\bprefix\b", code)


# --------------------------------------------------------------------------- on a real server

def _declared_keys_breaches(lines: list[dict[str, object]], admin: sync_redis.Redis) -> tuple[set[str], list[str]]:
    """Scripts seen (by sha) and every command a script ran on a key its call did not declare.

    MONITOR shows each EVALSHA before the commands its script runs (tagged "lua"), and a
    script runs alone, so the lua lines after an EVALSHA are that call's.
    """
    breaches: list[str] = []
    seen: set[str] = set()
    declared: set[str] = set()
    for line in lines:
        args = str(line["command"]).split(" ")  # keys hold no space; later arguments may split wrongly
        if line["client_type"] != "lua":
            if args[0].upper() in ("EVALSHA", "EVAL"):
                seen.add(args[1])
                declared = set(args[3:3 + int(args[2])])
            continue
        if args[0].upper() in ("TIME", "PUBLISH"):  # no key (PUBLISH names a channel)
            continue
        try:
            touched = cast(list[str], admin.command_getkeys(*args))  # admin decodes: key names are str
        except sync_redis.ResponseError:  # arguments the split above broke apart: the key comes first
            touched = [args[1]]
        breaches += [f"{args[0]} {key}" for key in touched if key not in declared]
    return seen, breaches


async def test_every_key_a_script_touches_is_declared_in_its_call(tmp_path: Path) -> None:
    """Runs trades with and without an Idempotency-Key (a replay, a rejection, a second market in
    the same call), accounts and a full settlement on a private server, watching with MONITOR."""
    server = RedisServer(tmp_path)
    server.start()
    lines: list[dict[str, object]] = []
    admin = server.client()
    monitor_client = server.client()
    stop = threading.Event()
    started = threading.Event()

    def watch() -> None:
        with monitor_client.monitor() as m:  # type: ignore[no-untyped-call]  # untyped in redis-py
            started.set()
            for line in m.listen():
                if stop.is_set() and "wire-test-end" in str(line["command"]):
                    return
                lines.append(line)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    engine = MarketEngine.from_settings(Settings(key_prefix="pmkeys", redis_url=server.url))
    try:
        assert started.wait(10)
        await engine.start()
        await engine.accounts.deposit(HOUSE, 1_000 * MICRO)
        users = [(await engine.accounts.create(f"keys-{i}")).user_id for i in range(2)]
        for user in users:
            await engine.accounts.deposit(user, 100 * MICRO)
        markets = [(await engine.markets.create(f"M{i}", 100 * MICRO)).market_id for i in range(2)]
        for market in markets:
            await engine.markets.open(market)
        keyed = Order(users[0], markets[0], Side.BUY, Outcome.YES, shares=MICRO,
                      idempotency_key="k", fingerprint="f")
        await asyncio.gather(
            engine.execute_trade(keyed),
            engine.execute_trade(Order(users[1], markets[1], Side.BUY, Outcome.NO, shares=2 * MICRO)),
            engine.execute_trade(Order(users[1], markets[0], Side.SELL, Outcome.NO, shares=MICRO, min_proceeds=0)),
            return_exceptions=True,
        )
        assert (await engine.execute_trade(keyed)).replayed
        await engine.accounts.withdraw(users[1], MICRO)
        await engine.markets.resolve(markets[0], Outcome.YES)
        await engine.markets.settle(markets[0])
        stop.set()
        admin.set("wire-test-end", "1")
        watcher.join(10)
        assert not watcher.is_alive()
        seen, breaches = _declared_keys_breaches(lines, admin)
    finally:
        await engine.close()
        admin.close()
        monitor_client.close()
        server.stop()
    names = {hashlib.sha1(source.encode()).hexdigest(): name for name, source in sources().items()}
    assert {"trade", "deposit", "withdraw", "create_user", "create_market", "open_market", "resolve_market",
            "settle_batch", "settle_finish"} <= {names.get(sha, sha) for sha in seen}
    assert breaches == []
