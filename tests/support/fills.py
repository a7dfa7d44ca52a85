"""The YES/NO form of engine.orders.fill that the pricing tests were written in: (q_yes, q_no) and an outcome."""

from __future__ import annotations

from predmarket.engine.labels import YES_NO
from predmarket.engine.models import Side
from predmarket.engine.orders import Fill, fill


def yes_no_fill(q_yes: int, q_no: int, b: int, side: Side, outcome: str,
                shares: int | None = None, amount: int | None = None) -> Fill:
    """``fill`` on a YES/NO market at (q_yes, q_no): ``totals``, ``prices`` are (YES, NO)."""
    return fill((q_yes, q_no), b, side, YES_NO.index(outcome), shares, amount, outcome)
