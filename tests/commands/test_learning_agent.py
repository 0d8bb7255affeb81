"""The agent that learns, named: one preset is the recipe that was run, the README trains it in
one command, and a preset or a sweep on a profile it was not sized for says so in one line."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from esper_rllib.run.config import resolve_knobs
from tests.helpers.cli import run_main
from tuning.plan import plan_sweep
from tuning.sweeps import SWEEPS

ROOT = Path(__file__).resolve().parents[2]
COMMAND = "esper-rllib train --profile batch64 --preset learning_agent"


def test_the_preset_is_the_policy_sweeps_learning_cell():
    # docs/results/policy-critic-fix-ple-budget-aligned ran sweep policy at batch64 with
    # --grid lr=0.001 --grid reward=shaped: every knob of that trial is the preset's.
    plan = plan_sweep("policy", "batch64", resolve_knobs, seeds=1,
                      grid={"lr": [1e-3], "reward": ["shaped"]})
    (trial,) = plan.trials()
    ran = plan.cell_knobs(trial)
    preset = resolve_knobs("batch64", "learning_agent")
    assert {k: preset[k] for k in ran} == ran
    assert (preset["lr"], preset["reward"], preset["critic_feature_bins"],
            preset["episodes_per_batch"]) == (1e-3, "shaped", 8, 64)


def test_the_readme_trains_it_in_one_command():
    readme = (ROOT / "README.md").read_text()
    assert COMMAND in readme
    from esper_rllib.cli import build_parser

    args = build_parser().parse_args(COMMAND.split()[1:])
    assert (args.profile, args.preset) == ("batch64", "learning_agent")


def test_ablate_help_names_the_profile_each_sweep_was_sized_for(capsys):
    _, out, _ = run_main(["ablate", "--help"], capsys)
    for name, sweep in SWEEPS.items():
        (line,) = [x for x in out.splitlines() if x.startswith(f"  {name} ")]
        assert line.split()[1] == sweep.profile, line
    assert SWEEPS["policy"].profile == SWEEPS["learn"].profile == "batch64"


def test_a_sweep_on_a_profile_it_was_not_sized_for_says_so_in_one_line(capsys, tmp_path):
    # --seeds 0 stops the run at planning, after the note and before Ray.
    argv = ["ablate", "--sweep", "policy", "--seeds", "0", "--storage", str(tmp_path)]
    code, _, err = run_main(argv, capsys)
    note, error = err.splitlines()
    assert code == 2 and "--seeds must be >= 1" in error
    assert note == ("note: sweep policy is sized for --profile batch64 (64 episodes per batch); "
                    "this run uses quick (4): its results were measured at batch64")
    code, _, err = run_main([*argv, "--profile", "batch64"], capsys)
    assert code == 2 and "note:" not in err


@pytest.mark.parametrize(("profile", "noted"), [("quick", True), ("batch64", False)])
def test_the_preset_on_another_profile_says_so(profile, noted, capsys):
    from esper_rllib.commands.knob_args import knobs_from_args

    args = argparse.Namespace(profile=profile, preset="learning_agent", overrides=[])
    assert knobs_from_args(args)["reward"] == "shaped"
    err = capsys.readouterr().err
    assert ("note: preset learning_agent is sized for --profile batch64" in err) is noted
    assert err.count("\n") == int(noted)
