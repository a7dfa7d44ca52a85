"""engine.pricing_n (2–16 outcomes) against an independent 50-digit reference (tests/reference_n.py).

The contract: buy cost = exact cost rounded up, sell proceeds = exact proceeds
rounded down, each price rounded half-even, subsidy = ceil(b ln n), buying by
amount = the largest affordable number of micro-shares. Where the reference is
certain of the rounding the engine must agree exactly, elsewhere within one
micro-unit. For two outcomes the public functions are the binary ones, and the
general path must give exactly the same integers (compared over the binary
tests' edge table and under hypothesis).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from predmarket.engine import pricing, pricing_n
from predmarket.engine.units import MAX_LIQUIDITY, MAX_QUANTITY, MAX_TOTAL, MICRO, MIN_LIQUIDITY

from tests.support import reference as ref2
from tests.support import reference_n as ref
from tests.support.pricing_cases import (
    BOUNDARY_BUYS,
    BOUNDARY_SELLS,
    EDGE_STATES,
    amount_orders,
    bounded,
    buys,
    edge_buys,
    edge_sells,
    liquidities,
    log_int,
    sells,
    states,
    trade_size,
)
from tests.support.reference import CTX, WIDE, Exact

Market = tuple[list[int], int]  # (q, b)
TradeN = tuple[list[int], int, int, int]  # (q, k, shares or amount, b)
U = MICRO


# --------------------------------------------------------------------------- helpers


#: Bounds that no float value fits within one rounding step: absolute ones of at least b >= 1e6, a relative
#: one of the whole value, a price one of 1e6.
FORCED = (1.0, 1.0, float(MICRO))


@contextmanager
def decimal_only() -> Iterator[None]:
    """Make every float evaluation undecided, so each cost and price goes through the decimal path."""
    saved = pricing_n._REL, pricing_n._REL_SMALL, pricing_n._PRICE_BOUND
    pricing_n._REL, pricing_n._REL_SMALL, pricing_n._PRICE_BOUND = FORCED
    try:
        yield
    finally:
        pricing_n._REL, pricing_n._REL_SMALL, pricing_n._PRICE_BOUND = saved


def assert_ceil(engine: int, exact: Exact, what: str) -> None:
    """Exactly the rounded-up cost where the reference is sure of it; never below the cost; within 1 micro-unit."""
    if exact.decided():
        assert engine == exact.ceil(), f"{what}: engine {engine} != ceil({exact.value()})"
    else:
        assert abs(Decimal(engine) - exact.value()) <= 1, f"{what}: engine {engine} vs exact {exact.value()}"
        assert engine >= WIDE.subtract(exact.value(), exact.err), f"{what}: {engine} rounds against the pool"


def assert_floor(engine: int, exact: Exact, what: str) -> None:
    """Exactly the rounded-down proceeds where the reference is sure of them; never above them; within 1."""
    if exact.decided():
        assert engine == exact.floor(), f"{what}: engine {engine} != floor({exact.value()})"
    else:
        assert abs(Decimal(engine) - exact.value()) <= 1, f"{what}: engine {engine} vs exact {exact.value()}"
        assert engine <= WIDE.add(exact.value(), exact.err), f"{what}: {engine} rounds against the pool"


def count_decimal_paths(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Count the calls that reach the decimal path (exact-integer recognition included)."""
    count = [0]
    original = pricing_n._integer_delta

    def spy(n1: int, n2: int, gaps: Any) -> int | None:
        count[0] += 1
        return original(n1, n2, gaps)

    monkeypatch.setattr(pricing_n, "_integer_delta", spy)
    return lambda: count[0]


# --------------------------------------------------------------------------- strategies

outcome_counts = st.one_of(st.sampled_from([2, 3, 4, 16]), st.integers(2, 16))
EXTREME_RATIOS = [50, 60, 61, 100, 140, 300, 700, 746, 800, 10_000]


@st.composite
def offsets(draw: st.DrawFn, b: int) -> int:
    """A height above the lowest outcome: zero, a few b, an extreme multiple of b, any size, or the limit."""
    kind = draw(st.sampled_from(["zero", "ratio", "extreme", "absolute", "limit"]))
    if kind == "zero":
        d = 0
    elif kind == "ratio":
        d = round(draw(st.floats(0.0, 70.0)) * b)
    elif kind == "extreme":
        d = draw(st.sampled_from(EXTREME_RATIOS)) * b + draw(st.integers(-1000, 1000))
    elif kind == "absolute":
        d = draw(log_int(1, MAX_TOTAL))
    else:
        d = MAX_TOTAL - draw(st.integers(0, 1000))
    return max(0, min(MAX_TOTAL, d))


@st.composite
def markets(draw: st.DrawFn) -> Market:
    """``(q, b)``: 2–16 totals in ``[0, 9e15]`` with imbalances of 50 b and far beyond, near-ties, equal ones."""
    b = draw(liquidities)
    n = draw(outcome_counts)
    shape = draw(st.sampled_from(["free", "equal", "one-ahead", "one-behind", "near-tie"]))
    if shape == "equal":
        heights = [0] * n
    elif shape in ("one-ahead", "one-behind"):
        d = draw(offsets(b))
        heights = [0 if shape == "one-ahead" else d] * n
        heights[draw(st.integers(0, n - 1))] = d if shape == "one-ahead" else 0
    else:
        heights = [draw(offsets(b)) for _ in range(n)]
        if shape == "near-tie":  # the top two within a few micro-units of each other
            top = max(range(n), key=heights.__getitem__)
            other = draw(st.sampled_from([j for j in range(n) if j != top]))
            heights[other] = max(0, heights[top] - draw(st.integers(0, 3)))
    room = MAX_TOTAL - max(heights)
    base = draw(st.one_of(st.just(0), log_int(0, room))) if room > 0 else 0
    return [base + h for h in heights], b


def _pick(draw: st.DrawFn, q: list[int]) -> int:
    """The traded outcome: the leader, the last, or any."""
    kind = draw(st.sampled_from(["max", "min", "any"]))
    if kind == "max":
        return max(range(len(q)), key=q.__getitem__)
    if kind == "min":
        return min(range(len(q)), key=q.__getitem__)
    return draw(st.integers(0, len(q) - 1))


@st.composite
def buys_n(draw: st.DrawFn) -> TradeN:
    q, b = draw(markets())
    k = _pick(draw, q)
    cap = min(MAX_QUANTITY, MAX_TOTAL - q[k])
    assume(cap >= 1)
    return q, k, trade_size(draw, b, cap), b


@st.composite
def sells_n(draw: st.DrawFn) -> TradeN:
    q, b = draw(markets())
    k = _pick(draw, q)
    assume(q[k] >= 1)
    if draw(st.booleans()):
        return q, k, q[k], b
    return q, k, trade_size(draw, b, min(q[k], MAX_QUANTITY)), b


@st.composite
def amount_orders_n(draw: st.DrawFn) -> tuple[list[int], int, int, int, int]:
    q, b = draw(markets())
    k = _pick(draw, q)
    room = min(MAX_QUANTITY, MAX_TOTAL - q[k])
    amount = draw(st.one_of(st.integers(0, 10), log_int(0, MAX_QUANTITY)))
    limit = draw(st.one_of(st.just(room + 1), st.just(room), log_int(0, room + 1)))
    return q, k, amount, b, limit


# --------------------------------------------------------------------------- the reference itself


@bounded(150)
@given(buys())
def test_reference_n_agrees_with_the_binary_reference(trade: tuple[int, int, int, int]) -> None:
    """Two independent derivations of the same number (log1p of the price against a difference of softplus)."""
    q_self, q_other, shares, b = trade
    mine, theirs = ref.buy_cost([q_self, q_other], 0, shares, b), ref2.buy_cost(q_self, q_other, shares, b)
    gap = abs(WIDE.subtract(mine.value(), theirs.value()))
    # tests/reference.py rounds 1 + y to 50 digits before its ln, which costs up to ~5e-50 * b
    # absolutely, beyond its stated err when y is small (found by this test); hence the b * 1e-47.
    assert gap <= mine.err + theirs.err + b * Decimal("1e-47")
    if mine.decided() and theirs.decided():
        assert mine.ceil() == theirs.ceil()


@bounded(100)
@given(buys_n())
def test_reference_n_agrees_with_literal_cost_difference(trade: TradeN) -> None:
    exact = ref.buy_cost(*trade)
    naive = ref.naive_cost(*trade)
    assert abs(WIDE.subtract(naive, exact.value())) <= Decimal("1e-30")


@pytest.mark.parametrize("n", [2, 3, 7, 16])
def test_reference_n_known_values(n: int) -> None:
    """From equal totals one unit of shares costs b ln((e + n - 1) / n); the price is 1/n; b ln n is C(0)."""
    b = U
    ctx = CTX
    expected = ctx.multiply(Decimal(b), ctx.ln(ctx.divide(ctx.add(ctx.exp(Decimal(1)), n - 1), n)))
    assert abs(ref.buy_cost([5 * U] * n, 1, U, b).value() - expected) < Decimal("1e-40")
    assert abs(ctx.subtract(ref.price([0] * n, n - 1, b), ctx.divide(U, n))) < Decimal("1e-40")
    assert abs(ctx.subtract(ref.cost_function([0] * n, b)[1], ctx.multiply(b, ctx.ln(n)))) < Decimal("1e-40")
    # 0, d, 2d, ...: buying n d of the lowest shifts every total by d up to order, so it costs exactly d.
    exact = ref.buy_cost([j * 3 * U for j in range(n)], 0, n * 3 * U, b)
    assert (exact.whole, exact.frac, exact.err) == (3 * U, Decimal(0), Decimal(0))


# --------------------------------------------------------------------------- exact rounding


@bounded(250)
@given(buys_n())
def test_buy_cost_is_exact_cost_rounded_up(trade: TradeN) -> None:
    q, k, shares, b = trade
    cost = pricing_n.buy_cost_n(q, k, shares, b)
    assert_ceil(cost, ref.buy_cost(q, k, shares, b), f"buy_cost_n{trade}")
    assert 1 <= cost <= shares


@bounded(200)
@given(sells_n())
def test_sell_proceeds_are_exact_proceeds_rounded_down(trade: TradeN) -> None:
    q, k, shares, b = trade
    proceeds = pricing_n.sell_proceeds_n(q, k, shares, b)
    assert_floor(proceeds, ref.sell_proceeds(q, k, shares, b), f"sell_proceeds_n{trade}")
    assert 0 <= proceeds <= shares - 1


@bounded(150)
@given(markets(), st.randoms(use_true_random=False))
def test_prices_are_exact_and_rounded_half_even(market: Market, rnd: random.Random) -> None:
    q, b = market
    got = pricing_n.prices_n(q, b)
    for k, price in enumerate(got):
        expected, decided = ref.price_half_even(q, k, b)
        assert price == expected if decided else abs(price - expected) <= 1
    n = len(q)
    if n == 2:
        assert sum(got) == MICRO
    else:  # each rounding moves a price by at most half a micro-unit
        assert abs(sum(got) - MICRO) <= n // 2
    # The same totals in another order give the same prices in that order.
    order = list(range(n))
    rnd.shuffle(order)
    assert pricing_n.prices_n([q[j] for j in order], b) == [got[j] for j in order]


def test_prices_of_equal_totals_are_one_nth() -> None:
    for n in range(2, 17):
        got = pricing_n.prices_n([7 * U] * n, 3 * U)
        assert got == [round(Decimal(MICRO) / n)] * n
    # Three outcomes, all at 333333.33...: the sum is one micro-unit short, as the contract's rounding gives.
    assert sum(pricing_n.prices_n([0, 0, 0], U)) == MICRO - 1


@bounded(100)
@given(liquidities, st.integers(2, 16))
def test_subsidy_is_b_ln_n_rounded_up(b: int, n: int) -> None:
    assert pricing_n.subsidy_n(b, n) == ref.subsidy(b, n)
    assert pricing_n._subsidy_general(b, n) == ref.subsidy(b, n)


@pytest.mark.parametrize(
    ("b", "n", "expected"),
    [
        (MIN_LIQUIDITY, 2, 693_148),  # 693147.18...
        (MIN_LIQUIDITY, 3, 1_098_613),  # 1098612.28...
        (MIN_LIQUIDITY, 16, 2_772_589),  # 2772588.72...
        (100 * MICRO, 4, 138_629_437),  # 138629436.11...
        (MAX_LIQUIDITY, 2, 693_147_180_559_946),
        (MAX_LIQUIDITY, 16, 2_772_588_722_239_782),  # 2772588722239781.23...
    ],
)
def test_subsidy_table(b: int, n: int, expected: int) -> None:
    assert pricing_n.subsidy_n(b, n) == expected


@bounded(100)
@given(liquidities)
def test_subsidy_of_two_outcomes_is_the_binary_subsidy(b: int) -> None:
    assert pricing_n.subsidy_n(b, 2) == pricing_n._subsidy_general(b, 2) == pricing.subsidy(b)


# --------------------------------------------------------------------------- buying by amount


@bounded(100)
@given(amount_orders_n())
def test_shares_for_amount_is_the_largest_affordable(order: tuple[list[int], int, int, int, int]) -> None:
    q, k, amount, b, limit = order
    s = pricing_n.shares_for_amount_n(q, k, amount, b, limit)
    assert 0 <= s <= limit
    if s > 0:
        assert pricing_n.buy_cost_n(q, k, s, b) <= amount
        exact = ref.buy_cost(q, k, s, b)
        assert exact.ceil() <= amount or not exact.decided()
    if s < limit:
        assert pricing_n.buy_cost_n(q, k, s + 1, b) > amount
        exact = ref.buy_cost(q, k, s + 1, b)
        assert exact.ceil() > amount or not exact.decided()
    if amount >= 1 and limit >= 1:  # one micro-unit buys a micro-share: its exact cost is below 1
        assert s >= 1


def test_shares_for_amount_table() -> None:
    q, b = [0, 0, 0, 0], U
    cost = pricing_n.buy_cost_n(q, 2, 10 * U, b)
    assert pricing_n.shares_for_amount_n(q, 2, cost, b, MAX_QUANTITY) >= 10 * U
    assert pricing_n.shares_for_amount_n(q, 2, cost - 1, b, MAX_QUANTITY) < 10 * U
    assert pricing_n.shares_for_amount_n(q, 2, MAX_QUANTITY, b, 5) == 5
    assert pricing_n.shares_for_amount_n(q, 2, MAX_QUANTITY, b, 0) == 0
    assert pricing_n.shares_for_amount_n(q, 2, 0, b, MAX_QUANTITY) == 0
    # 400 b behind two leaders: a unit buys every share up to their level and then about one more unit.
    q = [0, 400 * U, 400 * U]
    s = pricing_n.shares_for_amount_n(q, 0, U, b, MAX_QUANTITY)
    assert 400 * U < s < 402 * U
    assert pricing_n.buy_cost_n(q, 0, s, b) <= U < pricing_n.buy_cost_n(q, 0, s + 1, b)


# --------------------------------------------------------------------------- monotonicity, round trips, symmetry


@bounded(120)
@given(buys_n(), st.data())
def test_buy_cost_increases_with_shares(trade: TradeN, data: st.DataObject) -> None:
    q, k, s1, b = trade
    cap = min(MAX_QUANTITY, MAX_TOTAL - q[k])
    assume(s1 < cap)
    s2 = data.draw(st.one_of(st.just(s1 + 1), st.integers(s1 + 1, cap)), label="s2")
    c1, c2 = pricing_n.buy_cost_n(q, k, s1, b), pricing_n.buy_cost_n(q, k, s2, b)
    assert c1 <= c2
    moved = list(q)
    moved[k] += s1
    step = ref.buy_cost(moved, k, s2 - s1, b)  # exact c2 - exact c1
    if step.value() >= 1 + step.err:
        assert c1 < c2


@bounded(80)
@given(sells_n(), st.data())
def test_sell_proceeds_increase_with_shares(trade: TradeN, data: st.DataObject) -> None:
    q, k, s1, b = trade
    assume(s1 < q[k])
    s2 = data.draw(st.one_of(st.just(s1 + 1), st.integers(s1 + 1, q[k])), label="s2")
    assert pricing_n.sell_proceeds_n(q, k, s1, b) <= pricing_n.sell_proceeds_n(q, k, s2, b)


@bounded(150)
@given(buys_n())
def test_buy_then_sell_never_returns_more_than_paid(trade: TradeN) -> None:
    q, k, shares, b = trade
    paid = pricing_n.buy_cost_n(q, k, shares, b)
    after = list(q)
    after[k] += shares
    back = pricing_n.sell_proceeds_n(after, k, shares, b)
    assert back <= paid <= back + 1
    exact = ref.buy_cost(q, k, shares, b)
    if exact.err == 0:  # an exact integer: the totals after are those before shifted, up to order
        assert paid == back
    elif exact.decided():
        assert paid == back + 1


@bounded(100)
@given(buys_n(), st.randoms(use_true_random=False))
def test_the_order_of_the_other_outcomes_does_not_matter(trade: TradeN, rnd: random.Random) -> None:
    q, k, shares, b = trade
    order = list(range(len(q)))
    rnd.shuffle(order)
    permuted, k2 = [q[j] for j in order], order.index(k)
    assert pricing_n.buy_cost_n(permuted, k2, shares, b) == pricing_n.buy_cost_n(q, k, shares, b)
    if q[k] >= shares:
        assert pricing_n.sell_proceeds_n(permuted, k2, shares, b) == pricing_n.sell_proceeds_n(q, k, shares, b)


@pytest.mark.parametrize(("n", "seed"), [(3, 0), (4, 1), (16, 2), (16, 3)])
def test_random_trade_sequence_keeps_pool_solvent(n: int, seed: int) -> None:
    """From the subsidy through buys and sells the pool always covers C(q) (hence every payout)."""
    rng = random.Random(seed)
    b = [MIN_LIQUIDITY, 37 * MICRO, 10**12, MAX_LIQUIDITY][seed]
    q = [0] * n
    pool = pricing_n.subsidy_n(b, n)
    for _ in range(120):
        k = rng.randrange(n)
        if q[k] and rng.random() < 0.45:
            shares = q[k] if rng.random() < 0.1 else rng.randint(1, q[k])
            pool -= pricing_n.sell_proceeds_n(q, k, shares, b)
            q[k] -= shares
        else:
            cap = min(MAX_QUANTITY, MAX_TOTAL - q[k])
            shares = min(cap, max(1, int(b * 10 ** rng.uniform(-7, 2.5))))
            pool += pricing_n.buy_cost_n(q, k, shares, b)
            q[k] += shares
        whole, small = ref.cost_function(q, b)
        assert Decimal(pool - whole) >= small


# --------------------------------------------------------------------------- the float error bound


@bounded(250)
@given(buys_n())
def test_float_error_stays_within_a_quarter_of_the_bound(trade: TradeN) -> None:
    q, k, shares, b = trade
    view = pricing_n._Outcome(q, k, b)
    value, bound = pricing_n._delta_float(view.lead, shares, b, view.log_rho, view.several)
    exact = ref.buy_cost(q, k, shares, b).value()
    error = abs(WIDE.subtract(Decimal(value), exact))
    assert error <= Decimal(bound) / 4, f"error {error} > bound/4 = {bound / 4} for {trade}"


@bounded(150)
@given(markets())
def test_float_price_error_stays_within_a_quarter_of_the_bound(market: Market) -> None:
    q, b = market
    for k, scaled in enumerate(pricing_n._scaled_prices_float(q, b)):
        error = abs(WIDE.subtract(Decimal(scaled), ref.price(q, k, b)))
        assert error <= Decimal(pricing_n._PRICE_BOUND) / 4


# --------------------------------------------------------------------------- fast path == decimal path


@bounded(120)
@given(buys_n(), sells_n(), markets())
def test_decimal_path_agrees_with_fast_path(buy: TradeN, sell: TradeN, market: Market) -> None:
    fast = (pricing_n.buy_cost_n(*buy), pricing_n.sell_proceeds_n(*sell), pricing_n._prices_general(*market))
    with decimal_only():
        slow = (pricing_n.buy_cost_n(*buy), pricing_n.sell_proceeds_n(*sell), pricing_n._prices_general(*market))
    assert fast == slow


@bounded(40)
@given(amount_orders_n())
def test_decimal_path_agrees_on_shares_for_amount(order: tuple[list[int], int, int, int, int]) -> None:
    fast = pricing_n.shares_for_amount_n(*order)
    with decimal_only():
        assert pricing_n.shares_for_amount_n(*order) == fast


def test_decimal_path_is_really_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_decimal_paths(monkeypatch)
    pricing_n.buy_cost_n([0, 0, 0], 0, U, U)
    pricing_n.buy_cost_n([0, 3 * U, 5 * U, 9 * U], 2, 7 * U, 2 * U)
    assert calls() == 0  # ordinary trades are decided by the float path
    pricing_n.buy_cost_n([0, 400 * U, 400 * U], 0, 1, U)  # ~e^-400 micro-units, relatively exact in floats
    pricing_n.buy_cost_n([0, 3 * U, 5 * U, 9 * U], 2, 1, 10**15)  # b = 1e9 units, a one-micro-share trade
    assert calls() == 0
    pricing_n.buy_cost_n([0, 800 * U, 800 * U], 0, 1, U)  # e^-800 underflows a float: decimals decide
    assert calls() == 1
    pricing_n.buy_cost_n([0, 0, 0], 0, 10**15, 10**15)  # b = 1e9 units, a trade of b: the bound passes 1
    assert calls() == 2
    monkeypatch.setattr(pricing_n, "_REL", 1.0)
    monkeypatch.setattr(pricing_n, "_REL_SMALL", 1.0)
    pricing_n.buy_cost_n([0, 0, 0], 0, U, U)
    assert calls() == 3


# --------------------------------------------------------------------------- two outcomes: exactly today's integers


@pytest.fixture(params=["fast", "decimal"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a table test as is, and again with every general-path cost forced through decimals."""
    if request.param == "decimal":
        for name, forced in zip(("_REL", "_REL_SMALL", "_PRICE_BOUND"), FORCED, strict=True):
            monkeypatch.setattr(pricing_n, name, forced)
    return str(request.param)


def _both_ways(q_self: int, q_other: int) -> list[tuple[list[int], int]]:
    return [([q_self, q_other], 0), ([q_other, q_self], 1)]


@pytest.mark.parametrize(("q_self", "q_other", "shares", "b"), [*edge_buys(), *(p.values[:4] for p in BOUNDARY_BUYS)])
def test_general_path_buys_like_the_binary(path: str, q_self: int, q_other: int, shares: int, b: int) -> None:
    expected = pricing.buy_cost(q_self, q_other, shares, b)
    for q, k in _both_ways(q_self, q_other):
        assert pricing_n._buy_cost_general(q, k, shares, b) == expected
        assert pricing_n.buy_cost_n(q, k, shares, b) == expected


@pytest.mark.parametrize(
    ("q_self", "q_other", "shares", "b"), [*edge_sells(), *(p.values[:4] for p in BOUNDARY_SELLS)]
)
def test_general_path_sells_like_the_binary(path: str, q_self: int, q_other: int, shares: int, b: int) -> None:
    expected = pricing.sell_proceeds(q_self, q_other, shares, b)
    for q, k in _both_ways(q_self, q_other):
        assert pricing_n._sell_proceeds_general(q, k, shares, b) == expected
        assert pricing_n.sell_proceeds_n(q, k, shares, b) == expected


@pytest.mark.parametrize(
    ("q_self", "q_other", "b"), [pytest.param(q1, q2, b, id=name) for name, q1, q2, b in EDGE_STATES]
)
def test_general_path_prices_and_buys_by_amount_like_the_binary(path: str, q_self: int, q_other: int, b: int) -> None:
    yes, no = pricing.prices(q_self, q_other, b)
    assert pricing_n._prices_general([q_self, q_other], b) == [yes, no] == pricing_n.prices_n([q_self, q_other], b)
    room = min(MAX_QUANTITY, MAX_TOTAL - q_self)
    for amount in (1, b, MAX_QUANTITY):
        expected = pricing.shares_for_amount(q_self, q_other, amount, b, room + 1)
        assert pricing_n._shares_for_amount_general([q_self, q_other], 0, amount, b, room + 1) == expected


@bounded(200)
@given(buys(), sells(), states())
def test_general_path_is_the_binary_under_hypothesis(
    buy: tuple[int, int, int, int], sell: tuple[int, int, int, int], state: tuple[int, int, int]
) -> None:
    q_self, q_other, shares, b = buy
    assert pricing_n._buy_cost_general([q_other, q_self], 1, shares, b) == pricing.buy_cost(*buy)
    q_self, q_other, shares, b = sell
    assert pricing_n._sell_proceeds_general([q_self, q_other], 0, shares, b) == pricing.sell_proceeds(*sell)
    q_self, q_other, b = state
    assert pricing_n._prices_general([q_self, q_other], b) == list(pricing.prices(q_self, q_other, b))


@bounded(60)
@given(amount_orders())
def test_general_path_buys_by_amount_like_the_binary(order: tuple[int, int, int, int, int]) -> None:
    q_self, q_other, amount, b, limit = order
    expected = pricing.shares_for_amount(*order)
    assert pricing_n._shares_for_amount_general([q_self, q_other], 0, amount, b, limit) == expected


# --------------------------------------------------------------------------- the edge-case table


def _edge_markets() -> list[tuple[str, list[int], int]]:
    """(id, q, b): b at both ends, 3, 4 and 16 outcomes, each shape, with no or a deep common base."""
    out: list[tuple[str, list[int], int]] = []
    for b_name, b in (("b=1u", MIN_LIQUIDITY), ("b=1e9u", MAX_LIQUIDITY)):
        for n in (3, 16):
            shapes: list[tuple[str, list[int]]] = [("equal", [0] * n)]
            for d_name, d in (("50b", 50 * b), ("700b", 700 * b), ("9e9u", MAX_TOTAL)):
                if d > MAX_TOTAL:
                    continue
                shapes.append((f"one-ahead-{d_name}", [d] + [0] * (n - 1)))
                shapes.append((f"one-behind-{d_name}", [0] + [d] * (n - 1)))
                shapes.append((f"spread-{d_name}", [d * j // (n - 1) for j in range(n)]))
            shapes.append(("near-tie", [b, b - 1] + [0] * (n - 2)))
            shapes.append(("near-tie-ahead", [60 * b + 1, 60 * b] + [0] * (n - 2)))
            for s_name, heights in shapes:
                if max(heights) > MAX_TOTAL:
                    continue
                room = min(MAX_QUANTITY, MAX_TOTAL - max(heights))
                out.append((f"{b_name},n={n},{s_name}", heights, b))
                if room > 0 and s_name in ("equal", "near-tie", "one-ahead-50b"):
                    out.append((f"{b_name},n={n},{s_name}+base", [h + room for h in heights], b))
    return out


EDGE_MARKETS = _edge_markets()


def _edge_sizes(q: list[int], k: int, b: int, selling: bool) -> list[int]:
    cap = q[k] if selling else min(MAX_QUANTITY, MAX_TOTAL - q[k])
    return sorted({s for s in (1, b, MAX_QUANTITY, cap) if 1 <= s <= cap})


EDGE_IDS = [pytest.param(q, b, id=name) for name, q, b in EDGE_MARKETS]


@pytest.mark.parametrize(("q", "b"), EDGE_IDS)
def test_edge_table_buy_cost(path: str, q: list[int], b: int) -> None:
    """Outcome 0 (ahead, behind or tied for the lead) and the last: 1 micro, b, 1e9 units, up to 9e9 units.

    Where the reference is undecided (an outcome 9e9 units ahead of another
    far behind: the answer hangs on terms like e^-6e9 against e^-3e9) the
    engine must still be within one micro-unit and on the pool's side.
    """
    for k in (0, len(q) - 1):
        for shares in _edge_sizes(q, k, b, selling=False):
            assert_ceil(pricing_n.buy_cost_n(q, k, shares, b), ref.buy_cost(q, k, shares, b), f"{q, k, shares, b}")


@pytest.mark.parametrize(("q", "b"), EDGE_IDS)
def test_edge_table_sell_proceeds(path: str, q: list[int], b: int) -> None:
    for k in (0, len(q) - 1):
        for shares in _edge_sizes(q, k, b, selling=True):
            exact = ref.sell_proceeds(q, k, shares, b)
            assert_floor(pricing_n.sell_proceeds_n(q, k, shares, b), exact, f"{q, k, shares, b}")


def test_edge_table_is_mostly_decided() -> None:
    """The table is a real test of exact rounding: the reference decides all but the towers of scales."""
    undecided = []
    for name, q, b in EDGE_MARKETS:
        for k in (0, len(q) - 1):
            for selling in (False, True):
                for shares in _edge_sizes(q, k, b, selling):
                    exact = (ref.sell_proceeds if selling else ref.buy_cost)(q, k, shares, b)
                    if not exact.decided():
                        undecided.append(name)
    assert set(undecided) <= {name for name, _, _ in EDGE_MARKETS if "spread-9e9u" in name}
    assert len(undecided) <= 8


@pytest.mark.parametrize(("q", "b"), EDGE_IDS)
def test_edge_table_prices(path: str, q: list[int], b: int) -> None:
    expected = []
    for k in range(len(q)):
        price, decided = ref.price_half_even(q, k, b)
        assert decided
        expected.append(price)
    assert pricing_n.prices_n(q, b) == expected
    if max(q) - sorted(q)[-2] >= 50 * b:  # 1e6 * 15 e^-50 ~ 3e-15: fully one-sided after rounding
        assert sorted(expected) == [0] * (len(q) - 1) + [MICRO]


@pytest.mark.parametrize(("q", "b"), [pytest.param(q, b, id=name) for name, q, b in EDGE_MARKETS[::3]])
def test_edge_table_buy_by_amount(q: list[int], b: int) -> None:
    for k in (0, len(q) - 1):
        limit = min(MAX_QUANTITY, MAX_TOTAL - q[k]) + 1
        for amount in (1, b, MAX_QUANTITY):
            s = pricing_n.shares_for_amount_n(q, k, amount, b, limit)
            assert s >= 1 and pricing_n.buy_cost_n(q, k, s, b) <= amount
            assert s == limit or pricing_n.buy_cost_n(q, k, s + 1, b) > amount


def _progressions() -> list[Any]:
    """Totals 0, d, 2d, ... (n - 1) d: buying n d of the lowest shifts every total by d, up to order."""
    cases = []
    for n in (2, 3, 5, 16):
        for b, d in ((U, 3 * U), (7_777_777, 1), (U, 400 * U // n), (MAX_LIQUIDITY, MAX_QUANTITY // 16)):
            q = [j * d for j in range(n)]
            cases.append(pytest.param(q, n * d, b, d, id=f"n={n},b={b},d={d}"))
    return cases


@pytest.mark.parametrize(("q", "shares", "b", "expected"), _progressions())
def test_exact_integer_costs_are_exact(
    path: str, monkeypatch: pytest.MonkeyPatch, q: list[int], shares: int, b: int, expected: int
) -> None:
    """No precision decides these: the engine recognises them and charges exactly ``d``, pays back exactly ``d``."""
    calls = count_decimal_paths(monkeypatch)
    assert ref.buy_cost(q, 0, shares, b).err == 0
    assert pricing_n._buy_cost_general(q, 0, shares, b) == expected
    after = [q[0] + shares, *q[1:]]
    assert pricing_n._sell_proceeds_general(after, 0, shares, b) == expected
    assert calls() == 2  # the float interval straddles the integer: the decimal path decided


@pytest.mark.parametrize(
    ("q", "k", "shares", "b", "expected"),
    [
        # Far behind: the exact cost is a tiny positive number, rounded up to 1.
        pytest.param([0, 400 * U, 400 * U], 0, 1, U, 1, id="behind-400b-1micro"),
        pytest.param([0, MAX_TOTAL, 5], 0, MAX_QUANTITY, U, 1, id="behind-9e9u-1e9u"),
        pytest.param([0] + [MAX_TOTAL] * 15, 0, 1, U, 1, id="behind-9e9u-n16"),
        # Far ahead: the exact cost is shares minus a tiny number, rounded up to shares.
        pytest.param([400 * U, 0, 0, 0], 0, 1, U, 1, id="ahead-400b-1micro"),
        pytest.param([MAX_TOTAL - MAX_QUANTITY] + [0] * 15, 0, MAX_QUANTITY, U, MAX_QUANTITY, id="ahead-n16-1e9u"),
        # Two tied leaders far ahead of a third: trading the third is nearly free whatever the tie.
        pytest.param([0, MAX_TOTAL, MAX_TOTAL], 0, MAX_QUANTITY, U, 1, id="behind-tied-leaders"),
    ],
)
def test_boundary_buy_cost(path: str, q: list[int], k: int, shares: int, b: int, expected: int) -> None:
    assert ref.buy_cost(q, k, shares, b).ceil() == expected
    assert pricing_n.buy_cost_n(q, k, shares, b) == expected


@pytest.mark.parametrize(
    ("q", "k", "shares", "b", "expected"),
    [
        pytest.param([400 * U + 5, 0, 0], 0, 5, U, 4, id="ahead-400b-5micro"),
        pytest.param([MAX_TOTAL, 0, 3, 0], 0, MAX_QUANTITY, U, MAX_QUANTITY - 1, id="ahead-9e9u-1e9u"),
        pytest.param([1, 400 * U, 400 * U], 0, 1, U, 0, id="behind-400b-1micro"),
        pytest.param([MAX_QUANTITY] + [MAX_TOTAL] * 15, 0, MAX_QUANTITY, U, 0, id="behind-n16-sell-all"),
    ],
)
def test_boundary_sell_proceeds(path: str, q: list[int], k: int, shares: int, b: int, expected: int) -> None:
    assert ref.sell_proceeds(q, k, shares, b).floor() == expected
    assert pricing_n.sell_proceeds_n(q, k, shares, b) == expected


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: pricing_n.buy_cost_n([0], 0, 1, U), "2 to 16 outcomes, not 1"),
        (lambda: pricing_n.buy_cost_n([0] * 17, 0, 1, U), "not 17"),
        (lambda: pricing_n.sell_proceeds_n([1, 0, 0], 3, 1, U), "index 3"),
        (lambda: pricing_n.buy_cost_n([0, 0, 0], -1, 1, U), "index -1"),
        (lambda: pricing_n.shares_for_amount_n([0, 0], 2, 1, U, 10), "index 2"),
        (lambda: pricing_n.prices_n([], U), "not 0"),
        (lambda: pricing_n.subsidy_n(U, 1), "not 1"),
        (lambda: pricing_n.subsidy_n(U, 17), "not 17"),
    ],
)
def test_bad_shapes_are_refused(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_zero_shares_cost_nothing() -> None:
    assert pricing_n.buy_cost_n([0, 0, 0], 1, 0, U) == 0
    assert pricing_n.sell_proceeds_n([5, 0, 0], 0, 0, U) == 0


@bounded(100)
@given(buys_n())
def test_the_reference_derivations_agree(trade: TradeN) -> None:
    """The reference's two routes (k's price, the levels of C) give the same number within their bounds."""
    q, k, shares, b = trade
    after = list(q)
    after[k] += shares
    by_price, by_levels = ref._by_price(q, k, shares, b), ref._by_levels(q, after, b)
    assert abs(WIDE.subtract(by_price.value(), by_levels.value())) <= by_price.err + by_levels.err


@pytest.mark.parametrize(
    ("before", "shares", "b", "expected"),
    [
        # Two leaders swap places (lead -2 to +2) with a third outcome 140 b behind: 2 - 1.6e-61.
        pytest.param([139_999_998, 0, 140_000_000], 4, U, 2, id="swap-third-140b-behind"),
        pytest.param([MAX_TOTAL - 10, 0, 0, MAX_TOTAL - 5], 10, U, 5, id="swap-two-9e9u-behind"),
        # A progression 200 b above a fourth outcome: 3e6 - 3e-87.
        pytest.param([200 * U, 203 * U, 206 * U, 0], 9 * U, U, 3 * U, id="progression-fourth-200b-behind"),
    ],
)
def test_near_integers_beside_far_outcomes_are_exact(
    path: str, monkeypatch: pytest.MonkeyPatch, before: list[int], shares: int, b: int, expected: int
) -> None:
    """Exactly an integer but for outcomes over 100 b behind, which lower it by a positive hair.

    60 digits cannot tell these from the integer (nor can the reference: it is
    undecided); the engine knows their sign, and charges the integer, pays one less.
    """
    calls = count_decimal_paths(monkeypatch)
    assert not ref.buy_cost(before, 0, shares, b).decided()
    after = [before[0] + shares, *before[1:]]
    assert pricing_n.buy_cost_n(before, 0, shares, b) == expected
    assert pricing_n.sell_proceeds_n(after, 0, shares, b) == expected - 1
    assert calls() == 4  # both went to the decimal path, which checked all outcomes, then the near ones
