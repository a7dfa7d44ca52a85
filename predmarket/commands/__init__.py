"""One module per ``predmarket`` subcommand: ``register(subparsers)`` adds it."""
