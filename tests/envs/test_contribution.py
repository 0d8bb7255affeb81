"""The counterfactual contribution's sign, on a seed built to help: the validation accuracy
with the seed minus the accuracy with its slot ablated is positive, and the shaped reward's
attribution pays it.

The situation is constructed, not trained, so it holds for any host initialisation: the host's
classifier predicts an absent class unless a feature channel that the host keeps at exactly 0
carries a signal, and the seed (a conv_light whose branch adds a constant to that channel)
supplies it. The margins dwarf what a few SGD steps (lr 0.01, clip 1) can move.
"""

import pytest
import torch

from envs.blueprints import ConvLight
from envs.contract import BLUEPRINT_NAMES, Op, Stage
from envs.env import SeedMorphogenesisEnv
from envs.heuristic import make_action
from envs.hosts import N_CLASSES

SLOT = 2  # the last slot: its output feeds the classifier directly
CHANNEL = 0  # the feature channel the host kills and the seed drives
# 7 validation images with labels arange(7) % 10: classes 0-6 once each, 7-9 absent.
N_VAL = 7
PRESENT, ABSENT = 0, N_CLASSES - 1
ABSENT_LOGIT = 5.0  # the host path's bias towards the absent class
SIGNAL = 10.0  # what the seed adds to the dead channel
SIGNAL_WEIGHT = 2.0  # classifier weight from that channel to the present class


def sabotage_host(env: SeedMorphogenesisEnv) -> None:
    """The host alone predicts the absent class (accuracy 0): its last block's channel CHANNEL
    is a dead ReLU (BatchNorm scale 0, shift -10: exactly 0 in train and eval, no gradient)."""
    bn = env.model.host.blocks[SLOT][1]
    linear = env.model.host.classifier[1]
    with torch.no_grad():
        bn.weight[CHANNEL], bn.bias[CHANNEL] = 0.0, -10.0
        linear.weight.zero_()
        linear.bias.zero_()
        linear.weight[PRESENT, CHANNEL] = SIGNAL_WEIGHT
        linear.bias[ABSENT] = ABSENT_LOGIT


def make_seed_help(env: SeedMorphogenesisEnv) -> None:
    """conv_light computes x + relu(GN(conv(x))): zero conv and GN scale leave relu(GN shift),
    so the seed outputs its input plus SIGNAL on channel CHANNEL."""
    seed = env.model.slots[SLOT].seed
    assert isinstance(seed, ConvLight)
    with torch.no_grad():
        seed.conv.weight.zero_()
        seed.norm.weight.zero_()
        seed.norm.bias.zero_()
        seed.norm.bias[CHANNEL] = SIGNAL


def test_a_seed_that_helps_has_a_positive_contribution_and_attribution():
    env = SeedMorphogenesisEnv(n_train=128, n_val=N_VAL, max_epochs=10, reward="shaped",
                               reward_normalization="none")
    env.reset(seed=0)
    sabotage_host(env)
    *_, info = env.step(make_action(Op.WAIT))
    assert info["val_acc"] == 0.0  # the host alone: always the absent class
    germinate = make_action(Op.GERMINATE, SLOT, blueprint=BLUEPRINT_NAMES.index("conv_light"),
                            tempo=0, alpha_target=2)  # LINEAR_ADD, 3-epoch ramp to alpha 1
    *_, info = env.step(germinate)
    assert info["val_acc"] == 0.0  # a germinated seed is not in the forward pass yet
    make_seed_help(env)
    for _ in range(2):  # GERMINATED -> TRAINING -> BLENDING
        *_, info = env.step(make_action(Op.ADVANCE, SLOT))
        assert info["action_valid"] and not info["rollback"]
    # Blending: the seed is in the forward pass with alpha > 0, so it is measured.
    assert info["slot_stages"][SLOT] == Stage.BLENDING and info["alphas"][SLOT] > 0
    with_seed = 100.0 / N_VAL  # always the present class: 1 of 7 right
    assert info["val_acc"] == pytest.approx(with_seed)
    assert info["contributions"][SLOT] == pytest.approx(with_seed - 0.0)
    # Progress since germination equals the contribution, so attribution = sqrt(p c) = c.
    assert info["reward_components"]["attribution"] == pytest.approx(with_seed)
    assert not info["rollback"]
