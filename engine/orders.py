"""Pricing an order against a market state: the stateless half of the RiskEngine.

:func:`fill` decides what an order would do to a market (shares, cost, prices
after) and rejects what no account could make valid: quantities past the
contract's limits, a buy by amount too small for one micro-share, a sell of
more than is outstanding, slippage. Checks that need an account's balance or
holding run atomically with the debit, in ``lua/trade.lua``.
"""

from __future__ import annotations

from dataclasses import dataclass

from predmarket.engine import pricing, pricing_n
from predmarket.engine.errors import InsufficientShares, SlippageExceeded, ValidationError
from predmarket.engine.models import Order, Side
from predmarket.engine.units import MAX_QUANTITY, MAX_TOTAL, MICRO, format_micro


@dataclass(frozen=True, slots=True)
class Fill:
    """What an order does to a market: all integers of micro-units; ``totals`` and ``prices`` are every
    label's after the order, in label order."""

    shares: int
    cost: int
    totals: tuple[int, ...]
    prices: tuple[int, ...]
    avg_price: int


def div_half_even(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half-even, for non-negative integers."""
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2 == 1):
        quotient += 1
    return quotient


def avg_price(cost: int, shares: int) -> int:
    """Average price per share in micro-units, rounded half-even."""
    return div_half_even(cost * MICRO, shares)


def fill(
    totals: tuple[int, ...],
    b: int,
    side: Side,
    k: int,
    shares: int | None = None,
    amount: int | None = None,
    label: str = "",
) -> Fill:
    """Price ``side`` of label ``k`` (named ``label`` in errors) for ``shares`` (or, for BUY, ``amount``)
    at a market of liquidity ``b`` whose labels have ``totals`` outstanding.

    Two labels go straight to :mod:`engine.pricing` (the hot path; :mod:`engine.pricing_n` gives the
    same integers for them), more to :mod:`engine.pricing_n`.
    """
    binary = len(totals) == 2
    q_self = totals[k]
    q_other = totals[1 - k] if binary else 0
    if side is Side.BUY:
        if amount is not None:
            # The contract caps a buy by amount at the single-quantity bound: an amount that could
            # afford more buys exactly 1,000,000,000 shares (and costs what those cost).
            shares = (pricing.shares_for_amount(q_self, q_other, amount, b, limit=MAX_QUANTITY) if binary
                      else pricing_n.shares_for_amount_n(totals, k, amount, b, limit=MAX_QUANTITY))
            if shares == 0:
                raise ValidationError(f"amount {format_micro(amount)} cannot buy one micro-share")
        assert shares is not None
        if shares > MAX_QUANTITY:
            raise ValidationError(f"shares may not exceed {format_micro(MAX_QUANTITY)}")
        if shares > MAX_TOTAL - q_self:
            raise ValidationError(f"the outstanding {label} shares may not exceed {format_micro(MAX_TOTAL)}")
        cost = (pricing.buy_cost(q_self, q_other, shares, b) if binary
                else pricing_n.buy_cost_n(totals, k, shares, b))
        q_self += shares
    else:
        assert shares is not None
        if shares > q_self:
            raise InsufficientShares(f"only {format_micro(q_self)} {label} shares are outstanding")
        cost = (pricing.sell_proceeds(q_self, q_other, shares, b) if binary
                else pricing_n.sell_proceeds_n(totals, k, shares, b))
        q_self -= shares
    after: tuple[int, ...]
    prices: tuple[int, ...]
    if binary:
        after = (q_self, q_other) if k == 0 else (q_other, q_self)
        prices = pricing.prices(after[0], after[1], b)
    else:
        after = (*totals[:k], q_self, *totals[k + 1:])
        prices = tuple(pricing_n.prices_n(after, b))
    return Fill(shares, cost, after, prices, avg_price(cost, shares))


def label_index(labels: tuple[str, ...], label: str) -> int:
    """Where ``label`` stands among a market's labels; VALIDATION_ERROR if the market has no such label."""
    try:
        return labels.index(label)
    except ValueError:
        raise ValidationError(f"outcome must be one of {', '.join(labels)}") from None


def check_slippage(order: Order, result: Fill) -> None:
    """Reject a fill whose cost passes ``max_cost`` or whose proceeds fall below ``min_proceeds``."""
    if order.side is Side.BUY and order.max_cost is not None and result.cost > order.max_cost:
        raise SlippageExceeded(
            f"cost {format_micro(result.cost)} exceeds max_cost {format_micro(order.max_cost)}"
        )
    if order.side is Side.SELL and order.min_proceeds is not None and result.cost < order.min_proceeds:
        raise SlippageExceeded(
            f"proceeds {format_micro(result.cost)} are below min_proceeds "
            f"{format_micro(order.min_proceeds)}"
        )
