"""What a newcomer sees first: `--help` without importing Ray or torch, help that states its
defaults and choices, "did you mean" for a near miss, the `knobs` table, and the one final EV
that the console, report.md and the post-mortem share."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.cli import run_main

COMMANDS = ("train", "heuristic", "check-env", "knobs", "ablate", "report", "signal", "evaluate",
            "record", "critic-fit")


def test_help_and_argparse_errors_import_neither_ray_nor_torch():
    code = f"""
import contextlib, io, sys
from esper_rllib.cli import build_parser
for argv in ([["--help"]] + [[c, "--help"] for c in {COMMANDS!r}]
             + [["train", "--profile", "quik"], ["ablate", "--sweep", "value_hed"]]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            pass
print(sorted(m for m in ("ray", "torch") if m in sys.modules))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_a_bad_set_answers_without_importing_ray_or_torch():
    # The knob table, profiles and presets import neither; each command resolves its knobs
    # before importing what it runs with (ablate checks its counts with the report's code first).
    code = """
import contextlib, io, sys
from esper_rllib.cli import main
codes = []
for command in ("train", "heuristic", "check-env", "signal", "record"):
    with contextlib.redirect_stderr(io.StringIO()) as err:
        codes.append((main([command, "--set", "foo=1"]), "unknown key 'foo'" in err.getvalue()))
print(codes, sorted(m for m in ("ray", "torch") if m in sys.modules))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.strip() == f"{[(2, True)] * 5} []", proc.stdout + proc.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_states_its_default_or_has_none(command, capsys):
    from esper_rllib.cli import build_parser

    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]
    for action in sub._actions:
        if action.option_strings and action.help not in (None, "==SUPPRESS==") \
                and action.dest != "help":
            assert action.help, f"{command} {action.option_strings}: no help"
            if action.default not in (None, False, []):
                assert "default" in action.help, f"{command} {action.option_strings[0]}"
    code, out, _ = run_main([command, "--help"], capsys)
    assert code == 0 and "issue" not in out.lower()


def test_ablate_help_lists_the_sweeps_as_choices_one_line_each(capsys):
    from tuning.sweeps import SWEEPS

    _, out, _ = run_main(["ablate", "--help"], capsys)
    assert "{" + ",".join(SWEEPS) + "}" in out.replace("\n", "").replace(" ", "")
    for name in SWEEPS:
        assert sum(line.startswith(f"  {name} ") for line in out.splitlines()) == 1
    assert len(out.splitlines()) < 90


@pytest.mark.parametrize(("argv", "wanted"), [
    (["train", "--set", "valu_coef=1"], "unknown key 'valu_coef'; did you mean 'value_coef'"),
    (["train", "--profile", "quik"], "invalid choice: 'quik'"),
    (["train", "--preset", "seed_afer"], "did you mean 'seed_after'?"),
    (["ablate", "--sweep", "value_hed"], "did you mean 'value_head'?"),
    (["trian"], "did you mean 'train'?"),
])
def test_a_near_miss_says_what_was_meant_in_one_line(argv, wanted, capsys):
    code, _, err = run_main(argv, capsys)
    assert code == 2 and wanted in err and "\n" not in err, err


def test_an_unknown_knob_points_to_the_table_instead_of_listing_every_knob(capsys):
    code, _, err = run_main(["train", "--set", "foo=1"], capsys)
    assert code == 2 and "unknown key 'foo'" in err and "esper-rllib knobs" in err
    assert len(err) < 160, err


def test_knobs_shows_each_profiles_value_under_a_header_in_wrapped_lines(capsys):
    from esper_rllib.run.config import KNOBS, PROFILES, resolve_knobs

    code, out, _ = run_main(["knobs"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert max(map(len, lines)) <= 120
    (header,) = [line for line in lines if line.startswith("knob ")]
    assert header.split() == ["knob", *PROFILES]
    row = next(line for line in lines if line.startswith("lstm_hidden "))
    assert row.split()[1:] == [str(resolve_knobs(p)["lstm_hidden"]) for p in PROFILES]
    assert all(any(line.startswith(f"{name} ") for line in lines) for name in KNOBS)


def test_train_says_which_value_head_it_trains():
    from esper_rllib.commands.train import value_head_line
    from esper_rllib.run.config import resolve_knobs

    line = value_head_line(resolve_knobs("quick"))
    assert "depth 4, LayerNorm on, gain 0.01, value_coef 0.5" in line and "neither" in line
    assert "(preset seed_after)" in value_head_line(resolve_knobs("quick", "seed_after"))


def test_one_final_ev_for_the_console_the_report_and_the_postmortem():
    from esper_rllib.analysis.postmortem import final_verdict
    from esper_rllib.ppo import metric_names as mn
    from esper_rllib.run.trainer import final_line
    from tuning.results import TrialRecord, summarize

    # One iteration: the monitor's window is empty (NaN), the final EVs are the iteration's own.
    last = {mn.EV: 0.000392, mn.EV_RETURN: -0.00019, mn.EV_TRAILING: math.nan,
            mn.EV_RETURN_TRAILING: math.nan, mn.VERDICT: "undetermined"}
    summary = summarize(TrialRecord(path=Path("t"), params={}, iterations=[1],
                                    env_steps=[160], metrics=[last]))
    assert (summary["final_ev"], summary["final_ev_return"]) == (0.000392, -0.00019)
    for line in (final_line(last, 1), final_verdict(last, 1)):
        assert "final EV +0.000392, against the return-to-go -0.00019" in line, line
        assert "a verdict needs 8 iterations" in line
    later = {**last, mn.EV_TRAILING: 0.25, mn.EV_RETURN_TRAILING: 0.1, mn.VERDICT: "strong"}
    assert "final EV +0.25, against the return-to-go +0.1" in final_line(later, 8)
    assert "needs" not in final_line(later, 8)


@pytest.mark.parametrize(("argv", "wanted"), [
    (["ablate", "--sweep", "seed"], "argument --sweep: 'seed' is now called 'value_head'"),
    (["train", "--profile", "seed"], "argument --profile: 'seed' is now called 'cifar'"),
    (["train", "--set", "seed=3"], "key 'seed' is now called 'rng_seed'"),
    (["ablate", "--grid", "seed=1,2"], "key 'seed' is now called 'rng_seed'"),
])
def test_an_old_name_of_the_rng_seed_the_profile_or_the_sweep_names_the_new_one(argv, wanted,
                                                                                 capsys):
    # "seed" names the grown module only; each old spelling is one line naming the new one.
    code, _, err = run_main(argv, capsys)
    assert code == 2 and wanted in err and "\n" not in err.rstrip("\n"), err
