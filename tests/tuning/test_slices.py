"""A sweep run in slices (``ablate --slice K/N``) over several sessions: which trials a slice
plans, and how runs of one sweep join into one plan (planned only: no trial runs here)."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import pytest

from esper_rllib.run.config import resolve_knobs
from tuning.plan import SEED, SweepPlan, parse_slice, plan_sweep


@pytest.fixture(scope="module")
def document():
    return plan_sweep("document", "batch64", resolve_knobs, seeds=3)


def _names(plan):
    return [plan.trial_label(p) for p in plan.trials()]


def test_the_slices_of_a_sweep_run_each_trial_once_every_cells_first_seed_first(document):
    every = _names(document)
    for n in (1, 2, 5, 6, 24):
        parts = [document.part(k, n) for k in range(1, n + 1)]
        names = [name for part in parts for name in _names(part)]
        assert sorted(names) == sorted(every) and len(set(names)) == len(every)
        sizes = [part.n_trials for part in parts]
        assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 24
    # 6 slices of 4: slices 1 and 2 are every cell at seed 0, and so on (each in grid order).
    first, second, third = (document.part(k, 6) for k in (1, 2, 3))
    cells = [document.cell_label(p) for p in document.grid() if p[SEED] == 0]
    assert [document.cell_label(p) for p in first.trials()] == cells[:4]
    assert [document.cell_label(p) for p in second.trials()] == cells[4:]
    assert {p[SEED] for p in first.trials()} == {0} and {p[SEED] for p in third.trials()} == {1}
    assert _names(first) == ["gain=1.0,depth=2,coef=0.5,rng_seed=0",
                             "gain=1.0,depth=2,coef=1.0,rng_seed=0",
                             "gain=1.0,depth=4,coef=0.5,rng_seed=0",
                             "gain=1.0,depth=4,coef=1.0,rng_seed=0"]
    # Tune runs a slice as points, each setting every axis of the grid.
    assert first.points()[0] == {"value_head_gain": 1.0, "value_head_depth": 2,
                                 "value_coef": 0.5, SEED: 0}
    assert first.whole().n_trials == 24 and first.whole().selected is None


def test_a_slice_is_saved_and_loaded_with_its_trials(document, tmp_path):
    part = document.part(5, 6)
    part.save(tmp_path)
    loaded = SweepPlan.load(tmp_path)
    assert _names(loaded) == _names(part) and loaded.n_trials == 4
    assert json.loads((tmp_path / "sweep.json").read_text())["selected"] == _names(part)


@pytest.mark.parametrize(("text", "wanted"), [
    ("0/6", "--slice 0/6: allowed: K/N with 1 <= K <= N <= 24"),
    ("7/6", "--slice 7/6: allowed"),
    ("1/25", "--slice 1/25: allowed"),
    ("1-6", "--slice 1-6: allowed: K/N"),
    ("a/b", "--slice a/b: allowed: K/N"),
])
def test_a_slice_that_is_not_one_says_what_is_allowed(document, text, wanted):
    with pytest.raises(ValueError, match=wanted.replace("(", r"\(")):
        document.part(*parse_slice(text))


def test_runs_of_one_sweep_join_into_it_and_others_are_refused(document, tmp_path):
    # More seeds for some cells later (a main effect's interval crossing 0 at 3 seeds).
    more = plan_sweep("document", "batch64", resolve_knobs,
                      grid={SEED: [3, 4], "value_head_gain": [0.01]})
    document.part(2, 6).save(tmp_path)  # as saved, then read back: tuples became lists
    joined = SweepPlan.load(tmp_path).joined(more)
    assert joined.selected is None and joined.axes[SEED] == [0, 1, 2, 3, 4]
    assert joined.axes["value_head_gain"] == [1.0, 0.01]
    assert joined.n_trials == 40 and set(_names(more)) <= set(_names(joined))
    assert set(_names(document)) <= set(_names(joined))
    with pytest.raises(ValueError, match="sweep: 'value_head', where the sweep has 'document'"):
        document.joined(plan_sweep("value_head", "batch64", resolve_knobs))
    with pytest.raises(ValueError, match="knob lr=0.0003, where the sweep has 0.001"):
        document.joined(plan_sweep("document", "batch64", resolve_knobs,
                                   overrides={"lr": 3e-4}))
    with pytest.raises(ValueError, match="profile: 'quick', where the sweep has 'batch64'"):
        document.joined(plan_sweep("document", "quick", resolve_knobs))


def test_a_knob_the_code_gained_since_a_folder_was_started_joins_at_its_default(document):
    """Slices span sessions, and the code gains knobs between them: a knob the folder's plan
    lacks is the same sweep where the new run holds it at the profile's default, and another
    sweep where it does not."""
    # As a plan made before the knob existed.
    saved = replace(document, base={k: v for k, v in document.base.items()
                                    if k != "value_target"})
    defaults = resolve_knobs("batch64")
    joined = saved.joined(document, defaults)
    assert joined.n_trials == document.n_trials
    changed = plan_sweep("document", "batch64", resolve_knobs,
                         overrides={"value_target": "return_to_go"})
    with pytest.raises(ValueError, match="knob value_target="):
        saved.joined(changed, defaults)
    with pytest.raises(ValueError, match="knob value_target="):
        saved.joined(document)  # no defaults given: a missing knob differs


def test_select_keeps_grid_order_and_only_the_named_trials(document):
    names = _names(document)
    picked = document.select([names[5], names[1], "not a trial"])
    assert _names(picked) == [names[1], names[5]]
    assert list(itertools.islice(picked.trials(), 1))[0][SEED] == 1
