"""The published OpenAPI document tells the truth: valid, typed, and matching what the replicas send.

Every route's real answers (successes and errors) are validated against the
schema the document gives for that status, and a client generated from the
document by openapi-python-client gets typed objects back.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate

from tests.support.api import Api, Stack, unique


@pytest.fixture(scope="module")
def document(api_stack: Stack) -> dict[str, Any]:
    r = httpx.get(f"{api_stack.url}/openapi.json", timeout=10)
    assert r.status_code == 200
    return dict(r.json())


def check(document: dict[str, Any], method: str, path: str, response: httpx.Response) -> None:
    """``response`` matches what the document promises for ``method path`` at its status."""
    operation = document["paths"][path][method.lower()]
    documented = operation["responses"].get(str(response.status_code))
    assert documented is not None, f"{method} {path}: status {response.status_code} is not documented"
    content = documented.get("content", {})
    media = response.headers["content-type"].split(";")[0]
    assert media in content, f"{method} {path} {response.status_code}: {media} not documented ({list(content)})"
    schema = content[media].get("schema")
    assert schema, f"{method} {path} {response.status_code}: empty schema"
    if media == "application/json":
        # The document is the root, so the schema's #/components/... references resolve in it.
        jsonschema.Draft202012Validator({**schema, "components": document["components"]}).validate(response.json())


def test_the_document_is_valid_and_complete(document: dict[str, Any]) -> None:
    validate(document)
    schemas = document["components"]["schemas"]
    assert {"Account", "CreatedUser", "Market", "MarketList", "Quote", "Trade", "TradeList", "Settlement",
            "Error", "Readiness"} <= set(schemas)
    assert document["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http", "scheme": "bearer", "description": "The admin token (PM_ADMIN_TOKEN) or a user's API key"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                for media, body in response.get("content", {}).items():
                    assert body.get("schema"), f"{method} {path} {status} {media}: no schema"
                if status.startswith("4") or (status.startswith("5") and path.startswith("/v1")):
                    assert response["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/Error"}, (method, path, status)
    trade = document["paths"]["/v1/markets/{market_id}/trades"]["post"]
    assert trade["security"] == [{"HTTPBearer": []}]
    assert trade["responses"]["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Trade"}
    assert "security" not in document["paths"]["/v1/markets"]["get"]  # anyone may list markets
    assert list(document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    assert "503" in document["paths"]["/readyz"]["get"]["responses"]
    assert "/v1/ws" in document["paths"]


def test_real_answers_match_their_schemas(document: dict[str, Any], api: Api) -> None:
    def call(method: str, path: str, template: str | None = None, *, token: str | None = None,
             **kwargs: Any) -> httpx.Response:
        r = api.request(method, path, token=token, **kwargs)
        check(document, method, template or path, r)
        return r

    admin = api.admin_token
    r = call("POST", "/v1/users", token=admin, json={"username": unique("openapi")})
    user_id, key = r.json()["user_id"], r.json()["api_key"]
    call("POST", f"/v1/users/{user_id}/deposits", "/v1/users/{user_id}/deposits", token=admin,
         json={"amount": "100"})
    call("POST", f"/v1/users/{user_id}/withdrawals", "/v1/users/{user_id}/withdrawals", token=admin,
         json={"amount": "1"})
    call("GET", f"/v1/users/{user_id}", "/v1/users/{user_id}", token=key)
    call("GET", "/v1/me", token=key)
    market_id = api.create_market(b="10", open=False)
    call("GET", "/v1/markets", params={"status": "CREATED"})
    call("POST", f"/v1/markets/{market_id}/open", "/v1/markets/{market_id}/open", token=admin)
    call("GET", f"/v1/markets/{market_id}", "/v1/markets/{market_id}")
    call("GET", f"/v1/markets/{market_id}/quote", "/v1/markets/{market_id}/quote",
         params={"side": "BUY", "outcome": "YES", "amount": "2"})
    trade = call("POST", f"/v1/markets/{market_id}/trades", "/v1/markets/{market_id}/trades", token=key,
                 json={"side": "BUY", "outcome": "YES", "shares": "3"})
    api.stack.wait_persisted()
    assert call("GET", f"/v1/markets/{market_id}/trades", "/v1/markets/{market_id}/trades").json()[
        "trades"][0]["trade_id"] == trade.json()["trade_id"]
    call("GET", "/v1/me", token=key)  # with a position now
    call("POST", f"/v1/markets/{market_id}/resolve", "/v1/markets/{market_id}/resolve", token=admin,
         json={"outcome": "YES"})
    call("POST", f"/v1/markets/{market_id}/settle", "/v1/markets/{market_id}/settle", token=admin)
    for path in ("/healthz", "/readyz"):
        call("GET", path)
    call("GET", "/metrics")
    # Errors: each in the one documented shape.
    call("GET", "/v1/me")  # 401
    call("POST", "/v1/markets", token=key, json={"name": "x", "liquidity_b": "1"})  # 403
    call("GET", "/v1/markets/nope-" + unique("m"), "/v1/markets/{market_id}")  # 404
    call("POST", f"/v1/markets/{market_id}/trades", "/v1/markets/{market_id}/trades", token=key,
         json={"side": "BUY", "outcome": "YES", "shares": "1"})  # 409
    call("POST", f"/v1/users/{user_id}/withdrawals", "/v1/users/{user_id}/withdrawals", token=admin,
         json={"amount": "1000"})  # 422


def test_a_generated_client_gets_typed_objects(document: dict[str, Any], api: Api, api_stack: Stack,
                                               tmp_path: Path) -> None:
    spec = tmp_path / "openapi.json"
    spec.write_text(httpx.get(f"{api_stack.url}/openapi.json", timeout=10).text)
    generator = Path(sys.executable).with_name("openapi-python-client")
    done = subprocess.run(
        [str(generator), "generate", "--path", str(spec), "--output-path", str(tmp_path / "client"),
         "--meta", "none"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "PATH": f"{generator.parent}{os.pathsep}{os.environ.get('PATH', '')}"})  # its ruff
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        client_module = importlib.import_module("client")
        get_market = importlib.import_module("client.api.markets.get_market_v1_markets_market_id_get")
        me = importlib.import_module("client.api.accounts.me_v1_me_get")
        models = importlib.import_module("client.models")
        user = api.create_user("5")
        market_id = api.create_market(b="10")
        with client_module.AuthenticatedClient(base_url=api_stack.url, token=user.api_key) as client:
            market = get_market.sync(client=client, market_id=market_id)
            assert isinstance(market, models.Market)
            assert (market.market_id, market.status, market.price_yes) == (market_id, "OPEN", "0.500000")
            account = me.sync(client=client)
            assert isinstance(account, models.Account)
            assert (account.user_id, account.available, account.positions) == (user.user_id, "5.000000", [])
            missing = get_market.sync(client=client, market_id="no-such-" + unique("m"))
            assert isinstance(missing, models.Error)
            assert missing.error.code == "NOT_FOUND"
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == "client" or m.startswith("client.")]:
            del sys.modules[name]
