"""The record's schema: ``record/schema.py`` and the migrations agree, and nothing runs on a schema left behind."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from predmarket.record.revision import head
from predmarket.record.schema import metadata
from sqlalchemy import create_engine, inspect, text

from tests.support.api import StackFactory, assert_error, bearer, unique
from tests.support.processes import PREDMARKET
from tests.support.services import REDIS_URL


def test_autogenerate_against_a_migrated_database_finds_nothing_to_do(database_url: str) -> None:
    pg = create_engine(database_url)
    try:
        with pg.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
            assert compare_metadata(context, metadata) == []
            # Autogenerate does not compare CHECK constraints or storage options: compare them here.
            found = inspect(conn)
            for table in metadata.sorted_tables:
                declared = {c.name for c in table.constraints if c.__class__.__name__ == "CheckConstraint"}
                assert {c["name"] for c in found.get_check_constraints(table.name)} == declared, table.name
                options = found.get_table_options(table.name).get("postgresql_with") or {}
                assert {k: str(v) for k, v in options.items()} == \
                    {k: str(v) for k, v in (table.dialect_options["postgresql"]["with"] or {}).items()}, table.name
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head()
    finally:
        pg.dispose()


@pytest.fixture
def empty_database(stacks: StackFactory) -> Iterator[str]:
    """A database that exists but has no schema (restored empty, or never migrated)."""
    url = stacks.database()
    pg = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with pg.connect() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    finally:
        pg.dispose()
    yield url


@pytest.mark.parametrize("command", ["serve", "persister", "audit", "recover"])
def test_commands_refuse_an_unmigrated_database_with_one_line(empty_database: str, command: str) -> None:
    env = {"PM_DATABASE_URL": empty_database, "PM_REDIS_URL": REDIS_URL, "PM_KEY_PREFIX": unique("pmtest-unmig"),
           "PM_ADMIN_TOKEN": "adm_" + "x" * 40, "PATH": "/usr/bin:/bin"}
    args = [str(PREDMARKET), command] + (["--port", "1"] if command == "serve" else [])
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                          check=False)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if "warning" not in line]
    assert len(lines) == 1, done.stderr
    assert "predmarket migrate" in lines[0] and "not at the latest migration" in lines[0], lines


def test_a_running_replica_reports_not_migrated_and_keeps_trading(stacks: StackFactory) -> None:
    stack = stacks.start(unique("schemagone")[:20], replicas=1, persister=False)
    admin = bearer(stack.admin_token)
    with httpx.Client(base_url=stack.url, timeout=10) as client:
        r = client.get("/readyz")
        assert r.status_code == 200 and r.json()["postgres"] == "ok", r.text
        pg = create_engine(stack.database_url, isolation_level="AUTOCOMMIT")
        try:
            with pg.connect() as conn:  # the database restored empty under a running replica
                conn.execute(text("DROP SCHEMA public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
        finally:
            pg.dispose()
        r = client.get("/readyz")
        assert r.status_code == 200, r.text  # it can still take trades
        assert r.json()["redis"] == "ok" and r.json()["postgres"] == "not migrated", r.text
        r = client.post("/v1/users", json={"username": unique("u")}, headers=admin)
        assert r.status_code == 201, r.text
        r = client.get("/v1/markets/no-such-market/trades")
        assert_error(r, 503, "UNAVAILABLE")
        assert "predmarket migrate" in r.json()["error"]["message"]
