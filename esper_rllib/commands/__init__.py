"""``esper-rllib`` subcommands: each module exposes ``add_parser(subparsers)``, which sets
``func(args) -> int`` (the exit code) on its parser."""
