"""PricingEngine: the binary LMSR, integers of micro-units in and out, no I/O.

For liquidity ``b`` and outstanding shares ``q_yes``, ``q_no`` the cost function
is ``C = b * ln(exp(q_yes/b) + exp(q_no/b))``. Every function here takes and
returns micro-unit integers; shares and ``b`` are in micro-units too, which
leaves the ratios ``q/b`` unchanged.

Exactness. The contract wants the *exact* cost rounded up (proceeds rounded
down, prices rounded half-even), identical on every replica. A float
evaluation is fast but only close; so each function computes a float value
together with a proven bound on its error. If the whole interval
``value ± bound`` rounds to one integer, that integer is the exactly rounded
result; otherwise (about one call in a million for ordinary markets) the value
is recomputed with 60-digit decimals, which are correctly rounded by the
standard library on every platform. Either way the answer is the exact value
rounded as the contract says, so replicas and replays always agree.

Stability. Differences of the cost function are written as
``b * (softplus(a + x) - softplus(a))`` with ``a`` the lead of the traded
outcome in units of ``b`` and ``x = shares / b``; small trades use
``b * log1p(sigmoid(a) * expm1(x))`` instead, which keeps full relative
precision. Nothing overflows for any state the contract allows
(``|q_yes - q_no|`` up to 9e9 units with ``b`` down to 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Context, Decimal, localcontext

from predmarket.engine.units import MICRO

# 2**-48: a generous multiple of the float evaluation's worst-case relative
# error (a few ulps from exp/log1p and the rounding of a and x); the property
# tests check that observed errors stay below a quarter of this bound.
_REL = 2.0**-48
# The exponent range lets e^-t stay non-zero for every t the contract allows
# (t = |lead| / b up to 1e10, e^-t ~ 1e-4.4e9).
_DEC_CONTEXT = Context(prec=60, Emax=10**12, Emin=-(10**12))
_TINY = Decimal("1e-20")
_LN2 = Decimal(2).ln(_DEC_CONTEXT)
_PRICE_SCALE = float(MICRO)


# --------------------------------------------------------------------------- floats


def _softplus(z: float) -> float:
    """ln(1 + e^z) without overflow."""
    if z > 0:
        return z + math.log1p(math.exp(-z))
    return math.log1p(math.exp(z))


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _delta_float(lead: int, shares: int, b: int) -> tuple[float, float]:
    """``b * (softplus((lead + shares)/b) - softplus(lead/b))`` and its error bound."""
    a = lead / b
    x = shares / b
    if x < 1.0:
        value = b * math.log1p(_sigmoid(a) * math.expm1(x))
    else:
        value = b * (_softplus((lead + shares) / b) - _softplus(a))
    bound = _REL * (abs(lead) + shares + b + value)
    return value, bound


# --------------------------------------------------------------------------- decimals


def _log1p_exp_neg(t: Decimal, ctx: Context) -> Decimal:
    """``ln(1 + e^-t)`` for ``t >= 0``, to full relative precision however large ``t`` is."""
    y = ctx.exp(-t)
    if y < _TINY:  # ln(1 + y) = y - y^2/2 + y^3/3 - ...: the rest is below y * 1e-60
        return y - y * y / 2 + y * y * y / 3
    return ctx.ln(1 + y)


def _delta_decimal(lead: int, shares: int, b: int) -> tuple[int, Decimal]:
    """The exact delta as ``whole + rest``: an integer and a 60-digit remainder.

    ``b * softplus(n / b) = max(n, 0) + b * ln(1 + e^-|n|/b)``: the first part is
    an exact integer, the second keeps its full relative precision however
    small it is. Rounding ``rest`` on its own therefore gets ``ceil``/``floor``
    right even when the delta is an integer (``|lead + shares| == |lead|``) or
    within 1e-100 of one (large ``|lead| / b``), where a difference of two
    60-digit softplus values would lose the sign of the remainder.
    """
    with localcontext(_DEC_CONTEXT) as ctx:
        bd = Decimal(b)
        whole = max(lead + shares, 0) - max(lead, 0)
        hi = _log1p_exp_neg(Decimal(abs(lead + shares)) / bd, ctx)
        lo = _log1p_exp_neg(Decimal(abs(lead)) / bd, ctx)
        return whole, bd * (hi - lo)


# --------------------------------------------------------------------------- rounding


def _ceil_exact(lead: int, shares: int, b: int) -> int:
    value, bound = _delta_float(lead, shares, b)
    up = math.ceil(value - bound)
    if up == math.ceil(value + bound):
        return up
    whole, rest = _delta_decimal(lead, shares, b)
    return whole + int(rest.to_integral_value(rounding=ROUND_CEILING))


def _floor_exact(lead: int, shares: int, b: int) -> int:
    value, bound = _delta_float(lead, shares, b)
    down = math.floor(value - bound)
    if down == math.floor(value + bound):
        return down
    whole, rest = _delta_decimal(lead, shares, b)
    return whole + int(rest.to_integral_value(rounding=ROUND_FLOOR))


# --------------------------------------------------------------------------- public


def buy_cost(q_self: int, q_other: int, shares: int, b: int) -> int:
    """Micro-units charged for buying ``shares`` of the outcome holding ``q_self``.

    ``C(q_self + shares, q_other) - C(q_self, q_other)`` rounded up, so the
    rounding always favours the pool. All arguments are micro-units.
    """
    if shares <= 0:
        return 0
    return _ceil_exact(q_self - q_other, shares, b)


def sell_proceeds(q_self: int, q_other: int, shares: int, b: int) -> int:
    """Micro-units paid out for selling ``shares`` of the outcome holding ``q_self``.

    ``C(q_self, q_other) - C(q_self - shares, q_other)`` rounded down. The
    caller guarantees ``shares <= q_self``.
    """
    if shares <= 0:
        return 0
    return _floor_exact(q_self - shares - q_other, shares, b)


def price_micro(q_self: int, q_other: int, b: int) -> int:
    """Instantaneous price of the ``q_self`` outcome in micro-units, rounded half-even."""
    a = (q_self - q_other) / b
    if a > 60.0:  # 1 - sigmoid(60) ~ 1e-26: the price is exactly 1 after rounding
        return MICRO
    if a < -60.0:
        return 0
    scaled = _sigmoid(a) * _PRICE_SCALE
    bound = (abs(a) + 8.0) * 2.0**-50 * _PRICE_SCALE
    low, high = round(scaled - bound), round(scaled + bound)
    if low == high:
        return low
    with localcontext(_DEC_CONTEXT) as ctx:
        z = Decimal(q_self - q_other) / Decimal(b)
        exact = Decimal(MICRO) / (1 + ctx.exp(-z))
        return int(exact.to_integral_value(rounding=ROUND_HALF_EVEN))


def prices(q_yes: int, q_no: int, b: int) -> tuple[int, int]:
    """``(price_yes, price_no)`` in micro-units; ``price_no = 1 - price_yes`` exactly."""
    yes = price_micro(q_yes, q_no, b)
    return yes, MICRO - yes


def subsidy(b: int) -> int:
    """``ceil(b * ln 2)`` in micro-units: the pool a new market starts with."""
    with localcontext(_DEC_CONTEXT):
        return int((Decimal(b) * _LN2).to_integral_value(rounding=ROUND_CEILING))


def _estimate_shares(lead: int, amount: int, b: int) -> int:
    """Float estimate of the shares ``amount`` buys; refined exactly by the caller."""
    a = lead / b
    target = _softplus(a) + amount / b
    if target <= 0.0:  # amount 0 where softplus(a) underflows (a < -745): log(expm1(0)) would raise
        return 0
    # inverse softplus: ln(e^t - 1), written to stay finite for large t.
    inv = target + math.log(-math.expm1(-target)) if target > 30.0 else math.log(math.expm1(target))
    estimate = (inv - a) * b
    if not math.isfinite(estimate) or estimate < 0:
        return 0
    return int(estimate)


def shares_for_amount(q_self: int, q_other: int, amount: int, b: int, limit: int) -> int:
    """Largest number of micro-shares whose rounded cost is at most ``amount``.

    The search stops at ``limit`` (the caller's bound on the quantity); if even
    ``limit`` shares cost no more than ``amount`` the result is ``limit``, and
    the caller decides whether that is acceptable. Returns 0 when not one
    micro-share is affordable.
    """
    lead = q_self - q_other

    def affordable(shares: int) -> bool:
        return shares == 0 or _ceil_exact(lead, shares, b) <= amount

    guess = min(max(_estimate_shares(lead, amount, b), 0), limit)
    return largest_affordable(affordable, guess, limit)


def largest_affordable(affordable: Callable[[int], bool], guess: int, limit: int) -> int:
    """The largest ``s`` in ``[0, limit]`` with ``affordable(s)`` (non-increasing in s, true at 0).

    Gallops from ``guess`` (a float estimate) to bracket the answer in ``[lo, hi)``,
    then bisects: a few exact evaluations when the estimate is good, ``O(log limit)``
    when it is not. Shared by the binary and the n-outcome buy-by-amount.
    """
    step = 1
    if affordable(guess):
        lo, hi = guess, guess + step
        while hi <= limit and affordable(hi):
            lo = hi
            step *= 2
            hi = lo + step
        hi = min(hi, limit + 1)
    else:
        hi, lo = guess, guess - step
        while lo > 0 and not affordable(lo):
            hi = lo
            step *= 2
            lo = hi - step
        lo = max(lo, 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if affordable(mid):
            lo = mid
        else:
            hi = mid
    return lo
