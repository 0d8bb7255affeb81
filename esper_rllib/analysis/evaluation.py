"""Trained policies evaluated from their checkpoints on held-out env seeds next to the audit's
scripted policies (WAIT, random, heuristic, oracle), paired by seed: one checkpoint
(``esper-rllib evaluate``), the cells a report evaluates, and the reference accuracies of the
heuristic and WAIT-only policies on a sweep's task."""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import shlex
import sys
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
from esper_rllib.analysis.signal import (
    OracleFinder,
    announce,
    cache_root,
    duration,
    step_seconds,
)
from esper_rllib.analysis.sweep import SEED_FIX, Cell, Sweep, named_cell
from esper_rllib.run.config import ConfigError
from tuning.plan import SEED
from tuning.storage import atomic_path
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


def _scripted_cache(env_kwargs: dict[str, Any], seeds: list[int], oracle: tuple[int, int]
                    ) -> Path:
    """Where the scripted episodes of this env config, env seeds and oracle are kept between
    processes (slices of a sweep, later evaluations): keyed also by the source of the env and of
    the code that plays them, so that a changed env never reads episodes it did not play."""
    import envs
    from esper_rllib.analysis import audit, learnability

    sources = sorted(Path(envs.__file__).parent.glob("*.py"))
    digest = hashlib.sha256(json.dumps([env_kwargs, seeds, oracle_name(*oracle)],
                                       sort_keys=True, default=str).encode())
    for path in [*sources, Path(audit.__file__), Path(learnability.__file__)]:
        digest.update(path.read_bytes())
    return cache_root() / "scripted" / f"{digest.hexdigest()[:16]}.pkl"


class ScriptedEpisodes:
    """The scripted policies' episodes (WAIT, random, heuristic, oracle, oracle-hold), played once
    per env config and env seeds: they do not depend on the checkpoint, so every checkpoint of an
    experiment evaluated through one ``ScriptedEpisodes`` shares them, and a later process reads
    them from ``_scripted_cache`` (the env is deterministic given its seed and the actions)."""

    def __init__(self, oracle: str | None = None, search_seeds: int = 2) -> None:
        from envs.scripted import parse_oracle

        self.oracle, self.search_seeds = None, search_seeds
        self._rate: float | None = None  # seconds per env step, timed once
        if oracle is not None:
            try:
                self.oracle = parse_oracle(oracle)
            except ValueError as err:
                raise ConfigError(f"--oracle: {err}") from None
        self._played: dict[str, tuple[Episodes, OracleFinder]] = {}

    @staticmethod
    def _key(env_kwargs: dict[str, Any], seeds: list[int]) -> str:
        return json.dumps([env_kwargs, seeds], sort_keys=True, default=str)

    def steps(self, env_kwargs: dict[str, Any], seeds: list[int], n_slots: int
              ) -> tuple[int, int]:
        """Env steps ``play`` will take: (the oracle search's, the scripted episodes'); none
        when these episodes were played already."""
        if self._key(env_kwargs, seeds) in self._played:
            return 0, 0
        max_epochs = env_kwargs["max_epochs"]
        finder = OracleFinder(self.oracle, env_kwargs, self.search_seeds)
        known = finder.known()
        if known is not None and _scripted_cache(env_kwargs, seeds, known).is_file():
            return 0, 0
        return finder.search_steps(n_slots, max_epochs), len(POLICIES) * len(seeds) * max_epochs

    def step_seconds(self, new_env: Callable[[], Any], max_epochs: int) -> float:
        """Seconds per env step here (``signal.step_seconds``), timed on first use only."""
        if self._rate is None:
            self._rate = step_seconds(new_env(), max_epochs)
        return self._rate

    def announce(self, env_kwargs: dict[str, Any], seeds: list[int], n_slots: int,
                 seconds_per_step: float | None = None) -> str | None:
        """The line that says an oracle search will run first (what it costs, in time with
        ``seconds_per_step``, where its result is cached, how to skip it), or None when the
        oracle is given, cached or played."""
        if self._key(env_kwargs, seeds) in self._played:
            return None
        finder = OracleFinder(self.oracle, env_kwargs, self.search_seeds)
        steps = finder.search_steps(n_slots, env_kwargs["max_epochs"])
        if not steps:
            return None
        time_ = "" if seconds_per_step is None else \
            f", about {duration(steps * seconds_per_step)}"
        return (f"oracle search first: {finder.candidates(n_slots)} ({steps:,} env steps"
                f"{time_}); the choice is cached in {finder.cache} for later runs on this env "
                "(--oracle BLUEPRINT@SLOT skips the search)")

    def play(self, new_env: Callable[[], Any], env_kwargs: dict[str, Any], seeds: list[int],
             gamma: float, tick: Tick) -> tuple[Episodes, OracleFinder]:
        """(the episodes, the finder that chose their oracle), played on first use."""
        key = self._key(env_kwargs, seeds)
        if key not in self._played:
            max_epochs = env_kwargs["max_epochs"]
            finder = OracleFinder(self.oracle, env_kwargs, self.search_seeds)
            best = finder.find(new_env, max_epochs, tick)
            cache = _scripted_cache(env_kwargs, seeds, best)
            if cache.is_file():
                episodes = pickle.loads(cache.read_bytes())
            else:
                episodes, _ = play_policies(new_env, scripted_policies(best, max_epochs),
                                            seeds=seeds, max_epochs=max_epochs, gamma=gamma,
                                            ev_states=0, ev_continuations=2, tick=tick)
                cache.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(cache) as tmp:
                    tmp.write_bytes(pickle.dumps(episodes))
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
    rate = scripted.step_seconds(new_env, max_epochs)
    search = scripted.announce(env_kwargs, seeds, n_slots, rate)
    if search:
        print(search, file=sys.stderr, flush=True)
    searched, played = scripted.steps(env_kwargs, seeds, n_slots)
    others = f" and the {len(POLICIES)} scripted ones" if played else ""
    announce(f"evaluation of {checkpoint}: {episodes} held-out episodes of its policy{others}",
             played + episodes * max_epochs, rate)
    progress = Progress(searched + played + episodes * max_epochs)
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


def episodes_to_tell(diff: float, sd: float, most: int = 100_000) -> int | None:
    """The fewest paired episodes whose 95% t interval excludes 0 for a mean difference
    ``diff`` at the spread ``sd`` (the paired differences' sample sd); None for no difference or
    more than ``most``."""
    from scipy.stats import t

    def tells(n: int) -> bool:  # the half-width shrinks as n grows: bisect on it
        return t.ppf(0.975, n - 1) * sd / math.sqrt(n) < abs(diff)

    if diff == 0 or not tells(most):
        return None
    low, high = 1, 2
    while not tells(high):
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if tells(middle) else (middle, high)
    return high


def verdict_lines(result: dict[str, Any]) -> list[str]:
    """What an evaluation can tell, verdict first: the trained policy's final accuracy against
    WAIT's on the same env seeds (paired 95% interval), with the scripted policies' for scale;
    when the interval includes 0, whether the episodes were too few for a difference of the
    observed size at the observed spread; and why oracle_hold equals oracle where it does."""
    policies = result["policies"]
    acc = policies[TRAINED]["vs_wait"]["final_acc"]
    n, diff, low, high = acc["n"], acc["diff"], acc["low"], acc["high"]
    scale = ", ".join(f"{name} {policies[key]['vs_wait']['final_acc']['diff']:+.2f}"
                      for key, name in EVALUATION_REFERENCES[1:] if key in policies)
    measured = (f"{diff:+.2f} accuracy points over WAIT [{low:+.2f}, {high:+.2f}] on {n} "
                f"paired episodes ({scale})")
    if low > 0 or high < 0:
        lines = [f"verdict: {'better' if low > 0 else 'worse'} than WAIT: {measured}"]
    else:
        lines = [f"verdict: cannot tell from WAIT: {measured}; the interval includes 0"]
        trained = [e["final_acc"] for e in policies[TRAINED]["episodes"]]
        wait = [e["final_acc"] for e in policies["wait"]["episodes"]]
        sd = float(np.std(np.subtract(trained, wait), ddof=1)) if n > 1 else math.nan
        needed = episodes_to_tell(diff, sd) if not math.isnan(sd) else None
        if needed is not None and needed > n:
            lines.append(f"{n} episodes are too few: at this spread (sd {sd:.2f} points per "
                         f"paired episode) a difference of {diff:+.2f} excludes 0 from about "
                         f"{needed} episodes on (--episodes {needed})")
        elif needed is None:
            lines.append(f"no difference from WAIT was observed over {n} episodes" if diff == 0
                         else f"at this spread (sd {sd:.2f} points per paired episode) no "
                         "feasible number of episodes tells a difference this small")
    hold, oracle = policies.get("oracle_hold"), policies.get("oracle")
    pairs = list(zip(hold["episodes"], oracle["episodes"], strict=True)) if hold and oracle \
        else []
    if pairs and all(a["final_acc"] == b["final_acc"] for a, b in pairs):
        same_return = all(a["return"] == b["return"] for a, b in pairs)
        lines.append("oracle_hold = oracle here: its seed (the oracle's blueprint and slot) is "
                     "kept in HOLDING to the last step instead of fossilized as soon as legal, "
                     "and every episode ended at the same accuracy"
                     + (" and return" if same_return else "")
                     + ": on this env, holding changed nothing the seed adds")
    return lines


def render_evaluation(result: dict[str, Any]) -> str:
    """evaluation.md: the title, the verdict lines, then the audit's tables."""
    title, rest = render_markdown(result).split("\n", 1)
    return "\n\n".join([title, "\n".join(verdict_lines(result))]) + "\n" + rest


def write_evaluation(out: Path, result: dict[str, Any]) -> None:
    """evaluation.json and evaluation.md in ``out`` (created)."""
    make_out_dir(out)
    write_json(out / EVALUATION_JSON, result)
    write_atomic(out / EVALUATION_MD, render_evaluation(result))


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
    import torch

    from envs.heuristic import HeuristicPolicy, WaitPolicy, run_episode

    # One thread, as the audit and the evaluation: with torch's default two on a 2-core machine
    # still busy with Ray's processes, a `quick` step took 4-7 s instead of 0.3-0.45 s.
    torch.set_num_threads(1)
    env = gym.make(f"envs:{knobs['env']}", **kwargs)
    announce(f"report: reference episodes, heuristic and WAIT-only, {episodes} each on the "
             "sweep's env", 2 * episodes * knobs["max_epochs"],
             step_seconds(env.unwrapped, knobs["max_epochs"]))
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


def _announce_cells(chosen: list[tuple[str, Cell]], seeds: list[int],
                    scripted: ScriptedEpisodes) -> None:
    """One line before the report's evaluations start: the checkpoints not yet evaluated on
    these seeds, and the time they and the scripted policies (and an oracle search) will take."""
    import gymnasium as gym

    import envs
    from envs.hosts import SLOT_SIZES
    from esper_rllib.run.checkpoint_policy import load_run_config

    names, configs = [], []
    for name, cell in chosen:
        for trial in cell.trials:
            checkpoint = last_checkpoint(trial.path)
            if checkpoint is None or _cached_evaluation(default_out(checkpoint), checkpoint,
                                                        seeds) is not None:
                continue
            try:
                configs.append(load_run_config(checkpoint)["env_config"])
            except (OSError, KeyError, ValueError, EOFError, ModuleNotFoundError):
                continue  # evaluate() will say what is wrong with it
            names.append(name)
    if not configs:
        return
    steps, searching, played, searched = 0, 0, set(), set()
    for env_kwargs in configs:
        steps += len(seeds) * env_kwargs["max_epochs"]
        key = ScriptedEpisodes._key(env_kwargs, seeds)
        if key not in played:  # the scripted episodes: once per env; a search once per cache
            search, scripted_steps = scripted.steps(env_kwargs, seeds, len(SLOT_SIZES))
            cache = OracleFinder(scripted.oracle, env_kwargs, scripted.search_seeds).cache
            searching += search if cache not in searched else 0
            steps += scripted_steps
            played.add(key)
            searched.add(cache)
    import torch

    torch.set_num_threads(1)  # timed as evaluate() plays them
    first = configs[0]
    rate = scripted.step_seconds(lambda: gym.make(envs.ENV_ID, **first).unwrapped,
                                 first["max_epochs"])
    search = ", after an oracle search" if searching else ""
    announce(f"report: evaluating the last checkpoints of {len(configs)} trials "
             f"({', '.join(dict.fromkeys(names))}) on {len(seeds)} held-out env seeds, next to "
             f"the scripted policies{search}", steps + searching, rate)


def evaluate_cells(sweep: Sweep, analysis: Analysis, episodes: int) -> list[CellEvaluation]:
    """Every trial of ``evaluated_cells`` evaluated at its last checkpoint on ``episodes``
    held-out env seeds with sampled actions, cached in <trial>/evaluation/ (as `esper-rllib
    evaluate CHECKPOINT` writes it). The scripted policies' episodes are played once for the
    experiment, not once per trial."""
    seeds = [HELD_OUT_SEED + i for i in range(episodes)]
    scripted = ScriptedEpisodes()
    chosen = evaluated_cells(sweep, analysis)
    _announce_cells(chosen, seeds, scripted)
    evaluations = []
    for name, cell in chosen:
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
