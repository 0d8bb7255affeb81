"""Issue 27's first-hour problems around a run: hints that run as printed, messages that name
what the user typed, evaluate's tables and its oracle search said up front, check-env's lines."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from esper_rllib.cli import build_parser, main
from tests.helpers import REPO


def _train_folder(root: Path, iterations: int = 1) -> Path:
    """A `train` run's experiment folder: its trial's params.json is the PPOConfig (the env's
    knobs under env_config, no reward or max_epochs at the top level)."""
    from esper_rllib.run.config import env_config, resolve_knobs

    trial = root / "train-x" / "seed=0"
    trial.mkdir(parents=True)
    (trial / "params.json").write_text(json.dumps(
        {"env_config": env_config(resolve_knobs("quick")), "gamma": 0.99}))
    lines = [json.dumps({"training_iteration": it, "timesteps_total": 160 * it, "esper": {
        "explained_variance": 0.000392, "explained_variance_return": -0.00019,
        "value_loss": 0.03, "verdict": "undetermined", "verdict_code": -1}})
        for it in range(1, iterations + 1)]
    (trial / "result.json").write_text("\n".join(lines) + "\n")
    return root / "train-x"


def test_the_reports_signal_hint_for_a_train_folder_runs(tmp_path):
    from esper_rllib.analysis.sweep import ceiling_for, load_sweep
    from esper_rllib.commands.knob_args import knobs_from_args
    from esper_rllib.run.config import env_config

    folder = _train_folder(tmp_path)
    ceiling, note = ceiling_for(load_sweep(folder))
    assert ceiling is None
    hints = [part for i, part in enumerate(note.split("`")) if i % 2]
    assert hints and all("None" not in h and "PROFILE" not in h for h in hints), note
    for hint in hints:  # each as printed, up to where the audit would start
        argv = shlex.split(hint)
        assert argv[0] == "esper-rllib"
        args = build_parser().parse_args(argv[1:])
        knobs = knobs_from_args(args)
        params = json.loads((folder / "seed=0" / "params.json").read_text())
        assert env_config(knobs) == params["env_config"]


def test_a_train_folders_report_is_a_run_report_with_marked_points(tmp_path):
    from esper_rllib.analysis.render import write_report

    written = write_report(_train_folder(tmp_path), 0, evaluate_episodes=0)
    text = written[0].read_text()
    assert text.startswith("# Run report: `train-x`")
    assert "need 8 iterations" in text
    assert "| 0.000392 |" in text or "0.000392" in text


def test_evaluate_names_its_checkpoint_argument_not_trains_option(capsys):
    assert main(["evaluate", "/no/such/checkpoint", "--episodes", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("esper-rllib evaluate: error: checkpoint /no/such/checkpoint: no such "
                   "checkpoint directory")


def test_help_states_the_episode_bounds(capsys):
    from esper_rllib.offline.record import SEED_STRIDE

    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "at least 2" in out and "caches the choice in ~/.cache/esper-" in out
    with pytest.raises(SystemExit):
        main(["record", "--help"])
    assert f"1 to {SEED_STRIDE}" in capsys.readouterr().out


def test_evaluate_announces_the_oracle_search_and_where_it_is_cached(tmp_path, monkeypatch):
    from esper_rllib.analysis.evaluation import ScriptedEpisodes
    from esper_rllib.run.config import env_config, resolve_knobs

    monkeypatch.setenv("ESPER_CACHE_DIR", str(tmp_path))
    kwargs = env_config(resolve_knobs("quick"))
    line = ScriptedEpisodes().announce(kwargs, [1, 2], n_slots=3)
    assert line.startswith("oracle search first: 21 blueprint@slot candidates x 2 episodes")
    assert str(tmp_path / "oracle") in line and "--oracle" in line
    assert ScriptedEpisodes("conv_light@r0c1").announce(kwargs, [1, 2], n_slots=3) is None


def _audit(raw_differs: bool) -> dict:
    result = json.loads((REPO / "docs" / "results" / "signal-quick-aligned" / "signal.json")
                        .read_text())
    result.pop("ev_ceiling")  # as evaluate's result: no ceiling measured
    if raw_differs:
        result["policies"]["random"]["raw_return"] = {"mean": 9.0, "std": 1.0}
    return result


def test_evaluate_tables_drop_the_raw_return_column_when_it_is_the_return():
    from esper_rllib.analysis.audit import render_markdown

    text = render_markdown(_audit(raw_differs=False))
    assert "raw return" not in text
    assert "| raw return |" in render_markdown(_audit(raw_differs=True))
    headroom = text.split("## Critic headroom", 1)[1]
    random = next(line for line in headroom.splitlines() if line.startswith("| random |"))
    assert "deterministic" not in random and "not measured here" in random
    heuristic = next(line for line in headroom.splitlines() if line.startswith("| heuristic |"))
    assert "n/a (deterministic policy)" in heuristic


def test_check_env_warnings_are_plain_lines():
    from esper_rllib.commands.check_env import _plain

    raw = "\x1b[33mWARN: A Box observation space minimum value is -infinity.\n  This is low.\x1b[0m"
    assert _plain(raw) == "A Box observation space minimum value is -infinity. This is low."


def test_the_printed_tensorboard_command_runs_as_printed(tmp_path):
    from tuning.tensorboard import tensorboard_command

    command = tensorboard_command(tmp_path)
    exe = shlex.split(command)[0]
    assert os.access(exe, os.X_OK), command
    proc = subprocess.run([exe, "--version_tb"], capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "PATH"})
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr
