"""Throwaway PostgreSQL databases: a migrated template per run, a clone of it per test or stack."""

from __future__ import annotations

import uuid

from predmarket.record.database import drop_database, migrate
from sqlalchemy import create_engine, text

from tests.support.services import pg_url

__all__ = ["clone_database", "drop_database", "migrated_template"]


def migrated_template() -> str:
    """A new database with the schema migrated; its name (to clone it with :func:`clone_database`)."""
    name = f"pmtest_tmpl_{uuid.uuid4().hex[:10]}"
    migrate(pg_url(name))
    return name


def clone_database(template: str, tag: str = "pmtest") -> str:
    """A new database copied from ``template`` (CREATE DATABASE ... TEMPLATE); its URL.

    The caller drops it with :func:`drop_database`.
    """
    name = f"{tag}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_url("postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    finally:
        admin.dispose()
    return pg_url(name)
