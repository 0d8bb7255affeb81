"""A sweep kept in the repository as it runs (``ablate --results DIR``): each trial, as it
reaches its budget, is evaluated at its last checkpoint and copied into a results folder with its
knobs, its per-iteration metrics, its evaluation and how it was made (command, commit, machine,
wall time), without checkpoints. A sweep run in slices over sessions on machines that keep
nothing between them so reads as one (``esper-rllib report DIR``), a slice run again skips the
trials the folder keeps, and a session that ends mid-trial loses only that trial."""

from __future__ import annotations

import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path

from esper_rllib.analysis.defaults import HELD_OUT_SEED
from esper_rllib.analysis.evaluation import (
    EVALUATION_DIR,
    EVALUATION_JSON,
    EVALUATION_MD,
    ScriptedEpisodes,
    default_out,
    evaluate,
    last_checkpoint,
    write_evaluation,
)
from esper_rllib.analysis.outputs import command_line
from esper_rllib.offline.record import git_commit
from esper_rllib.run.config import ConfigError, resolve_knobs
from tuning.plan import PLAN_FILE, SweepPlan, parse_slice
from tuning.results import keep_trial, kept_trials, read_results, write_ablation_csv
from tuning.sweeps import get_sweep
from tuning.trainable import PLACEMENT_KEY


def machine() -> str:
    """The machine in a few words: CPUs, memory, platform."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} CPUs, {memory:.0f} GiB, {platform.system()} {platform.machine()}"


def evaluate_episodes(plan: SweepPlan, asked: int) -> int:
    """Held-out episodes each kept trial is evaluated on: the sweep's own count or ``asked``
    (``--evaluate-episodes``), the larger, as the report evaluates (its checkpoints are not
    kept, so it cannot be evaluated later)."""
    return max(asked, get_sweep(plan.sweep).evaluate_episodes)


class ResultsFolder:
    """A results folder this run adds to; call it with a finished trial's folders (Tune's
    driver waits while it evaluates the trial and keeps it)."""

    def __init__(self, folder: str | Path, plan: SweepPlan, episodes: int, command: str
                 ) -> None:
        """``plan``: this run's; ConfigError when ``folder`` keeps another sweep."""
        self.folder = Path(folder)
        self.whole = plan.whole()
        if (self.folder / PLAN_FILE).is_file():
            try:
                self.whole = SweepPlan.load(self.folder).joined(
                    plan, resolve_knobs(plan.profile))
            except ValueError as err:
                raise ConfigError(f"--results {folder}: it keeps another sweep's runs: {err}"
                                  ) from None
        self.episodes = episodes
        self.scripted = ScriptedEpisodes()  # played once for every trial of this run
        self.about = {"command": command, "commit": git_commit(), "machine": machine()}

    def kept(self) -> set[str]:
        """The trials the folder keeps whole."""
        return kept_trials(self.folder)

    def __call__(self, logs: Path, checkpoints: Path) -> None:
        try:
            self._keep(logs, checkpoints)
        except Exception as err:  # raised into Tune, it would fail the finished trial
            print(f"results: {logs.name} NOT kept in {self.folder} ({type(err).__name__}: "
                  f"{err}); run this slice again to run it again", file=sys.stderr, flush=True)

    def _keep(self, logs: Path, checkpoints: Path) -> None:
        rows = read_results(logs)
        if not rows or not rows[-1].get("done"):
            return  # stopped short of its budget (an interrupt): nothing to keep
        files = {}
        evaluation_s = 0.0
        if self.episodes:
            checkpoint = last_checkpoint(checkpoints)
            if checkpoint is None:
                raise ConfigError(f"{checkpoints}: no checkpoint to evaluate")
            start = time.monotonic()
            result = evaluate(checkpoint, episodes=self.episodes, greedy=False,
                              first_seed=HELD_OUT_SEED, scripted=self.scripted)
            evaluation_s = time.monotonic() - start
            result["meta"]["command"] = shlex.join(
                ["esper-rllib", "evaluate", str(checkpoint), "--episodes", str(self.episodes)])
            out = default_out(checkpoint)  # where the report finds it cached
            write_evaluation(out, result)
            files = {f"{EVALUATION_DIR}/{name}": out / name
                     for name in (EVALUATION_JSON, EVALUATION_MD)}
        span = rows[-1].get(PLACEMENT_KEY, {})  # the trial's start to its last result
        self.whole.save(self.folder)
        keep_trial(logs, self.folder, files, {
            **self.about, "iterations_wall_s": rows[-1].get("time_total_s"),
            "trial_wall_s": span.get("reported_at", math.nan) - span.get("started_at", math.nan),
            "evaluation_wall_s": round(evaluation_s, 1),
            "kept_at": time.strftime("%Y-%m-%d %H:%M:%S %Z")})
        write_ablation_csv(self.folder, self.whole.columns)
        print(f"results: kept {logs.name} in {self.folder} ({len(self.kept())} of "
              f"{self.whole.n_trials} trials of the sweep)", flush=True)


def plan_run(plan: SweepPlan, slice_text: str | None, results: str | None, asked_episodes: int
             ) -> tuple[SweepPlan, ResultsFolder | None]:
    """This run's plan: the slice ``--slice K/N`` asks for, less the trials the folder
    ``--results`` keeps already; and that folder (None without --results). ValueError (a
    ConfigError) naming the flag; nothing written."""
    if slice_text:
        plan = plan.part(*parse_slice(slice_text))
    if not results:
        return plan, None
    folder = ResultsFolder(results, plan, evaluate_episodes(plan, asked_episodes),
                           command_line("ablate"))
    names = [plan.trial_label(p) for p in plan.trials()]
    kept = folder.kept() & set(names)
    if kept:
        print(f"results: {results} keeps {len(kept)} of this run's {len(names)} trials; they "
              "are not run again")
    return plan.select(n for n in names if n not in kept), folder
