"""Accounts through their Lua scripts: create_user, deposit, withdraw, and the house account.

Every rejection is checked to leave the deployment's keys exactly as they were
(``snapshot`` before and after), and every scenario ends with the contract's
invariants holding.
"""

from __future__ import annotations

import re

import pytest
from predmarket.engine.errors import AlreadyExists, InsufficientFunds, NotFound, ValidationError
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import HOUSE
from predmarket.engine.state import check_invariants, read_redis_state
from predmarket.engine.units import MAX_QUANTITY, MAX_TOTAL, MICRO, UnitError, format_micro, parse_micro

from tests.support.factories import UserFactory
from tests.support.redis_data import snapshot, stream_entries

ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MONEY_RE = re.compile(r"^[0-9]+\.[0-9]{6}$")


async def events(engine: MarketEngine, kind: str | None = None) -> list[dict[str, str]]:
    entries = await stream_entries(engine.redis, engine.keys.events)
    return [fields for _, fields in entries if kind is None or fields["type"] == kind]


async def assert_invariants(engine: MarketEngine) -> None:
    assert check_invariants(await read_redis_state(engine.redis, engine.keys)) == []


# --------------------------------------------------------------------------- house


async def test_house_exists_after_start(engine: MarketEngine) -> None:
    house = await engine.accounts.get(HOUSE)
    assert (house.user_id, house.username, house.available, house.locked) == (HOUSE, HOUSE, 0, 0)
    assert house.positions == []
    created = await events(engine, "UserCreated")
    assert [(e["user_id"], e["username"]) for e in created] == [(HOUSE, HOUSE)]
    await assert_invariants(engine)


async def test_start_again_changes_nothing(engine: MarketEngine) -> None:
    await engine.accounts.deposit(HOUSE, 5 * MICRO)
    before = await snapshot(engine.redis, engine.keys.prefix)
    await engine.start()
    assert await snapshot(engine.redis, engine.keys.prefix) == before


async def test_house_username_is_taken(engine: MarketEngine) -> None:
    before = await snapshot(engine.redis, engine.keys.prefix)
    with pytest.raises(AlreadyExists):
        await engine.accounts.create(HOUSE)
    assert await snapshot(engine.redis, engine.keys.prefix) == before


# --------------------------------------------------------------------------- create_user


async def test_create_user_with_id(engine: MarketEngine) -> None:
    account = await engine.accounts.create("Alice Smith", "alice_1", key_hash="ab" * 32)
    assert (account.user_id, account.username, account.available, account.locked) == (
        "alice_1", "Alice Smith", 0, 0,
    )
    stored = await engine.accounts.get("alice_1")
    assert stored == account
    fields = await engine.redis.hgetall(engine.keys.user("alice_1"))
    assert fields["username"] == "Alice Smith"
    assert fields["available"] == fields["locked"] == "0"
    assert fields["key_hash"] == "ab" * 32
    assert await engine.redis.hget(engine.keys.usernames, "Alice Smith") == "alice_1"
    assert await engine.accounts.user_for_key("ab" * 32) == "alice_1"

    [event] = [e for e in await events(engine, "UserCreated") if e["user_id"] == "alice_1"]
    assert event == {"type": "UserCreated", "ts": event["ts"], "user_id": "alice_1", "username": "Alice Smith"}
    assert event["ts"].isdigit() and int(event["ts"]) == account.created_ms
    await assert_invariants(engine)


async def test_create_user_without_key_hash_registers_no_key(engine: MarketEngine) -> None:
    await engine.accounts.create("bob", "bob")
    assert await engine.redis.hgetall(engine.keys.apikeys) == {}
    assert await engine.accounts.user_for_key("") is None


async def test_generated_user_ids_match_the_contract(engine: MarketEngine) -> None:
    accounts = [await engine.accounts.create(f"user {i}") for i in range(20)]
    ids = [a.user_id for a in accounts]
    assert all(ID_RE.match(user_id) for user_id in ids)
    assert len(set(ids)) == len(ids)
    for account in accounts:
        assert (await engine.accounts.get(account.user_id)).username == account.username


async def test_boundary_ids_and_usernames_are_accepted(engine: MarketEngine) -> None:
    longest = "A-z_9" * 12 + "abcd"
    assert len(longest) == 64
    await engine.accounts.create("u" * 64, longest)
    await engine.accounts.create("x", "x")
    await engine.accounts.create("ünïcødé name ✓", "unicode")
    assert (await engine.accounts.get(longest)).username == "u" * 64
    assert (await engine.accounts.get("unicode")).username == "ünïcødé name ✓"


async def test_taken_user_id_is_rejected_and_changes_nothing(engine: MarketEngine) -> None:
    await engine.accounts.create("carol", "carol")
    before = await snapshot(engine.redis, engine.keys.prefix)
    with pytest.raises(AlreadyExists):
        await engine.accounts.create("another name", "carol", key_hash="cd" * 32)
    assert await snapshot(engine.redis, engine.keys.prefix) == before


async def test_taken_username_is_rejected_and_changes_nothing(engine: MarketEngine) -> None:
    await engine.accounts.create("dave", "dave_1")
    before = await snapshot(engine.redis, engine.keys.prefix)
    with pytest.raises(AlreadyExists):
        await engine.accounts.create("dave", "dave_2", key_hash="ef" * 32)
    with pytest.raises(AlreadyExists):
        await engine.accounts.create("dave")
    assert await snapshot(engine.redis, engine.keys.prefix) == before
    with pytest.raises(NotFound):
        await engine.accounts.get("dave_2")


@pytest.mark.parametrize(
    "user_id",
    ["", "a" * 65, "has space", "colon:id", "slash/id", "dot.id", "ünï", "star*", "trailing\n", "\nleading", "tab\t"],
)
async def test_invalid_user_id_is_rejected(engine: MarketEngine, user_id: str) -> None:
    before = await snapshot(engine.redis, engine.keys.prefix)
    with pytest.raises(ValidationError):
        await engine.accounts.create("valid name", user_id)
    assert await snapshot(engine.redis, engine.keys.prefix) == before


@pytest.mark.parametrize("username", ["", "n" * 65, "new\nline", "tab\tname", "nul\x00", "bell\x07", "del\x7f"])
async def test_invalid_username_is_rejected(engine: MarketEngine, username: str) -> None:
    before = await snapshot(engine.redis, engine.keys.prefix)
    with pytest.raises(ValidationError):
        await engine.accounts.create(username, "valid_id")
    assert await snapshot(engine.redis, engine.keys.prefix) == before


async def test_get_unknown_user(engine: MarketEngine) -> None:
    with pytest.raises(NotFound):
        await engine.accounts.get("nobody")


# --------------------------------------------------------------------------- deposit / withdraw


async def test_deposit(engine: MarketEngine, make_user: UserFactory) -> None:
    user = await make_user(0)
    account = await engine.accounts.deposit(user.user_id, 12_500_000)
    assert account.available == 12_500_000
    account = await engine.accounts.deposit(user.user_id, 1)
    assert account.available == 12_500_001
    assert (await engine.accounts.get(user.user_id)).available == 12_500_001

    deposits = [e for e in await events(engine, "Deposit") if e["user_id"] == user.user_id]
    assert [(e["amount"], e["available"]) for e in deposits] == [
        ("12.500000", "12.500000"), ("0.000001", "12.500001"),
    ]
    assert set(deposits[0]) == {"type", "ts", "user_id", "amount", "available"}
    assert all(e["ts"].isdigit() for e in deposits)
    assert await engine.redis.hgetall(engine.keys.totals) == {"deposits": "12500001"}
    await assert_invariants(engine)


async def test_withdraw(engine: MarketEngine, make_user: UserFactory) -> None:
    user = await make_user(10)
    account = await engine.accounts.withdraw(user.user_id, 2_750_000)
    assert account.available == 7_250_000
    account = await engine.accounts.withdraw(user.user_id, 7_250_000)  # everything that is left
    assert account.available == 0

    withdrawals = await events(engine, "Withdrawal")
    assert [(e["user_id"], e["amount"], e["available"]) for e in withdrawals] == [
        (user.user_id, "2.750000", "7.250000"), (user.user_id, "7.250000", "0.000000"),
    ]
    assert set(withdrawals[0]) == {"type", "ts", "user_id", "amount", "available"}
    totals = await engine.redis.hgetall(engine.keys.totals)
    assert totals == {"deposits": str(10 * MICRO), "withdrawals": str(10 * MICRO)}
    await assert_invariants(engine)


async def test_house_takes_deposits_and_withdrawals(engine: MarketEngine) -> None:
    await engine.accounts.deposit(HOUSE, 100 * MICRO)
    account = await engine.accounts.withdraw(HOUSE, 40 * MICRO)
    assert account.available == 60 * MICRO
    await assert_invariants(engine)


@pytest.mark.parametrize("operation", ["deposit", "withdraw"])
async def test_unknown_user_is_not_found(engine: MarketEngine, operation: str) -> None:
    before = await snapshot(engine.redis, engine.keys.prefix)
    with pytest.raises(NotFound):
        await getattr(engine.accounts, operation)("nobody", MICRO)
    assert await snapshot(engine.redis, engine.keys.prefix) == before


async def test_withdraw_more_than_available(engine: MarketEngine, make_user: UserFactory) -> None:
    user = await make_user(5)
    before = await snapshot(engine.redis, engine.keys.prefix)
    with pytest.raises(InsufficientFunds):
        await engine.accounts.withdraw(user.user_id, 5 * MICRO + 1)
    assert await snapshot(engine.redis, engine.keys.prefix) == before
    empty = await make_user(0)
    before = await snapshot(engine.redis, engine.keys.prefix)
    with pytest.raises(InsufficientFunds):
        await engine.accounts.withdraw(empty.user_id, 1)
    assert await snapshot(engine.redis, engine.keys.prefix) == before


@pytest.mark.parametrize("operation", ["deposit", "withdraw"])
@pytest.mark.parametrize("amount", [0, -1, -MICRO, MAX_QUANTITY + 1, 10 * MAX_QUANTITY])
async def test_amount_out_of_range(engine: MarketEngine, make_user: UserFactory, operation: str, amount: int) -> None:
    user = await make_user(100)
    before = await snapshot(engine.redis, engine.keys.prefix)
    with pytest.raises(ValidationError):
        await getattr(engine.accounts, operation)(user.user_id, amount)
    assert await snapshot(engine.redis, engine.keys.prefix) == before


async def test_largest_single_amount(engine: MarketEngine, make_user: UserFactory) -> None:
    user = await make_user(0)
    assert (await engine.accounts.deposit(user.user_id, MAX_QUANTITY)).available == MAX_QUANTITY
    assert (await engine.accounts.withdraw(user.user_id, MAX_QUANTITY)).available == 0
    await assert_invariants(engine)


async def test_balance_may_reach_but_not_pass_the_total_bound(engine: MarketEngine, make_user: UserFactory) -> None:
    user = await make_user(0)
    for _ in range(MAX_TOTAL // MAX_QUANTITY):
        account = await engine.accounts.deposit(user.user_id, MAX_QUANTITY)
    assert account.available == MAX_TOTAL == 9_000_000_000 * MICRO
    assert (await events(engine, "Deposit"))[-1]["available"] == "9000000000.000000"

    before = await snapshot(engine.redis, engine.keys.prefix)
    for amount in (1, MAX_QUANTITY):
        with pytest.raises(ValidationError):
            await engine.accounts.deposit(user.user_id, amount)
    assert await snapshot(engine.redis, engine.keys.prefix) == before

    # Just below the bound, a deposit that would cross it is refused as well.
    await engine.accounts.withdraw(user.user_id, 1)
    before = await snapshot(engine.redis, engine.keys.prefix)
    with pytest.raises(ValidationError):
        await engine.accounts.deposit(user.user_id, 2)
    assert await snapshot(engine.redis, engine.keys.prefix) == before
    assert (await engine.accounts.deposit(user.user_id, 1)).available == MAX_TOTAL
    await assert_invariants(engine)


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (500_000_000 * MICRO, "500000000.000000"),
        (100_000_000 * MICRO, "100000000.000000"),  # exactly 1e14 micro-units
        (123_456_789_654_321, "123456789.654321"),
        (MAX_QUANTITY - 1, "999999999.999999"),
    ],
)
async def test_large_amounts_are_formatted_without_exponent(
    engine: MarketEngine, make_user: UserFactory, amount: int, text: str
) -> None:
    user = await make_user(0)
    await engine.accounts.deposit(user.user_id, amount)
    await engine.accounts.deposit(user.user_id, amount)
    await engine.accounts.withdraw(user.user_id, amount)
    twice = format_micro(2 * amount)
    flows = [(e["type"], e["amount"], e["available"]) for e in await events(engine) if e["type"] != "UserCreated"]
    assert flows == [("Deposit", text, text), ("Deposit", text, twice), ("Withdrawal", text, text)]
    for _, amount_text, available_text in flows:
        assert MONEY_RE.match(amount_text) and MONEY_RE.match(available_text)
    assert await engine.redis.hget(engine.keys.user(user.user_id), "available") == str(amount)
    await assert_invariants(engine)


# Amounts of deposit and withdrawal requests reach the engine through parse_micro.
@pytest.mark.parametrize("text", ["12\n", "12.5\n", "1 ", " 1", "+1", "-1", "1e3", "1.0000001", "", "."])
def test_request_amount_strings_are_strict(text: str) -> None:
    with pytest.raises(UnitError):
        parse_micro(text)


@pytest.mark.parametrize(("text", "micro"), [("12", 12 * MICRO), ("12.5", 12_500_000), ("0.000001", 1)])
def test_request_amount_strings(text: str, micro: int) -> None:
    assert parse_micro(text) == micro
