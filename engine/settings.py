"""Configuration: one frozen object built from ``PM_*`` environment variables.

Build it with :func:`get_settings` (cached) and pass it down; nothing else in
the project reads ``os.environ``.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Every admin token value shipped in this repository (the default, .env.example, the tests'
#: examples): production refuses them whatever their length, since anyone can read them.
PLACEHOLDER_TOKENS = frozenset({"", "changeme", "change-me", "admin", "secret", "dev-admin-token",
                                "change-me-admin-token"})
#: Production also refuses an admin token shorter than this.
MIN_PRODUCTION_TOKEN_LENGTH = 32
PREFIX = "PM_"
#: ``PM_REDIS_URL`` of a Redis Cluster (seed nodes after it, comma-separated).
CLUSTER_SCHEME = "redis+cluster://"
#: A hash tag: Redis Cluster places a key by the text between its first ``{`` and the next ``}``.
HASH_TAG = re.compile(r"\{[^}]+\}")
#: ``PM_*`` names that are not settings but read by the test suite and CI (tests/support/services.py,
#: tests/support/api.py, the Makefile); they are passed on to the processes the tests start.
TEST_ONLY_NAMES = frozenset({"PM_TEST_REDIS_URL", "PM_TEST_PG_URL", "PM_REQUIRE_REAL_SERVICES",
                             "PM_TEST_AGGRESSIVE_EVICTION", "PM_TEST_LAYOUT"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PM_", frozen=True, extra="forbid")

    #: ``development`` tolerates a placeholder admin token; ``production`` refuses it.
    environment: Literal["development", "production"] = "development"
    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/predmarket"
    admin_token: str = "dev-admin-token"
    #: May carry one hash tag (``{pm}``): Redis Cluster then keeps every key of the deployment in one slot,
    #: which a cluster with one shard needs (every script touches several keys; see docs/SCALING.md).
    key_prefix: str = Field(default="pm", min_length=1, max_length=64,
                            pattern=r"^[A-Za-z0-9_.-]*(\{[A-Za-z0-9_.-]+\})?[A-Za-z0-9_.-]*$")
    #: Shards of the deployment (engine/shards.py): 1 keeps every key under the prefix; more spread
    #: markets and users' sub-wallets over the hash tags ``{s<k>}``. Fixed for a deployment's life.
    #: So far only the engine runs with more than one (engine/sharded.py; docs/SCALING.md).
    shards: int = Field(default=1, ge=1, le=1024)

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
    #: Replicas that must have a write before it counts (WAIT): a trade or an admin write is answered, and the persister
    #: copies entries to PostgreSQL, only once this many replicas of the master have them (0: off).
    #: A failover then promotes a replica that has every acknowledged trade (docs/SCALING.md).
    replica_acks: int = Field(default=0, ge=0, le=16)
    #: How long one WAIT may take. A trade whose replicas do not confirm in time is answered all
    #: the same (it executed; the shortfall is logged and counted); the persister waits and retries.
    replica_wait_ms: int = Field(default=100, ge=1, le=10_000)

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
    #: A market quiet this long gets its snapshot row written (0: as soon as its events are committed).
    idle_flush_s: float = Field(default=2.0, ge=0)
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

    # Logs and metrics
    #: ``json``: one JSON object per line (for collectors); ``plain``: readable text (for a terminal).
    log_format: Literal["json", "plain"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: Port of the persister's own Prometheus endpoint; none by default, so several persisters can
    #: share a host (set one per process: its counters are its own).
    persister_metrics_port: int | None = Field(default=None, ge=0, le=65_535)
    persister_metrics_host: str = "127.0.0.1"

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _lower_case(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_names(cls, data: Any) -> Any:
        # pydantic-settings ignores PM_* variables that match no field: a misspelt name would pass silently.
        unknown = unknown_names(os.environ)
        if unknown:
            raise ValueError("; ".join(unknown))
        return data

    @model_validator(mode="after")
    def _one_slot_on_a_cluster(self) -> Settings:
        if self.shards > 1:
            if HASH_TAG.search(self.key_prefix):
                raise ValueError(f"PM_KEY_PREFIX must not carry a hash tag with PM_SHARDS={self.shards}: "
                                 "each shard's keys carry their own ({s<k>})")
            return self
        if self.redis_url.startswith(CLUSTER_SCHEME) and not HASH_TAG.search(self.key_prefix):
            raise ValueError(f"PM_KEY_PREFIX must carry a hash tag on Redis Cluster, e.g. {{{self.key_prefix}}}: "
                             "every script touches several keys, which must share one slot")
        return self

    @model_validator(mode="after")
    def _no_placeholder_secret_in_production(self) -> Settings:
        if self.environment == "production" and (self.admin_token in PLACEHOLDER_TOKENS
                                                 or len(self.admin_token) < MIN_PRODUCTION_TOKEN_LENGTH):
            raise ValueError(f"PM_ADMIN_TOKEN must be set to a real secret when PM_ENVIRONMENT=production "
                             f"(at least {MIN_PRODUCTION_TOKEN_LENGTH} characters, not a value shipped with "
                             "predmarket)")
        return self


def known_names() -> frozenset[str]:
    """The environment variables that are settings: derived from the fields, so a new field is known."""
    return frozenset(PREFIX + name.upper() for name in Settings.model_fields)


def unknown_names(environ: Mapping[str, str]) -> list[str]:
    """One message per ``PM_*`` variable that is neither a setting nor a test-only name."""
    known = known_names()
    messages = []
    for name in sorted(environ):
        upper = name.upper()  # pydantic-settings reads names case-insensitively
        if not upper.startswith(PREFIX) or upper in known or upper in TEST_ONLY_NAMES:
            continue
        guess = difflib.get_close_matches(upper, sorted(known), n=1)
        hint = f" (did you mean {guess[0]}?)" if guess else ""
        messages.append(f"unknown setting {name}{hint}")
    return messages


SECRET_FIELDS = frozenset({"admin_token"})


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def redacted(settings: Settings) -> dict[str, Any]:
    """The effective configuration, safe to log: secrets hidden, passwords cut out of URLs."""
    view: dict[str, Any] = {}
    for name, value in settings.model_dump().items():
        if name in SECRET_FIELDS:
            value = "***" if value else ""
        elif name.endswith("_url") and isinstance(value, str):
            value = _without_password(value)
        view[name] = value
    return view


@lru_cache(maxsize=2)
def get_settings(*, one_shard: bool = False) -> Settings:
    """The process's settings, read from the environment once.

    ``one_shard``: the caller (``bench``) builds the deployments it measures itself, one shard each
    unless a row says otherwise; ``PM_SHARDS`` above 1 is refused rather than silently ignored.
    """
    settings = Settings()
    if settings.shards > 1 and one_shard:
        raise ShardsNotSupported(f"PM_SHARDS={settings.shards}: bench picks its shard counts itself "
                                 "(`predmarket bench --only shards` measures 1 and 8 shards); unset PM_SHARDS")
    return settings


class ShardsNotSupported(ValueError):
    """``PM_SHARDS`` > 1 for a process that does not run over shards yet."""
