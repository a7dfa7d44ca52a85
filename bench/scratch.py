"""Throwaway key prefixes and databases: every workload starts empty and leaves nothing behind.

The shared Redis is never flushed; a workload's keys are found by its own
prefix and deleted. Databases are created under a fresh name and dropped.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from predmarket.engine.connection import connect_sync
from predmarket.engine.keys import Keys
from predmarket.engine.settings import Settings
from predmarket.persister.recover import delete_prefix as delete_keys
from predmarket.record.database import drop_database, ensure_database, migrate
from sqlalchemy.engine import make_url


def delete_prefix(redis_url: str, prefix: str) -> int:
    """Delete every key under ``prefix``; returns how many."""
    client = connect_sync(redis_url, 30.0, decode_responses=False)
    try:
        return delete_keys(client, Keys(prefix))
    finally:
        client.close()


@contextmanager
def scratch_prefix(settings: Settings, tag: str) -> Iterator[Settings]:
    """``settings`` under a fresh key prefix; the prefix's keys are deleted afterwards."""
    prefix = f"predbench-{tag}-{uuid.uuid4().hex[:8]}"
    try:
        yield settings.model_copy(update={"key_prefix": prefix})
    finally:
        delete_prefix(settings.redis_url, prefix)


@contextmanager
def scratch_database(settings: Settings, tag: str, *, migrated: bool) -> Iterator[str]:
    """The URL of a new database (empty, or at the newest schema); dropped afterwards."""
    name = f"predbench_{tag}_{uuid.uuid4().hex[:8]}"
    url = make_url(settings.database_url).set(database=name).render_as_string(hide_password=False)
    try:
        if migrated:
            migrate(url)
        else:
            ensure_database(url)
        yield url
    finally:
        drop_database(url)
