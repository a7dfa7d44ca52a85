"""``predmarket persister``: drain the event stream into PostgreSQL."""

from __future__ import annotations

import argparse
import logging

from predmarket.api.logs import configure, log_start
from predmarket.collector import tune_collector
from predmarket.commands import Subcommands
from predmarket.commands.migrated import NOT_MIGRATED_EXIT, refuse_unmigrated
from predmarket.engine.settings import get_settings
from predmarket.persister.metrics import serve_metrics
from predmarket.persister.sharded import build

log = logging.getLogger("predmarket.persister")


def register(sub: Subcommands) -> None:
    p = sub.add_parser(
        "persister", help="drain the event stream into PostgreSQL, idle-flush market snapshots",
        description="Reads <prefix>:events in consumer group 'persister' (with PM_SHARDS > 1, every "
        "shard's stream, a thread each) and writes every event to PostgreSQL exactly once; several can "
        "run at once. Stops cleanly on SIGTERM.",
    )
    p.add_argument("--consumer", default=None, help="consumer name in the group (default host-pid-random)")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    settings = get_settings()
    configure(settings)
    if refuse_unmigrated("persister", settings.database_url):
        return NOT_MIGRATED_EXIT
    persister = build(settings, consumer=args.consumer)
    metrics_port = None
    if settings.persister_metrics_port is not None:
        metrics_port = serve_metrics(persister, settings.persister_metrics_host, settings.persister_metrics_port)
    log_start(log, "predmarket persister", settings, consumer=persister.consumer, metrics_port=metrics_port)
    persister.install_signal_handlers()
    tune_collector()
    persister.run()
    return 0
