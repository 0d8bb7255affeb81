"""Seed lifecycle transitions, legality, per-head masks, and the alpha controller (no torch)."""

import math

import numpy as np
import pytest

from envs.alpha import CURVES, AlphaController, AlphaMode
from envs.contract import CNN_BLUEPRINTS, N_OPS, Op, Stage, head_sizes
from envs.lifecycle import EMBARGO_EPOCHS, Lifecycle


def epoch(lc, n=1):
    """One env step without an action: tick, then the epoch ends."""
    for _ in range(n):
        lc.tick()
        lc.end_epoch()


def germinated(lc, slot=0, style="LINEAR_ADD", tempo=3, target=1.0):
    assert lc.legal(Op.GERMINATE, slot)
    lc.germinate(slot, 1, style, tempo, target, val_acc=10.0)
    epoch(lc)
    return lc.slots[slot]


def to_blending(lc, slot=0, **kw):
    s = germinated(lc, slot, **kw)
    lc.advance(slot)
    assert s.stage == Stage.TRAINING
    epoch(lc)
    lc.advance(slot)
    assert s.stage == Stage.BLENDING
    return s


def to_holding(lc, slot=0, tempo=3):
    s = to_blending(lc, slot, tempo=tempo)
    epoch(lc, tempo)
    assert s.alpha.alpha == 1.0 and not s.alpha.moving
    assert lc.legal(Op.ADVANCE, slot)
    lc.advance(slot)
    assert s.stage == Stage.HOLDING
    return s


# ---- alpha controller ---------------------------------------------------------------------
@pytest.mark.parametrize("curve", list(CURVES))
def test_curves_start_at_0_end_at_1_and_increase(curve):
    f = CURVES[curve]
    ts = np.linspace(0, 1, 21)
    values = [f(t) for t in ts]
    assert values[0] == pytest.approx(0.0, abs=1e-12)
    assert values[-1] == pytest.approx(1.0, abs=1e-12)
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))


def test_curve_shapes():
    assert CURVES["COSINE"](0.5) == pytest.approx(0.5)
    assert CURVES["SIG24"](0.25) < CURVES["SIG6"](0.25)  # steeper sigmoid waits longer
    assert CURVES["SIG12"](0.5) == pytest.approx(0.5)


def test_alpha_ramp_over_steps_and_retarget_only_from_hold():
    a = AlphaController()
    a.retarget(1.0, 4, "LINEAR")
    assert a.mode == AlphaMode.UP
    with pytest.raises(RuntimeError, match="HOLD"):
        a.retarget(0.5, 2, "LINEAR")
    seen = []
    for _ in range(4):
        a.tick()
        seen.append(a.alpha)
    assert seen == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert a.mode == AlphaMode.HOLD and a.steps_remaining == 0
    a.retarget(0.5, 2, "COSINE")  # ramps from the current alpha
    assert a.mode == AlphaMode.DOWN
    a.tick()
    assert a.alpha == pytest.approx(0.75)
    a.tick()
    assert a.alpha == 0.5 and a.mode == AlphaMode.HOLD


def test_alpha_snap():
    a = AlphaController()
    a.retarget(0.7, 0, "SIG12")
    assert a.alpha == 0.7 and a.mode == AlphaMode.HOLD


# ---- transitions --------------------------------------------------------------------------
def test_full_path_to_fossil():
    lc = Lifecycle(3, max_seeds=2)
    s = to_holding(lc, slot=1)
    assert not lc.legal(Op.FOSSILIZE, 1), "needs a measured contribution"
    s.contribution = 2.0
    assert lc.legal(Op.FOSSILIZE, 1)
    lc.fossilize(1)
    assert s.stage == Stage.FOSSILIZED and s.fossil_contribution == 2.0
    assert not lc.legal(Op.PRUNE, 1), "fossils cannot be pruned"
    assert not lc.legal(Op.SET_ALPHA_TARGET, 1)
    assert not lc.legal(Op.ADVANCE, 1)


def test_nothing_advances_on_its_own():
    lc = Lifecycle(3, max_seeds=2)
    s = germinated(lc)
    epoch(lc, 10)
    assert s.stage == Stage.GERMINATED
    lc.advance(0)
    epoch(lc, 10)
    assert s.stage == Stage.TRAINING and s.alpha.alpha == 0.0


def test_training_needs_one_epoch_before_blending():
    lc = Lifecycle(3, max_seeds=2)
    germinated(lc)
    lc.advance(0)
    assert not lc.legal(Op.ADVANCE, 0)
    epoch(lc)
    assert lc.legal(Op.ADVANCE, 0)


@pytest.mark.parametrize("style, curve", [("LINEAR_ADD", "LINEAR"), ("SIGMOID_ADD", "SIG12"),
                                          ("GATED_GATE", "LINEAR"),
                                          ("LINEAR_MULTIPLY", "LINEAR")])
def test_blending_ramps_with_tempo_and_style_curve(style, curve):
    lc = Lifecycle(3, max_seeds=2)
    s = to_blending(lc, style=style, tempo=5, target=0.7)
    assert s.alpha.mode == AlphaMode.UP and s.alpha.curve == curve
    assert s.alpha.steps_total == 5 and s.alpha.target == 0.7
    epoch(lc, 5)
    assert s.alpha.alpha == pytest.approx(0.7)
    assert not lc.legal(Op.ADVANCE, 0), "HOLDING needs alpha at 1.0"
    assert lc.legal(Op.SET_ALPHA_TARGET, 0)
    lc.set_alpha_target(0, 1.0, 3, "COSINE")
    assert not lc.legal(Op.ADVANCE, 0), "alpha still moving"
    assert not lc.legal(Op.SET_ALPHA_TARGET, 0), "retarget only from HOLD"
    assert not lc.legal(Op.PRUNE, 0), "prune needs alpha in HOLD"
    epoch(lc, 3)
    assert lc.legal(Op.ADVANCE, 0)


def test_holding_retarget_below_one_goes_back_to_blending():
    lc = Lifecycle(3, max_seeds=2)
    s = to_holding(lc)
    lc.set_alpha_target(0, 1.0, 0, "LINEAR")
    assert s.stage == Stage.HOLDING
    lc.set_alpha_target(0, 0.5, 3, "SIG6")
    assert s.stage == Stage.BLENDING and s.alpha.mode == AlphaMode.DOWN


def test_immediate_prune_then_embargo_resetting_dormant_after_7_steps():
    lc = Lifecycle(3, max_seeds=2)
    germinated(lc)
    lc.advance(0)
    epoch(lc)
    assert lc.legal(Op.PRUNE, 0)
    lc.prune(0, speed=5, curve="LINEAR")  # TRAINING seeds go at once, whatever the speed
    assert lc.slots[0].stage == Stage.EMBARGOED and not lc.slots[0].has_seed
    epoch(lc)  # the rest of the prune's step
    observed, legal = [lc.slots[0].stage], []
    for _ in range(7):  # the next 7 steps: action, then tick and epoch
        legal.append(lc.legal(Op.GERMINATE, 0))
        epoch(lc)
        observed.append(lc.slots[0].stage)
    assert legal == [False] * 6 + [True], "GERMINATE is legal again 7 steps after the prune"
    assert observed[:7] == [Stage.EMBARGOED] * EMBARGO_EPOCHS + [Stage.RESETTING, Stage.DORMANT]


def test_prune_needs_age():
    lc = Lifecycle(3, max_seeds=2)
    lc.germinate(0, 1, "LINEAR_ADD", 3, 1.0, val_acc=0.0)
    assert not lc.legal(Op.PRUNE, 0)
    epoch(lc)
    assert lc.legal(Op.PRUNE, 0)


def test_ramped_prune_freezes_then_removes_at_zero():
    lc = Lifecycle(3, max_seeds=2)
    s = to_holding(lc)
    lc.prune(0, speed=3, curve="LINEAR")
    assert s.pruning and s.alpha.mode == AlphaMode.DOWN and s.stage == Stage.HOLDING
    assert not lc.legal(Op.FOSSILIZE, 0)
    epoch(lc, 2)
    assert s.alpha.alpha == pytest.approx(1 / 3)
    lc.tick()
    assert lc.slots[0].stage == Stage.EMBARGOED


def test_blending_prune_with_speed_zero_is_immediate():
    lc = Lifecycle(3, max_seeds=2)
    to_blending(lc)
    epoch(lc, 3)
    lc.prune(0, speed=0, curve="LINEAR")
    assert lc.slots[0].stage == Stage.EMBARGOED


def test_max_seeds_counts_fossils_not_cooldowns():
    lc = Lifecycle(3, max_seeds=2)
    germinated(lc, 0)
    germinated(lc, 1)
    assert not lc.legal(Op.GERMINATE, 2)
    lc.prune(1, 0, "LINEAR")
    assert lc.legal(Op.GERMINATE, 2), "cooldown stages do not count"
    unlimited = Lifecycle(3, max_seeds=0)
    for i in range(3):
        germinated(unlimited, i)
    assert unlimited.n_seeds() == 3


def test_germinate_needs_cnn_blueprint():
    lc = Lifecycle(3, max_seeds=2)
    assert not lc.legal(Op.GERMINATE, 0, blueprint=0)
    assert not lc.legal(Op.GERMINATE, 0, blueprint=8)
    assert lc.legal(Op.GERMINATE, 0, blueprint=7)


# ---- masks --------------------------------------------------------------------------------
def op_mask(lc):
    return {Op(i) for i in range(N_OPS) if lc.op_mask()[i]}


def test_op_mask_follows_each_rule():
    lc = Lifecycle(3, max_seeds=2)
    assert op_mask(lc) == {Op.WAIT, Op.GERMINATE}
    lc.germinate(0, 1, "LINEAR_ADD", 3, 1.0, val_acc=0.0)
    assert op_mask(lc) == {Op.WAIT, Op.GERMINATE, Op.ADVANCE}  # age 0: no prune yet
    epoch(lc)
    assert op_mask(lc) == {Op.WAIT, Op.GERMINATE, Op.ADVANCE, Op.PRUNE}
    lc.advance(0)
    epoch(lc)
    lc.advance(0)  # BLENDING, alpha moving: no prune, no retarget, no advance
    assert op_mask(lc) == {Op.WAIT, Op.GERMINATE}
    epoch(lc, 3)
    assert op_mask(lc) == {Op.WAIT, Op.GERMINATE, Op.ADVANCE, Op.PRUNE, Op.SET_ALPHA_TARGET}
    lc.advance(0)
    lc.slots[0].contribution = 1.0
    assert op_mask(lc) == {Op.WAIT, Op.GERMINATE, Op.FOSSILIZE, Op.PRUNE, Op.SET_ALPHA_TARGET}
    lc.fossilize(0)
    germinated(lc, 1)
    assert Op.GERMINATE not in op_mask(lc), "seed limit reached (fossil + live)"


def test_action_mask_heads():
    lc = Lifecycle(3, max_seeds=2)
    mask = lc.action_mask()
    sizes = head_sizes(3)
    assert mask.shape == (sum(sizes),) and mask.dtype == np.float32
    parts = np.split(mask, np.cumsum(sizes)[:-1])
    assert parts[1].tolist() == [1, 1, 1]
    assert np.flatnonzero(parts[2]).tolist() == list(CNN_BLUEPRINTS)
    for part in parts:
        assert part.sum() >= 1, "every head keeps a legal value"
    assert all(np.all(p == 1) for p in parts[3:])
    assert not math.isnan(mask.sum())
