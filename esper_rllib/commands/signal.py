"""``esper-rllib signal``: the learnability audit of a profile and reward (signal.md and
signal.json), to read before judging any critic on it."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from esper_rllib.commands.knob_args import add_knob_arguments, knobs_from_args, make_env
from esper_rllib.config import ConfigError, env_config

SIGNAL_JSON = "signal.json"
SIGNAL_MD = "signal.md"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "signal", help="learnability audit: does the return track accuracy, how much of it "
                       "can a critic explain (EV ceiling)?",
        description="Play WAIT-only, random, heuristic, oracle and oracle-hold episodes on the "
                    "env of a profile and reward; report accuracy, return, their correlation, "
                    "ridge R^2 and the EV ceiling. Writes signal.md and signal.json in --out.")
    add_knob_arguments(parser, presets=False)
    parser.add_argument("--seeds", type=int, default=6, help="episodes per policy (default 6)")
    parser.add_argument("--out", help="output folder (default runs/signal/<profile>-<reward>)")
    add_oracle_arguments(parser)
    parser.add_argument("--ev-states", type=int, default=30,
                        help="states the EV ceiling branches at (default 30)")
    parser.add_argument("--ev-continuations", type=int, default=4,
                        help="returns per state, the sampled one included (default 4)")
    parser.set_defaults(func=run)


def add_oracle_arguments(parser: argparse.ArgumentParser) -> None:
    """--oracle and --search-seeds (``signal`` and ``evaluate`` both play the oracle)."""
    parser.add_argument("--oracle", metavar="BLUEPRINT@SLOT",
                        help="skip the oracle search, e.g. bottleneck@r0c1")
    parser.add_argument("--search-seeds", type=int, default=2,
                        help="episodes per candidate in the oracle search (default 2)")


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
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        line = (f"[{'#' * int(frac * 20):<20}] {frac:4.0%}  {label:<40.40}  "
                f"elapsed {elapsed:4.0f}s  ETA {eta:4.0f}s")
        print(f"\r{line}" if self.tty else line, end="" if self.tty else "\n",
              file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def _cache_path(env_kwargs: dict[str, Any], search_seeds: int) -> Path:
    """The oracle depends on final accuracy only: the reward is not part of the key."""
    key = {k: v for k, v in env_kwargs.items() if k not in ("reward", "reward_normalization")}
    digest = hashlib.sha256(json.dumps([key, search_seeds], sort_keys=True,
                                       default=str).encode()).hexdigest()[:16]
    root = Path(os.environ.get("ESPER_CACHE_DIR", Path.home() / ".cache" / "esper-rllib"))
    return root / "oracle" / f"{digest}.json"


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _check_args(oracle: str | None, n_slots: int | None, **counts: int) -> tuple[int, int] | None:
    """The parsed --oracle; ConfigError for a count below its minimum or a bad oracle (its slot
    checked against ``n_slots`` when known)."""
    minimum = {"seeds": 2, "search_seeds": 1, "ev_states": 2, "ev_continuations": 2}
    for name, value in counts.items():
        if value < minimum[name]:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} {value}: allowed: an int >= {minimum[name]}")
    if oracle is None:
        return None
    from envs.scripted import parse_oracle

    try:
        blueprint, slot = parse_oracle(oracle)
    except ValueError as err:
        raise ConfigError(f"--oracle: {err}") from None
    if n_slots is not None and slot >= n_slots:
        raise ConfigError(f"--oracle {oracle}: slot must be r0c0..r0c{n_slots - 1}")
    return blueprint, slot


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


def make_out_dir(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--out {out}: cannot create it ({err.strerror})") from None
    return out


class OracleFinder:
    """The oracle: given (--oracle), cached for this env config, or searched (then cached)."""

    def __init__(self, given: tuple[int, int] | None, env_kwargs: dict[str, Any],
                 search_seeds: int) -> None:
        self.oracle, self.search_seeds = given, search_seeds
        self.cache = _cache_path(env_kwargs, search_seeds)
        self.search: dict[str, Any] | None = None
        self.source = "given with --oracle"
        if given is None and self.cache.is_file():
            self.search, self.source = json.loads(self.cache.read_text()), \
                f"cached in {self.cache}"

    def search_steps(self, n_slots: int, max_epochs: int) -> int:
        """Env steps the search will take (0 when given or cached)."""
        from envs.contract import CNN_BLUEPRINTS

        if self.oracle is not None or self.search is not None:
            return 0
        return n_slots * len(CNN_BLUEPRINTS) * self.search_seeds * max_epochs

    def find(self, make_env: Any, max_epochs: int, tick: Any) -> tuple[int, int]:
        from envs.scripted import parse_oracle
        from esper_rllib.audit import search_oracle

        if self.oracle is None:
            if self.search is None:
                self.search = search_oracle(make_env, max_epochs, self.search_seeds, tick)
                self.source = (f"searched: best of {len(self.search['mean_final_acc'])} "
                               f"over {self.search_seeds} seeds")
                self.cache.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(self.cache, json.dumps(self.search, indent=1))
            self.oracle = parse_oracle(self.search["choice"])
        return self.oracle


def command_line(name: str) -> str:
    if sys.argv[1:2] == [name]:
        return shlex.join(["esper-rllib", *sys.argv[1:]])
    return f"esper-rllib {name}"


def signal_audit(knobs: dict[str, Any], *, profile: str, seeds: int, oracle: str | None = None,
                 search_seeds: int = 2, ev_states: int = 30,
                 ev_continuations: int = 4) -> dict[str, Any]:
    """The audit of the env ``knobs`` describe (signal.json's content)."""
    import torch

    import envs
    from esper_rllib.audit import POLICIES, oracle_name, run_audit, scripted_policies

    if knobs["env"] != envs.ENV_ID:
        raise ConfigError(f"env={knobs['env']}: the audit runs on the real env only")
    # One thread, as in an env runner: the host's small convolutions gain nothing from more,
    # and on a busy machine extra threads stall each other.
    torch.set_num_threads(1)

    def new_env() -> Any:
        return make_env(knobs).unwrapped

    probe_env = new_env()
    given = _check_args(oracle, probe_env.n_slots, seeds=seeds, search_seeds=search_seeds,
                        ev_states=ev_states, ev_continuations=ev_continuations)
    max_epochs, kwargs = knobs["max_epochs"], env_config(knobs)
    finder = OracleFinder(given, kwargs, search_seeds)
    steps = finder.search_steps(probe_env.n_slots, max_epochs) + max_epochs * (
        len(POLICIES) * seeds + (ev_states * (ev_continuations - 1)) // 2)
    progress, start = Progress(steps), time.monotonic()
    best = finder.find(new_env, max_epochs, progress)
    env_seeds = [knobs["seed"] + i for i in range(seeds)]
    result = run_audit(new_env, scripted_policies(best, max_epochs), seeds=env_seeds,
                       max_epochs=max_epochs, gamma=knobs["gamma"], ev_states=ev_states,
                       ev_continuations=ev_continuations, tick=progress)
    progress.close()
    result["oracle_search"] = finder.search
    result["meta"] = {
        "profile": profile, "reward": knobs["reward"],
        "reward_normalization": probe_env.cfg.reward_normalization, "max_epochs": max_epochs,
        "seeds": env_seeds, "gamma": knobs["gamma"], "oracle": oracle_name(*best),
        "oracle_source": finder.source, "env_config": kwargs,
        "command": command_line("signal"), "wall_s": round(time.monotonic() - start, 1),
    }
    return result


def write_signal(out: Path, result: dict[str, Any]) -> None:
    from esper_rllib.audit import render_markdown

    write_json(out / SIGNAL_JSON, result)
    write_atomic(out / SIGNAL_MD, render_markdown(result))


def run(args: argparse.Namespace) -> int:
    from envs.hosts import SLOT_SIZES
    from esper_rllib.audit import render_markdown

    knobs = knobs_from_args(args)
    # Bad flags fail before anything is created.
    _check_args(args.oracle, len(SLOT_SIZES), seeds=args.seeds, search_seeds=args.search_seeds,
                ev_states=args.ev_states, ev_continuations=args.ev_continuations)
    out = make_out_dir(Path(args.out or Path("runs", "signal",
                                             f"{args.profile}-{knobs['reward']}")))
    result = signal_audit(knobs, profile=args.profile, seeds=args.seeds, oracle=args.oracle,
                          search_seeds=args.search_seeds, ev_states=args.ev_states,
                          ev_continuations=args.ev_continuations)
    write_signal(out, result)
    print(render_markdown(result))
    print(f"wrote {out / SIGNAL_MD} and {out / SIGNAL_JSON} ({result['meta']['wall_s']:.0f} s)")
    return 0
