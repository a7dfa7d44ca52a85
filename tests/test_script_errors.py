"""The one script registry and the one decoder of script error replies.

A script's rejection names a contract code and becomes that code's class; an
unknown code (a script and ``engine.errors`` out of step) or a Lua runtime
error is a bug: logged, raised as ``InternalError`` and answered 500 INTERNAL,
never guessed into a contract code. Probes are tiny scripts on the real Redis.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
import redis as sync_redis
from fastapi import FastAPI
from predmarket.api import errors as api_errors
from predmarket.api.auth import Authenticator
from predmarket.engine.errors import ERRORS_BY_CODE, EngineError, InternalError, Unavailable
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import Order, Outcome, Side, Trade
from predmarket.engine.scripts import Script, Scripts, SyncScript, SyncScripts
from predmarket.engine.sequencer import MarketBook, Pending, Priced, SequencerStats, hand_out_results
from predmarket.lua import SCRIPT_DIR
from redis.asyncio import Redis

from tests.support.services import new_redis

ENGINE_LOG = "predmarket.engine"


def rejecting(reply: str) -> str:
    """A probe script answering the error reply ``reply``."""
    return f"return redis.error_reply('{reply}')"


@pytest.fixture
async def client() -> AsyncIterator[Redis]:
    redis = new_redis()
    try:
        yield redis
    finally:
        await redis.aclose()


def unknown_code_logged(caplog: pytest.LogCaptureFixture, code: str) -> bool:
    return any(r.levelno == logging.ERROR and r.name == ENGINE_LOG and code in r.getMessage()
               for r in caplog.records)


@pytest.mark.parametrize("code", sorted(ERRORS_BY_CODE))
async def test_each_contract_code_becomes_its_class(client: Redis, code: str) -> None:
    probe = Script(client, "probe", rejecting(f"{code} what went wrong"))
    with pytest.raises(EngineError) as raised:
        await probe([], [])
    assert type(raised.value) is ERRORS_BY_CODE[code]
    assert raised.value.code == code
    assert raised.value.message == "what went wrong"


@pytest.mark.parametrize("code", sorted(ERRORS_BY_CODE))
def test_each_contract_code_becomes_its_class_on_a_sync_client(redis_client: sync_redis.Redis, code: str) -> None:
    probe = SyncScript(redis_client, "probe", rejecting(f"{code} what went wrong"))
    with pytest.raises(EngineError) as raised:
        probe([], [])
    assert type(raised.value) is ERRORS_BY_CODE[code]
    assert raised.value.message == "what went wrong"


async def test_an_unknown_code_is_an_internal_error_and_logged(
    client: Redis, caplog: pytest.LogCaptureFixture,
) -> None:
    probe = Script(client, "probe", rejecting("NOT_A_CODE something"))
    with caplog.at_level(logging.ERROR, logger=ENGINE_LOG), pytest.raises(InternalError):
        await probe([], [])
    assert unknown_code_logged(caplog, "NOT_A_CODE")


def test_an_unknown_code_on_a_sync_client_is_an_internal_error_and_logged(
    redis_client: sync_redis.Redis, caplog: pytest.LogCaptureFixture,
) -> None:
    probe = SyncScript(redis_client, "probe", rejecting("NOT_A_CODE something"))
    with caplog.at_level(logging.ERROR, logger=ENGINE_LOG), pytest.raises(InternalError):
        probe([], [])
    assert unknown_code_logged(caplog, "NOT_A_CODE")


async def test_a_lua_runtime_error_is_an_internal_error(client: Redis, caplog: pytest.LogCaptureFixture) -> None:
    probe = Script(client, "probe", "return nil + 1")
    with caplog.at_level(logging.ERROR, logger=ENGINE_LOG), pytest.raises(InternalError):
        await probe([], [])
    assert any(r.name == ENGINE_LOG and "probe" in r.getMessage() for r in caplog.records)


async def test_redis_refusing_a_call_for_now_is_unavailable(client: Redis) -> None:
    with pytest.raises(Unavailable):
        await Script(client, "probe", rejecting("MISCONF cannot persist"))([], [])


def test_an_unknown_code_in_a_trade_result_is_an_internal_error_not_unavailable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Per-order results of ``trade`` go through the same decoder (it once fell back to UNAVAILABLE)."""
    loop = asyncio.new_event_loop()
    try:
        order = Order("u1", "m1", Side.BUY, Outcome.YES, shares=1)
        future: asyncio.Future[Trade] = loop.create_future()
        pending = Pending(order, future)
        book = MarketBook("m1", ("m", "p", "c"))  # the market's hash, positions, net costs: never read here
        with caplog.at_level(logging.ERROR, logger=ENGINE_LOG):
            again = hand_out_results(book, [Priced(pending, None, None)], [["NOT_A_CODE", "why"]], 0,
                                     SequencerStats())
        assert again == []
        assert isinstance(future.exception(), InternalError)
        assert unknown_code_logged(caplog, "NOT_A_CODE")
    finally:
        loop.close()


async def test_the_api_answers_an_unknown_code_with_500_internal_and_logs_it(
    client: Redis, caplog: pytest.LogCaptureFixture,
) -> None:
    app = FastAPI()
    api_errors.install(app)
    probe = Script(client, "probe", rejecting("NOT_A_CODE something"))

    @app.post("/probe")
    async def run_probe() -> None:
        await probe([], [])

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        with caplog.at_level(logging.ERROR):
            response = await http.post("/probe")
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "INTERNAL", "message": "internal error"}}
    assert unknown_code_logged(caplog, "NOT_A_CODE")


async def test_the_registry_has_one_attribute_per_script_file(client: Redis, redis_client: sync_redis.Redis) -> None:
    files = {path.stem for path in SCRIPT_DIR.glob("*.lua")} - {"lib"}
    scripts = Scripts(client)
    assert set(scripts.names) == files
    assert all(isinstance(getattr(scripts, name), Script) for name in files)
    assert set(SyncScripts(redis_client).names) == files


async def test_the_rate_limit_is_the_engines_registered_script(engine: MarketEngine) -> None:
    """Registered once per client: the authenticator uses the engine's registry, not a copy of its own."""
    auth = Authenticator(engine, "admin-token", rate_per_s=10)
    assert auth._limit is engine.scripts.rate_limit
