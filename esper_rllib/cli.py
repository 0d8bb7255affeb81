"""``esper-rllib``: one entry point; each subcommand is a module in ``esper_rllib.commands``."""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Sequence

# The command modules import only what their parsers show (names, defaults); what a command runs
# with (Ray, torch, the analyses) it imports when it runs, so `--help` and argparse's errors come
# back at once (benchmarks/bench_cli_help.py).
from esper_rllib.commands import (
    ablate,
    check_env,
    critic_fit,
    evaluate,
    heuristic,
    knobs,
    record,
    report,
    signal,
    train,
)

# Add a subcommand by adding its module here.
COMMANDS = (train, heuristic, check_env, knobs, ablate, report, signal, evaluate, record,
            critic_fit)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        # One clear line (no usage dump), exit code 2; --help still shows the usage.
        self.exit(2, f"{self.prog}: error: {message}\n")

    def _check_value(self, action: argparse.Action, value: object) -> None:
        # An old name (the parser's ``action.renamed``: old -> new) says what it is called now.
        renamed = getattr(action, "renamed", {})
        if value in renamed:
            raise argparse.ArgumentError(action, f"{value!r} is now called {renamed[value]!r}")
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError as err:
            close = difflib.get_close_matches(str(value), [str(c) for c in action.choices or ()],
                                              n=1)
            if not close:
                raise
            raise argparse.ArgumentError(action, f"{err.message}; did you mean {close[0]!r}?"
                                         ) from None

    def parse_args(self, args: Sequence[str] | None = None,
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        # An unknown option is the subcommand's error, with the option it nearly spells:
        # argparse leaves it to the top parser, which names neither.
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            sub = self._subparsers._group_actions[0].choices[parsed.command]
            options = [o for a in sub._actions for o in a.option_strings if o.startswith("--")]
            close = [m for e in extras if e.startswith("-")
                     for m in difflib.get_close_matches(e.split("=")[0], options, n=1)]
            hint = f"; did you mean {close[0]}?" if close else ""
            sub.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
        return parsed


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="esper-rllib",
                     description="RLlib/Tune platform for seed-morphogenesis PPO experiments.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _local_ray_without_tokens(getattr(args, "address", None))
    try:
        return args.func(args)
    except BrokenPipeError:
        # The reader left (`esper-rllib knobs | head`): no traceback, and nothing more to flush
        # into the closed pipe at exit (Python's documented recipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as err:
        if _raised(err, "esper_rllib.run.config", "ConfigError") or \
                _raised(err, "tuning.storage", "StorageError"):
            print(f"esper-rllib {args.command}: error: {err}", file=sys.stderr)
            return 2
        if _raised(err, "esper_rllib.run.trainer", "TrainingError"):
            _stop_ray_log_streaming()
            print(f"esper-rllib {args.command}: {err}", file=sys.stderr)
            return 1
        raise


def _local_ray_without_tokens(address: str | None) -> None:
    """Ray 2.60 turns token authentication on for every new local Ray, with a warning on every
    run; a local Ray this CLI starts for itself (no --address, no RAY_ADDRESS) serves this
    process only and runs without (docs/cluster.md: clusters use tokens). A mode the user set is
    kept."""
    if address is None and not os.environ.get("RAY_ADDRESS"):
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def _raised(err: Exception, module: str, name: str) -> bool:
    """Whether ``err`` is ``module.name``; looked up only when raised (a module that was never
    imported raised nothing), so that the CLI imports neither to catch them."""
    loaded = sys.modules.get(module)
    return loaded is not None and isinstance(err, getattr(loaded, name))


def _stop_ray_log_streaming() -> None:
    """Shut Ray down so that its log thread, which copies the failed workers' tracebacks to this
    process's stderr while they arrive, has finished: our one line then comes last and whole,
    never spliced into one of theirs (print writes a line and its newline separately)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
