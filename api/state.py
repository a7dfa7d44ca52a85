"""What the app holds for its routes (set at start-up in ``api.app``), read from a request."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from engine.market_engine import MarketEngine


def engine_of(request: Request) -> MarketEngine:
    """The replica's engine."""
    engine: MarketEngine = request.app.state.engine
    return engine


def state_of(request: Request, name: str) -> Any:
    """Another object the app holds under ``name`` (``pg``, ``committed``, ``stream_redis``)."""
    return getattr(request.app.state, name)
