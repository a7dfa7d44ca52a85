"""An independent 50-digit ``decimal`` reference for the binary LMSR.

Written from the contract's cost function, not from ``engine.pricing``::

    C(q_yes, q_no) = b * ln(exp(q_yes / b) + exp(q_no / b))
                   = max(q_yes, q_no) + b * ln(1 + exp(-|q_yes - q_no| / b))

All arguments are integers of micro-units. ``C`` is kept as the pair
``(max(q), b * ln(1 + exp(-|d| / b)))``: the first part is an exact integer, the
second lies in ``(0, b ln 2]`` and is computed to 50 significant digits (with
``ln(1 + y)`` taken from its series when ``y`` is tiny, so even ``exp(-9e9)`` keeps
its full relative precision). A trade's exact cost ``C(after) - C(before)`` is
then ``whole + frac`` with ``whole`` the exact integer difference of the maxima
and ``frac`` the difference of the small parts, which is what a 50-digit
evaluation of ``C(after) - C(before)`` computes too, minus the cancellation of
the two large maxima. :func:`naive_cost` is that literal 50-digit difference,
used to cross-check this one.

Each :class:`Exact` carries ``err``, a generous bound on the error of ``frac``;
tests assert exact rounding wherever the value is farther than that from the
rounding boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Context, Decimal, localcontext

MICRO = 1_000_000
PREC = 50
#: 50 significant digits and an exponent range wide enough for exp(-1e10) ~ 1e-4.4e9.
CTX = Context(prec=PREC, Emax=10**15, Emin=-(10**15))
#: Wider context, only to print or compare ``whole + frac`` without rounding it.
WIDE = Context(prec=120, Emax=10**15, Emin=-(10**15))
LN2 = CTX.ln(Decimal(2))
_SERIES_BELOW = Decimal("1e-10")


def _log1p(y: Decimal) -> Decimal:
    """``ln(1 + y)`` for ``0 <= y <= 1`` to ~50 significant digits, however small ``y`` is."""
    if y < _SERIES_BELOW:
        # y - y^2/2 + y^3/3 - y^4/4 + y^5/5; the first omitted term is below y * 1e-50.
        with localcontext(CTX):
            return y - y**2 / 2 + y**3 / 3 - y**4 / 4 + y**5 / 5
    return CTX.ln(CTX.add(Decimal(1), y))


def small_part(d: int, b: int) -> Decimal:
    """``b * ln(1 + exp(-|d| / b))``: the part of ``C`` above ``max(q)``."""
    t = CTX.divide(Decimal(abs(d)), Decimal(b))
    y = CTX.exp(CTX.minus(t))
    return CTX.multiply(Decimal(b), _log1p(y))


def small_part_rel_err(d: int, b: int) -> Decimal:
    """Bound on the relative error of :func:`small_part`.

    Rounding ``t = |d| / b`` to 50 digits moves it by up to ``t * 5e-50``, which
    is a relative error of ``exp(-t)`` of the same size; the remaining handful of
    correctly rounded operations add a few more units of 5e-50.
    """
    with localcontext(WIDE):
        return (Decimal(abs(d)) / Decimal(b) + 10) * Decimal("1e-49")


@dataclass(frozen=True)
class Exact:
    """``whole + frac`` with ``whole`` exact and ``|frac - true| <= err``."""

    whole: int
    frac: Decimal
    err: Decimal

    def value(self) -> Decimal:
        return WIDE.add(Decimal(self.whole), self.frac)

    def ceil(self) -> int:
        return self.whole + int(self.frac.to_integral_value(rounding=ROUND_CEILING))

    def floor(self) -> int:
        return self.whole + int(self.frac.to_integral_value(rounding=ROUND_FLOOR))

    def distance_to_integer(self) -> Decimal:
        # Both sides separately: 1 - 1e-174 would round to 1, but 1e-174 itself is exact.
        below = WIDE.subtract(self.frac, self.frac.to_integral_value(rounding=ROUND_FLOOR))
        above = WIDE.subtract(self.frac.to_integral_value(rounding=ROUND_CEILING), self.frac)
        return min(below, above)

    def decided(self) -> bool:
        """True when ``ceil``/``floor`` of the reference are certainly those of the true value."""
        if self.err == 0:
            return True
        return self.distance_to_integer() > WIDE.multiply(4, self.err)


def cost_function(q_yes: int, q_no: int, b: int) -> tuple[int, Decimal]:
    """``C(q_yes, q_no)`` as ``(max(q), b * ln(1 + exp(-|q_yes - q_no| / b)))``."""
    return max(q_yes, q_no), small_part(q_yes - q_no, b)


def _difference(after: tuple[int, int], before: tuple[int, int], b: int) -> Exact:
    """``C(after) - C(before)`` for two states given as ``(q_self, q_other)``."""
    (m_after, s_after), (m_before, s_before) = cost_function(*after, b), cost_function(*before, b)
    if abs(after[0] - after[1]) == abs(before[0] - before[1]):
        # The same |d| on both sides: the small parts are equal and the cost is exactly an integer.
        return Exact(m_after - m_before, Decimal(0), Decimal(0))
    frac = CTX.subtract(s_after, s_before)
    with localcontext(WIDE):
        err = (
            s_after * small_part_rel_err(after[0] - after[1], b)
            + s_before * small_part_rel_err(before[0] - before[1], b)
            + abs(frac) * Decimal("1e-49")  # the subtraction's own rounding
        )
    return Exact(m_after - m_before, frac, err)


def buy_cost(q_self: int, q_other: int, shares: int, b: int) -> Exact:
    """Exact ``C(q_self + shares, q_other) - C(q_self, q_other)``."""
    return _difference((q_self + shares, q_other), (q_self, q_other), b)


def sell_proceeds(q_self: int, q_other: int, shares: int, b: int) -> Exact:
    """Exact ``C(q_self, q_other) - C(q_self - shares, q_other)``."""
    return _difference((q_self, q_other), (q_self - shares, q_other), b)


def naive_cost(q_self: int, q_other: int, shares: int, b: int) -> Decimal:
    """``C(after) - C(before)`` literally, each ``C`` a single 50-digit number (for cross-checks)."""

    def c(q1: int, q2: int) -> Decimal:
        return CTX.add(Decimal(max(q1, q2)), small_part(q1 - q2, b))

    return CTX.subtract(c(q_self + shares, q_other), c(q_self, q_other))


def price(q_self: int, q_other: int, b: int) -> Decimal:
    """Exact ``1e6 * sigmoid((q_self - q_other) / b)``: the price in micro-units, unrounded."""
    z = CTX.divide(Decimal(q_self - q_other), Decimal(b))
    return CTX.divide(Decimal(MICRO), CTX.add(Decimal(1), CTX.exp(CTX.minus(z))))


def price_half_even(q_self: int, q_other: int, b: int) -> tuple[int, bool]:
    """``(round_half_even(price), decided)``; ``decided`` is False within 1e-40 of a tie."""
    p = price(q_self, q_other, b)
    rounded = int(p.to_integral_value(rounding=ROUND_HALF_EVEN))
    if q_self == q_other:
        return rounded, True  # exactly 500000
    below = WIDE.subtract(p, p.to_integral_value(rounding=ROUND_FLOOR))
    return rounded, abs(WIDE.subtract(below, Decimal("0.5"))) > Decimal("1e-40")


def subsidy(b: int) -> int:
    """``ceil(b * ln 2)``; never an integer (ln 2 is irrational), and 50 digits leave 1e-35 to spare."""
    return int(CTX.multiply(Decimal(b), LN2).to_integral_value(rounding=ROUND_CEILING))
