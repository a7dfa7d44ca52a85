"""Engine errors: one class per contract error code, all under ``EngineError``.

Lua scripts reject with a reply whose first word is the code
(``INSUFFICIENT_FUNDS available 5.000000 < cost 7.250000``); :func:`from_reply`
turns such a reply into the matching class, and the API maps classes to HTTP
statuses in one table.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base of every rejection the engine reports; ``code`` is the contract's code."""

    code = "INTERNAL"

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.code)
        self.message = message or self.code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class NotFound(EngineError):
    code = "NOT_FOUND"


class MarketNotOpen(EngineError):
    code = "MARKET_NOT_OPEN"


class InvalidState(EngineError):
    code = "INVALID_STATE"


class AlreadyExists(EngineError):
    code = "ALREADY_EXISTS"


class IdempotencyKeyReused(EngineError):
    code = "IDEMPOTENCY_KEY_REUSED"


class ValidationError(EngineError):
    code = "VALIDATION_ERROR"


class InsufficientFunds(EngineError):
    code = "INSUFFICIENT_FUNDS"


class InsufficientShares(EngineError):
    code = "INSUFFICIENT_SHARES"


class SlippageExceeded(EngineError):
    code = "SLIPPAGE_EXCEEDED"


class Unavailable(EngineError):
    """Redis unreachable, or a market too contended to finish within the retry bound."""

    code = "UNAVAILABLE"


ERRORS_BY_CODE: dict[str, type[EngineError]] = {
    cls.code: cls
    for cls in (
        NotFound,
        MarketNotOpen,
        InvalidState,
        AlreadyExists,
        IdempotencyKeyReused,
        ValidationError,
        InsufficientFunds,
        InsufficientShares,
        SlippageExceeded,
        Unavailable,
    )
}


def from_reply(reply: str) -> EngineError | None:
    """The engine error a script reply stands for, or ``None`` if it names no code."""
    code, _, message = reply.partition(" ")
    cls = ERRORS_BY_CODE.get(code)
    return cls(message or code) if cls is not None else None
