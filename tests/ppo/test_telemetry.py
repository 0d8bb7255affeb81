"""Each telemetry formula of esper_rllib/ppo/telemetry.py on hand-made tensors."""

import math

import pytest
import torch
from ray.rllib.utils.torch_utils import explained_variance as rllib_explained_variance

from envs.contract import HEADS
from esper_rllib.ppo import telemetry


def test_explained_variance_formula_and_unclamped():
    g = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    mask = torch.ones_like(g, dtype=torch.bool)
    ev, undefined = telemetry.explained_variance(g, g, mask)
    assert ev == pytest.approx(1.0) and not undefined
    # Predicting the mean explains nothing.
    ev, _ = telemetry.explained_variance(g, torch.full_like(g, 2.5), mask)
    assert ev == pytest.approx(0.0)
    # A critic anti-correlated with the returns: 1 - Var(G - V)/Var(G) = 1 - 4 = -3 (not clamped
    # to -1 as RLlib's helper does).
    v = 5.0 - g
    ev, _ = telemetry.explained_variance(g, v, mask)
    assert ev == pytest.approx(1.0 - torch.var(g - v) / torch.var(g))
    assert ev == pytest.approx(-3.0)


def test_explained_variance_ignores_padding_and_bootstrap_steps():
    # Two sequences (B=2, T=4): real steps, then a bootstrap step and zero-padding whose values
    # are garbage. Only the mask decides what counts.
    g = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 5.0, 0.0, 0.0]])
    v = torch.tensor([[2.5, 1.9, 3.2, 99.0], [2.5, 5.1, -50.0, 7.0]])
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    ev, undefined = telemetry.explained_variance(g, v, mask)
    gm, vm = g[mask].double(), v[mask].double()
    expected = 1 - (gm - vm).var(correction=0) / gm.var(correction=0)
    assert not undefined
    assert ev == pytest.approx(float(expected))
    assert ev > 0.5  # the critic is decent on the real steps
    # RLlib's vf_explained_var on (B, T) looks at t=0 across rows only, unmasked.
    rllib_ev = float(rllib_explained_variance(g, v))
    assert rllib_ev == pytest.approx(0.0, abs=1e-6)  # the mean at t=0: nothing explained


def test_explained_variance_nan_and_flag_when_returns_are_constant():
    g = torch.tensor([[1.0, 1.0, 1.0, 5.0]])
    mask = torch.tensor([[True, True, True, False]])
    ev, undefined = telemetry.explained_variance(g, torch.zeros_like(g), mask)
    assert math.isnan(ev) and undefined
    ev, undefined = telemetry.explained_variance(g, g, torch.zeros_like(mask))
    assert math.isnan(ev) and undefined


def test_masked_mean_std_and_advantage_normalisation_over_real_steps():
    adv = torch.tensor([[1.0, 3.0, 100.0], [5.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert float(telemetry.masked_mean(adv, mask)) == pytest.approx(3.0)
    assert float(telemetry.masked_std(adv, mask)) == pytest.approx(math.sqrt(8 / 3))
    norm = telemetry.normalize_advantages(adv, mask)
    assert float(norm[mask].mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(norm[mask].std(correction=0)) == pytest.approx(1.0, abs=1e-6)
    assert math.isnan(float(telemetry.masked_mean(adv, torch.zeros_like(mask))))
    # A single real step has std 0 (population), not NaN.
    one_step = torch.tensor([[True, False, False], [False, False, False]])
    assert float(telemetry.masked_std(adv, one_step)) == 0.0


def test_q_spread_over_valid_steps():
    q = torch.tensor([[[0.0, 1.0, 0.5], [2.0, 2.0, 2.0], [9.0, -9.0, 0.0]]])  # (1, 3, 3 ops)
    mask = torch.tensor([[True, True, False]])
    assert telemetry.q_spread(q, mask) == pytest.approx(0.5)  # (1.0 + 0.0) / 2
    assert telemetry.q_spread(q[:, :1], mask[:, :1]) == pytest.approx(1.0)


def test_normalized_head_entropy():
    # Uniform over 4 legal values -> 1; one legal value -> 0; padding (no legal value) -> 0.
    ent = torch.tensor([math.log(4.0), 0.0, 0.0, math.log(2.0) / 2])
    legal = torch.tensor([4, 1, 0, 2])
    out = telemetry.normalized_head_entropy(ent, legal)
    assert out.tolist() == pytest.approx([1.0, 0.0, 0.0, 0.5])


def test_ratio_stats_on_relevant_entries():
    # Two steps of the 8 heads (HEADS order): op, slot, blueprint relevant at the first, op
    # alone at the second; the rest never.
    ratios = torch.tensor([[1.0, 1.5, 0.7, 1, 1, 1, 1, 1], [1.3, 3.0, 1.0, 9, 9, 9, 9, 9]])
    relevant = torch.zeros(2, 8, dtype=torch.bool)
    relevant[0, :3] = relevant[1, 0] = True
    stats = telemetry.ratio_stats(ratios, relevant, clip_param=0.2)
    assert stats["clip_fraction"] == pytest.approx(0.75)  # 1.5, 0.7 and 1.3 of 4
    assert stats["ratio_mean"] == pytest.approx((1.0 + 1.5 + 0.7 + 1.3) / 4)
    assert stats["ratio_max"] == pytest.approx(1.5)  # 3.0 and 9 are on irrelevant heads
    # Per head: op 1 of 2 clipped, slot 1 of 1, blueprint 1 of 1, the others never relevant.
    per_head = [stats[f"clip_fraction_{h}"] for h in HEADS]
    assert per_head[:3] == [0.5, 1.0, 1.0] and all(math.isnan(c) for c in per_head[3:])


def test_approx_kl_zero_for_unchanged_policy_and_positive_otherwise():
    logp = torch.log(torch.tensor([[0.2, 0.5, 0.3]]))
    mask = torch.tensor([[True, True, False]])
    assert telemetry.approx_kl(logp, logp, mask) == 0.0
    shifted = logp + torch.tensor([[0.1, -0.2, 5.0]])
    expected = ((math.exp(0.1) - 1 - 0.1) + (math.exp(-0.2) - 1 + 0.2)) / 2
    assert telemetry.approx_kl(shifted, logp, mask) == pytest.approx(expected)


def test_global_norm_and_row_norm():
    grads = [torch.tensor([3.0]), None, torch.tensor([[4.0, 0.0]])]
    assert telemetry.global_norm(grads) == pytest.approx(5.0)
    assert telemetry.global_norm([None]) == 0.0
    h = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    assert telemetry.mean_row_norm(h) == pytest.approx(3.0)
