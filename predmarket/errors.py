"""What the console command says, instead of a traceback, when the configuration or a store is wrong."""

from __future__ import annotations

import re

import pydantic
import redis.exceptions
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from predmarket.engine.errors import Unavailable
from predmarket.engine.settings import Settings, ShardsNotSupported, get_settings

#: Redis could not be reached: one server, or a cluster (no seed answered, a slot served by no node).
REDIS_UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.ClusterError,
                     redis.exceptions.RedisClusterException, Unavailable)


def _safe(url: str) -> str:
    """``url`` with its password hidden. A ``redis+cluster://`` URL lists several hosts, which
    SQLAlchemy's parser refuses (ValueError on the port): its password is hidden by hand."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return re.sub(r"(//[^:/@]*):[^@/]*@", r"\1:***@", url)


def _configured() -> Settings | None:
    """The settings the command ran with (a store error comes after they were read), if they are valid."""
    try:
        return get_settings()  # only read for the URLs to name
    except ValueError:  # invalid (pydantic's ValidationError is one)
        return None


def explain(exc: BaseException) -> str | None:
    """A one-paragraph explanation of a known operational failure, or None for a real bug."""
    if isinstance(exc, pydantic.ValidationError):
        lines = [(f"  PM_{'_'.join(str(p) for p in e['loc']).upper()}: " if e["loc"] else "  ")
                 + str(e["msg"]).removeprefix("Value error, ") for e in exc.errors()]
        return "configuration error:\n" + "\n".join(lines)
    if isinstance(exc, REDIS_UNREACHABLE):
        settings = _configured()
        url = _safe(settings.redis_url) if settings else "the configured URL"
        return (f"cannot reach Redis at {url} ({exc}).\n"
                "  Is it running? Set PM_REDIS_URL to point at it.")
    if isinstance(exc, (OperationalError, DBAPIError)) and "connect" in str(exc).lower():
        settings = _configured()
        url = _safe(settings.database_url) if settings else "the configured URL"
        first = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc).splitlines()[0]
        return (f"cannot reach PostgreSQL at {url} ({first}).\n"
                "  Is it running? Set PM_DATABASE_URL to point at it.")
    if isinstance(exc, ShardsNotSupported):
        return f"configuration error: {exc}"
    if isinstance(exc, ArgumentError):
        return f"configuration error: {exc}"
    return None
