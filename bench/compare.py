"""Where two pictures of a deployment (Redis and PostgreSQL) disagree, named field by field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from predmarket.engine.state import State

#: Differences listed per kind before the rest are only counted.
SHOWN = 5


def _mapping_differences(kind: str, left: Mapping[Any, Any], right: Mapping[Any, Any],
                         names: tuple[str, str]) -> list[str]:
    out = []
    for key in sorted(set(left) | set(right), key=str):
        a, b = left.get(key), right.get(key)
        if a != b:
            out.append(f"{kind} {key}: {names[0]} {a}, {names[1]} {b}")
    if len(out) > SHOWN:
        out = [*out[:SHOWN], f"... and {len(out) - SHOWN} more {kind} differences"]
    return out


def state_differences(left: State, right: State, names: tuple[str, str] = ("redis", "postgresql")) -> list[str]:
    """Every user, market, position and total that differs; empty when the two states are equal."""
    out = [
        *_mapping_differences("user", left.users, right.users, names),
        *_mapping_differences("market", left.markets, right.markets, names),
        *_mapping_differences("position", left.positions, right.positions, names),
    ]
    for total in ("deposits", "withdrawals"):
        a, b = getattr(left, total), getattr(right, total)
        if a != b:
            out.append(f"{total}: {names[0]} {a}, {names[1]} {b}")
    return out
