"""Configuration: one frozen object built from ``PM_*`` environment variables.

Build it with :func:`get_settings` (cached) and pass it down; nothing else in
the project reads ``os.environ``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_TOKENS = frozenset({"", "changeme", "change-me", "admin", "secret", "dev-admin-token"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PM_", frozen=True, extra="forbid")

    #: ``development`` tolerates a placeholder admin token; ``production`` refuses it.
    environment: Literal["development", "production"] = "development"
    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/predmarket"
    admin_token: str = "dev-admin-token"
    key_prefix: str = Field(default="pm", pattern=r"^[A-Za-z0-9_.-]{1,64}$")

    # Engine
    #: Orders applied by one script call (over all its markets), at most.
    max_batch: int = Field(default=64, ge=1, le=512)
    #: Script calls in flight at once per process: 2 lets Python price the next while Redis runs one.
    pipeline_depth: int = Field(default=2, ge=1, le=8)
    #: A market's queue at least this long, with nothing of it in flight, goes as two batches.
    split_from: int = Field(default=8, ge=2)
    #: Version conflicts (other processes trading the same market) tolerated per order.
    max_conflict_retries: int = Field(default=100, ge=1)
    #: How long an Idempotency-Key's first response is kept (at least 24 h).
    idempotency_ttl_s: int = Field(default=86_400, ge=86_400)
    #: Redis socket timeout: a call that gets no answer in this time fails as UNAVAILABLE.
    redis_timeout_s: float = Field(default=2.0, gt=0)

    # API
    rate_limit_per_s: float = Field(default=100.0, ge=0)
    durable_wait_s: float = Field(default=5.0, gt=0)
    #: Live-stream subscribers (SSE and WebSocket) one process serves at once; the next gets 503.
    max_subscribers: int = Field(default=5_000, ge=1)
    max_body_bytes: int = Field(default=65_536, ge=1024)
    #: A connection whose request headers are not complete this long after it opened (or after the
    #: request's first byte) is closed: slow clients cannot hold connections (predmarket.header_timeout).
    header_timeout_s: float = Field(default=10.0, gt=0)

    # Persister
    persister_batch: int = Field(default=2_000, ge=1)
    idle_flush_s: float = Field(default=2.0, gt=0)
    max_dirty_s: float = Field(default=30.0, gt=0)
    stream_keep: int = Field(default=100_000, ge=0)
    #: Entries another persister left pending this long are claimed (it is presumed dead).
    claim_idle_s: float = Field(default=10.0, gt=0)
    #: A file the persister touches every second (for container health checks); none by default.
    heartbeat_file: str | None = None

    # Hot set (the persister's janitor); 0 turns either off.
    #: Users with no position and no change for this long leave Redis (reloaded on demand).
    user_idle_ttl_s: float = Field(default=3_600.0, ge=0)
    #: Settled markets leave Redis this long after settlement (reloaded on demand).
    market_archive_after_s: float = Field(default=86_400.0, ge=0)

    @model_validator(mode="after")
    def _no_placeholder_secret_in_production(self) -> Settings:
        if self.environment == "production" and self.admin_token in PLACEHOLDER_TOKENS:
            raise ValueError("PM_ADMIN_TOKEN must be set to a real secret when PM_ENVIRONMENT=production")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()
