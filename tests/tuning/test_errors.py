"""Sweep planning and bad input: named sweeps, free axes, derived knobs, and one clear error
(exit code 2) for a bad sweep name, axis, value or storage location. No Ray needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from esper_rllib.analysis.sweep import Cell
from esper_rllib.cli import main
from esper_rllib.run.config import ConfigError, resolve_knobs
from tuning.plan import plan_sweep
from tuning.storage import StorageError, check_storage


def _error(capsys, *argv: str) -> str:
    assert main(["ablate", *argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_seed_sweep_is_the_eight_cell_grid_times_seeds_with_layernorm_following_depth():
    plan = plan_sweep("value_head", "quick", resolve_knobs, seeds=3)
    assert plan.axes == {"value_head_gain": [1.0, 0.01], "value_head_depth": [2, 4],
                         "value_coef": [0.5, 1.0], "rng_seed": [0, 1, 2]}
    assert plan.n_trials == 24
    space = plan.param_space()
    assert space["value_coef"] == {"grid_search": [0.5, 1.0]}
    assert "value_head_layernorm" not in space  # derived inside each trial
    assert plan.cell_knobs({**space, "value_head_depth": 4})["value_head_layernorm"] is True
    assert plan.cell_knobs({**space, "value_head_depth": 2})["value_head_layernorm"] is False


def test_extended_sweep_crosses_critics_gradient_steps_and_popart_on_the_fix():
    plan = plan_sweep("extended", "quick", resolve_knobs, seeds=1)
    assert plan.n_trials == 3 * 2 * 2
    assert plan.axes["num_epochs"] == [1, 8]
    assert plan.axes["value_target_norm"] == ["none", "popart"]
    base = plan.param_space()
    assert (base["value_head_depth"], base["value_head_layernorm"], base["value_head_gain"],
            base["value_coef"]) == (4, True, 0.01, 1.0)
    knobs = {v: plan.cell_knobs({**base, "critic_variant": v})
             for v in plan.axes["critic_variant"]}
    assert (knobs["q_op/sampled_op"]["critic"], knobs["q_op/sampled_op"]["q_baseline"]) == (
        "q_op", "sampled_op")
    assert (knobs["q_op/expected"]["critic"], knobs["q_op/expected"]["q_baseline"]) == (
        "q_op", "expected")
    assert knobs["v"]["critic"] == "v"
    assert all("critic_variant" not in k for k in knobs.values())  # a label, not a knob
    # Gradient steps per batch are whole-batch epochs: no minibatches.
    assert all(k["minibatches"] == 1 for k in knobs.values())


def test_remedies_sweep_is_grad_clip_by_critic_lr_on_the_seed_documents_fix():
    plan = plan_sweep("remedies", "quick", resolve_knobs, seeds=2)
    assert plan.axes == {"max_grad_norm": [1.0, 2.0, 5.0], "critic_lr_scale": [1.0, 10.0],
                         "rng_seed": [0, 1]}
    assert plan.n_trials == 3 * 2 * 2
    knobs = plan.cell_knobs({**plan.param_space(), "max_grad_norm": 5.0,
                             "critic_lr_scale": 10.0, "rng_seed": 1})
    assert (knobs["max_grad_norm"], knobs["critic_lr_scale"]) == (5.0, 10.0)
    assert (knobs["value_head_depth"], knobs["value_head_layernorm"], knobs["value_head_gain"],
            knobs["value_coef"]) == (4, True, 0.01, 1.0)
    assert (knobs["critic"], knobs["q_baseline"]) == ("q_op", "sampled_op")  # the reference


def test_free_axes_seeds_and_set_combine():
    plan = plan_sweep("value_head", "quick", resolve_knobs, seeds=2,
                      grid={"lr": [1e-4, 3e-4], "value_head_depth": [2, 3, 4]},
                      overrides={"rng_seed": 10, "n_train": 256})
    assert plan.axes["lr"] == [1e-4, 3e-4] and plan.axes["value_head_depth"] == [2, 3, 4]
    assert plan.axes["rng_seed"] == [10, 11]
    assert plan.base["n_train"] == 256
    assert plan.n_trials == 2 * 3 * 2 * 2 * 2
    assert plan.cell_knobs({**plan.base, "value_head_depth": 3})["value_head_layernorm"] is False


def test_bad_sweep_name(capsys):
    with pytest.raises(SystemExit) as exit_:  # argparse's choices
        main(["ablate", "--sweep", "nope", "--storage", "/tmp"])
    line = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "\n" not in line
    assert "argument --sweep: invalid choice: 'nope'" in line and "'value_head', 'extended'" in line


def test_bad_axis_and_bad_values(capsys):
    line = _error(capsys, "--grid", "bogus=1,2")
    assert "unknown key 'bogus'" in line and "`esper-rllib knobs` lists all" in line
    line = _error(capsys, "--grid", "value_coef=0.5,lots")
    assert "value_coef='lots'" in line and "float >= 0" in line
    line = _error(capsys, "--grid", "critic=q_op,x")
    assert "critic" in line and "q_op | v" in line
    line = _error(capsys, "--grid", "value_coef")
    assert "expected key=v1,v2" in line
    line = _error(capsys, "--set", "value_coef=0.3")
    assert "axis of this sweep" in line and "--grid value_coef" in line
    line = _error(capsys, "--grid", "iterations=2,3")
    assert "same budget" in line
    line = _error(capsys, "--sweep", "extended", "--grid", "critic_variant=v,q_op/greedy")
    assert "critic_variant: 'q_op/greedy'" in line and "q_op/expected" in line
    line = _error(capsys, "--seeds", "0")
    assert "--seeds must be >= 1" in line


def test_cell_combinations_are_validated_before_anything_runs():
    # Each value is fine alone; the combination breaks the batch rule.
    with pytest.raises(ConfigError, match="episodes_per_batch"):
        plan_sweep("value_head", "quick", resolve_knobs, seeds=1,
                   grid={"num_envs_per_env_runner": [1, 3]}, overrides={"stack_batch": False})


def test_unwritable_storage(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = _error(capsys, "--storage", str(blocker / "runs"))
    assert f"{blocker} is a file, not a folder" in line
    line = _error(capsys, "--storage", "nosuchscheme://bucket/runs")
    assert "cannot open this URI" in line
    assert not (blocker.parent / "runs").exists()  # nothing half-written


def test_storage_where_no_folder_can_be_created_is_caught_before_ray_starts(capsys):
    # /proc exists and looks writable to root (os.access says yes), but takes no folders.
    line = _error(capsys, "--storage", "/proc/nope", "--seeds", "1")
    assert line.startswith("esper-rllib ablate: error: --storage /proc/nope: cannot create "
                           "folders in /proc")
    assert "allowed: a writable local folder or a storage URI" in line
    assert not Path("/proc/nope").exists()


def test_a_cifar_cell_without_data_is_caught_before_ray_starts(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("ESPER_DATA_DIR", raising=False)
    line = _error(capsys, "--grid", "task=synth_impaired,cifar_impaired", "--seeds", "1",
                  "--storage", str(tmp_path / "runs"))
    assert "data_dir=None (task cifar_impaired): no CIFAR-10 directory" in line
    assert not (tmp_path / "runs").exists()


def test_trial_names_are_the_axes_with_short_labels():
    plan = plan_sweep("extended", "quick", resolve_knobs, seeds=1)
    names = [plan.trial_label(p) for p in plan.trials()]
    assert len(set(names)) == plan.n_trials
    # Tune turns "/" into "_" in folder names: the label is the folder name as written.
    assert names[0] == "critic=q_op_sampled_op,epochs=1,norm=none,rng_seed=0"
    assert plan.cell_label({**plan.base, "critic_variant": "v"}) == (
        "critic=v,epochs=1,norm=none")
    seed = plan_sweep("value_head", "quick", resolve_knobs, seeds=2, grid={"lr": [1e-4, 3e-4]})
    assert seed.trial_label(next(seed.trials())) == "gain=1.0,depth=2,coef=0.5,lr=0.0001,rng_seed=0"
    # The report's plot legends name cells the same way.
    cell = Cell((1.0, 2, 0.5, 1e-4), trials=[], summaries=[])
    assert cell.label(seed.cell_axes) == seed.cell_label(next(seed.trials()))


def test_label_values_that_would_share_a_folder_name_are_refused():
    with pytest.raises(ValueError, match="share the folder name 'gain=1.0,depth=2,coef=0.5,"):
        plan_sweep("value_head", "quick", resolve_knobs, seeds=1,
                   grid={"data_dir": ["/a/b", "/a_b"]})


def test_storage_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert check_storage("runs/x") == str(tmp_path / "runs" / "x")
    assert not (tmp_path / "runs").exists()
    with pytest.raises(StorageError):
        check_storage("/proc/version/runs")


@pytest.mark.ray
def test_resume_needs_an_interrupted_sweep_and_a_new_run_a_new_name(capsys, tmp_path):
    line = _error(capsys, "--resume", "--storage", str(tmp_path))
    assert "no value_head-quick-* sweep under" in line
    line = _error(capsys, "--resume", "--storage", str(tmp_path), "--name", "ghost")
    assert "no interrupted sweep at" in line
    plan_sweep("value_head", "quick", resolve_knobs, seeds=1).save(tmp_path / "taken")
    line = _error(capsys, "--storage", str(tmp_path), "--name", "taken", "--seeds", "1")
    assert "already holds a sweep" in line and "--resume" in line


def test_count_flags(capsys):
    assert "--max-concurrent 0" in _error(capsys, "--max-concurrent", "0")
    assert "--stop-on-collapse -1" in _error(capsys, "--stop-on-collapse", "-1")
