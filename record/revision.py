"""Is the database's schema at the newest migration? Asked by ``serve``, the persister and ``/readyz``.

A process that finds PostgreSQL answering but its schema behind (or missing)
must not pretend the record works: ``serve`` and ``persister`` refuse to start,
and a running replica reports ``not migrated``. A PostgreSQL that does not
answer at all is an outage, which a replica rides out (see the contract's
"Outages" and "Readiness").
"""

from __future__ import annotations

import logging
from enum import StrEnum
from functools import cache

from alembic.script import ScriptDirectory
from predmarket.engine.errors import Unavailable
from predmarket.record.database import MIGRATIONS, alembic_config
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncConnection

#: How long a start-up check waits for PostgreSQL before calling it an outage.
CONNECT_TIMEOUT_S = 5
# to_regclass: no error (and no aborted transaction) when the table is missing.
_CURRENT = text("SELECT version_num FROM alembic_version WHERE to_regclass('alembic_version') IS NOT NULL")
_HAS_TABLE = text("SELECT to_regclass('alembic_version') IS NOT NULL")


class SchemaStatus(StrEnum):
    """What ``/readyz`` reports for PostgreSQL."""

    OK = "ok"
    DOWN = "down"
    NOT_MIGRATED = "not migrated"


@cache
def head() -> str:
    """The newest migration this code ships (read once from ``record/migrations``)."""
    script = ScriptDirectory.from_config(alembic_config("postgresql://unused"))
    revision = script.get_current_head()
    assert revision is not None, f"no migrations under {MIGRATIONS}"
    return revision


def _verdict(has_table: bool, current: list[str]) -> tuple[SchemaStatus, str | None]:
    found = current[0] if has_table and len(current) == 1 else None
    return (SchemaStatus.OK if found == head() else SchemaStatus.NOT_MIGRATED), found


def current_revision(conn: Connection) -> tuple[SchemaStatus, str | None]:
    """(``ok`` or ``not migrated``, the revision found or None) over an open connection."""
    has_table = bool(conn.execute(_HAS_TABLE).scalar())
    current = [str(r) for r in conn.execute(_CURRENT).scalars()] if has_table else []
    return _verdict(has_table, current)


async def current_revision_async(conn: AsyncConnection) -> tuple[SchemaStatus, str | None]:
    has_table = bool((await conn.execute(_HAS_TABLE)).scalar())
    current = [str(r) for r in (await conn.execute(_CURRENT)).scalars()] if has_table else []
    return _verdict(has_table, current)


def not_migrated_message(url: str) -> str | None:
    """One line naming ``predmarket migrate`` if PostgreSQL answers with an old or missing schema.

    None when the schema is current, and also when PostgreSQL does not answer: an
    outage is not a reason to refuse to start (trading carries on from Redis).
    """
    pg = create_engine(url, connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
    try:
        with pg.connect() as conn:
            status, found = current_revision(conn)
    except (OperationalError, DBAPIError, OSError):
        return None
    finally:
        pg.dispose()
    if status is SchemaStatus.OK:
        return None
    return (f"the PostgreSQL schema is not at the latest migration (found {found or 'no schema'}, "
            f"need {head()}): run `predmarket migrate`")


def pg_unavailable(exc: BaseException) -> Unavailable:
    """The 503 a request gets when PostgreSQL fails it: an outage, or a schema this code does not know.

    The cause is logged (first line only): the client's answer names no internals, the operator's log must.
    """
    logging.getLogger("predmarket.api").warning("PostgreSQL failed a request: %s: %s", exc.__class__.__name__,
                                                 str(exc).splitlines()[0][:300] if str(exc) else "")
    if isinstance(exc, ProgrammingError):  # undefined table or column: the schema is behind
        return Unavailable("the PostgreSQL schema is not migrated: run `predmarket migrate`")
    return Unavailable("PostgreSQL is unreachable")
