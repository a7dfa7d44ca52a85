"""Facts about the machine and the servers, printed with the table: figures mean little without them."""

from __future__ import annotations

import contextlib
import os
import platform
from importlib import metadata
from typing import Any, cast

import redis
from predmarket.engine.connection import connect_sync
from predmarket.engine.settings import Settings
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _redis_facts(url: str) -> dict[str, str]:
    client = connect_sync(url, 5.0)
    try:
        info: dict[str, Any] = client.info("server")
        facts = {"redis": str(info.get("redis_version", "?"))}
        # Persistence decides what an acknowledged trade survives; CONFIG may be disabled.
        with contextlib.suppress(redis.RedisError):
            # redis-py types replies as Any: CONFIG GET's shape on a decoding client
            config = cast(dict[str, str], client.config_get("append*"))
            facts["redis persistence"] = (f"appendonly {config.get('appendonly', '?')}, "
                                          f"appendfsync {config.get('appendfsync', '?')}")
        return facts
    finally:
        client.close()


def _pg_facts(url: str) -> dict[str, str]:
    engine = create_engine(make_url(url).set(database="postgres"))
    try:
        with engine.connect() as conn:
            version = conn.execute(text("SHOW server_version")).scalar()
            sync = conn.execute(text("SHOW synchronous_commit")).scalar()
            fsync = conn.execute(text("SHOW fsync")).scalar()
        return {"postgresql": str(version), "postgresql durability": f"synchronous_commit {sync}, fsync {fsync}"}
    finally:
        engine.dispose()


def load_average() -> str:
    """1, 5 and 15 minute load: other work on the machine during the run skews every figure."""
    load = os.getloadavg()
    return f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"


def machine_facts(settings: Settings) -> dict[str, str]:
    facts = {
        "cpus": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "load average at start": load_average(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
    }
    facts.update(_redis_facts(settings.redis_url))
    facts.update(_pg_facts(settings.database_url))
    from redis.utils import HIREDIS_AVAILABLE

    facts.update({
        "uvloop": _version("uvloop"),
        "hiredis": f"{_version('hiredis')} ({'used' if HIREDIS_AVAILABLE else 'not used'} by redis-py)",
        "httptools": _version("httptools"),
        "redis-py": _version("redis"),
        "psycopg": _version("psycopg"),
    })
    return facts
