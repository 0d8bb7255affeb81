"""A `train` run's folder, ``<storage>/<name>/<trial>/checkpoint_NNNNNN``, and what lets
``train --restore`` continue it: ``run.json`` in the run folder keeps how the run's knobs were
given (profile, preset, ``--set``, the options), so a continuation trains the same run in the
same folder, its checkpoints numbered on. Read without Ray: every refusal comes before it starts.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esper_rllib.run.config import ConfigError

RUN_FILE = "run.json"
CHECKPOINT_PREFIX = "checkpoint_"
# What Algorithm.save_to_path writes that a restore cannot do without.
_REQUIRED_FILES = (
    "rllib_checkpoint.json",
    "class_and_ctor_args.pkl",
    "algorithm_state.pkl",
    "learner_group/learner/state.pkl",
    "learner_group/learner/rl_module/default_policy/module_state.pkl",
)
# Tune's files for Tuner.restore, which `train` does not use (--restore continues a run):
# removed when a run ends, so that no one follows Tune's advice to restore from them.
_TUNE_STATE = ("tuner.pkl", "experiment_state-*.json", "basic-variant-state-*.json",
               ".validate_storage_marker")


def check_checkpoint(path: str | os.PathLike, what: str = "--restore") -> Path:
    """The checkpoint directory, or ConfigError when it is missing, incomplete or truncated;
    ``what`` names it in the message as the user gave it (an option or an argument)."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise ConfigError(f"{what} {path}: no such checkpoint directory")
    missing = [f for f in _REQUIRED_FILES if not (root / f).is_file()]
    if missing:
        raise ConfigError(f"{what} {path}: not a complete RLlib checkpoint (missing "
                          f"{', '.join(missing)})")
    for file in sorted(root.rglob("*")):
        if file.suffix not in (".json", ".pkl"):
            continue
        try:
            with open(file, "rb") as f:
                json.load(f) if file.suffix == ".json" else pickle.load(f)
        except Exception as err:  # truncated or corrupt: any unpickling error
            raise ConfigError(f"{what} {path}: {file.relative_to(root)} is unreadable "
                              f"(truncated or corrupt: {type(err).__name__})") from None
    return root


def checkpoint_index(path: Path) -> int | None:
    """N of a ``checkpoint_NNNNNN`` folder (Tune's numbering), None for any other name."""
    number = path.name.removeprefix(CHECKPOINT_PREFIX)
    return int(number) if path.name.startswith(CHECKPOINT_PREFIX) and number.isdigit() \
        else None


def checkpoint_iteration(checkpoint: Path) -> int:
    """The training iterations a (checked) checkpoint holds."""
    with open(checkpoint / "algorithm_state.pkl", "rb") as f:
        return int(pickle.load(f).get("training_iteration") or 0)


@dataclass(frozen=True)
class Continuation:
    """A `train` run that ``--restore`` continues in its own folder."""

    checkpoint: Path  # the run's newest checkpoint
    trial: Path  # its trial folder (TensorBoard's run)
    run: Path  # the run folder (``--storage``/``--name``), holding run.json
    iteration: int  # iterations the checkpoint holds
    last_index: int  # the highest checkpoint number in the trial folder: numbering goes on
    inputs: dict[str, Any]  # run.json: how the run's knobs were given


def find_run(checkpoint: Path, what: str) -> Continuation | None:
    """The `train` run a checked checkpoint belongs to (its run folder holds run.json), else
    None (a sweep's trial, a copied checkpoint, a run from before run.json)."""
    trial = checkpoint.parent
    run_file = trial.parent / RUN_FILE
    if not run_file.is_file():
        return None
    try:
        inputs = json.loads(run_file.read_text())
    except ValueError as err:
        raise ConfigError(f"{what}: {run_file} is unreadable ({err})") from None
    numbered = {i: p for p in trial.iterdir() if (i := checkpoint_index(p)) is not None}
    return Continuation(checkpoint, trial, trial.parent, checkpoint_iteration(checkpoint),
                        max(numbered), inputs)


def check_newest(run: Continuation, what: str) -> None:
    """ConfigError when a newer whole checkpoint than ``run.checkpoint`` is in its trial folder:
    continuing from it would give the run two histories."""
    whole = [p for p in run.trial.iterdir() if checkpoint_index(p) is not None
             and all((p / f).is_file() for f in _REQUIRED_FILES)]
    newest = max(whole, key=checkpoint_index)
    if newest != run.checkpoint:
        raise ConfigError(f"{what}: not the run's newest checkpoint ({newest}); restore that "
                          "one to continue the run, or add --name NEW to start a new run "
                          "from this one")


def write_run_file(run: Path, inputs: Mapping[str, Any], knobs: Mapping[str, Any],
                   label: str) -> None:
    """run.json: ``inputs`` (profile, preset, set, options: how the knobs were given), the
    trial folder's name and the resolved knobs (for the record)."""
    text = json.dumps({**inputs, "label": label, "knobs": dict(knobs)}, indent=1,
                      default=str, sort_keys=True)
    (run / RUN_FILE).write_text(text + "\n")


def carry_history(stored: Path, staged: Path, iterations: int) -> None:
    """A continued run's result.json and progress.csv up to its checkpoint's ``iterations``,
    from its trial folder (``stored``) into the one Tune logs into (``staged``, its driver's
    copy that it syncs over the stored one): Tune appends the continuation's rows to them."""
    if staged.resolve() == stored.resolve():
        return
    staged.mkdir(parents=True, exist_ok=True)
    results = stored / "result.json"
    if results.is_file():
        rows = [line for line in results.read_text().splitlines() if line.strip()
                and json.loads(line).get("training_iteration", 0) <= iterations]
        (staged / "result.json").write_text("".join(f"{row}\n" for row in rows))
    progress = stored / "progress.csv"
    if progress.is_file():
        with open(progress, newline="") as f:
            table = list(csv.reader(f))
        if table:
            column = table[0].index("training_iteration")
            keep = [table[0], *(r for r in table[1:] if int(r[column]) <= iterations)]
            with open(staged / "progress.csv", "w", newline="") as f:
                csv.writer(f).writerows(keep)


def remove_tune_state(run: Path) -> None:
    for pattern in _TUNE_STATE:
        for path in run.glob(pattern):
            path.unlink(missing_ok=True)
