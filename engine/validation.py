"""Checks that need no state: id formats, quantity ranges, order shape.

Each raises :class:`~engine.errors.ValidationError` with a message naming
the field, so callers (API, simulation) report the same words.
"""

from __future__ import annotations

from predmarket.engine.errors import ValidationError
from predmarket.engine.labels import LABEL_PATTERN, YES_NO
from predmarket.engine.models import ID_PATTERN, Order, Side
from predmarket.engine.units import MAX_LIQUIDITY, MAX_QUANTITY, MIN_LIQUIDITY, format_micro


def check_id(value: str, field: str) -> str:
    if not ID_PATTERN.fullmatch(value):  # fullmatch: "$" alone would accept a trailing newline
        raise ValidationError(f"{field} must match ^[A-Za-z0-9_-]{{1,64}}$")
    return value


def check_username(value: str) -> str:
    if not 1 <= len(value) <= 64 or not value.isprintable():
        raise ValidationError("username must be 1-64 printable characters")
    return value


def check_market_name(value: str) -> str:
    """1-10,000 printable characters: what the persister's ``markets.name`` takes (no NUL, valid text)."""
    if not 1 <= len(value) <= 10_000 or not value.isprintable():
        raise ValidationError("name must be 1-10000 printable characters")
    return value


def check_quantity(value: int, field: str, *, allow_zero: bool = False) -> int:
    """A single quantity or amount: positive (or zero if allowed), at most 1e9 units."""
    if value < 0 or (value == 0 and not allow_zero):
        raise ValidationError(f"{field} must be {'zero or ' if allow_zero else ''}positive")
    if value > MAX_QUANTITY:
        raise ValidationError(f"{field} may not exceed {format_micro(MAX_QUANTITY)}")
    return value


def check_liquidity(value: int) -> int:
    if not MIN_LIQUIDITY <= value <= MAX_LIQUIDITY:
        raise ValidationError("liquidity_b must be between 1 and 1000000000")
    return value


def check_order(order: Order) -> Order:
    """Shape of a trade request, its market id included."""
    check_id(order.market_id, "market_id")
    return check_order_shape(order)


def check_order_shape(order: Order) -> Order:
    """Shape of a trade request's body: exactly one of shares/amount, amount only with BUY, bounds.

    Separate from the id so the API can check the body (422) before the id in the
    URL, which names nothing when it cannot be valid (404), as the order of checks says.
    """
    if order.outcome not in YES_NO and not LABEL_PATTERN.match(order.outcome):
        # A label travels inside the order line and hash field names: nothing else may pass.
        raise ValidationError("outcome must be a label matching ^[A-Za-z0-9_-]{1,32}$")
    if order.sell_all:
        # "all" is resolved to the holding by the engine (it may exceed the single-quantity bound:
        # that bound is on numbers a request states, and "all" states none).
        if order.side is not Side.SELL:
            raise ValidationError('shares "all" is only allowed with side SELL')
        if order.amount is not None:
            raise ValidationError("exactly one of shares and amount is required")
    elif (order.shares is None) == (order.amount is None):
        raise ValidationError("exactly one of shares and amount is required")
    if order.amount is not None:
        if order.side is not Side.BUY:
            raise ValidationError("amount is only allowed with side BUY")
        check_quantity(order.amount, "amount")
    if order.shares is not None and not order.sell_all:
        check_quantity(order.shares, "shares")
    if order.max_cost is not None:
        if order.side is not Side.BUY:
            raise ValidationError("max_cost is only allowed with side BUY")
        check_quantity(order.max_cost, "max_cost", allow_zero=True)
    if order.min_proceeds is not None:
        if order.side is not Side.SELL:
            raise ValidationError("min_proceeds is only allowed with side SELL")
        check_quantity(order.min_proceeds, "min_proceeds", allow_zero=True)
    return order
