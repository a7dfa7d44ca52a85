"""Pricing test cases shared by the two- and n-outcome pricing tests: hypothesis strategies over the
whole contract range and hand-made tables of edge and rounding-boundary cases (micro-units throughout)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st
from predmarket.engine.units import MAX_LIQUIDITY, MAX_QUANTITY, MAX_TOTAL, MICRO, MIN_LIQUIDITY

State = tuple[int, int, int]  # (q_self, q_other, b)
Trade = tuple[int, int, int, int]  # (q_self, q_other, shares, b)


def bounded(max_examples: int) -> settings:
    """Deterministic, deadline-free hypothesis settings with a fixed example budget."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )




@st.composite
def log_int(draw: st.DrawFn, lo: int, hi: int) -> int:
    """An integer in ``[lo, hi]`` whose number of digits is uniform: covers every magnitude."""
    assert 0 <= lo <= hi
    digits = draw(st.integers(len(str(lo)), len(str(hi))))
    return draw(st.integers(max(lo, 10 ** (digits - 1) if digits > 1 else 0), min(hi, 10**digits - 1)))


liquidities = st.one_of(
    st.sampled_from([MIN_LIQUIDITY, MAX_LIQUIDITY, 3 * MICRO, 7_777_777, 10**14 + 1]),
    log_int(MIN_LIQUIDITY, MAX_LIQUIDITY),
)

EXTREME_RATIOS = [50, 60, 61, 100, 140, 300, 700, 746, 800, 10_000]


@st.composite
def states(draw: st.DrawFn) -> State:
    """``(q_self, q_other, b)`` within the contract: both totals in ``[0, 9e15]``, ``b`` in ``[1e6, 1e15]``."""
    b = draw(liquidities)
    kind = draw(st.sampled_from(["zero", "ratio", "extreme", "absolute", "limit"]))
    sign = draw(st.sampled_from([1, -1]))
    if kind == "zero":
        d = 0
    elif kind == "ratio":
        d = round(draw(st.floats(-70.0, 70.0, allow_nan=False)) * b)
    elif kind == "extreme":
        d = sign * (draw(st.sampled_from(EXTREME_RATIOS)) * b + draw(st.integers(-1000, 1000)))
    elif kind == "absolute":
        d = sign * draw(log_int(1, MAX_TOTAL))
    else:
        d = sign * (MAX_TOTAL - draw(st.integers(0, 1000)))
    d = max(-MAX_TOTAL, min(MAX_TOTAL, d))
    room = MAX_TOTAL - abs(d)
    base = draw(st.one_of(st.just(0), log_int(0, room))) if room > 0 else 0
    return base + max(d, 0), base + max(-d, 0), b


def trade_size(draw: st.DrawFn, b: int, cap: int) -> int:
    """A trade size in ``[1, cap]``: tiny, any magnitude, a multiple of ``b``, or ``cap`` itself."""
    assert cap >= 1
    kind = draw(st.sampled_from(["tiny", "log", "ratio", "cap"]))
    if kind == "tiny":
        s = draw(st.integers(1, 1000))
    elif kind == "log":
        s = draw(log_int(1, cap))
    elif kind == "ratio":
        s = round(b * draw(st.floats(1e-9, 200.0)))
    else:
        s = cap
    return max(1, min(cap, s))


@st.composite
def buys(draw: st.DrawFn) -> Trade:
    """A buy the contract allows: at most 1e9 units, outstanding stays within 9e9 units."""
    q_self, q_other, b = draw(states())
    cap = min(MAX_QUANTITY, MAX_TOTAL - q_self)
    assume(cap >= 1)
    return q_self, q_other, trade_size(draw, b, cap), b


@st.composite
def sells(draw: st.DrawFn) -> Trade:
    """A sell of at most the outstanding shares (sometimes all of them, even beyond 1e9 units)."""
    q_self, q_other, b = draw(states())
    assume(q_self >= 1)
    if draw(st.booleans()):
        return q_self, q_other, q_self, b
    return q_self, q_other, trade_size(draw, b, min(q_self, MAX_QUANTITY)), b


@st.composite
def amount_orders(draw: st.DrawFn) -> tuple[int, int, int, int, int]:
    q_self, q_other, b = draw(states())
    room = min(MAX_QUANTITY, MAX_TOTAL - q_self)
    amount = draw(st.one_of(st.integers(0, 10), log_int(0, MAX_QUANTITY)))
    limit = draw(st.one_of(st.just(room + 1), st.just(room), log_int(0, room + 1)))
    return q_self, q_other, amount, b, limit


def imbalances(b: int) -> list[tuple[str, int]]:
    out = [("0", 0)]
    for k in (50, 60, 700):
        if k * b <= MAX_TOTAL:
            out += [(f"+{k}b", k * b), (f"-{k}b", -k * b)]
    out += [("+9e9u", MAX_TOTAL), ("-9e9u", -MAX_TOTAL)]
    return out


def edge_states() -> list[tuple[str, int, int, int]]:
    """(id, q_self, q_other, b): b at both ends, each imbalance, with no or a deep common base."""
    states_: list[tuple[str, int, int, int]] = []
    for b_name, b in (("b=1u", MIN_LIQUIDITY), ("b=1e9u", MAX_LIQUIDITY)):
        for d_name, d in imbalances(b):
            base_room = min(MAX_QUANTITY, MAX_TOTAL - abs(d))
            for base_name, base in (("", 0), ("+base", base_room)):
                if base_name and base == 0:
                    continue
                states_.append((f"{b_name},d={d_name}{base_name}", base + max(d, 0), base + max(-d, 0), b))
    return states_


EDGE_STATES = edge_states()


def edge_buys() -> list[Any]:
    cases = []
    for name, q_self, q_other, b in EDGE_STATES:
        cap = min(MAX_QUANTITY, MAX_TOTAL - q_self)
        sizes = {"1micro": 1, "b": b, "1e9u": MAX_QUANTITY, "to-9e9u": cap}
        for s_name, s in sizes.items():
            if 1 <= s <= cap:
                cases.append(pytest.param(q_self, q_other, s, b, id=f"{name},buy={s_name}"))
    return cases


def edge_sells() -> list[Any]:
    cases = []
    for name, q_self, q_other, b in EDGE_STATES:
        sizes = {"1micro": 1, "b": b, "1e9u": MAX_QUANTITY, "all": q_self}
        for s_name, s in sizes.items():
            if 1 <= s <= q_self:
                cases.append(pytest.param(q_self, q_other, s, b, id=f"{name},sell={s_name}"))
    return cases


# Cases whose exact value is an integer or within 1e-100 of one: the float interval always straddles the
# rounding boundary, so these are decided by the decimal fallback; the expected values are worked out by hand.
U = MICRO
BOUNDARY_BUYS = [
    # d from -D to +D: C(after) - C(before) = D exactly (the log terms cancel), for any b.
    pytest.param(0, 1, 2, 3 * U, 1, id="flip-1micro-b3u"),
    pytest.param(0, 7 * U + 1, 14 * U + 2, 3 * U, 7 * U + 1, id="flip-7u-b3u"),
    pytest.param(0, 400 * U, 800 * U, U, 400 * U, id="flip-400b"),
    pytest.param(0, 123_456_789, 246_913_578, 7_777_777, 123_456_789, id="flip-odd"),
    pytest.param(5 * U, 5 * U + MAX_QUANTITY // 2, MAX_QUANTITY, MAX_LIQUIDITY, MAX_QUANTITY // 2, id="flip-1e9u"),
    # far behind: exact cost is a tiny positive number (e^-400 * 1e-6, e^-9e9 ...): rounded up to 1.
    pytest.param(0, 400 * U, 1, U, 1, id="behind-400b-1micro"),
    pytest.param(0, 400 * U, 200 * U, U, 1, id="behind-400b-200u"),
    pytest.param(0, MAX_TOTAL, 1, U, 1, id="behind-9e9u-1micro"),
    pytest.param(0, MAX_TOTAL, MAX_QUANTITY, U, 1, id="behind-9e9u-1e9u"),
    pytest.param(0, 150 * MAX_LIQUIDITY // 20, 1, MAX_LIQUIDITY // 20, 1, id="behind-150b-bigb"),
    # far ahead: exact cost is shares minus a tiny number: rounded up to shares.
    pytest.param(400 * U, 0, 1, U, 1, id="ahead-400b-1micro"),
    pytest.param(MAX_TOTAL - MAX_QUANTITY, 0, MAX_QUANTITY, U, MAX_QUANTITY, id="ahead-8e9u-1e9u"),
]
BOUNDARY_SELLS = [
    pytest.param(2, 1, 2, 3 * U, 1, id="flip-1micro-b3u"),
    pytest.param(14 * U + 2, 7 * U + 1, 14 * U + 2, 3 * U, 7 * U + 1, id="flip-7u-b3u-all"),
    pytest.param(800 * U, 400 * U, 800 * U, U, 400 * U, id="flip-400b-all"),
    # far ahead: exact proceeds are shares minus a tiny number: rounded down to shares - 1.
    pytest.param(400 * U + 1, 0, 1, U, 0, id="ahead-400b-1micro"),
    pytest.param(400 * U + 5, 0, 5, U, 4, id="ahead-400b-5micro"),
    pytest.param(MAX_TOTAL, 0, 5, U, 4, id="ahead-9e9u-5micro"),
    pytest.param(MAX_TOTAL, 0, MAX_QUANTITY, U, MAX_QUANTITY - 1, id="ahead-9e9u-1e9u"),
    # far behind: exact proceeds are tiny: rounded down to 0.
    pytest.param(1, 400 * U, 1, U, 0, id="behind-400b-1micro"),
    pytest.param(MAX_QUANTITY, MAX_TOTAL, MAX_QUANTITY, U, 0, id="behind-9e9u-sell-all"),
]
