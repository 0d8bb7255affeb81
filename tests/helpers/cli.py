"""``esper-rllib`` run in-process: its exit code and what it printed (the help, near-miss and
bad-argument tests share it)."""

from esper_rllib.cli import main


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr stripped) of ``esper-rllib argv``, argparse's exits included."""
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own exits
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err.strip()
