"""PricingEngine against an independent 50-digit reference (tests/support/reference.py), plus orders.fill.

Everything is an integer of micro-units. The contract: buy cost = exact cost
rounded up, sell proceeds = exact proceeds rounded down, prices rounded
half-even, subsidy = ceil(b ln 2), buying by amount = the largest affordable
number of micro-shares; all of it identical whichever internal path computes it.

Where the reference is certain of the rounding (its error bound is smaller
than its distance to the rounding boundary: that includes the exact-integer
and 1e-174-from-an-integer cases at extreme imbalances) the engine must agree
exactly; elsewhere it may differ by at most one micro-unit.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from predmarket.engine import pricing
from predmarket.engine.errors import InsufficientShares, ValidationError
from predmarket.engine.models import Outcome, Side
from predmarket.engine.orders import Fill, avg_price, div_half_even
from predmarket.engine.units import MAX_LIQUIDITY, MAX_QUANTITY, MAX_TOTAL, MICRO, MIN_LIQUIDITY

from tests.support import reference as ref
from tests.support.fills import yes_no_fill
from tests.support.pricing_cases import (
    BOUNDARY_BUYS,
    BOUNDARY_SELLS,
    EDGE_STATES,
    State,
    Trade,
    amount_orders,
    bounded,
    buys,
    edge_buys,
    edge_sells,
    liquidities,
    log_int,
    sells,
    states,
)

# --------------------------------------------------------------------------- helpers


@contextmanager
def decimal_only() -> Iterator[None]:
    """Make every float evaluation undecided, so each cost goes through the decimal fallback.

    (The same as ``monkeypatch.setattr(pricing, "_REL", 1.0)``, usable inside hypothesis tests:
    the bound becomes ``|lead| + shares + b + value >= 1e6`` micro-units.)
    """
    saved = pricing._REL
    pricing._REL = 1.0
    try:
        yield
    finally:
        pricing._REL = saved


def assert_ceil(engine: int, exact: ref.Exact, what: str) -> None:
    if exact.decided():
        assert engine == exact.ceil(), f"{what}: engine {engine} != ceil({exact.value()})"
    else:
        assert abs(Decimal(engine) - exact.value()) <= 1, f"{what}: engine {engine} vs exact {exact.value()}"


def assert_floor(engine: int, exact: ref.Exact, what: str) -> None:
    if exact.decided():
        assert engine == exact.floor(), f"{what}: engine {engine} != floor({exact.value()})"
    else:
        assert abs(Decimal(engine) - exact.value()) <= 1, f"{what}: engine {engine} vs exact {exact.value()}"


def assert_price(q_self: int, q_other: int, b: int) -> None:
    expected, decided = ref.price_half_even(q_self, q_other, b)
    got = pricing.price_micro(q_self, q_other, b)
    if decided:
        assert got == expected, f"price({q_self}, {q_other}, {b}) = {got}, exact {ref.price(q_self, q_other, b)}"
    else:
        assert abs(got - expected) <= 1


# --------------------------------------------------------------------------- the reference itself


@bounded(300)
@given(buys())
def test_reference_agrees_with_literal_cost_difference(trade: Trade) -> None:
    """The split reference equals the literal 50-digit ``C(after) - C(before)`` to 1e-30."""
    exact = ref.buy_cost(*trade)
    naive = ref.naive_cost(*trade)
    assert abs(ref.WIDE.subtract(naive, exact.value())) <= Decimal("1e-30")


def test_reference_known_values() -> None:
    """Spot values computed by hand: C(0,0) = b ln 2; a trade from d = -D to +D costs D exactly."""
    b = MICRO
    assert ref.cost_function(0, 0, b)[1] == ref.CTX.multiply(Decimal(b), ref.LN2)
    assert ref.buy_cost(0, 5, 10, b).value() == 5
    # b ln((e + 1) / 2) for one unit of shares at q = 0 with b = 1 unit: 620114.5069582775...
    assert str(ref.buy_cost(0, 0, b, b).value())[:17] == "620114.5069582775"


# --------------------------------------------------------------------------- exact rounding


@bounded(700)
@given(buys())
def test_buy_cost_is_exact_cost_rounded_up(trade: Trade) -> None:
    q_self, q_other, shares, b = trade
    cost = pricing.buy_cost(q_self, q_other, shares, b)
    assert_ceil(cost, ref.buy_cost(q_self, q_other, shares, b), f"buy_cost{trade}")
    # 0 < exact cost < shares (every price lies strictly between 0 and 1).
    assert 1 <= cost <= shares


@bounded(700)
@given(sells())
def test_sell_proceeds_are_exact_proceeds_rounded_down(trade: Trade) -> None:
    q_self, q_other, shares, b = trade
    proceeds = pricing.sell_proceeds(q_self, q_other, shares, b)
    assert_floor(proceeds, ref.sell_proceeds(q_self, q_other, shares, b), f"sell_proceeds{trade}")
    assert 0 <= proceeds <= shares - 1


@bounded(500)
@given(states())
def test_price_is_exact_sigmoid_rounded_half_even(state: State) -> None:
    q_self, q_other, b = state
    assert_price(q_self, q_other, b)
    yes, no = pricing.prices(q_self, q_other, b)
    assert yes + no == MICRO
    assert 0 <= yes <= MICRO
    # sigmoid(-a) = 1 - sigmoid(a) and there is no tie except a = 0: both sides round consistently.
    assert pricing.price_micro(q_other, q_self, b) == no


@bounded(300)
@given(liquidities)
def test_subsidy_is_b_ln2_rounded_up(b: int) -> None:
    assert pricing.subsidy(b) == ref.subsidy(b)


@pytest.mark.parametrize(
    ("b", "expected"),
    [
        (MIN_LIQUIDITY, 693_148),  # 693147.18...
        (100 * MICRO, 69_314_719),  # 69314718.05...
        (MAX_LIQUIDITY, 693_147_180_559_946),  # 693147180559945.309...
    ],
)
def test_subsidy_table(b: int, expected: int) -> None:
    assert pricing.subsidy(b) == expected


# --------------------------------------------------------------------------- buying by amount


@bounded(300)
@given(amount_orders())
def test_shares_for_amount_is_the_largest_affordable(order: tuple[int, int, int, int, int]) -> None:
    q_self, q_other, amount, b, limit = order
    s = pricing.shares_for_amount(q_self, q_other, amount, b, limit)
    assert 0 <= s <= limit
    if s > 0:
        assert pricing.buy_cost(q_self, q_other, s, b) <= amount
        exact = ref.buy_cost(q_self, q_other, s, b)
        assert exact.ceil() <= amount or not exact.decided()
    if s < limit:
        # buy_cost is non-decreasing in shares (tested below), so nothing above s is affordable either.
        assert pricing.buy_cost(q_self, q_other, s + 1, b) > amount
        exact = ref.buy_cost(q_self, q_other, s + 1, b)
        assert exact.ceil() > amount or not exact.decided()
    # One micro-unit always buys at least one micro-share: its exact cost is strictly below 1.
    if amount >= 1 and limit >= 1:
        assert s >= 1


# --------------------------------------------------------------------------- monotonicity and round trips


@bounded(400)
@given(buys(), st.data())
def test_buy_cost_increases_with_shares(trade: Trade, data: st.DataObject) -> None:
    q_self, q_other, s1, b = trade
    cap = min(MAX_QUANTITY, MAX_TOTAL - q_self)
    assume(s1 < cap)
    s2 = data.draw(st.one_of(st.just(s1 + 1), st.integers(s1 + 1, cap)), label="s2")
    c1, c2 = pricing.buy_cost(q_self, q_other, s1, b), pricing.buy_cost(q_self, q_other, s2, b)
    assert c1 <= c2
    step = ref.buy_cost(q_self + s1, q_other, s2 - s1, b)  # exact c2 - exact c1
    if step.value() >= 1 + step.err:
        assert c1 < c2


@bounded(400)
@given(sells(), st.data())
def test_sell_proceeds_increase_with_shares(trade: Trade, data: st.DataObject) -> None:
    q_self, q_other, s1, b = trade
    assume(s1 < q_self)
    s2 = data.draw(st.one_of(st.just(s1 + 1), st.integers(s1 + 1, q_self)), label="s2")
    p1, p2 = pricing.sell_proceeds(q_self, q_other, s1, b), pricing.sell_proceeds(q_self, q_other, s2, b)
    assert p1 <= p2
    step = ref.sell_proceeds(q_self - s1, q_other, s2 - s1, b)  # exact p2 - exact p1
    if step.value() >= 1 + step.err:
        assert p1 < p2


@bounded(500)
@given(buys())
def test_buy_then_sell_never_returns_more_than_paid(trade: Trade) -> None:
    q_self, q_other, shares, b = trade
    paid = pricing.buy_cost(q_self, q_other, shares, b)
    back = pricing.sell_proceeds(q_self + shares, q_other, shares, b)
    # Both are the same exact number, rounded up and rounded down: the pool keeps 0 or 1 micro-unit.
    assert back <= paid <= back + 1
    exact = ref.buy_cost(q_self, q_other, shares, b)
    if exact.err == 0:  # an exact integer (|d| the same before and after)
        assert paid == back
    elif exact.decided():
        assert paid == back + 1


@bounded(400)
@given(sells())
def test_sell_then_buy_back_never_costs_less_than_received(trade: Trade) -> None:
    q_self, q_other, shares, b = trade
    received = pricing.sell_proceeds(q_self, q_other, shares, b)
    cost = pricing.buy_cost(q_self - shares, q_other, shares, b)
    assert received <= cost <= received + 1


# --------------------------------------------------------------------------- solvency over sequences


def pool_covers_cost_function(pool: int, q_yes: int, q_no: int, b: int) -> bool:
    """``pool >= C(q)`` exactly (stronger than ``pool >= max(q)``, since ``C(q) > max(q)``)."""
    whole, small = ref.cost_function(q_yes, q_no, b)
    return Decimal(pool - whole) >= small


class PoolMachine(RuleBasedStateMachine):
    """A market from its subsidy through random buys (by shares and by amount) and sells."""

    def __init__(self) -> None:
        super().__init__()
        self.b = MICRO
        self.q = {Outcome.YES: 0, Outcome.NO: 0}
        self.pool = 0

    @initialize(b=liquidities)
    def open_market(self, b: int) -> None:
        self.b = b
        self.pool = pricing.subsidy(b)

    def _apply(self, side: Side, outcome: Outcome, result: Fill) -> None:
        self.pool += result.cost if side is Side.BUY else -result.cost
        self.q = {Outcome.YES: result.totals[0], Outcome.NO: result.totals[1]}

    @rule(outcome=st.sampled_from(Outcome), data=st.data())
    def buy_shares(self, outcome: Outcome, data: st.DataObject) -> None:
        cap = min(MAX_QUANTITY, MAX_TOTAL - self.q[outcome])
        if cap < 1:
            return
        shares = data.draw(st.one_of(log_int(1, cap), st.integers(1, max(1, min(cap, 1000 * self.b)))))
        result = yes_no_fill(self.q[Outcome.YES], self.q[Outcome.NO], self.b, Side.BUY, outcome, shares=shares)
        assert result.cost == pricing.buy_cost(self.q[outcome], self.q[outcome.other], shares, self.b)
        self._apply(Side.BUY, outcome, result)

    @rule(outcome=st.sampled_from(Outcome), amount=log_int(1, MAX_QUANTITY))
    def buy_amount(self, outcome: Outcome, amount: int) -> None:
        try:
            result = yes_no_fill(self.q[Outcome.YES], self.q[Outcome.NO], self.b, Side.BUY, outcome, amount=amount)
        except ValidationError:
            return  # would pass 9e9 outstanding: rejected, nothing changes
        assert 1 <= result.cost <= amount
        self._apply(Side.BUY, outcome, result)

    @rule(outcome=st.sampled_from(Outcome), data=st.data())
    def sell_shares(self, outcome: Outcome, data: st.DataObject) -> None:
        held = self.q[outcome]
        if held < 1:
            return
        shares = data.draw(st.one_of(st.just(held), log_int(1, held)))
        result = yes_no_fill(self.q[Outcome.YES], self.q[Outcome.NO], self.b, Side.SELL, outcome, shares=shares)
        self._apply(Side.SELL, outcome, result)

    @invariant()
    def solvent(self) -> None:
        assert self.pool >= max(self.q.values())
        assert pool_covers_cost_function(self.pool, self.q[Outcome.YES], self.q[Outcome.NO], self.b)


PoolMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPoolStaysSolvent = PoolMachine.TestCase


@pytest.mark.parametrize("seed", range(4))
def test_random_trade_sequence_keeps_pool_solvent(seed: int) -> None:
    """Long fixed-seed sequences (the stateful test keeps its runs short)."""
    rng = random.Random(seed)
    b = [MIN_LIQUIDITY, 37 * MICRO, 10**12, MAX_LIQUIDITY][seed]
    q = {Outcome.YES: 0, Outcome.NO: 0}
    pool = pricing.subsidy(b)
    for _ in range(400):
        outcome = rng.choice(list(Outcome))
        held = q[outcome]
        if held and rng.random() < 0.45:
            shares = held if rng.random() < 0.1 else rng.randint(1, held)
            pool -= pricing.sell_proceeds(held, q[outcome.other], shares, b)
            q[outcome] -= shares
        else:
            cap = min(MAX_QUANTITY, MAX_TOTAL - held)
            if cap < 1:
                continue
            shares = min(cap, max(1, int(b * 10 ** rng.uniform(-7, 3))))
            pool += pricing.buy_cost(held, q[outcome.other], shares, b)
            q[outcome] += shares
        assert pool >= max(q.values())
        assert pool_covers_cost_function(pool, q[Outcome.YES], q[Outcome.NO], b)
    # Selling everything back leaves at least the subsidy's worth of C(0, 0) = b ln 2.
    for outcome in Outcome:
        pool -= pricing.sell_proceeds(q[outcome], q[outcome.other], q[outcome], b) if q[outcome] else 0
        q[outcome] = 0
    assert pool >= ref.cost_function(0, 0, b)[1]


# --------------------------------------------------------------------------- the float error bound


@bounded(700)
@given(buys())
def test_float_error_stays_within_a_quarter_of_the_bound(trade: Trade) -> None:
    q_self, q_other, shares, b = trade
    value, bound = pricing._delta_float(q_self - q_other, shares, b)
    exact = ref.buy_cost(q_self, q_other, shares, b).value()
    error = abs(ref.WIDE.subtract(Decimal(value), exact))
    assert error <= Decimal(bound) / 4, f"error {error} > bound/4 = {bound / 4} for {trade}"


# --------------------------------------------------------------------------- fast path == decimal fallback


@bounded(300)
@given(buys(), sells())
def test_decimal_fallback_agrees_with_fast_path(buy: Trade, sell: Trade) -> None:
    fast = (pricing.buy_cost(*buy), pricing.sell_proceeds(*sell))
    with decimal_only():
        slow = (pricing.buy_cost(*buy), pricing.sell_proceeds(*sell))
    assert fast == slow


@bounded(60)
@given(amount_orders())
def test_decimal_fallback_agrees_on_shares_for_amount(order: tuple[int, int, int, int, int]) -> None:
    fast = pricing.shares_for_amount(*order)
    with decimal_only():
        assert pricing.shares_for_amount(*order) == fast


def test_decimal_fallback_is_really_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int, int]] = []
    original = pricing._delta_decimal

    def spy(lead: int, shares: int, b: int) -> tuple[int, Decimal]:
        calls.append((lead, shares, b))
        return original(lead, shares, b)

    monkeypatch.setattr(pricing, "_delta_decimal", spy)
    pricing.buy_cost(0, 0, MICRO, MICRO)
    assert calls == []  # an ordinary trade is decided by the float path
    monkeypatch.setattr(pricing, "_REL", 1.0)
    pricing.buy_cost(0, 0, MICRO, MICRO)
    assert calls == [(0, MICRO, MICRO)]


def test_determinism_over_many_states() -> None:
    """Same inputs, same integers: twice in a row, in another order, and through the fallback."""
    rng = random.Random(20240601)
    trades = []
    for _ in range(300):
        b = int(10 ** rng.uniform(6, 15))
        d = int(b * rng.uniform(-80, 80)) if rng.random() < 0.8 else rng.randint(-MAX_TOTAL, MAX_TOTAL)
        d = max(-MAX_TOTAL, min(MAX_TOTAL, d))
        base = rng.randint(0, MAX_TOTAL - abs(d))
        q_self, q_other = base + max(d, 0), base + max(-d, 0)
        shares = max(1, min(MAX_QUANTITY, int(b * 10 ** rng.uniform(-9, 2))))
        trades.append((q_self, q_other, shares, b))

    def run(order: list[Trade]) -> dict[Trade, tuple[int, ...]]:
        return {
            t: (
                pricing.buy_cost(*t),
                pricing.sell_proceeds(t[0], t[1], min(t[2], t[0]), t[3]) if t[0] else 0,
                *pricing.prices(t[0], t[1], t[3]),
            )
            for t in order
        }

    first = run(trades)
    assert run(trades) == first
    assert run(list(reversed(trades))) == first
    with decimal_only():
        assert run(trades) == first


# --------------------------------------------------------------------------- the edge-case table


@pytest.fixture(params=["fast", "decimal"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a table test as is, and again with every cost forced through the decimal fallback."""
    if request.param == "decimal":
        monkeypatch.setattr(pricing, "_REL", 1.0)
    return str(request.param)


@pytest.mark.parametrize(("q_self", "q_other", "shares", "b"), edge_buys())
def test_edge_table_buy_cost(path: str, q_self: int, q_other: int, shares: int, b: int) -> None:
    exact = ref.buy_cost(q_self, q_other, shares, b)
    assert exact.decided()  # every table case is decided by the reference: the engine must be exact
    assert pricing.buy_cost(q_self, q_other, shares, b) == exact.ceil()


@pytest.mark.parametrize(("q_self", "q_other", "shares", "b"), edge_sells())
def test_edge_table_sell_proceeds(path: str, q_self: int, q_other: int, shares: int, b: int) -> None:
    exact = ref.sell_proceeds(q_self, q_other, shares, b)
    assert exact.decided()
    assert pricing.sell_proceeds(q_self, q_other, shares, b) == exact.floor()


@pytest.mark.parametrize(
    ("q_self", "q_other", "b"), [pytest.param(q1, q2, b, id=name) for name, q1, q2, b in EDGE_STATES]
)
def test_edge_table_prices(q_self: int, q_other: int, b: int) -> None:
    expected, decided = ref.price_half_even(q_self, q_other, b)
    assert decided
    assert pricing.price_micro(q_self, q_other, b) == expected
    yes, no = pricing.prices(q_self, q_other, b)
    assert (yes, no) == (expected, MICRO - expected)
    if q_self == q_other:
        assert yes == 500_000
    if abs(q_self - q_other) >= 50 * b:  # 1e6 * e^-50 ~ 2e-16: fully one-sided after rounding
        assert yes == (MICRO if q_self > q_other else 0)


@pytest.mark.parametrize(("q_self", "q_other", "shares", "b", "expected"), BOUNDARY_BUYS)
def test_boundary_buy_cost(
    path: str, monkeypatch: pytest.MonkeyPatch, q_self: int, q_other: int, shares: int, b: int, expected: int
) -> None:
    fallbacks = _count_fallbacks(monkeypatch)
    assert ref.buy_cost(q_self, q_other, shares, b).ceil() == expected
    assert pricing.buy_cost(q_self, q_other, shares, b) == expected
    assert fallbacks() == 1  # the float interval straddles the boundary: the decimal path decided


@pytest.mark.parametrize(("q_self", "q_other", "shares", "b", "expected"), BOUNDARY_SELLS)
def test_boundary_sell_proceeds(
    path: str, monkeypatch: pytest.MonkeyPatch, q_self: int, q_other: int, shares: int, b: int, expected: int
) -> None:
    fallbacks = _count_fallbacks(monkeypatch)
    assert ref.sell_proceeds(q_self, q_other, shares, b).floor() == expected
    assert pricing.sell_proceeds(q_self, q_other, shares, b) == expected
    assert fallbacks() == 1


def _count_fallbacks(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    count = [0]
    original = pricing._delta_decimal

    def spy(lead: int, shares: int, b: int) -> tuple[int, Decimal]:
        count[0] += 1
        return original(lead, shares, b)

    monkeypatch.setattr(pricing, "_delta_decimal", spy)
    return lambda: count[0]


@pytest.mark.parametrize("k", [0, 1, 7, 268_941, 499_999, 500_000, 731_058, 999_998])
def test_price_next_to_a_half_takes_the_decimal_path(monkeypatch: pytest.MonkeyPatch, k: int) -> None:
    """With b = 1e9 units, d can put 1e6 * sigmoid(d/b) within ~1e-10 of k + 0.5 (float bound ~7e-9)."""
    b = MAX_LIQUIDITY
    with localcontext(ref.CTX) as ctx:
        p = (Decimal(k) + Decimal("0.5")) / MICRO
        d = int((b * ctx.ln(p / (1 - p))).to_integral_value())
    q_self, q_other = max(d, 0), max(-d, 0)
    expected, decided = ref.price_half_even(q_self, q_other, b)
    assert decided and expected in (k, k + 1)
    entered: list[object] = []
    original = localcontext  # the object engine.pricing imported

    def spy(ctx: Any = None) -> Any:
        entered.append(ctx)
        return original(ctx)

    monkeypatch.setattr(pricing, "localcontext", spy)
    assert pricing.price_micro(q_self, q_other, b) == expected
    assert len(entered) == 1
    assert pricing.prices(q_other, q_self, b) == (MICRO - expected, expected)


@pytest.mark.parametrize("b", [MIN_LIQUIDITY, 13 * MICRO + 7, MAX_LIQUIDITY])
@pytest.mark.parametrize("d", [0, -MAX_TOTAL, MAX_TOTAL, -400 * MICRO, 400 * MICRO])
def test_one_micro_unit_always_buys_a_micro_share(b: int, d: int) -> None:
    q_self, q_other = max(d, 0), max(-d, 0)
    limit = min(MAX_QUANTITY, MAX_TOTAL - q_self) + 1
    if limit == 1:
        return
    assert pricing.shares_for_amount(q_self, q_other, 1, b, limit) >= 1
    assert pricing.shares_for_amount(q_self, q_other, 0, b, limit) == 0


def test_shares_for_amount_table() -> None:
    b = MICRO
    cost = pricing.buy_cost(0, 0, 10 * MICRO, b)
    assert pricing.shares_for_amount(0, 0, cost, b, MAX_QUANTITY) >= 10 * MICRO
    assert pricing.shares_for_amount(0, 0, cost - 1, b, MAX_QUANTITY) < 10 * MICRO
    assert pricing.shares_for_amount(0, 0, MAX_QUANTITY, b, 5) == 5  # stops at the limit
    assert pricing.shares_for_amount(0, 0, MAX_QUANTITY, b, 0) == 0
    # Far behind, a unit buys every share up to level (~400 units) and then about one more unit of shares.
    s = pricing.shares_for_amount(0, 400 * MICRO, MICRO, b, MAX_QUANTITY)
    assert 400 * MICRO < s < 402 * MICRO
    assert pricing.buy_cost(0, 400 * MICRO, s, b) <= MICRO < pricing.buy_cost(0, 400 * MICRO, s + 1, b)


def test_same_inputs_same_integers_table() -> None:
    for _, q_self, q_other, b in EDGE_STATES:
        s = min(b, MAX_TOTAL - q_self) or 1
        first = (pricing.buy_cost(q_self, q_other, s, b), pricing.prices(q_self, q_other, b))
        for _ in range(3):
            assert (pricing.buy_cost(q_self, q_other, s, b), pricing.prices(q_self, q_other, b)) == first


# --------------------------------------------------------------------------- orders: div_half_even, avg_price, fill


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [
        (0, 7, 0),
        (1, 3, 0),
        (2, 3, 1),
        (6, 3, 2),
        (1, 2, 0),
        (3, 2, 2),
        (5, 2, 2),
        (7, 2, 4),  # ties go to the even neighbour
        (2, 4, 0),
        (6, 4, 2),
        (10, 4, 2),
        (14, 4, 4),
        (5, 10, 0),
        (15, 10, 2),
        (25, 10, 2),
        (10**30 + 1, 2, 10**30 // 2),
        (10**30 + 3, 2, 10**30 // 2 + 2),
    ],
)
def test_div_half_even_table(numerator: int, denominator: int, expected: int) -> None:
    assert div_half_even(numerator, denominator) == expected


@bounded(500)
@given(st.integers(0, 10**24), st.integers(1, 10**16))
def test_div_half_even_matches_fraction_rounding(numerator: int, denominator: int) -> None:
    assert div_half_even(numerator, denominator) == round(Fraction(numerator, denominator))  # banker's rounding


@pytest.mark.parametrize(
    ("cost", "shares", "expected"),
    [
        (1, 2 * MICRO, 0),  # 0.5 micro per share -> 0
        (3, 2 * MICRO, 2),  # 1.5 -> 2
        (5, 2 * MICRO, 2),  # 2.5 -> 2
        (7, 2 * MICRO, 4),  # 3.5 -> 4
        (1, 2, 500_000),  # exact
        (1, 3, 333_333),
        (2, 3, 666_667),
        (500_001, 1_000_000, 500_001),
        (0, 5, 0),
        (MICRO, MICRO, MICRO),
    ],
)
def test_avg_price_rounds_half_even(cost: int, shares: int, expected: int) -> None:
    assert avg_price(cost, shares) == expected


@pytest.mark.parametrize("outcome", list(Outcome))
def test_fill_buy_by_shares(outcome: Outcome) -> None:
    q_yes, q_no, b = 3 * MICRO, 11 * MICRO, 7 * MICRO
    q_self, q_other = (q_yes, q_no) if outcome is Outcome.YES else (q_no, q_yes)
    result = yes_no_fill(q_yes, q_no, b, Side.BUY, outcome, shares=2 * MICRO)
    cost = pricing.buy_cost(q_self, q_other, 2 * MICRO, b)
    new = (q_yes + 2 * MICRO, q_no) if outcome is Outcome.YES else (q_yes, q_no + 2 * MICRO)
    assert result == Fill(2 * MICRO, cost, new, pricing.prices(*new, b), avg_price(cost, 2 * MICRO))


@pytest.mark.parametrize("outcome", list(Outcome))
def test_fill_buy_by_amount(outcome: Outcome) -> None:
    q_yes, q_no, b = 3 * MICRO, 11 * MICRO, 7 * MICRO
    q_self, q_other = (q_yes, q_no) if outcome is Outcome.YES else (q_no, q_yes)
    result = yes_no_fill(q_yes, q_no, b, Side.BUY, outcome, amount=5 * MICRO)
    assert result.shares == pricing.shares_for_amount(q_self, q_other, 5 * MICRO, b, MAX_QUANTITY + 1)
    assert result.cost == pricing.buy_cost(q_self, q_other, result.shares, b) <= 5 * MICRO
    assert pricing.buy_cost(q_self, q_other, result.shares + 1, b) > 5 * MICRO


@pytest.mark.parametrize("outcome", list(Outcome))
def test_fill_sell(outcome: Outcome) -> None:
    q_yes, q_no, b = 13 * MICRO, 11 * MICRO, 7 * MICRO
    q_self, q_other = (q_yes, q_no) if outcome is Outcome.YES else (q_no, q_yes)
    result = yes_no_fill(q_yes, q_no, b, Side.SELL, outcome, shares=q_self)  # everything outstanding
    assert result.cost == pricing.sell_proceeds(q_self, q_other, q_self, b)
    assert (result.totals[0] if outcome is Outcome.YES else result.totals[1]) == 0
    assert sum(result.prices) == MICRO


def test_fill_sell_rounding_to_zero_is_allowed() -> None:
    result = yes_no_fill(MICRO, MICRO, MICRO, Side.SELL, Outcome.YES, shares=1)
    assert (result.cost, result.avg_price, result.totals[0]) == (0, 0, MICRO - 1)


def test_fill_amount_that_buys_nothing_is_rejected() -> None:
    with pytest.raises(ValidationError, match="cannot buy one micro-share"):
        yes_no_fill(0, 0, MICRO, Side.BUY, Outcome.YES, amount=0)
    with pytest.raises(ValidationError, match="cannot buy one micro-share"):
        yes_no_fill(0, 400 * MICRO, MICRO, Side.BUY, Outcome.YES, amount=0)  # even where shares are nearly free


@pytest.mark.parametrize("outcome", list(Outcome))
def test_fill_sell_more_than_outstanding(outcome: Outcome) -> None:
    with pytest.raises(InsufficientShares):
        yes_no_fill(5 * MICRO, 5 * MICRO, MICRO, Side.SELL, outcome, shares=5 * MICRO + 1)
    with pytest.raises(InsufficientShares):
        yes_no_fill(0, 0, MICRO, Side.SELL, outcome, shares=1)


def test_fill_buy_up_to_the_outstanding_limit() -> None:
    b = MICRO
    q_yes = MAX_TOTAL - 10
    result = yes_no_fill(q_yes, 0, b, Side.BUY, Outcome.YES, shares=10)
    assert result.totals[0] == MAX_TOTAL
    with pytest.raises(ValidationError, match="may not exceed"):
        yes_no_fill(q_yes, 0, b, Side.BUY, Outcome.YES, shares=11)
    with pytest.raises(ValidationError, match="may not exceed"):
        yes_no_fill(0, q_yes, b, Side.BUY, Outcome.NO, shares=11)
    with pytest.raises(ValidationError, match="may not exceed"):
        yes_no_fill(q_yes, q_yes, b, Side.BUY, Outcome.YES, amount=MICRO)  # one unit buys ~2 units of shares
    with pytest.raises(ValidationError):
        yes_no_fill(0, 0, b, Side.BUY, Outcome.YES, shares=MAX_QUANTITY + 1)
    assert yes_no_fill(0, 0, b, Side.BUY, Outcome.YES, shares=MAX_QUANTITY).totals[0] == MAX_QUANTITY
