"""Fuzzing the HTTP API: generated and hand-written nasty requests never produce a 5xx and, when rejected,
change nothing.

The property-based part uses hypothesis (bounded examples, no deadline) against the real replicas; a small
oracle of the contract's number and shape rules says which generated requests must be rejected with
``VALIDATION_ERROR`` and which must pass validation.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from tests.support.api import (
    ID_RE,
    Api,
    User,
    assert_account,
    assert_error,
    assert_error_body,
    assert_market,
    assert_quote,
    assert_trade,
    bearer,
    dec,
    unique,
)

# No explain phase: on Python 3.11 it traces every line while it replays a failure, and against live replicas
# that replay outlasted the test's timeout once, which then hid the failure itself. Shrinking still runs.
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None,
                phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])
MAX_QUANTITY = Decimal(1_000_000_000)
_DECIMAL_STRING = re.compile(r"^[0-9]+(\.[0-9]{1,6})?$")
BUSINESS = {"INSUFFICIENT_FUNDS", "INSUFFICIENT_SHARES", "SLIPPAGE_EXCEEDED"}


# --------------------------------------------------------------------------- the contract's rules, as an oracle

def contract_number(value: Any) -> Decimal | None:
    """The value a request number stands for under the contract's rules, or None if it is not a valid number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value) if value >= 0 else None
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0:
            return None
        exact = Decimal(repr(value))  # the shortest decimal form
        if exact > MAX_QUANTITY:
            return exact  # out of range whatever its decimals
        return exact if exact == exact.quantize(Decimal("0.000001")) else None
    if isinstance(value, str) and _DECIMAL_STRING.fullmatch(value):
        try:
            return Decimal(value)
        except InvalidOperation:
            return None
    return None


def quantity_ok(value: Any, allow_zero: bool = False) -> bool:
    number = contract_number(value)
    return number is not None and (number > 0 or allow_zero) and number <= MAX_QUANTITY


Verdict = str  # "invalid" (must be VALIDATION_ERROR), "valid" (must pass validation) or "unknown"


def trade_verdict(body: Any) -> Verdict:
    if not isinstance(body, dict):
        return "invalid"
    if set(body) - {"side", "outcome", "shares", "amount", "max_cost", "min_proceeds"}:
        return "invalid"
    if body.get("side") not in ("BUY", "SELL") or body.get("outcome") not in ("YES", "NO"):
        return "invalid"
    if any(body.get(k) is None for k in ("shares", "amount", "max_cost", "min_proceeds") if k in body):
        return "unknown"  # an explicit null where a field is optional: the contract does not say
    if ("shares" in body) == ("amount" in body):
        return "invalid"
    if "amount" in body and body["side"] != "BUY":
        return "invalid"
    if "shares" in body and not quantity_ok(body["shares"]):
        return "invalid"
    if "amount" in body and not quantity_ok(body["amount"]):
        return "invalid"
    for limit in ("max_cost", "min_proceeds"):
        if limit in body and not quantity_ok(body[limit], allow_zero=True):
            return "invalid"
    if ("max_cost" in body and body["side"] != "BUY") or ("min_proceeds" in body and body["side"] != "SELL"):
        return "unknown"  # a limit that cannot apply to the side: the contract does not say
    return "valid"


def amount_verdict(body: Any) -> Verdict:
    if not isinstance(body, dict) or set(body) != {"amount"}:
        return "invalid"
    return "valid" if quantity_ok(body["amount"]) else "invalid"


def user_verdict(body: Any) -> Verdict:
    if not isinstance(body, dict) or "username" not in body or set(body) - {"username", "user_id"}:
        return "invalid"
    username, user_id = body["username"], body.get("user_id")
    if not isinstance(username, str) or not 1 <= len(username) <= 64:
        return "invalid"
    if "user_id" in body and user_id is not None and (not isinstance(user_id, str) or not ID_RE.fullmatch(user_id)):
        return "invalid"
    if not (username.isascii() and username.isprintable()):
        return "invalid" if any(ord(c) < 32 or ord(c) == 127 for c in username) else "unknown"
    return "unknown" if "user_id" in body and user_id is None else "valid"


def market_verdict(body: Any) -> Verdict:
    if not isinstance(body, dict) or {"name", "liquidity_b"} - set(body) or set(body) - {
            "name", "liquidity_b", "market_id"}:
        return "invalid"
    b = contract_number(body["liquidity_b"])
    if not isinstance(body["name"], str) or b is None or not 1 <= b <= MAX_QUANTITY:
        return "invalid"
    market_id = body.get("market_id")
    if "market_id" in body and market_id is not None and (
            not isinstance(market_id, str) or not ID_RE.fullmatch(market_id)):
        return "invalid"
    if not body["name"] or not body["name"].isprintable() or ("market_id" in body and market_id is None):
        return "unknown"  # the contract sets no rule for names
    return "valid"


def test_the_oracle_agrees_with_the_contract_examples() -> None:
    assert contract_number("12.500000") == Decimal("12.5")
    assert contract_number("1.1234567") is None and contract_number("1e3") is None and contract_number("NaN") is None
    assert contract_number(1e-7) is None and contract_number(0.1 + 0.2) is None and contract_number(True) is None
    assert contract_number(1e3) == 1000 and contract_number(-1) is None and contract_number("-1") is None
    assert not quantity_ok("1000000000.000001") and quantity_ok("1000000000") and not quantity_ok(0)
    assert trade_verdict({"side": "BUY", "outcome": "YES", "shares": "1"}) == "valid"
    assert trade_verdict({"side": "SELL", "outcome": "YES", "amount": "1"}) == "invalid"


# --------------------------------------------------------------------------- strategies

json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
nasty_strings = st.sampled_from([
    "", " ", "0", "0.0", "0.000000", "00", "1", "1.", ".5", "1.0000000", "1e3", "1E3", "-1", "+1", "NaN", "nan",
    "Infinity", "-Infinity", "inf", "0x10", "1_000", "1,5", "1 ", " 1", "1\n", "１", "١٢", "٣.٥", "²", "½", "Ⅻ",
    "1000000000", "1000000000.000001", "999999999.999999", "9" * 30, "0." + "0" * 5 + "1", "1" * 400,
    "\u0000", "\ufeff1", "1\u200b", "null", "true", "[]", "{}",
])
quantities = st.one_of(
    st.from_regex(r"\A[0-9]{1,3}(\.[0-9]{1,7})?\Z"),
    st.integers(min_value=-5, max_value=2_000_000_000),
    st.floats(min_value=-10, max_value=1e12, allow_nan=False) | st.sampled_from([1e-7, 1e300, 2.5, 0.1 + 0.2]),
    nasty_strings,
    json_values,
)
sides = st.sampled_from(["BUY", "SELL"]) | st.sampled_from(["buy", "Buy", "BUY ", "HOLD", ""]) | json_scalars
outcomes = st.sampled_from(["YES", "NO"]) | st.sampled_from(["yes", "MAYBE", "YES\u0000"]) | json_scalars
good_quantities = st.one_of(
    st.decimals(min_value=Decimal("0.000001"), max_value=Decimal(60), places=6).map(str),
    st.integers(min_value=1, max_value=60),
    st.decimals(min_value=Decimal("0.01"), max_value=Decimal(60), places=2).map(float),
    st.from_regex(r"\A[0-9]{1,2}(\.[0-9]{1,6})?\Z").filter(lambda v: Decimal(v) > 0),
)
limits = good_quantities | st.sampled_from(["0", 0, "0.0", "1000000000"])


def mutated(valid: st.SearchStrategy[dict[str, Any]], keys: list[str],
            values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid body with one field replaced by (or added as) a generated value."""
    return st.tuples(valid, st.sampled_from(keys), values).map(lambda t: {**t[0], t[1]: t[2]})


def without(valid: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid body with one of its fields dropped."""
    return st.tuples(valid, st.integers(min_value=0, max_value=9)).map(
        lambda t: {k: v for i, (k, v) in enumerate(t[0].items()) if i != t[1] % len(t[0])})


good_trades = st.one_of(
    st.fixed_dictionaries({"side": st.just("BUY"), "outcome": st.sampled_from(["YES", "NO"]),
                           "shares": good_quantities}, optional={"max_cost": limits}),
    st.fixed_dictionaries({"side": st.just("BUY"), "outcome": st.sampled_from(["YES", "NO"]),
                           "amount": good_quantities}, optional={"max_cost": limits}),
    st.fixed_dictionaries({"side": st.just("SELL"), "outcome": st.sampled_from(["YES", "NO"]),
                           "shares": good_quantities}, optional={"min_proceeds": limits}),
)
TRADE_KEYS = ["side", "outcome", "shares", "amount", "max_cost", "min_proceeds", "price", "Shares"]
trade_bodies = st.one_of(
    good_trades,
    mutated(good_trades, TRADE_KEYS, quantities | sides | outcomes),
    without(good_trades),
    st.fixed_dictionaries({"side": sides, "outcome": outcomes},
                          optional={"shares": quantities, "amount": quantities, "max_cost": quantities,
                                    "min_proceeds": quantities}),
    json_values,
)
texts = st.text(max_size=70) | st.sampled_from(["house", "a" * 64, "a" * 65, "tab\there", "nul\u0000", "é", "☃"])
good_ids = st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z")
ids = good_ids | st.sampled_from(["", "a b", "a" * 65, "é", "house", "x/y", "a\n"]) | json_scalars
good_users = st.fixed_dictionaries(
    {"username": st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=64)},
    optional={"user_id": good_ids})
user_bodies = st.one_of(
    good_users,
    mutated(good_users, ["username", "user_id", "admin"], texts | ids | json_scalars),
    without(good_users),
    json_values,
)
good_markets = st.fixed_dictionaries(
    {"name": st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=40),
     "liquidity_b": st.one_of(st.integers(min_value=1, max_value=500),
                              st.decimals(min_value=1, max_value=500, places=6).map(str))},
    optional={"market_id": good_ids})
market_bodies = st.one_of(
    good_markets,
    mutated(good_markets, ["name", "liquidity_b", "market_id", "b"], quantities | texts | ids),
    without(good_markets),
    json_values,
)
good_amounts = st.fixed_dictionaries({"amount": good_quantities})
amount_bodies = st.one_of(good_amounts, mutated(good_amounts, ["amount", "currency"], quantities), json_values)
query_values = st.one_of(st.none(), nasty_strings, st.text(max_size=10),
                         st.from_regex(r"\A[0-9]{1,4}(\.[0-9]{1,7})?\Z"),
                         st.sampled_from(["BUY", "SELL", "YES", "NO"]), good_quantities.map(str))
quote_params = st.one_of(
    st.fixed_dictionaries({"side": st.sampled_from(["BUY", "SELL"]), "outcome": st.sampled_from(["YES", "NO"]),
                           "shares": good_quantities.map(str)}),
    st.fixed_dictionaries({"side": st.just("BUY"), "outcome": st.sampled_from(["YES", "NO"]),
                           "amount": good_quantities.map(str)}),
    st.fixed_dictionaries({}, optional={"side": query_values, "outcome": query_values, "shares": query_values,
                                        "amount": query_values}),
).map(lambda d: {k: v for k, v in d.items() if v is not None})


# --------------------------------------------------------------------------- fixtures and checks

@dataclass
class Env:
    api: Api
    user: User
    market_id: str


@pytest.fixture(scope="module")
def env(api: Api) -> Env:
    api.deposit("house", "1000000000")
    user = api.create_user("100000")
    market_id = api.create_market(b="1000")
    api.buy(user, market_id, "YES", "50")
    return Env(api, user, market_id)


def snapshot(env: Env) -> tuple[Any, ...]:
    return env.api.me(env.user), env.api.market(env.market_id), env.api.stack.last_event_id()


def post_json(env: Env, path: str, body: Any, token: str) -> httpx.Response:
    content = json.dumps(body).encode()
    return env.api.clients[0].post(path, content=content,
                                   headers={**bearer(token), "Content-Type": "application/json"})


def check(response: httpx.Response, verdict: Verdict, success: int, allowed: set[str]) -> str | None:
    """Never a 5xx; an error has the contract's body; the oracle's verdict holds. Returns the error code."""
    assert response.status_code < 500, (response.status_code, response.text)
    event(f"{verdict}: {response.status_code}")
    if response.status_code < 300:
        assert response.status_code == success, response.text
        assert verdict != "invalid", f"accepted an invalid request: {response.text}"
        return None
    code = assert_error_body(response)
    assert code in allowed | {"VALIDATION_ERROR"}, (code, response.text)
    if verdict == "invalid":
        assert code == "VALIDATION_ERROR", response.text
    elif verdict == "valid":
        assert code != "VALIDATION_ERROR", f"rejected a valid request: {response.text}"
    return str(code)


# --------------------------------------------------------------------------- property-based runs

@FUZZ
@given(body=trade_bodies)
def test_fuzz_trades(env: Env, body: Any) -> None:
    before = snapshot(env)
    r = post_json(env, f"/v1/markets/{env.market_id}/trades", body, env.user.api_key)
    verdict = trade_verdict(body)
    if r.status_code == 201:
        check(r, verdict, 201, BUSINESS)
        trade = r.json()
        assert_trade(trade)
        if isinstance(body, dict) and verdict == "valid" and "shares" in body:
            assert dec(trade["shares"]) == contract_number(body["shares"])
        if dec(env.api.me(env.user)["available"]) < 10_000:
            env.api.deposit(env.user.user_id, "100000")
    else:
        check(r, verdict, 201, BUSINESS)
        # A large but well-formed order may pass the 9e9 bound on totals: VALIDATION_ERROR too.
        assert snapshot(env) == before


@FUZZ
@given(body=amount_bodies, withdraw=st.booleans())
def test_fuzz_deposits_and_withdrawals(env: Env, body: Any, withdraw: bool) -> None:
    user = env.user
    before = snapshot(env)
    path = f"/v1/users/{user.user_id}/{'withdrawals' if withdraw else 'deposits'}"
    r = post_json(env, path, body, env.api.admin_token)
    check(r, amount_verdict(body), 201, {"INSUFFICIENT_FUNDS"} if withdraw else set())
    if r.status_code == 201:
        assert_account(r.json(), user.user_id)
        change = contract_number(body["amount"])
        assert change is not None
        expected = dec(before[0]["available"]) + (-change if withdraw else change)
        assert dec(r.json()["available"]) == expected
        if expected < 10_000:
            env.api.deposit(user.user_id, "100000")
    else:
        assert snapshot(env) == before


@FUZZ
@given(body=user_bodies)
def test_fuzz_user_creation(env: Env, body: Any) -> None:
    before = env.api.stack.last_event_id()
    r = post_json(env, "/v1/users", body, env.api.admin_token)
    check(r, user_verdict(body), 201, {"ALREADY_EXISTS"})
    if r.status_code == 201:
        created = r.json()
        assert isinstance(created.pop("api_key"), str)
        assert_account(created)
        assert created["username"] == body["username"]
        assert env.api.account(created["user_id"]) == created
    else:
        assert env.api.stack.last_event_id() == before


@FUZZ
@given(body=market_bodies)
def test_fuzz_market_creation(env: Env, body: Any) -> None:
    before = env.api.stack.last_event_id(), env.api.account("house")
    r = post_json(env, "/v1/markets", body, env.api.admin_token)
    check(r, market_verdict(body), 201, {"ALREADY_EXISTS", "INSUFFICIENT_FUNDS"})
    if r.status_code == 201:
        assert_market(r.json())
        assert r.json()["status"] == "CREATED" and r.json()["name"] == body["name"]
        assert dec(r.json()["liquidity_b"]) == contract_number(body["liquidity_b"])
    else:
        assert (env.api.stack.last_event_id(), env.api.account("house")) == before


@FUZZ
@given(params=quote_params)
def test_fuzz_quotes(env: Env, params: dict[str, str]) -> None:
    before = snapshot(env)
    r = env.api.request("GET", f"/v1/markets/{env.market_id}/quote", params=params)
    check(r, trade_verdict(dict(params)), 200, {"INSUFFICIENT_SHARES"})
    if r.status_code == 200:
        assert_quote(r.json())
        if "shares" in params:
            assert dec(r.json()["shares"]) == contract_number(params["shares"])
    assert snapshot(env) == before


# --------------------------------------------------------------------------- hand-written nasty inputs

def _chunks(data: bytes, size: int = 8192) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


TRADE = '{"side": "BUY", "outcome": "YES", "shares": %s}'
NASTY: list[tuple[str, bytes, str, int]] = [
    # (case, raw body, content type, expected status)
    ("1e400", (TRADE % "1e400").encode(), "application/json", 422),
    ("-1e400", (TRADE % "-1e400").encode(), "application/json", 422),
    ("10**30", (TRADE % ("1" + "0" * 30)).encode(), "application/json", 422),
    ("2**64", (TRADE % str(2**64)).encode(), "application/json", 422),
    ("5000 digits", (TRADE % ("9" * 5000)).encode(), "application/json", 422),
    ("5000 digit string", (TRADE % ('"' + "9" * 5000 + '"')).encode(), "application/json", 422),
    ("NaN literal", (TRADE % "NaN").encode(), "application/json", 422),
    ("-Infinity literal", (TRADE % "-Infinity").encode(), "application/json", 422),
    ("hex number", (TRADE % "0x10").encode(), "application/json", 422),
    ("leading zeros number", (TRADE % "007").encode(), "application/json", 422),
    ("-0", (TRADE % "-0").encode(), "application/json", 422),
    ("-0.0", (TRADE % "-0.0").encode(), "application/json", 422),
    ("unicode digits", (TRADE % '"\\u0661\\u0662"').encode(), "application/json", 422),
    ("superscript", (TRADE % '"\u00b2"').encode(), "application/json", 422),
    ("nested object", (TRADE % '{"$gt": 0}').encode(), "application/json", 422),
    ("array", (TRADE % "[1, 2]").encode(), "application/json", 422),
    ("null", (TRADE % "null").encode(), "application/json", 422),
    ("empty body", b"", "application/json", 422),
    ("whitespace body", b"   \n", "application/json", 422),
    ("json null", b"null", "application/json", 422),
    ("json number", b"1", "application/json", 422),
    ("trailing garbage", (TRADE % "1").encode() + b" x", "application/json", 422),
    ("two objects", (TRADE % "1").encode() * 2, "application/json", 422),
    ("invalid UTF-8", b'{"side": "BUY\xff", "outcome": "YES", "shares": 1}', "application/json", 422),
    ("latin-1 body", '{"side": "BUY", "outcome": "YES", "shares": 1, "é": 1}'.encode("latin-1"),
     "application/json", 422),
    ("UTF-16 body", (TRADE % "1").encode("utf-16"), "application/json", 422),
    ("BOM", b"\xef\xbb\xbf" + (TRADE % "1").encode(), "application/json", 422),
    ("lone surrogate", (TRADE % '"\\ud800"').encode(), "application/json", 422),
    ("NUL in string", b'{"side": "BUY\\u0000", "outcome": "YES", "shares": 1}', "application/json", 422),
    ("deep nesting", (TRADE % ("[" * 5000 + "]" * 5000)).encode(), "application/json", 422),
    ("single quotes", b"{'side': 'BUY', 'outcome': 'YES', 'shares': 1}", "application/json", 422),
    ("comment", b'{"side": "BUY", /* x */ "outcome": "YES", "shares": 1}', "application/json", 422),
    ("trailing comma", b'{"side": "BUY", "outcome": "YES", "shares": 1,}', "application/json", 422),
    ("text/json", (TRADE % "1").encode(), "text/json", 422),
    ("multipart", (TRADE % "1").encode(), "multipart/form-data; boundary=x", 422),
    ("json-patch", (TRADE % "1").encode(), "application/json-patch+json", 422),
]


@pytest.mark.parametrize(("case", "content", "content_type", "status"), NASTY, ids=[n[0] for n in NASTY])
def test_nasty_trade_bodies(env: Env, case: str, content: bytes, content_type: str, status: int) -> None:
    before = snapshot(env)
    r = env.api.clients[0].post(f"/v1/markets/{env.market_id}/trades", content=content,
                                headers={**bearer(env.user.api_key), "Content-Type": content_type})
    assert_error(r, status, "VALIDATION_ERROR")
    assert snapshot(env) == before


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("route", ["trades", "users", "deposits"])
def test_100_kb_body_is_413(env: Env, route: str, chunked: bool) -> None:
    path, token, body = {
        "trades": (f"/v1/markets/{env.market_id}/trades", env.user.api_key,
                   {"side": "BUY", "outcome": "YES", "shares": "1", "pad": "x" * 100_000}),
        "users": ("/v1/users", env.api.admin_token, {"username": "y" * 100_000}),
        "deposits": (f"/v1/users/{env.user.user_id}/deposits", env.api.admin_token,
                     {"amount": "1", "pad": " " * 100_000}),
    }[route]
    content = json.dumps(body).encode()
    assert len(content) > 100_000
    before = snapshot(env)
    headers = {**bearer(token), "Content-Type": "application/json"}
    r = env.api.clients[0].post(path, content=_chunks(content) if chunked else content, headers=headers)
    assert_error(r, 413, "VALIDATION_ERROR")
    assert snapshot(env) == before
    # The connection (or a new one) still serves the next request.
    assert env.api.me(env.user) == before[0]


USER_CASES: list[tuple[Any, int, str]] = [
    ({"username": ""}, 422, "VALIDATION_ERROR"),
    ({"username": "a" * 65}, 422, "VALIDATION_ERROR"),
    ({"username": "line\nbreak"}, 422, "VALIDATION_ERROR"),
    ({"username": "nul\u0000"}, 422, "VALIDATION_ERROR"),
    ({"username": "bell\u0007"}, 422, "VALIDATION_ERROR"),
    ({"username": 42}, 422, "VALIDATION_ERROR"),
    ({"username": ["a"]}, 422, "VALIDATION_ERROR"),
    ({"username": None}, 422, "VALIDATION_ERROR"),
    ({"username": "ok", "user_id": "bad id"}, 422, "VALIDATION_ERROR"),
    ({"username": "ok", "user_id": "é"}, 422, "VALIDATION_ERROR"),
    ({"username": "ok", "user_id": "a" * 65}, 422, "VALIDATION_ERROR"),
    ({"username": "ok", "user_id": ""}, 422, "VALIDATION_ERROR"),
    ({"username": "ok", "user_id": "a\n"}, 422, "VALIDATION_ERROR"),
    ({"username": "ok", "user_id": 7}, 422, "VALIDATION_ERROR"),
    ({"username": "ok", "role": "admin"}, 422, "VALIDATION_ERROR"),
    ({"user_id": "only-id"}, 422, "VALIDATION_ERROR"),
    ({"username": "ok", "user_id": "house"}, 409, "ALREADY_EXISTS"),
]


@pytest.mark.parametrize(("body", "status", "code"), USER_CASES, ids=[str(i) for i in range(len(USER_CASES))])
def test_nasty_user_bodies(env: Env, body: Any, status: int, code: str) -> None:
    if body.get("username") == "ok":
        body = {**body, "username": unique("ok")}
    before = env.api.stack.last_event_id()
    assert_error(post_json(env, "/v1/users", body, env.api.admin_token), status, code)
    assert env.api.stack.last_event_id() == before


def test_unusual_but_valid_user_names(env: Env) -> None:
    for username in ("a" * 60 + unique("")[-4:], "Zoë ☃ " + unique("u"), "sp ace" + unique("")):
        r = post_json(env, "/v1/users", {"username": username}, env.api.admin_token)
        assert r.status_code == 201, r.text
        assert r.json()["username"] == username


MARKET_CASES: list[tuple[Any, str]] = [
    ({"name": "m", "liquidity_b": "0.999999"}, "VALIDATION_ERROR"),
    ({"name": "m", "liquidity_b": "1000000000.000001"}, "VALIDATION_ERROR"),
    ({"name": "m", "liquidity_b": 0}, "VALIDATION_ERROR"),
    ({"name": "m", "liquidity_b": -5}, "VALIDATION_ERROR"),
    ({"name": "m", "liquidity_b": "1e2"}, "VALIDATION_ERROR"),
    ({"name": "m", "liquidity_b": True}, "VALIDATION_ERROR"),
    ({"name": 5, "liquidity_b": "10"}, "VALIDATION_ERROR"),
    ({"liquidity_b": "10"}, "VALIDATION_ERROR"),
    ({"name": "m"}, "VALIDATION_ERROR"),
    ({"name": "m", "liquidity_b": "10", "market_id": "no spaces"}, "VALIDATION_ERROR"),
    ({"name": "m", "liquidity_b": "10", "market_id": "x" * 65}, "VALIDATION_ERROR"),
    ({"name": "m", "liquidity_b": "10", "status": "OPEN"}, "VALIDATION_ERROR"),
]


@pytest.mark.parametrize(("body", "code"), MARKET_CASES, ids=[str(i) for i in range(len(MARKET_CASES))])
def test_nasty_market_bodies(env: Env, body: Any, code: str) -> None:
    before = env.api.stack.last_event_id(), env.api.account("house")
    assert_error(post_json(env, "/v1/markets", body, env.api.admin_token), 422, code)
    assert (env.api.stack.last_event_id(), env.api.account("house")) == before


@pytest.mark.parametrize("body", [{"outcome": "yes"}, {"outcome": "MAYBE"}, {"outcome": None}, {}, {"outcome": 1},
                                  {"outcome": "YES", "extra": 1}, ["YES"], "YES"])
def test_nasty_resolve_bodies(env: Env, body: Any) -> None:
    market_id = env.api.create_market(b="1")
    before = env.api.market(market_id)
    assert_error(post_json(env, f"/v1/markets/{market_id}/resolve", body, env.api.admin_token), 422,
                 "VALIDATION_ERROR")
    assert env.api.market(market_id) == before


@pytest.mark.parametrize(("path", "status"), [
    ("/v1/markets/%00/trades", 404),
    ("/v1/markets/..%2F..%2Fetc/trades", 404),
    ("/v1/markets/{m}/trades?limit=99999999999999999999999", 422),
    ("/v1/markets/{m}/trades?limit=%00", 422),
    ("/v1/markets/{m}/quote?side=BUY&outcome=YES&shares=" + "9" * 40, 422),
    ("/v1/markets/{m}/quote?side=BUY&outcome=YES&shares=1&shares=2", 200),
    # A repeated parameter: the last one counts. (SELL last made this depend on the YES
    # shares other tests left outstanding: a SELL quote of more is INSUFFICIENT_SHARES.)
    ("/v1/markets/{m}/quote?side=SELL&side=BUY&outcome=YES&shares=1", 200),
    ("/v1/markets?status=OPEN&status=BOGUS", 422),
    ("/v1/users/%F0%9F%92%A9", 404),
])
def test_nasty_paths_and_queries(env: Env, path: str, status: int) -> None:
    before = snapshot(env)
    r = env.api.admin("GET", path.replace("{m}", env.market_id))
    if status == 200:
        assert r.status_code == 200, r.text
        if "side=SELL&side=BUY" in path:
            assert r.json()["side"] == "BUY"
    else:
        assert_error_body(r)
        assert r.status_code == status, r.text
    assert snapshot(env) == before


def test_wrong_methods_are_contract_errors(env: Env) -> None:
    for method, path in (("DELETE", f"/v1/markets/{env.market_id}"), ("PUT", "/v1/users"),
                         ("PATCH", f"/v1/markets/{env.market_id}/trades"), ("POST", "/v1/me")):
        r = env.api.admin(method, path)
        assert r.status_code == 405, r.text
        body = r.json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
        assert body["error"]["code"] == "METHOD_NOT_ALLOWED", body  # as the README documents


def test_long_or_odd_idempotency_keys_never_5xx(env: Env) -> None:
    for key in (b"k" * 256, b"k" * 255, b"with space", b"tab\tkey", "ключ".encode(), b"\xff\xfe"):
        before = snapshot(env)
        r = env.api.clients[0].post(f"/v1/markets/{env.market_id}/trades",
                                    json={"side": "BUY", "outcome": "NO", "shares": "0.000001"},
                                    headers=[(b"Authorization", f"Bearer {env.user.api_key}".encode()),
                                             (b"Idempotency-Key", key)])
        assert r.status_code in (201, 422), r.text
        if r.status_code == 422:
            assert_error(r, 422, "VALIDATION_ERROR")
            assert snapshot(env) == before
