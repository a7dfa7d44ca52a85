"""Cursor pages: the ``limit`` parameter, opaque cursors, and the page of the market list.

A cursor names the last item a page returned, by a key that never changes and
orders the list totally: ``trade_id`` for trade lists (newest first), and
``(created_ms, market_id)`` for the market list (oldest first). The next page
starts strictly after that key, so following ``next_cursor`` to the end returns
every item that existed when the walk began exactly once, whatever is added
meanwhile (new trades have larger ids and belong before the first page; new
markets are created later and come at the end). An offset would repeat or skip
items as soon as one is added.

On the wire a cursor is ``base64url("<kind>:<key>")`` without padding: opaque
to clients, checked strictly here, so a malformed one, or one from another
list, is ``422 VALIDATION_ERROR`` rather than a wrong page.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass

from predmarket.engine.errors import ValidationError
from predmarket.engine.models import Market

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
#: Keys are bound for PostgreSQL's BIGINT (a larger trade id in a query would fail it, not match nothing).
MAX_KEY = 2**63 - 1
#: A cursor is short; a longer one is refused before it is decoded.
MAX_CURSOR_CHARS = 200

_TRADE_KEY = re.compile(r"t:(0|[1-9][0-9]{0,18})")
_MARKET_KEY = re.compile(r"m:(0|[1-9][0-9]{0,18}):([A-Za-z0-9_-]{1,64})")


def page_limit(value: str | None) -> int:
    """``limit`` from the query string: 1-1000, ``DEFAULT_LIMIT`` when absent."""
    if value is None:
        return DEFAULT_LIMIT
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_LIMIT:
        raise ValidationError(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(value)


def _encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode(cursor: str, pattern: re.Pattern[str], what: str) -> re.Match[str]:
    bad = ValidationError(f"cursor is not a {what} cursor this API gave")
    if not cursor or len(cursor) > MAX_CURSOR_CHARS or not cursor.isascii():
        raise bad
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise bad from None
    found = pattern.fullmatch(text)
    # Only the canonical spelling: one cursor per position, so clients cannot forge near-copies.
    if found is None or _encode(text) != cursor or int(found.group(1)) > MAX_KEY:
        raise bad
    return found


def trade_cursor(trade_id: int) -> str:
    """The cursor of the page that follows the trade ``trade_id`` (newest first)."""
    return _encode(f"t:{trade_id}")


def trade_after(cursor: str | None) -> int | None:
    """The ``trade_id`` a trade cursor names (the next page holds smaller ids); None without one."""
    if cursor is None:
        return None
    return int(_decode(cursor, _TRADE_KEY, "trade").group(1))


MarketKey = tuple[int, str]


def market_key(market: Market) -> MarketKey:
    """The market list's order: creation time, then id (ids are unique, so the order is total)."""
    return market.created_ms, market.market_id


def market_cursor(key: MarketKey) -> str:
    return _encode(f"m:{key[0]}:{key[1]}")


def market_after(cursor: str | None) -> MarketKey | None:
    """The market key a market cursor names (the next page holds later keys); None without one."""
    if cursor is None:
        return None
    found = _decode(cursor, _MARKET_KEY, "market")
    return int(found.group(1)), found.group(2)


@dataclass(frozen=True, slots=True)
class MarketPage:
    markets: list[Market]
    next_cursor: str | None


def market_page(markets: Sequence[Market], q: str | None, after: MarketKey | None,
                limit: int | None) -> MarketPage:
    """The markets whose name contains ``q`` (case-insensitively), after ``after``, at most ``limit``.

    ``markets`` is every market of the filter (any order). Without ``limit`` the page
    holds every match after the cursor and ``next_cursor`` is None.
    """
    needle = q.casefold() if q else None
    chosen = sorted(
        (m for m in markets
         if (needle is None or needle in m.name.casefold()) and (after is None or market_key(m) > after)),
        key=market_key,
    )
    if limit is None or len(chosen) <= limit:
        return MarketPage(chosen, None)
    page = chosen[:limit]
    return MarketPage(page, market_cursor(market_key(page[-1])))
