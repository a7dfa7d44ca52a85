"""Alembic environment: runs the migrations online against the URL the caller configured."""

from __future__ import annotations

from alembic import context
from predmarket.record.schema import metadata
from sqlalchemy import create_engine, pool

config = context.config
target_metadata = metadata


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url must be set by the caller (predmarket migrate)"
    connectable = create_engine(url, poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
