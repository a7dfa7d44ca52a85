"""An independent 50-digit ``decimal`` reference for the LMSR with 2–16 outcomes.

Written from the contract's formulas, not from ``engine.pricing_n``::

    C(q) = b * ln(sum_i exp(q_i / b)),    price_k = exp(q_k / b) / sum_j exp(q_j / b)

Buying ``s`` shares of outcome ``k`` multiplies the sum by ``1 + p_k * (e^(s/b) - 1)``,
``p_k`` being k's price before the trade, so its exact cost is::

    b * ln(1 + p_k * expm1(s/b))                       when p_k <= 1/2
    s + b * ln(1 - (1 - p_k) * (1 - e^(-s/b)))         when p_k >  1/2

(The engine instead moves k's lead by the log-sum of the others and takes a
difference of two softplus values: a different route to the same number.)
``p_k`` and ``1 - p_k`` are both ratios of sums of the weights
``w_j = exp((q_j - max q) / b)`` in ``(0, 1]``, so each keeps its full relative
precision however small it is; ``expm1`` and ``ln(1 + z)`` are taken in a
120-digit context, where ``1 + z`` cannot cancel. The cost is then
``whole + frac`` (``whole`` 0 or ``s``) with ``frac`` correct to about 50
significant digits: a trade that starts far behind (a tiny cost) or far ahead
(``s`` minus a tiny number) is decided as well as any other.

A trade that *ends* far ahead of everything costs ``max(after) - max(before)``
minus a tiny number, which the form above only knows to ``1e-49`` relative.
A second derivation covers it: ``C(q) = max q + b * ln(1 + sigma)`` with
``sigma`` the sum of the weights but one leader's, so the cost is the exact
integer ``max(after) - max(before)`` plus a difference of two such small parts,
each with its relative precision (what :mod:`tests.support.reference` does for two
outcomes). :func:`buy_cost` returns whichever of the two has the smaller error
bound; a test checks that they agree. Sale proceeds are the cost of buying the
same shares back from the state after the sale.

Exact integers: ``C(after) - C(before)`` is an integer ``c`` exactly when the
totals after are those before shifted by ``c``, up to order (``exp(1/b)`` is
transcendental); such cases are recognised by counting the totals and given
``err = 0``, as :mod:`tests.support.reference` does for the binary flip.

Error bounds: rounding ``t_j = (max q - q_j) / b`` to 50 digits moves ``w_j`` by
``t_j`` half-ulps relative; a handful of correctly rounded operations add a few
more; ``p_k``, ``1 - p_k`` and ``sigma`` are thus within ``(T + 10) * 1e-49``
relative (``T = max t_j``), and ``ln(1 + z)`` at most doubles a relative error
for ``z`` in ``(-1/2, 0)`` and does not grow it for ``z > 0``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Context, Decimal, localcontext

from tests.support.reference import CTX, WIDE, Exact

MICRO = 1_000_000
#: Only for ``expm1`` and ``ln(1 + z)``: 1 + z must not cancel.
_WORK = Context(prec=120, Emax=10**15, Emin=-(10**15))
_HALF = Decimal("0.5")
_SERIES_BELOW = Decimal("1e-30")


def weights(q: Sequence[int], b: int) -> list[Decimal]:
    """``exp((q_j - max q) / b)`` for every outcome, to 50 digits."""
    top, bd = max(q), Decimal(b)
    return [CTX.exp(CTX.minus(CTX.divide(Decimal(top - x), bd))) for x in q]


def _spread(q: Sequence[int], b: int) -> Decimal:
    """``T``: the largest ``(max q - q_j) / b``, which sizes the error bound."""
    return WIDE.divide(Decimal(max(q) - min(q)), Decimal(b))


def _total(terms: Sequence[Decimal]) -> Decimal:
    total = Decimal(0)
    for t in terms:
        total = CTX.add(total, t)
    return total


def _ln1p(z: Decimal) -> Decimal:
    """``ln(1 + z)`` for ``z > -1/2`` to 50 significant digits, however small ``|z|`` is."""
    if CTX.abs(z) < _SERIES_BELOW:
        with localcontext(_WORK):  # the first omitted term, z^4/4, is below |z| * 1e-90
            return CTX.plus(z - z**2 / 2 + z**3 / 3)
    return CTX.plus(_WORK.ln(_WORK.add(Decimal(1), z)))


def _is_shift(before: Sequence[int], after: Sequence[int]) -> int | None:
    """``c`` when ``after`` is ``before`` shifted by ``c`` up to order, else None."""
    shift = max(after) - max(before)
    return shift if Counter(after) == Counter(x + shift for x in before) else None


def _by_price(q: Sequence[int], k: int, shares: int, b: int) -> Exact:
    """The cost from k's price: relative precision for what lies beyond ``0`` or ``shares``."""
    w = weights(q, b)
    total = _total(w)
    x = _WORK.divide(Decimal(shares), Decimal(b))
    if CTX.divide(w[k], total) <= _HALF:
        p = CTX.divide(w[k], total)
        z = CTX.multiply(p, CTX.plus(_WORK.subtract(_WORK.exp(x), 1)))  # p * expm1(x)
        whole = 0
    else:
        p_bar = CTX.divide(_total([v for j, v in enumerate(w) if j != k]), total)  # 1 - p_k, relatively exact
        z = CTX.minus(CTX.multiply(p_bar, CTX.plus(_WORK.subtract(1, _WORK.exp(_WORK.minus(x))))))
        whole = shares
    frac = CTX.multiply(Decimal(b), _ln1p(z))
    err = WIDE.multiply(CTX.abs(frac), WIDE.multiply(WIDE.add(_spread(q, b), 20), Decimal("2e-49")))
    return Exact(whole, frac, err)


def _small_part(q: Sequence[int], b: int) -> tuple[Decimal, Decimal]:
    """``b * ln(sum_j w_j) = b * ln(1 + sigma)``, sigma the weights but one leader's, and its error bound."""
    w = weights(q, b)
    w.remove(max(w))  # one leader's weight, exactly 1
    small = CTX.multiply(Decimal(b), _ln1p(_total(w)))
    return small, WIDE.multiply(small, WIDE.multiply(WIDE.add(_spread(q, b), 20), Decimal("1e-49")))


def _by_levels(q: Sequence[int], after: Sequence[int], b: int) -> Exact:
    """The cost as ``max(after) - max(before)`` plus the difference of the small parts of ``C``.

    Each small part keeps its relative precision (a trade that ends far ahead of
    every other outcome), the difference only an absolute one of ~b * 1e-49.
    """
    small_after, err_after = _small_part(after, b)
    small_before, err_before = _small_part(q, b)
    frac = CTX.subtract(small_after, small_before)
    err = WIDE.add(WIDE.add(err_after, err_before), WIDE.multiply(CTX.abs(frac), Decimal("1e-49")))
    return Exact(max(after) - max(q), frac, err)


def buy_cost(q: Sequence[int], k: int, shares: int, b: int) -> Exact:
    """Exact ``C(q + shares e_k) - C(q)``: of two derivations, the one with the smaller error bound."""
    after = list(q)
    after[k] += shares
    shift = _is_shift(q, after)
    if shift is not None:
        return Exact(shift, Decimal(0), Decimal(0))
    return min(_by_price(q, k, shares, b), _by_levels(q, after, b), key=lambda e: e.err)


def sell_proceeds(q: Sequence[int], k: int, shares: int, b: int) -> Exact:
    """Exact ``C(q) - C(q - shares e_k)``."""
    before = list(q)
    before[k] -= shares
    return buy_cost(before, k, shares, b)


def cost_function(q: Sequence[int], b: int) -> tuple[int, Decimal]:
    """``C(q)`` as ``(max q, b * ln(sum_j w_j))``; the second part lies in ``(0, b ln n]``."""
    return max(q), _small_part(q, b)[0]


def naive_cost(q: Sequence[int], k: int, shares: int, b: int) -> Decimal:
    """``C(after) - C(before)`` literally, each ``C`` one 50-digit number (for cross-checks)."""
    after = list(q)
    after[k] += shares

    def c(state: Sequence[int]) -> Decimal:
        whole, small = cost_function(state, b)
        return CTX.add(Decimal(whole), small)

    return CTX.subtract(c(after), c(q))


def price(q: Sequence[int], k: int, b: int) -> Decimal:
    """``1e6 * exp(q_k/b) / sum_j exp(q_j/b)``: the price in micro-units, unrounded."""
    w = weights(q, b)
    return CTX.divide(CTX.multiply(Decimal(MICRO), w[k]), _total(w))


def price_half_even(q: Sequence[int], k: int, b: int) -> tuple[int, bool]:
    """``(round_half_even(price), decided)``; ``decided`` is False within 1e-40 of a tie."""
    p = price(q, k, b)
    rounded = int(p.to_integral_value(rounding=ROUND_HALF_EVEN))
    below = WIDE.subtract(p, p.to_integral_value(rounding=ROUND_FLOOR))
    return rounded, abs(WIDE.subtract(below, _HALF)) > Decimal("1e-40")


def subsidy(b: int, n: int) -> int:
    """``ceil(b ln n)``: never an integer (ln n is irrational), 50 digits leave 1e-34 to spare."""
    return int(CTX.multiply(Decimal(b), CTX.ln(Decimal(n))).to_integral_value(rounding=ROUND_CEILING))
