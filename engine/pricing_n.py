"""PricingEngine for markets of 2–16 outcomes: the n-outcome LMSR, integers of micro-units, no I/O.

``C(q) = b * ln(sum_i exp(q_i / b))``; every argument and result is an integer of
micro-units, as in :mod:`engine.pricing`, whose binary functions this module
calls for two outcomes (so a YES/NO market gets exactly today's integers by
construction) and which knows nothing of this one. The general path below is
proven for two outcomes too: the tests compare it with the binary functions.
It is a module of its own because the binary one is the model the Lua and the
replays already trust, and folding this in would double its length.

The traded outcome against the others. For outcome ``k`` let ``m`` be the
largest of the *other* totals, ``lead = q_k - m`` and
``rho = sum_{j != k} exp((q_j - m) / b)``, which lies in ``[1, n - 1]``. Then
``b * ln(exp(N / b) + rho)`` with ``N = lead`` before and ``lead + shares`` after
a buy differs from ``C`` by ``m`` only, so the cost of a trade is::

    b * (softplus(a + x) - softplus(a)),   a = lead / b - ln(rho),   x = shares / b

the binary formula with the lead moved by ``ln rho``. For two outcomes
``rho = 1`` and ``ln rho = 0`` exactly, in floats and in decimals: the float
value is then the binary one bit for bit (its bound may be tighter, see below),
and so is the decimal remainder, which is only rounded with its error bound
added on the pool's side (a difference only where 60 digits cannot decide).

Exactness, as in :mod:`engine.pricing`: a float value with a proven error bound
decides whenever ``value ± bound`` lies within one rounding step; otherwise the
decimal path decides with 60 digits. The float bound is the binary one,
``2^-48 * (|lead| + shares + b + value)``, plus ``2^-46 * min(b, shares)`` for
``rho`` when there are more than two outcomes: each of the up to 15 terms ``exp(-g / b)``
carries ``(g/b + 2)`` ulps (the division's rounding, scaled by ``g/b``, and exp's
own ulp), which weighted by the term itself is at most ``(1/e + 2)`` ulps of 1;
their sum adds 14 ulps of ``rho``, so ``rho`` is within 50 ulps relative
(``rho >= 1``), ``ln rho`` within 54 ulps absolute; ``|a|`` grows by
``ln rho <= ln 15``, which costs another 3 ulps of rounding. The cost's
derivative in ``a`` is ``b * (sigmoid(a + x) - sigmoid(a))``, at most ``b`` and at
most ``b * x / 4 = shares / 4`` (sigmoid's slope is at most 1/4), so this moves
the value by at most ``57 u * min(b, shares)`` (``u = 2^-53``), which
``2^-46 * min(b, shares) = 128 u * min(b, shares)`` covers twice over; the
property tests check the observed error stays under a quarter of the bound.

That bound is absolute: with ``|lead|`` or ``b`` in the millions of units it
exceeds a micro-unit, and every trade would go to decimals. Trades below ``b``
(``x < 1``, the usual size) are computed as ``b * log1p(sigmoid(a) * expm1(x))``,
whose error is *relative*: ``a`` is within ``2 u |lead| / b + 57 u`` absolutely
(the division, ``ln rho``, the subtraction), which ``sigmoid`` passes on as a
relative error at most that large (its log-slope ``1 - sigmoid`` is below 1) plus
4 u; ``expm1(x)`` is within 4 u, the product 1 u, and ``log1p`` passes a
relative error on at most unchanged and adds 2 u, ``b *`` one more: in all
``2 u |lead| / b + 69 u`` of the value. The bound used is the smaller of the
two, the relative one as ``value * (2^-50 |lead| / b + 2^-44)`` (four and seven
times the derived terms) and only while ``sigmoid(a) * expm1(x)`` stays far
above the subnormal range, where relative precision ends.

The decimal path splits ``b * ln(exp(N/b) + rho)`` into ``max(N, 0)``, an exact
integer, plus ``b * log1p(rho * exp(-N/b))`` (``N >= 0``) or
``b * ln(rho) + b * log1p(exp(N/b) / rho)`` (``N < 0``), so a tiny remainder (a
trade far ahead or far behind) keeps its relative precision and ``b ln rho``
cancels unless the trade takes ``k`` past the others; ``ln rho`` itself is
``log1p(rho - 1)`` with ``rho - 1`` summed on its own, for the same reason. The
remainder carries a bound on its error (relative for tiny remainders, below
1e-40 micro-units otherwise) and ``remainder ± bound`` is rounded toward the
pool: the result is the exact rounding whenever 60 digits decide it, and
otherwise one micro-unit in the pool's favour at most, never against it.

Exact integers. ``C(after) - C(before)`` is an integer ``c`` exactly when the
totals after the trade are those before shifted by ``c``, up to order:
``w = exp(1/b)`` is transcendental (Lindemann), so ``sum w^after_i = w^c sum
w^before_i`` forces the exponents to agree. For two outcomes that is the flip
``d -> -d``; for n it includes ``q = (0, d, 2d, ..., (n-1) d)`` buying ``n d`` of
the first, which costs exactly ``d``. No finite precision decides those, so the
decimal path recognises them first and returns ``c``. The same holds after
leaving out the outcomes over 100 b behind the others' leader (two leaders
swapping places with a third far behind): the delta is then ``c`` minus a
positive number below 1e-27 (more weight beside ``k`` always lowers what moving
``k`` costs), so it rounds up to ``c`` and down to ``c - 1``, also exactly.

What stays undecided is a value within ~1e-40 of an integer for no such
reason: totals spread over thousands of b, where the answer hangs on terms
like e^-6e9 beside e^-3e9 (the independent reference cannot decide those
either); there the result is one micro-unit in the pool's favour at most.

Prices: ``price_k = exp((q_k - M)/b) / sum_j exp((q_j - M)/b)`` with ``M = max q``,
each scaled by 1e6 and rounded half-even independently (the contract's rule),
so for three or more outcomes their sum may differ from 1,000,000 by up to
``n / 2`` micro-units. No price is ever a tie: ``price_k`` is rational only when
all totals are equal, and then ``1e6 / n`` is not a half for ``n <= 16``. For two
outcomes independent rounding gives ``price_no = 1e6 - price_yes`` too, which is
what :func:`engine.pricing.prices` returns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Context, Decimal, localcontext

from predmarket.engine import pricing
from predmarket.engine.pricing import _sigmoid, _softplus  # the binary's stable forms, shared on purpose
from predmarket.engine.units import MICRO

MIN_OUTCOMES = 2
MAX_OUTCOMES = 16

# The binary's bound for lead, shares and the softplus evaluation, and the extra
# for rho and ln(rho) derived in the module docstring.
_REL = 2.0**-48
_REL_RHO = 2.0**-46
# Trades below b: a relative bound, derived in the module docstring.
_REL_LEAD = 2.0**-50
_REL_SMALL = 2.0**-44
_NORMAL = 2.0**-960
# Prices: 1e6 * p with p = e_k / S; e_k is within (t_k + 2) ulps, S within 53 ulps
# (16 terms, each within (1/e + 2) ulps of 1, plus 15 additions), and p * t_k <= 1/e,
# so the error is below 1e6 * 58 u; 1e6 * 2^-45 = 1e6 * 256 u.
_PRICE_BOUND = MICRO * 2.0**-45
_DEC_CONTEXT = Context(prec=60, Emax=10**12, Emin=-(10**12))
_TINY = Decimal("1e-20")
# 20 half-ulps of 60 digits: the unit of the decimal path's error bounds.
_DEC_REL = Decimal("1e-58")
# Others this many b below the others' leader weigh under e^-100 each (see _Outcome._exact).
_NEGLIGIBLE_GAP = 100


def _check(q: Sequence[int], k: int | None = None) -> None:
    if not MIN_OUTCOMES <= len(q) <= MAX_OUTCOMES:
        raise ValueError(f"a market has {MIN_OUTCOMES} to {MAX_OUTCOMES} outcomes, not {len(q)}")
    if k is not None and not 0 <= k < len(q):
        raise ValueError(f"outcome index {k} is not in 0..{len(q) - 1}")


# --------------------------------------------------------------------------- floats


def _delta_float(lead: int, shares: int, b: int, log_rho: float, several: bool) -> tuple[float, float]:
    """``b * (softplus((lead + shares)/b - ln rho) - softplus(lead/b - ln rho))`` and its error bound."""
    a = lead / b - log_rho
    x = shares / b
    relative = math.inf
    if x < 1.0:
        y = _sigmoid(a) * math.expm1(x)
        value = b * math.log1p(y)
        if y > _NORMAL:  # nothing subnormal on the way: the relative bound holds
            relative = value * (_REL_LEAD * abs(lead) / b + _REL_SMALL)
    else:
        value = b * (_softplus((lead + shares) / b - log_rho) - _softplus(a))
    bound = _REL * (abs(lead) + shares + b + value)
    if several:  # the value moves with a at a rate b * (sigmoid(a + x) - sigmoid(a)) <= min(b, shares / 4)
        bound += _REL_RHO * min(b, shares)
    return value, min(bound, relative)


def _estimate_shares(lead: int, amount: int, b: int, log_rho: float) -> int:
    """Float estimate of the shares ``amount`` buys (only a starting point for the exact search)."""
    a = lead / b - log_rho
    target = _softplus(a) + amount / b
    if target <= 0.0:  # log(expm1(0)) would raise
        return 0
    # inverse softplus: ln(e^t - 1), written to stay finite for large t.
    inv = target + math.log(-math.expm1(-target)) if target > 30.0 else math.log(math.expm1(target))
    estimate = (inv - a) * b
    if not math.isfinite(estimate) or estimate < 0:
        return 0
    return int(estimate)


# --------------------------------------------------------------------------- decimals


def _log1p(y: Decimal, ctx: Context) -> tuple[Decimal, bool]:
    """``ln(1 + y)`` for ``0 <= y <= 15``, and whether the (absolutely accurate) ``ln(1 + y)`` form was used."""
    if y < _TINY:  # the series' first omitted term is below y * 1e-60: full relative precision
        return y - y * y / 2 + y * y * y / 3, False
    return ctx.ln(1 + y), True


def _log_part(n: int, bd: Decimal, rho: Decimal, ctx: Context) -> tuple[Decimal, Decimal]:
    """``log1p(rho e^(-n/b))`` (n >= 0) or ``log1p(e^(n/b) / rho)`` (n < 0), with a bound on its error.

    Relative error, in half-ulps of 60 digits: rounding ``t = |n|/b`` moves
    ``e^-t`` by ``t``; ``rho`` is within 36 (up to 15 terms, each within
    ``t_j e^-t_j + 1 <= 1/e + 1`` of 1 absolutely, plus the additions); exp, the
    product and the series add a few; ``ln(1 + y)`` passes ``y``'s relative
    error on at most unchanged and adds under 4 absolutely (``1 + y`` rounded,
    ln rounded). ``(t + 64) * 1e-58`` is 20 half-ulps per unit of that sum.
    """
    t = Decimal(abs(n)) / bd
    e = ctx.exp(-t)
    y = rho * e if n >= 0 else e / rho
    value, absolute = _log1p(y, ctx)
    err = value * (t + 64) * _DEC_REL
    if absolute:
        err += _DEC_REL
    return value, err


def _sigma_decimal(gaps: Sequence[int], b: int) -> Decimal:
    """``rho - 1 = sum_{j >= 1} exp(-g_j / b)`` to 60 significant digits, in the gaps' (sorted) order.

    Kept apart from the 1 so that ``ln(rho) = log1p(sigma)`` keeps its relative
    precision when the others trail their leader by hundreds of b.
    """
    with localcontext(_DEC_CONTEXT) as ctx:
        bd = Decimal(b)
        sigma = Decimal(0)
        for g in gaps[1:]:  # gaps[0] == 0: the leader of the others
            sigma += ctx.exp(-(Decimal(g) / bd))
        return sigma


def _delta_decimal(lead: int, shares: int, b: int, gaps: Sequence[int], sigma: Decimal) -> tuple[int, Decimal, Decimal]:
    """The exact delta as ``whole + rest`` (an integer, a 60-digit remainder) and a bound on ``rest``'s error."""
    n1, n2 = lead, lead + shares
    with localcontext(_DEC_CONTEXT) as ctx:
        bd = Decimal(b)
        rho = 1 + sigma
        hi, hi_err = _log_part(n2, bd, rho, ctx)
        lo, lo_err = _log_part(n1, bd, rho, ctx)
        rest = bd * (hi - lo)
        err = bd * (hi_err + lo_err)
        if n1 < 0 <= n2:  # before the trade b ln(rho) was part of C above max(q); after it, it is not
            log_rho, absolute = _log1p(sigma, ctx)  # exactly 0 for two outcomes
            rest -= bd * log_rho
            # sigma's terms carry (g/b + 1) half-ulps each, relative (at most g_max/b + 15 for the sum) and
            # absolute (at most 1/e + 1 each, 35 with the additions); ln(1 + sigma) passes on the smaller.
            err += bd * min(log_rho * (Decimal(gaps[-1]) / bd + 64), Decimal(64)) * _DEC_REL
            if absolute:
                err += bd * _DEC_REL
        err += abs(rest) * _DEC_REL  # the subtractions' and products' own rounding
        return max(n2, 0) - max(n1, 0), rest, err


def _integer_delta(n1: int, n2: int, gaps: Sequence[int]) -> int | None:
    """``C(after) - C(before)`` when it is exactly an integer (see the module docstring), else None.

    Outcome ``k`` stands at ``n1`` before and ``n2`` after, the others at ``-g``.
    """
    before = sorted([n1, *(-g for g in gaps)])
    after = sorted([n2, *(-g for g in gaps)])
    shift = after[0] - before[0]
    if all(y - x == shift for x, y in zip(before, after, strict=True)):
        return shift
    return None


# --------------------------------------------------------------------------- one outcome against the others


class _Outcome:
    """Outcome ``k`` of a state against the others, computed once for every trade size priced on it."""

    __slots__ = ("_gaps", "_others", "_sigma", "b", "lead", "log_rho", "several")

    def __init__(self, q: Sequence[int], k: int, b: int) -> None:
        others = list(q)
        q_k = others.pop(k)
        m = max(others)
        self.b = b
        self.lead = q_k - m
        self.several = len(others) > 1
        rho = 0.0
        for x in others:  # the leader's term is exactly 1.0; the order only moves the float within its bound
            rho += math.exp((x - m) / b)
        self.log_rho = math.log(rho)  # 0.0 exactly for two outcomes
        self._others = others
        self._gaps: list[int] | None = None
        self._sigma: Decimal | None = None

    @property
    def gaps(self) -> list[int]:
        """``m - q_j`` for the others, ascending (``gaps[0] == 0``): the decimal path's canonical order."""
        if self._gaps is None:
            m = max(self._others)
            self._gaps = sorted([m - x for x in self._others])
        return self._gaps

    def _exact(self, n1: int, shares: int) -> tuple[int, int]:
        """``(ceil, floor)`` of the delta: exact integers recognised, otherwise the decimal path's."""
        gaps = self.gaps
        exact = _integer_delta(n1, n1 + shares, gaps)
        if exact is not None:
            return exact, exact
        # Without the outcomes over 100 b below the others' leader the delta may be exactly an integer c
        # (two leaders swapping places, say); those outcomes then take it below c by less than
        # b * 15 e^-100 < 1e-27, since more weight beside k always lowers what moving k costs.
        near = [g for g in gaps if g <= _NEGLIGIBLE_GAP * self.b]
        if len(near) < len(gaps):
            below = _integer_delta(n1, n1 + shares, near)
            if below is not None:
                return below, below - 1
        if self._sigma is None:
            self._sigma = _sigma_decimal(gaps, self.b)
        whole, rest, err = _delta_decimal(n1, shares, self.b, gaps, self._sigma)
        # Rounded on the pool's side of the error bound: exact wherever 60 digits decide.
        up = _DEC_CONTEXT.add(rest, err).to_integral_value(rounding=ROUND_CEILING)
        down = _DEC_CONTEXT.subtract(rest, err).to_integral_value(rounding=ROUND_FLOOR)
        return whole + int(up), whole + int(down)

    def ceil_delta(self, n1: int, shares: int) -> int:
        """``C`` moving ``k`` from ``m + n1`` to ``m + n1 + shares``, rounded up."""
        value, bound = _delta_float(n1, shares, self.b, self.log_rho, self.several)
        up = math.ceil(value - bound)
        if up == math.ceil(value + bound):
            return up
        return self._exact(n1, shares)[0]

    def floor_delta(self, n1: int, shares: int) -> int:
        """The same delta, rounded down."""
        value, bound = _delta_float(n1, shares, self.b, self.log_rho, self.several)
        down = math.floor(value - bound)
        if down == math.floor(value + bound):
            return down
        return self._exact(n1, shares)[1]

    def largest_affordable(self, amount: int, limit: int) -> int:
        guess = min(_estimate_shares(self.lead, amount, self.b, self.log_rho), limit)
        return pricing.largest_affordable(lambda s: s == 0 or self.ceil_delta(self.lead, s) <= amount, guess, limit)


# --------------------------------------------------------------------------- the general path (any n, 2 included)


def _buy_cost_general(q: Sequence[int], k: int, shares: int, b: int) -> int:
    view = _Outcome(q, k, b)
    return view.ceil_delta(view.lead, shares)


def _sell_proceeds_general(q: Sequence[int], k: int, shares: int, b: int) -> int:
    view = _Outcome(q, k, b)
    return view.floor_delta(view.lead - shares, shares)


def _shares_for_amount_general(q: Sequence[int], k: int, amount: int, b: int, limit: int) -> int:
    return _Outcome(q, k, b).largest_affordable(amount, limit)


def _price_decimal(q: Sequence[int], b: int) -> list[int]:
    with localcontext(_DEC_CONTEXT) as ctx:
        top, bd = max(q), Decimal(b)
        terms = [ctx.exp(-(Decimal(top - x) / bd)) for x in q]
        total = sum(sorted(terms), Decimal(0))  # sorted: the same sum in every order of outcomes
        return [int((MICRO * t / total).to_integral_value(rounding=ROUND_HALF_EVEN)) for t in terms]


def _scaled_prices_float(q: Sequence[int], b: int) -> list[float]:
    """``1e6 * price_k`` for every outcome in floats, each within ``_PRICE_BOUND``."""
    top = max(q)
    terms = [math.exp(-(top - x) / b) for x in q]
    total = sum(terms)
    return [term / total * MICRO for term in terms]


def _prices_general(q: Sequence[int], b: int) -> list[int]:
    out: list[int] = []
    exact: list[int] | None = None
    for k, scaled in enumerate(_scaled_prices_float(q, b)):
        low, high = round(scaled - _PRICE_BOUND), round(scaled + _PRICE_BOUND)
        if low != high:
            if exact is None:
                exact = _price_decimal(q, b)
            low = exact[k]
        out.append(low)
    return out


def _subsidy_general(b: int, n: int) -> int:
    with localcontext(_DEC_CONTEXT) as ctx:
        return int((Decimal(b) * ctx.ln(Decimal(n))).to_integral_value(rounding=ROUND_CEILING))


# --------------------------------------------------------------------------- public


def buy_cost_n(q: Sequence[int], k: int, shares: int, b: int) -> int:
    """Micro-units charged for buying ``shares`` of outcome ``k``: ``C(q + shares e_k) - C(q)`` rounded up.

    ``q`` holds every outcome's outstanding total (2 to 16 of them); all are micro-units.
    """
    _check(q, k)
    if shares <= 0:
        return 0
    if len(q) == 2:
        return pricing.buy_cost(q[k], q[1 - k], shares, b)
    return _buy_cost_general(q, k, shares, b)


def sell_proceeds_n(q: Sequence[int], k: int, shares: int, b: int) -> int:
    """Micro-units paid for selling ``shares`` of outcome ``k``: ``C(q) - C(q - shares e_k)`` rounded down.

    The caller guarantees ``shares <= q[k]``.
    """
    _check(q, k)
    if shares <= 0:
        return 0
    if len(q) == 2:
        return pricing.sell_proceeds(q[k], q[1 - k], shares, b)
    return _sell_proceeds_general(q, k, shares, b)


def shares_for_amount_n(q: Sequence[int], k: int, amount: int, b: int, limit: int) -> int:
    """Largest number of micro-shares of outcome ``k`` whose rounded cost is at most ``amount``.

    Stops at ``limit`` (the caller's bound on the quantity: ``limit`` itself is
    returned when it is affordable); 0 when not one micro-share is.
    """
    _check(q, k)
    if len(q) == 2:
        return pricing.shares_for_amount(q[k], q[1 - k], amount, b, limit)
    return _shares_for_amount_general(q, k, amount, b, limit)


def prices_n(q: Sequence[int], b: int) -> list[int]:
    """Every outcome's price in micro-units, each rounded half-even on its own.

    For two outcomes ``[price_yes, 1e6 - price_yes]``; for more the sum may
    differ from 1e6 by up to ``n / 2`` micro-units (see the module docstring).
    """
    _check(q)
    if len(q) == 2:
        return list(pricing.prices(q[0], q[1], b))
    return _prices_general(q, b)


def subsidy_n(b: int, n: int) -> int:
    """``ceil(b * ln n)`` in micro-units: the pool a market of ``n`` outcomes starts with."""
    if not MIN_OUTCOMES <= n <= MAX_OUTCOMES:
        raise ValueError(f"a market has {MIN_OUTCOMES} to {MAX_OUTCOMES} outcomes, not {n}")
    if n == 2:
        return pricing.subsidy(b)
    return _subsidy_general(b, n)
