"""Micro-unit integers and their decimal-string form.

Every amount of money and every quantity of shares is an ``int`` of micro-units
(1 unit = 1,000,000 micro-units) inside the engine, in Redis and on the stream.
This module is the one place where those integers meet their decimal form.
"""

from __future__ import annotations

import math
import re
from decimal import MAX_PREC, Context, Decimal, InvalidOperation

MICRO = 1_000_000
DECIMALS = 6

#: Largest single quantity or amount a request may carry (1e9 units).
MAX_QUANTITY = 1_000_000_000 * MICRO
#: No position, pool or outstanding total may pass this (9e9 units), nor a deposit take a
#: balance past it, so those integers stay below 2**53 and exact in a Lua double. Money owed
#: (proceeds, payouts, the house's return) is credited past it: balances reach 2**63 - 1
#: and the scripts do their arithmetic on decimal strings (lua/lib.lua).
MAX_TOTAL = 9_000_000_000 * MICRO
#: Balances and totals are exact up to here (HINCRBY's int64, the contract's 2^63 - 1 micro-units):
#: the ledger's total deposits stays within it (lua/deposit.lua), and so does every balance.
MAX_EXACT = 2**63 - 1
#: liquidity_b bounds, in micro-units.
MIN_LIQUIDITY = 1 * MICRO
MAX_LIQUIDITY = 1_000_000_000 * MICRO

assert MAX_TOTAL < 2**53

_DECIMAL_STRING = re.compile(r"^[0-9]+(\.[0-9]{1,6})?$")


class UnitError(ValueError):
    """A value that is not a valid decimal amount of at most 6 decimals."""


def parse_micro(value: object) -> int:
    """Parse a request value (decimal string or JSON number) into micro-units.

    Accepts a string matching ``^[0-9]+(\\.[0-9]{1,6})?$`` or a finite
    int/float whose shortest decimal form has at most 6 decimals. Rejects
    booleans, negatives, NaN, infinities and anything finer than a micro-unit.
    The sign and range of the result are left to the caller.
    """
    if isinstance(value, bool):
        raise UnitError("expected a decimal number, got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise UnitError("must not be negative")
        return value * MICRO
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnitError("must be a finite number")
        if value < 0:
            raise UnitError("must not be negative")
        # repr() is the shortest string that round-trips: the "shortest decimal form".
        text = repr(value)
        try:
            exact = Decimal(text)
        except InvalidOperation as exc:  # pragma: no cover - repr of a finite float parses
            raise UnitError("not a number") from exc
        scaled = exact * MICRO
        if scaled != scaled.to_integral_value():
            raise UnitError("more than 6 decimals")
        if scaled > MAX_TOTAL * 1000:
            raise UnitError("out of range")
        return int(scaled)
    if isinstance(value, str):
        if not _DECIMAL_STRING.fullmatch(value):  # fullmatch: "$" alone accepts a trailing newline
            raise UnitError("expected a decimal string like \"12.5\" with at most 6 decimals")
        whole, _, frac = value.partition(".")
        if len(whole) > 19:
            raise UnitError("out of range")
        return int(whole) * MICRO + int(frac.ljust(DECIMALS, "0") or "0")
    raise UnitError("expected a decimal string or a number")


def format_micro(micro: int) -> str:
    """Format micro-units as a decimal string with exactly 6 decimals."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO)
    return f"{sign}{whole}.{frac:06d}"


#: scaleb only moves the exponent; the default 28 digits would round a larger sum (an audit's).
_UNROUNDED = Context(prec=MAX_PREC)


def micro_from_decimal(value: Decimal) -> int:
    """Convert an exact ``Decimal`` (e.g. a NUMERIC(20,6) column) to micro-units."""
    scaled = value.scaleb(DECIMALS, _UNROUNDED)
    if scaled != scaled.to_integral_value():
        raise UnitError(f"{value} has more than 6 decimals")
    return int(scaled)


def decimal_from_micro(micro: int) -> Decimal:
    """Exact ``Decimal`` of a micro-unit integer, for NUMERIC(20,6) columns."""
    return Decimal(micro).scaleb(-DECIMALS)
