"""``predmarket persister``: drain the event stream into PostgreSQL."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from engine.settings import get_settings
from persister.worker import build
from predmarket.commands.migrated import NOT_MIGRATED_EXIT, refuse_unmigrated


def register(sub: Any) -> None:
    p = sub.add_parser(
        "persister", help="drain the event stream into PostgreSQL, idle-flush market snapshots",
        description="Reads <prefix>:events in consumer group 'persister' and writes every event to "
        "PostgreSQL exactly once; several can run at once. Stops cleanly on SIGTERM.",
    )
    p.add_argument("--consumer", default=None, help="consumer name in the group (default host-pid-random)")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = get_settings()
    if refuse_unmigrated("persister", settings.database_url):
        return NOT_MIGRATED_EXIT
    persister = build(settings, consumer=args.consumer)
    persister.install_signal_handlers()
    persister.run()
    return 0
