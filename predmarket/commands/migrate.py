"""``predmarket migrate``: create the database if needed and upgrade its schema."""

from __future__ import annotations

import argparse

from predmarket.commands import Subcommands
from predmarket.engine.settings import get_settings
from predmarket.record.database import migrate


def register(sub: Subcommands) -> None:
    p = sub.add_parser(
        "migrate", help="create or upgrade the PostgreSQL schema",
        description="Creates the database named in PM_DATABASE_URL if it does not exist, then applies "
        "every Alembic migration not yet applied. Safe to run again.",
    )
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    settings = get_settings()
    created = migrate(settings.database_url)
    print(f"database {'created and ' if created else ''}migrated to the newest schema")
    return 0
