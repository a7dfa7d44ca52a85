"""Pieces the route modules share: documented error responses and path-id checks."""

from __future__ import annotations

from typing import Any

from predmarket.api.schemas import Error
from predmarket.engine.errors import NotFound
from predmarket.engine.models import ID_PATTERN

#: Every error answer has the one body ``{"error": {"code", "message"}}``: one component, ``Error``.
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"description": description, "model": Error}
    for status, description in (
        (401, "UNAUTHENTICATED"), (403, "FORBIDDEN"), (404, "NOT_FOUND"),
        (409, "MARKET_NOT_OPEN, INVALID_STATE, ALREADY_EXISTS or IDEMPOTENCY_KEY_REUSED"),
        (413, "VALIDATION_ERROR: body too large"),
        (422, "VALIDATION_ERROR, INSUFFICIENT_FUNDS, INSUFFICIENT_SHARES or SLIPPAGE_EXCEEDED"),
        (429, "RATE_LIMITED"), (503, "UNAVAILABLE"),
    )
}


def path_id(value: str, what: str) -> str:
    """An id from the URL: one that cannot be valid names nothing, so it is 404."""
    if not ID_PATTERN.fullmatch(value):
        raise NotFound(f"no {what} {value[:80]!r}")
    return value
