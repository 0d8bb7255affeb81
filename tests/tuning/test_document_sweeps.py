"""The sweeps of the seed document's question at the learning budget (issue 35): the document's
own model over its three knobs, and critic_fix with one part taken out at a time, both at the
learning recipe on batch64 (planned only: no trial runs here)."""

from __future__ import annotations

import itertools

from esper_rllib.failure_runs import BROKEN_RUN, FIX
from esper_rllib.run.config import resolve_knobs
from tuning.plan import SEED, plan_sweep
from tuning.sweeps import FIX_PARTS, LEARNING_RECIPE, PRESET, WITHOUT, get_sweep

AXES = ("value_head_gain", "value_head_depth", "value_coef")


def _cells(plan):
    """cell label -> the knobs its first seed's trial builds with."""
    return {plan.cell_label(p): resolve_knobs(plan.profile, overrides=plan.cell_knobs(p))
            for p in plan.trials() if p[SEED] == plan.axes[SEED][0]}


def test_document_runs_the_documents_model_over_its_three_knobs_at_the_learning_recipe():
    plan = plan_sweep("document", "batch64", resolve_knobs, seeds=3)
    assert plan.n_trials == 24 and plan.axes[SEED] == [0, 1, 2]
    cells = _cells(plan)
    assert {tuple(k[a] for a in AXES) for k in cells.values()} == set(
        itertools.product((1.0, 0.01), (2, 4), (0.5, 1.0)))
    default = resolve_knobs("batch64")
    for knobs in cells.values():
        assert knobs["lr"] == 1e-3 and knobs["reward"] == "shaped"
        assert knobs["episodes_per_batch"] == 64 and knobs["iterations"] == 16
        # The document's model: the policy's LSTM trunk and its Q(s, op) head, LayerNorm only
        # in the depth-4 head, as its two runs had.
        for knob in ("critic_trunk", "critic", "critic_feature_bins", "critic_steps"):
            assert knobs[knob] == default[knob], knob
        assert knobs["value_head_layernorm"] == (knobs["value_head_depth"] == 4)
    # Its broken run and its fix are cells (the report names them and compares with them).
    for run in (BROKEN_RUN, FIX):
        assert sum(all(k[a] == run[a] for a in run) for k in cells.values()) == 1
    sweep = get_sweep("document")
    assert sweep.evaluate_episodes >= 32 and sweep.profile == "batch64"


def test_document_fix_takes_one_part_of_critic_fix_out_at_a_time():
    plan = plan_sweep("document_fix", "batch64", resolve_knobs, seeds=3)
    assert plan.n_trials == 18 and plan.labels == [PRESET, WITHOUT]
    cells = _cells(plan)
    fix = resolve_knobs("batch64", preset="critic_fix", overrides=dict(LEARNING_RECIPE))
    assert cells["preset=critic_fix,without=nothing"] == {**fix, SEED: 0}
    for part, knobs in FIX_PARTS.items():
        cell = cells[f"preset=critic_fix,without={part}"]
        changed = {k for k in fix if cell[k] != fix[k]} - {SEED}
        assert changed == set(knobs), part  # that part, and nothing else
        assert all(cell[k] == v for k, v in knobs.items())
    # Each part taken out really was in critic_fix.
    assert fix["critic_feature_bins"] > 0 and fix["critic_layernorm"] is False
    assert fix["critic_dropout"] > 0 and fix["critic_trunk"] == "mlp"
    assert fix["critic_steps"] > 0 and fix["lr"] == 1e-3 and fix["reward"] == "shaped"
    sweep = get_sweep("document_fix")
    assert sweep.evaluate_episodes >= 32 and sweep.profile == "batch64"
