"""Trained policies evaluated from their checkpoints on held-out env seeds next to the audit's
scripted policies (WAIT, random, heuristic, oracle), paired by seed: one checkpoint
(``esper-rllib evaluate``), the cells a report evaluates, and the reference accuracies of the
heuristic and WAIT-only policies on a sweep's task."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from esper_rllib.analysis.audit import (
    POLICIES,
    Episodes,
    Tick,
    oracle_name,
    play_policies,
    render_markdown,
    scripted_policies,
    summarize,
)
from esper_rllib.analysis.cells import Analysis, cell_note
from esper_rllib.analysis.defaults import HELD_OUT_SEED, REFERENCE_EPISODES
from esper_rllib.analysis.outputs import (
    Progress,
    command_line,
    make_out_dir,
    write_atomic,
    write_json,
)
from esper_rllib.analysis.signal import OracleFinder
from esper_rllib.analysis.sweep import SEED_FIX, Cell, Sweep, named_cell
from esper_rllib.run.config import ConfigError
from tuning.plan import SEED
from tuning.sweeps import SWEEPS

EVALUATION_JSON = "evaluation.json"


EVALUATION_MD = "evaluation.md"


TRAINED = "trained"


EVALUATION_DIR = "evaluation"


REFERENCE_FILE = "reference.json"


CHECKPOINT_PREFIX = "checkpoint_"


# The scripted policies shown next to the trained ones, with their row names.
EVALUATION_REFERENCES = (("wait", "WAIT"), ("heuristic", "heuristic"), ("oracle", "oracle"))


def default_out(checkpoint: str | Path) -> Path:
    """Where an evaluation of ``checkpoint`` goes by default: its trial folder's evaluation/."""
    return Path(checkpoint).resolve().parent / EVALUATION_DIR


class ScriptedEpisodes:
    """The scripted policies' episodes (WAIT, random, heuristic, oracle, oracle-hold), played once
    per env config and env seeds: they do not depend on the checkpoint, so every checkpoint of an
    experiment evaluated through one ``ScriptedEpisodes`` shares them."""

    def __init__(self, oracle: str | None = None, search_seeds: int = 2) -> None:
        from envs.scripted import parse_oracle

        self.oracle, self.search_seeds = None, search_seeds
        if oracle is not None:
            try:
                self.oracle = parse_oracle(oracle)
            except ValueError as err:
                raise ConfigError(f"--oracle: {err}") from None
        self._played: dict[str, tuple[Episodes, OracleFinder]] = {}

    @staticmethod
    def _key(env_kwargs: dict[str, Any], seeds: list[int]) -> str:
        return json.dumps([env_kwargs, seeds], sort_keys=True, default=str)

    def steps(self, env_kwargs: dict[str, Any], seeds: list[int], n_slots: int) -> int:
        """Env steps ``play`` will take (0 when these episodes were played already)."""
        if self._key(env_kwargs, seeds) in self._played:
            return 0
        max_epochs = env_kwargs["max_epochs"]
        finder = OracleFinder(self.oracle, env_kwargs, self.search_seeds)
        return finder.search_steps(n_slots, max_epochs) + len(POLICIES) * len(seeds) * max_epochs

    def announce(self, env_kwargs: dict[str, Any], seeds: list[int], n_slots: int) -> str | None:
        """The line that says an oracle search will run first (what it costs, where its result
        is cached, how to skip it), or None when the oracle is given, cached or played."""
        from envs.contract import CNN_BLUEPRINTS

        if self._key(env_kwargs, seeds) in self._played:
            return None
        finder = OracleFinder(self.oracle, env_kwargs, self.search_seeds)
        steps = finder.search_steps(n_slots, env_kwargs["max_epochs"])
        if not steps:
            return None
        return (f"oracle search first: {n_slots * len(CNN_BLUEPRINTS)} blueprint@slot "
                f"candidates x {self.search_seeds} episodes ({steps} env steps, most of this "
                f"run); the choice is cached in {finder.cache} for later runs on this env "
                "(--oracle BLUEPRINT@SLOT skips the search)")

    def play(self, new_env: Callable[[], Any], env_kwargs: dict[str, Any], seeds: list[int],
             gamma: float, tick: Tick) -> tuple[Episodes, OracleFinder]:
        """(the episodes, the finder that chose their oracle), played on first use."""
        key = self._key(env_kwargs, seeds)
        if key not in self._played:
            max_epochs = env_kwargs["max_epochs"]
            finder = OracleFinder(self.oracle, env_kwargs, self.search_seeds)
            best = finder.find(new_env, max_epochs, tick)
            episodes, _ = play_policies(new_env, scripted_policies(best, max_epochs), seeds=seeds,
                                        max_epochs=max_epochs, gamma=gamma, ev_states=0,
                                        ev_continuations=2, tick=tick)
            self._played[key] = episodes, finder
        return self._played[key]


def evaluate(checkpoint: str | Path, *, episodes: int, greedy: bool, first_seed: int,
             oracle: str | None = None, search_seeds: int = 2,
             scripted: ScriptedEpisodes | None = None) -> dict[str, Any]:
    """The evaluation result (the audit's summary with the trained policy added). ``scripted``
    shares the scripted policies' episodes between evaluations (its oracle settings then apply;
    ``oracle`` and ``search_seeds`` make a new one otherwise)."""
    import gymnasium as gym
    import numpy as np
    import torch

    import envs
    from esper_rllib.run.checkpoint_policy import CheckpointPolicy

    if episodes < 2:
        raise ConfigError(f"--episodes {episodes}: allowed: an int >= 2")
    scripted = scripted or ScriptedEpisodes(oracle, search_seeds)
    policy, run_config = CheckpointPolicy.from_checkpoint(checkpoint, greedy=greedy)
    if run_config["env"] != f"envs:{envs.ENV_ID}":
        raise ConfigError(f"{checkpoint}: trained on {run_config['env']}, not the real env")
    env_kwargs, gamma = run_config["env_config"], run_config["gamma"]
    torch.set_num_threads(1)

    def new_env() -> Any:
        return gym.make(envs.ENV_ID, **env_kwargs).unwrapped

    n_slots, max_epochs = new_env().n_slots, env_kwargs["max_epochs"]
    seeds = [first_seed + i for i in range(episodes)]
    search = scripted.announce(env_kwargs, seeds, n_slots)
    if search:
        print(search, flush=True)
    progress = Progress(scripted.steps(env_kwargs, seeds, n_slots) + episodes * max_epochs)
    start = time.monotonic()
    references, finder = scripted.play(new_env, env_kwargs, seeds, gamma, progress)

    def trained(seed: int) -> CheckpointPolicy:
        policy.rng = np.random.default_rng(seed)
        return policy

    played, _ = play_policies(new_env, {TRAINED: trained}, seeds=seeds, max_epochs=max_epochs,
                              gamma=gamma, ev_states=0, ev_continuations=2, tick=progress)
    progress.close()
    result = summarize({**played, **references}, {}, gamma)
    result["oracle_search"] = finder.search
    result["meta"] = {
        "title": f"Evaluation of `{checkpoint}` ({'greedy' if greedy else 'sampled'} actions)",
        "profile": "from the checkpoint", "reward": env_kwargs.get("reward"),
        "reward_normalization": new_env().cfg.reward_normalization, "max_epochs": max_epochs,
        "seeds": seeds, "gamma": gamma, "oracle": oracle_name(*finder.oracle),
        "oracle_source": finder.source, "env_config": env_kwargs,
        "command": command_line("evaluate"), "wall_s": round(time.monotonic() - start, 1),
        "checkpoint": str(checkpoint), "greedy": greedy,
    }
    return result


def write_evaluation(out: Path, result: dict[str, Any]) -> None:
    """evaluation.json and evaluation.md in ``out`` (created)."""
    make_out_dir(out)
    write_json(out / EVALUATION_JSON, result)
    write_atomic(out / EVALUATION_MD, render_markdown(result))


def _reference_knobs(sweep: Sweep) -> dict[str, Any] | None:
    if sweep.plan is None:
        return None
    import envs

    knobs = dict(sweep.plan.base)
    return knobs if knobs.get("env") == envs.ENV_ID else None


def reference_accuracies(sweep: Sweep, episodes: int = REFERENCE_EPISODES
                         ) -> dict[str, list[float]] | None:
    """Final episode accuracy of the heuristic and WAIT-only policies on the sweep's task,
    ``episodes`` seeds each; cached in the experiment folder (keyed by the env settings)."""
    knobs = _reference_knobs(sweep)
    if knobs is None or episodes < 1:
        return None
    from esper_rllib.run.config import env_config

    # The references are cheap baselines: the host trains wherever a GPU is, else on CPU.
    kwargs = {**env_config(knobs), "device": "auto"}
    seeds = [int(knobs[SEED]) + i for i in range(episodes)]
    key = json.dumps({"env": kwargs, "seeds": seeds}, sort_keys=True, default=str)
    cache = sweep.path / REFERENCE_FILE
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return cached["accuracy"]
    import gymnasium as gym

    from envs.heuristic import HeuristicPolicy, WaitPolicy, run_episode

    env = gym.make(f"envs:{knobs['env']}", **kwargs)
    try:
        accuracy = {name: [float(run_episode(env, policy(), seed)["val_acc"]) for seed in seeds]
                    for name, policy in (("heuristic", HeuristicPolicy),
                                         ("WAIT-only", WaitPolicy))}
    finally:
        env.close()
    write_atomic(cache, json.dumps({"key": key, "accuracy": accuracy}, indent=2))
    return accuracy


def last_checkpoint(trial_dir: Path) -> Path | None:
    """The trial's checkpoint_NNNNNN folder with the highest number (None when it has none)."""
    numbered = [p for p in trial_dir.glob(f"{CHECKPOINT_PREFIX}*")
                if p.name.removeprefix(CHECKPOINT_PREFIX).isdigit()]
    return max(numbered, key=lambda p: int(p.name.removeprefix(CHECKPOINT_PREFIX)), default=None)


@dataclass
class CellEvaluation:
    """One cell's final checkpoints evaluated (`esper-rllib evaluate`), one result per trial."""

    name: str  # what the report calls the cell (the broken run, the fix, the best final EV)
    cell: Cell
    results: list[dict[str, Any]]  # evaluation.json's content, per trial with a checkpoint
    skipped: list[str]  # "<trial>: why it has no evaluation"
    written: list[Path]  # evaluation files this report wrote (the others were cached)

    def accuracies(self, policy: str) -> np.ndarray:
        """Final accuracy per (trial, env seed) of ``policy`` in each trial's evaluation: the
        trained policy's, or a scripted one's as played beside it (the same in every trial when
        they were all evaluated on one machine with one code)."""
        return np.array([[e["final_acc"] for e in r["policies"][policy]["episodes"]]
                         for r in self.results])


def sweep_evaluate_episodes(sweep: Sweep) -> int:
    """The held-out episodes on which the named sweep asks the report to evaluate every cell
    (its ``evaluate_episodes``; 0 for the others and for folders without sweep.json)."""
    definition = SWEEPS.get(sweep.plan.sweep) if sweep.plan is not None else None
    return definition.evaluate_episodes if definition is not None else 0


def evaluated_cells(sweep: Sweep, analysis: Analysis) -> list[tuple[str, Cell]]:
    """(name, cell) of the baseline (the broken run, else the sweep's first cell), the seed
    document's fix and the cell with the best final EV, those present, each once; every cell
    when the named sweep evaluates every cell (``sweep_evaluate_episodes``)."""
    chosen: list[Cell] = []
    every = sweep.cells if sweep_evaluate_episodes(sweep) else []
    for cell in (analysis.baseline, named_cell(sweep, SEED_FIX), analysis.best(sweep), *every):
        if cell is not None and all(cell is not c for c in chosen):
            chosen.append(cell)
    return [(cell_note(sweep, cell, analysis)
             or (cell.label(sweep.axes) if len(sweep.cells) > 1 else "the only cell"), cell)
            for cell in chosen]


def _cached_evaluation(out: Path, checkpoint: Path | None, seeds: list[int]
                       ) -> dict[str, Any] | None:
    """evaluation.json in ``out`` when it evaluated this checkpoint (None: the trial's last,
    which a results folder keeps no more) with sampled actions on these env seeds (as the
    report asks); else None."""
    try:
        result = json.loads((out / EVALUATION_JSON).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    meta = result.get("meta", {}) if isinstance(result, dict) else {}
    same = ((checkpoint is None or Path(str(meta.get("checkpoint"))).name == checkpoint.name)
            and meta.get("seeds") == seeds and meta.get("greedy") is False)
    return result if same else None


def evaluate_cells(sweep: Sweep, analysis: Analysis, episodes: int) -> list[CellEvaluation]:
    """Every trial of ``evaluated_cells`` evaluated at its last checkpoint on ``episodes``
    held-out env seeds with sampled actions, cached in <trial>/evaluation/ (as `esper-rllib
    evaluate CHECKPOINT` writes it). The scripted policies' episodes are played once for the
    experiment, not once per trial."""
    seeds = [HELD_OUT_SEED + i for i in range(episodes)]
    scripted = ScriptedEpisodes()
    evaluations = []
    for name, cell in evaluated_cells(sweep, analysis):
        evaluation = CellEvaluation(name, cell, [], [], [])
        for trial in cell.trials:
            checkpoint = last_checkpoint(trial.path)
            # A trial kept in a results folder (`ablate --results`) has its evaluation only.
            out = trial.path / EVALUATION_DIR if checkpoint is None else default_out(checkpoint)
            result = _cached_evaluation(out, checkpoint, seeds)
            if result is None and checkpoint is None:
                evaluation.skipped.append(f"{trial.name}: no checkpoint")
                continue
            if result is None:
                try:
                    result = evaluate(checkpoint, episodes=episodes, greedy=False,
                                      first_seed=HELD_OUT_SEED, scripted=scripted)
                except ConfigError as err:  # an incomplete checkpoint, a probe env
                    evaluation.skipped.append(f"{trial.name}: {err}")
                    continue
                result["meta"]["command"] = shlex.join(
                    ["esper-rllib", "evaluate", str(checkpoint), "--episodes", str(episodes)])
                write_evaluation(out, result)
                evaluation.written += [out / EVALUATION_JSON, out / EVALUATION_MD]
            evaluation.results.append(result)
        evaluations.append(evaluation)
    return evaluations
