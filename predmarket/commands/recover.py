"""``predmarket recover``: rebuild Redis from PostgreSQL."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from predmarket.commands import Subcommands
from predmarket.commands.migrated import NOT_MIGRATED_EXIT, refuse_unmigrated
from predmarket.commands.stores import stores
from predmarket.commands.stream_groups import groups_deleted_by_force
from predmarket.engine.keys import Keys
from predmarket.engine.settings import get_settings
from predmarket.persister.recover import RecoveryRefused, rebuild_directory, recover


def register(sub: Subcommands) -> None:
    p = sub.add_parser(
        "recover", help="rebuild Redis state from PostgreSQL (snapshots, then replay)",
        description="Rebuilds users, API key hashes, balances, positions, markets (latest snapshot, then "
        "the trades and payouts after it), the trade id counter and recent idempotency keys in Redis "
        "from PostgreSQL. Refuses to touch a Redis that holds state under PM_KEY_PREFIX unless --force.",
    )
    p.add_argument("--force", action="store_true",
                   help="delete the prefix's keys in Redis first, the event stream and its consumer groups "
                   "included (each group is named in a warning)")
    p.add_argument("--directory", action="store_true",
                   help="only add the users and archived markets Redis's directory lacks (safe while running; "
                   "for a deployment that evicted users or archived markets before the directory existed)")
    p.add_argument("--reshard", action="store_true",
                   help="the record was written with another PM_SHARDS: first move every user's money to its "
                   "home shard under the new one, in the record (drain first: no traffic, the persister "
                   "caught up); without it such a record is refused")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    settings = get_settings()
    if refuse_unmigrated("recover", settings.database_url):
        return NOT_MIGRATED_EXIT
    console = Console()
    if args.directory and settings.shards > 1:
        # The directory is the hot set's, which does not run over shards yet (persister/worker.py).
        console.print("[red]refused:[/red] --directory is for a deployment of one shard (PM_SHARDS=1)")
        return 2
    if args.directory:
        with stores(settings) as (client, pg):
            added = rebuild_directory(pg, client, Keys(settings.key_prefix))
        console.print(f"[green]directory complete[/green]: {added.users_added:,} users checked, "
                      f"{added.markets_kept:,} archived markets added")
        return 0
    if args.force:
        with stores(settings) as (client, _pg):
            warning = groups_deleted_by_force(client, Keys(settings.key_prefix))
        if warning:
            print(f"predmarket recover: warning: {warning}", file=sys.stderr)
    try:
        with stores(settings) as (client, pg), console.status("recovering") as status:
            report = recover(
                pg, client, Keys(settings.key_prefix), force=args.force,
                idempotency_ttl_s=settings.idempotency_ttl_s,
                progress=lambda phase, n: status.update(f"recovering: {phase} {n:,}"), shards=settings.shards,
                resharding=args.reshard,
            )
    except RecoveryRefused as exc:
        console.print(f"[red]refused:[/red] {exc}")
        return 2
    if report.resharded is not None:
        moved = report.resharded
        console.print(f"resharded to {settings.shards} shards: {moved.wallets_moved:,} sub-wallets and "
                      f"{moved.transits_closed:,} transfers in transit moved to their users' home shards, "
                      f"{moved.markets_moved:,} markets in another shard")
    ids = (f"next trade id {report.trade_seq + 1:,}" if settings.shards == 1 else
           f"{settings.shards} shards, highest trade id {report.trade_seq:,}")
    console.print(
        f"[green]recovered[/green] {report.users:,} users, {report.positions:,} positions, "
        f"{report.markets:,} markets ({report.trades_replayed:,} trades replayed after their snapshots), "
        f"{report.idempotency_keys:,} idempotency keys; {ids}; {report.seconds:.1f} s"
    )
    return 0
