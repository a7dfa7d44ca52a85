"""The start-up refusal shared by the commands that need the record's schema."""

from __future__ import annotations

import sys

from predmarket.record.revision import not_migrated_message

#: The exit status of a command refusing to run on an old or missing schema (as for bad configuration).
NOT_MIGRATED_EXIT = 2


def refuse_unmigrated(command: str, database_url: str) -> bool:
    """Print one line naming ``predmarket migrate`` and return True if PostgreSQL's schema is behind."""
    message = not_migrated_message(database_url)
    if message is None:
        return False
    print(f"predmarket {command}: {message}", file=sys.stderr)
    return True
