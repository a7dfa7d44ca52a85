"""Engine errors: one class per contract error code, all under ``EngineError``.

Lua scripts reject with a reply whose first word is the code
(``INSUFFICIENT_FUNDS available 5.000000 < cost 7.250000``); :func:`rejection`
turns a code and its message into the matching class (the one decoder), and
the API maps classes to HTTP statuses in one table.
"""

from __future__ import annotations

import logging

log = logging.getLogger("predmarket.engine")


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


class InternalError(EngineError):
    """A bug, not the caller's fault: a script answered something the engine does not know.

    No contract code stands for it, so the API answers 500 INTERNAL (and logs it).
    """

    code = "INTERNAL"


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


def rejection(code: str, message: str, *, source: str) -> EngineError:
    """The engine error a script's rejection ``code message`` stands for (``source``: the script).

    A code no class has means a script and this module are out of step: it is
    logged and raised as :class:`InternalError`, never guessed into a contract code.
    """
    cls = ERRORS_BY_CODE.get(code)
    if cls is None:
        log.error("script %s answered the unknown code %r: %s", source, code, message)
        return InternalError(f"{source} answered the unknown code {code!r}")
    return cls(message or code)
