"""One module per ``predmarket`` subcommand: ``register(subparsers)`` adds it."""

from __future__ import annotations

import argparse
from typing import TypeAlias

#: What each ``register`` receives: argparse's class for it is private (typeshed names it), and not
#: subscriptable at run time, hence the string.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
