"""A sweep run in two slices that keep their trials in one results folder (`ablate --slice K/N
--results DIR`), on tiny real trials: the folder holds the whole sweep's plan and each trial
once, small (no checkpoint), its table is the table of the two runs' own trial folders, the
report reads it as one sweep with its evaluations, and a slice run again runs nothing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from esper_rllib.cli import main
from esper_rllib.run.config import resolve_knobs
from tests.helpers.tiny_sweep import TINY, run_cli, tiny_args
from tuning.plan import SweepPlan, plan_sweep
from tuning.results import (
    KEPT_RESULT_KEYS,
    ablation_rows,
    load_experiment,
    read_ablation_csv,
    trial_dirs,
)

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]

# 2 cells x 1 seed of the seed document's ablation: the fix's head at depth 2 and 4.
GRID = {"value_head_gain": [0.01], "value_head_depth": [2, 4], "value_coef": [1.0]}
GRID_ARGS = [a for k, v in GRID.items() for a in ("--grid", f"{k}={','.join(map(str, v))}")]
KEPT_FILES = {"params.json", "result.json", "kept.json", "evaluation/evaluation.json",
              "evaluation/evaluation.md"}


def _ablate(storage: Path, name: str, *args: str):
    return run_cli("ablate", "--storage", str(storage), "--name", name, "--seeds", "1",
                   "--reference-episodes", "0", "--evaluate-episodes", "2", *GRID_ARGS,
                   *tiny_args(), *args)


@pytest.fixture(scope="module")
def slices(tmp_path_factory):
    storage = tmp_path_factory.mktemp("slices")
    kept = storage / "kept"
    for k in (1, 2):
        done = _ablate(storage, f"slice{k}", "--slice", f"{k}/2", "--results", str(kept))
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        assert f"results: kept gain=0.01,depth={2 * k}" in done.stdout
    return storage, kept


def _same(a: dict[str, str], b: dict[str, str]) -> bool:
    return a.keys() == b.keys() and all(
        x == y or (_nan(x) and _nan(y)) for x, y in zip(a.values(), b.values(), strict=True))


def _nan(text: str) -> bool:
    try:
        return math.isnan(float(text))
    except ValueError:
        return False


def test_the_folder_keeps_the_whole_sweep_and_each_trial_once_without_checkpoints(slices):
    _, kept = slices
    whole = plan_sweep("value_head", "quick", resolve_knobs, seeds=1, grid=GRID, overrides=TINY)
    saved = SweepPlan.load(kept)
    assert saved.selected is None
    assert [saved.trial_label(p) for p in saved.trials()] == \
        [whole.trial_label(p) for p in whole.trials()]
    trials = trial_dirs(kept)
    assert [t.name for t in trials] == ["gain=0.01,depth=2,coef=1.0,rng_seed=0",
                                        "gain=0.01,depth=4,coef=1.0,rng_seed=0"]
    for trial in trials:
        files = {str(p.relative_to(trial)) for p in trial.rglob("*") if p.is_file()}
        assert files == KEPT_FILES, trial.name
        for line in (trial / "result.json").read_text().splitlines():
            assert set(json.loads(line)) <= set(KEPT_RESULT_KEYS)
        about = json.loads((trial / "kept.json").read_text())
        assert "--results" in about["command"] and "--slice" in about["command"]
        assert about["commit"] and "CPUs" in about["machine"]
        assert 0 < about["iterations_wall_s"] < about["trial_wall_s"]
        # Evaluated at the trial's last checkpoint (of two), on the held-out seeds.
        meta = json.loads((trial / "evaluation/evaluation.json").read_text())["meta"]
        assert Path(meta["checkpoint"]).name == "checkpoint_000001"
        assert meta["seeds"] == [500_000, 500_001] and meta["greedy"] is False
        assert sum(p.stat().st_size for p in trial.rglob("*") if p.is_file()) < 200_000


def test_the_kept_table_is_the_table_of_the_slices_own_trial_folders(slices):
    storage, kept = slices
    runs = [row for k in (1, 2) for row in read_ablation_csv(storage / f"slice{k}" /
                                                             "ablation.csv")]
    table = read_ablation_csv(kept / "ablation.csv")
    assert len(table) == len(runs) == 2
    for mine, theirs in zip(table, sorted(runs, key=lambda r: r["trial"]), strict=True):
        assert _same(mine, theirs), (mine, theirs)
    # Recomputed from the kept files, as the report does: the same rows.
    plan = SweepPlan.load(kept)
    rows = ablation_rows(load_experiment(kept), plan.columns)
    assert [r["final_ev"] for r in rows] == [float(r["final_ev"]) for r in table] or all(
        _nan(r["final_ev"]) for r in table)


def test_the_report_reads_the_folder_as_one_sweep_with_its_kept_evaluations(slices):
    _, kept = slices
    assert main(["report", str(kept), "--reference-episodes", "0",
                 "--evaluate-episodes", "2"]) == 0
    report = (kept / "report.md").read_text()
    assert "2 trials in 2 cells" in report
    evaluations = report.split("## Trained policies against WAIT")[1].split("\n## ")[0]
    for depth in (2, 4):
        assert f"(gain=0.01,depth={depth},coef=1.0) | 1 x 2 |" in evaluations
    assert "no checkpoint" not in report
    assert not list(kept.glob("*/checkpoint_*"))  # nothing was evaluated again


def test_a_slice_run_again_runs_nothing_and_another_sweep_is_refused(slices):
    storage, kept = slices
    again = _ablate(storage, "again", "--slice", "1/2", "--results", str(kept))
    assert again.returncode == 0 and "nothing to run" in again.stdout, again.stderr[-2000:]
    assert not (storage / "again").exists()
    other = run_cli("ablate", "--storage", str(storage), "--name", "other", "--seeds", "1",
                    "--results", str(kept), *GRID_ARGS, *tiny_args(lr=1e-3))
    assert other.returncode == 2 and not (storage / "other").exists()
    assert "--results" in other.stderr and "keeps another sweep's runs: knob lr=0.001" \
        in other.stderr, other.stderr[-2000:]
