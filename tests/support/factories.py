"""The types of the ``make_user`` / ``make_market`` / ``engines`` fixtures (``tests/conftest.py``), for annotations."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import Account, Market

#: ``await make_user(balance_units=1000, username=None)`` -> a funded account
UserFactory = Callable[..., Awaitable[Account]]
#: ``await make_market(b_units=100, open=True, name="Test market")`` -> a market
MarketFactory = Callable[..., Awaitable[Market]]
#: ``engines(**settings_overrides)`` -> another engine on its own Redis client, same prefix (another process)
EngineFactory = Callable[..., MarketEngine]
