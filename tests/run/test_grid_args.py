"""``--grid key=v1,v2``: one parser (``run.config.parse_grid``) for ablate's sweep axes and
critic-fit's cells; a malformed item, a key or a value given twice is one ConfigError."""

import pytest

from esper_rllib.cli import build_parser
from esper_rllib.commands import ablate
from esper_rllib.offline import fit_plan
from esper_rllib.run.config import ConfigError, parse_grid

META = {"profile": "quick", "overrides": {}}  # a recording's meta.json, as fit_plan reads it


def test_values_are_typed_per_knob():
    assert parse_grid(["value_coef=0.5, 1", "critic=v,q_op"]) == {
        "value_coef": [0.5, 1.0], "critic": ["v", "q_op"]}


@pytest.mark.parametrize("items, message", [
    (["value_coef"], "expected key=v1,v2"),
    (["value_coef=0.5,,1"], "expected key=v1,v2"),
    (["value_coef=0.5", "value_coef=1"], "--grid value_coef: given twice"),
    (["value_coef=0.5,1,0.50"], "--grid value_coef: repeated value"),  # the same number
])
def test_bad_grids(items, message):
    with pytest.raises(ConfigError, match=message):
        parse_grid(items)


def test_ablate_and_critic_fit_both_reject_a_repeated_value():
    with pytest.raises(ConfigError, match="repeated value"):
        ablate.parse_grid(["value_coef=1.0,1.0"], "value_head")
    with pytest.raises(ConfigError, match="repeated value"):
        fit_plan.parse_grid(["value_coef=1.0,1.0"], META)
    with pytest.raises(ConfigError, match="repeated value"):
        fit_plan.parse_grid(["preset=seed_after,seed_after"], META)
    with pytest.raises(ConfigError, match="the trunk is --trunk"):
        fit_plan.parse_grid(["trunk=shared,separate"], META)
    assert fit_plan.parse_grid(["preset=seed_before,seed_after"], META) == {
        "preset": ["seed_before", "seed_after"]}


def test_the_shared_arguments_are_declared_alike():
    parser = build_parser()
    for argv in (["ablate"], ["critic-fit", "DATA"]):
        args = parser.parse_args([*argv, "--set", "lr=0.1", "--grid", "value_coef=1,2",
                                  "--address", "auto", "--max-concurrent", "2"])
        assert (args.overrides, args.grid, args.address, args.max_concurrent) == (
            ["lr=0.1"], ["value_coef=1,2"], "auto", 2)
    assert parser.parse_args(["record", "--address", "auto"]).address == "auto"
