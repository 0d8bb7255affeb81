"""Files and console lines the analyses write: atomic text and strict JSON, markdown tables,
output folders, the command line that made a result, and a progress line with an ETA."""

from __future__ import annotations

import json
import math
import shlex
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from esper_rllib.run.config import ConfigError
from tuning.output import clock, eta
from tuning.storage import write_atomic


def _jsonable(x: Any) -> Any:
    """NaN and infinities as null, so signal.json is strict JSON."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def write_json(path: Path, result: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(_jsonable(result), indent=1))


def markdown_table(header: Sequence[Any], rows: Iterable[Sequence[Any]],
                   right_from: int | None = None) -> list[str]:
    """A markdown table's lines: the header, the alignment row (the columns from index
    ``right_from`` on right-aligned; none by default) and a line per row, cells as ``str``."""
    align = ["---:" if right_from is not None and i >= right_from else "---"
             for i in range(len(header))]
    return ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join(align) + "|",
            *("| " + " | ".join(map(str, row)) + " |" for row in rows)]


def make_out_dir(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--out {out}: cannot create it ({err.strerror})") from None
    return out


def command_line(name: str) -> str:
    if sys.argv[1:2] == [name]:
        return shlex.join(["esper-rllib", *sys.argv[1:]])
    return f"esper-rllib {name}"


class Progress:
    """One status line on stderr with the fraction of env steps done and an ETA."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.start = max(total, 1), 0, time.monotonic()
        self.tty = sys.stderr.isatty()
        self._last = 0.0

    def __call__(self, steps: int, label: str) -> None:
        self.done += steps
        now = time.monotonic()
        if not self.tty and now - self._last < 10 and self.done < self.total:
            return  # a log file gets a line every 10 s, a terminal every update
        self._last = now
        frac = min(self.done / self.total, 1.0)
        elapsed = now - self.start
        line = (f"[{'#' * int(frac * 20):<20}] {frac:4.0%}  {label:<40.40}  "
                f"elapsed {clock(elapsed)}  ETA {eta(elapsed, self.done, self.total - self.done)}")
        print(f"\r{line}" if self.tty else line, end="" if self.tty else "\n",
              file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)
