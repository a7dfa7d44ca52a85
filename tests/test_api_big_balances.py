"""Over real HTTP: a payout takes a balance past 9,000,000,000 and 2^53 micro-units, a sale credits more on
top, and every answer is exact to the micro-unit (issue 11, item 2; the engine-level paths are in
tests/test_big_balances.py)."""

from __future__ import annotations

from decimal import Decimal

from tests.support.api import Api, User, assert_error, dec, fmt

BOUND = Decimal(9_000_000_000)
TWO_53 = Decimal(2**53) / 10**6


def top_up(api: Api, user: User, target: Decimal) -> None:
    """Deposit until ``available`` is exactly ``target`` (each deposit at most 1,000,000,000)."""
    available = dec(api.me(user)["available"])
    while available < target:
        available = dec(api.deposit(user.user_id, fmt(min(Decimal(10**9), target - available)))["available"])
    assert available == target


def test_payout_and_sale_past_the_bound_are_credited_exactly(api: Api) -> None:
    paid, still_open = api.create_market(b="1000"), api.create_market(b="1000")
    loser, holder = api.create_user("1000000000"), api.create_user("1000000000")
    # The loser's NO first, so the holder's YES after it costs next to nothing.
    api.buy(loser, paid, "NO", "20000000")
    api.buy(holder, paid, "YES", "10000000")
    api.buy(holder, still_open, "YES", "1000")
    top_up(api, holder, BOUND)

    api.resolve(paid, "YES")
    r = api.admin("POST", f"/v1/markets/{paid}/settle")
    assert r.status_code == 200, r.text
    assert api.me(holder)["available"] == "9010000000.000000"

    # Sale proceeds are owed money: credited past the bound, never refused.
    r = api.trade(holder, still_open, "SELL", "YES", shares="3.000001")
    assert r.status_code == 201, r.text
    after = Decimal("9010000000.000000") + dec(r.json()["cost"])
    assert after > TWO_53
    assert api.me(holder)["available"] == fmt(after)

    # A deposit still may not add to a balance past the bound.
    r = api.admin("POST", f"/v1/users/{holder.user_id}/deposits", json={"amount": "0.000001"})
    assert_error(r, 422, "VALIDATION_ERROR")
    assert api.me(holder)["available"] == fmt(after)
