"""What the CLI says in one line: a misspelt option names its subcommand and the option meant, a
near-miss knob value says what was meant, `knobs` never breaks a value, and a local Ray the CLI
starts for itself runs without Ray's token warning."""

from __future__ import annotations

import os

import pytest

from tests.helpers.cli import run_main


@pytest.mark.parametrize(("argv", "wanted"), [
    (["train", "--profle", "quick"],
     "esper-rllib train: error: unrecognized arguments: --profle quick; did you mean --profile?"),
    (["ablate", "--sweeps=policy"],
     "esper-rllib ablate: error: unrecognized arguments: --sweeps=policy; did you mean --sweep?"),
    (["train", "--set", "reward=shapped"],
     "esper-rllib train: error: reward='shapped': not allowed; did you mean 'shaped'? (allowed: "
     "shaped | sparse | accuracy_delta | aligned)"),
])
def test_a_near_miss_names_the_command_and_what_was_meant(argv, wanted, capsys):
    code, _, err = run_main(argv, capsys)
    assert (code, err) == (2, wanted)


def test_knobs_never_breaks_a_value_inside_a_word(capsys):
    from esper_rllib.run.config import KNOBS, PROFILES, resolve_knobs

    code, out, _ = run_main(["knobs"], capsys)
    lines = out.splitlines()
    assert code == 0 and max(map(len, lines)) <= 120
    for name in KNOBS:
        (row,) = [line for line in lines if line.startswith(f"{name} ")]
        values = {str(resolve_knobs(p)[name]).replace(" ", "").strip("()") for p in PROFILES}
        cells = row.removeprefix(name).split()
        if len(values) == 1:  # once, across the profiles' columns
            assert cells[:3] == [*values, "(every", "profile)"], row
        else:
            assert len(cells) == len(PROFILES), row
    # The env id the issue saw split as `esper/SeedMorpho` / `genesis-v0`.
    assert "env                         esper/SeedMorphogenesis-v0 (every profile)" in lines


@pytest.mark.parametrize(("env", "argv", "mode"), [
    ({}, ["knobs"], "disabled"),  # a local Ray of its own: no tokens, no warning
    ({"RAY_AUTH_MODE": "token"}, ["knobs"], "token"),  # the user's choice stands
    ({"RAY_ADDRESS": "127.0.0.1:6379"}, ["knobs"], None),  # a cluster's: its own mode
    # --seeds 0: planning refuses it before Ray, after the mode is chosen.
    ({}, ["ablate", "--address", "10.0.0.1:6379", "--seeds", "0"], None),
    ({}, ["ablate", "--seeds", "0"], "disabled"),
])
def test_the_cli_turns_tokens_off_only_for_a_local_ray_it_starts(env, argv, mode, monkeypatch,
                                                                  capsys, tmp_path):
    for key in ("RAY_AUTH_MODE", "RAY_ADDRESS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    storage = ["--storage", str(tmp_path)] if argv[0] == "ablate" else []
    code, _, err = run_main([*argv, *storage], capsys)
    assert code in (0, 2) and "Token authentication" not in err
    assert os.environ.get("RAY_AUTH_MODE") == mode


def test_the_design_doc_names_todays_profiles_and_trial_names():
    import re
    from pathlib import Path

    from esper_rllib.run.profiles import PROFILES

    text = (Path(__file__).resolve().parents[2] / "docs" / "design.md").read_text()
    assert sorted(re.findall(r"^\| `(\w+)` \| \w+_impaired \|", text, flags=re.M)) \
        == sorted(PROFILES)
    assert not re.findall(r"[,<]seed=[\d<]", text), "the RNG knob is rng_seed"
