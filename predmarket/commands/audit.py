"""``predmarket audit``: check the contract's invariants in Redis and PostgreSQL; exit 1 on a breach."""

from __future__ import annotations

import argparse
import sys

import redis
from rich.console import Console
from rich.markup import escape
from sqlalchemy import Engine, text

from predmarket.commands import Subcommands
from predmarket.commands.migrated import NOT_MIGRATED_EXIT, refuse_unmigrated
from predmarket.commands.stores import stores
from predmarket.engine.keys import Keys
from predmarket.engine.settings import get_settings
from predmarket.persister.audit import audit
from predmarket.persister.recover import redis_holds_state


def register(sub: Subcommands) -> None:
    p = sub.add_parser(
        "audit", help="check every invariant in Redis and PostgreSQL; exit 1 naming each breach",
        description="Checks conservation, non-negativity, shares, solvency in Redis; replays PostgreSQL's "
        "trades and ledger from scratch (every cost recomputed) and compares with its tables; compares "
        "Redis with PostgreSQL once the persister has caught up.",
    )
    p.add_argument("--wait", type=float, default=10.0, metavar="SECONDS",
                   help="how long to wait for the persister to catch up (default 10)")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    settings = get_settings()
    if refuse_unmigrated("audit", settings.database_url):
        return NOT_MIGRATED_EXIT
    console = Console()
    with stores(settings) as (client, pg):
        nothing = nothing_to_audit(client, pg, Keys(settings.key_prefix))
        if nothing:
            print(f"predmarket audit: {nothing}", file=sys.stderr)
            return 2
        report = audit(pg, client, settings.redis_url, Keys(settings.key_prefix), wait_s=args.wait,
                       shards=settings.shards)
    counts = ", ".join(f"{k} {v:,}" for k, v in sorted(report.counts.items()))
    if report.ok:
        console.print(f"[green]audit passed[/green]: every invariant holds ({counts})")
        return 0
    for breach in report.breaches:
        # escape: a breach names its subject in [brackets], which rich would take for markup and drop.
        console.print(f"[red]BREACH[/red] {escape(str(breach))}", highlight=False)
    console.print(f"[red]audit failed[/red]: {len(report.breaches)} breaches ({counts})")
    return 1


def nothing_to_audit(client: redis.Redis, pg: Engine, keys: Keys) -> str | None:
    """One line saying why there is nothing to audit under this prefix, or None.

    An empty prefix would otherwise be reported as dozens of breaches (every record of
    PostgreSQL missing from Redis), which reads like corruption when it is a typo in
    PM_KEY_PREFIX or a Redis that lost its data.
    """
    if redis_holds_state(client, keys):
        return None
    with pg.connect() as conn:
        users, markets = conn.execute(text(
            "SELECT (SELECT count(*) FROM users WHERE user_id <> 'house'), (SELECT count(*) FROM markets)")).one()
    database = pg.url.database
    if not users and not markets:
        return (f"nothing to audit: Redis holds no state under prefix '{keys.prefix}' and PostgreSQL "
                f"(database '{database}') no users or markets; check PM_KEY_PREFIX and PM_DATABASE_URL")
    return (f"Redis holds no state under prefix '{keys.prefix}' but PostgreSQL (database '{database}') holds "
            f"{users:,} users and {markets:,} markets: wrong PM_KEY_PREFIX? (if Redis lost its data, "
            f"`predmarket recover` rebuilds it)")
