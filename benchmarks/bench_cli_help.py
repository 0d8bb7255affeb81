"""`esper-rllib --help` wall time, next to what it cost when the CLI imported every command's
dependencies (Ray, RLlib, torch, the analyses) before parsing.

Each measurement is a fresh interpreter, timed from start to exit (the median of --repeats):
1. `python -m esper_rllib.cli --help` (and `train --help`) as a user runs it;
2. the eager baseline: an interpreter importing the modules the CLI imported at start-up before
   the imports were made lazy (issue 27), then exiting.

The last line, ``ratio=``, is --help's time over the eager baseline's (the target: --help <= 1 s).

Usage: python benchmarks/bench_cli_help.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

# What `import esper_rllib.cli` pulled in before: the command modules' top-level imports.
EAGER = ("esper_rllib.run.trainer, esper_rllib.analysis.evaluation, esper_rllib.analysis.audit, "
         "esper_rllib.analysis.signal, esper_rllib.offline.behaviour, esper_rllib.run.preflight, "
         "tuning.sweeps")


def wall(argv: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, *argv], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    bare = wall(["-c", "pass"], args.repeats)
    help_s = wall(["-m", "esper_rllib.cli", "--help"], args.repeats)
    train_s = wall(["-m", "esper_rllib.cli", "train", "--help"], args.repeats)
    eager = wall(["-c", f"import {EAGER}"], args.repeats)
    print(f"python start-up          {bare:6.2f} s")
    print(f"esper-rllib --help       {help_s:6.2f} s")
    print(f"esper-rllib train --help {train_s:6.2f} s")
    print(f"eager imports (before)   {eager:6.2f} s")
    print(f"seconds={help_s:.2f} ratio={help_s / eager:.2f}")


if __name__ == "__main__":
    main()
