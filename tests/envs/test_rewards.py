"""Reward components on constructed transitions, PBRS through the env, normalisation, and the
governor's rollback."""

import math

import numpy as np
import pytest
import torch

from envs.contract import Op, Stage
from envs.env import SeedMorphogenesisEnv
from envs.heuristic import make_action
from envs.rewards import (
    COMPONENTS,
    RewardConfig,
    RunningStd,
    SeedView,
    Transition,
    attribution,
    parse_reward,
    potential,
    reward_components,
    size_cost,
)

SHAPED = RewardConfig()


def transition(**kw):
    base = dict(op=Op.WAIT, target_contribution=None, phi_before=0.0, phi_after=0.0, seeds=[],
                host_params=100, val_acc=20.0, prev_val_acc=20.0, last_epoch=False,
                n_good_fossils=0, seed_params=0)
    return Transition(**{**base, **kw})


def seed(stage=Stage.BLENDING, alpha=1.0, params=100, contribution=None, progress=0.0):
    return SeedView(stage, alpha, params, contribution, progress)


def test_component_names_per_mode():
    for mode, names in COMPONENTS.items():
        assert tuple(reward_components(RewardConfig(mode=mode), transition())) == names


@pytest.mark.parametrize("c, p, expected", [
    (-2.0, 5.0, -2.0),  # harmful seeds are charged in full
    (3.0, 0.0, 0.0),  # no progress since germination: no credit
    (3.0, -1.0, 0.0),
    (4.0, 1.0, 2.0),  # c >= p: geometric mean sqrt(p c)
    (2.0, 5.0, 2.0),  # c < p: c
])
def test_attribution(c, p, expected):
    assert attribution(c, p) == pytest.approx(expected)


def test_attribution_sums_live_measured_seeds_only():
    seeds = [seed(contribution=4.0, progress=1.0), seed(contribution=-1.0, progress=3.0),
             seed(Stage.FOSSILIZED, contribution=5.0, progress=5.0),  # fossils: not live
             seed(Stage.TRAINING, alpha=0.0, contribution=None)]
    assert reward_components(SHAPED, transition(seeds=seeds))["attribution"] == \
        pytest.approx(2.0 - 1.0)


def test_pbrs():
    comp = reward_components(SHAPED, transition(phi_before=2.0, phi_after=3.5))
    assert comp["pbrs"] == pytest.approx(0.3 * (0.995 * 3.5 - 2.0))
    assert potential([Stage.GERMINATED, Stage.HOLDING, Stage.EMBARGOED]) == 6.5
    assert potential([Stage.FOSSILIZED, Stage.TRAINING, Stage.BLENDING]) == 11.5


def test_rent_scales_with_alpha_and_is_capped():
    seeds = [seed(alpha=0.5, params=200), seed(alpha=1.0, params=100)]
    comp = reward_components(SHAPED, transition(seeds=seeds, host_params=100))
    assert comp["rent"] == pytest.approx(-0.5 * math.log(1 + 2.0))
    huge = [seed(params=10**12)]
    assert reward_components(SHAPED, transition(seeds=huge))["rent"] == -8.0
    untouched = [seed(alpha=0.0, params=10**6)]
    assert reward_components(SHAPED, transition(seeds=untouched))["rent"] == 0.0


@pytest.mark.parametrize("op, c, cost, bonus", [
    (Op.WAIT, None, 0.0, 0.0),
    (Op.ADVANCE, 3.0, 0.0, 0.0),
    (Op.GERMINATE, None, -0.02, 0.0),
    (Op.SET_ALPHA_TARGET, 1.0, -0.005, 0.0),
    (Op.FOSSILIZE, 3.0, -0.01, 0.5 + 0.3),
    (Op.FOSSILIZE, 0.9, -0.01, 0.0),
    (Op.PRUNE, -1.0, -0.005, 0.3),  # pruning a harmful seed
    (Op.PRUNE, -0.2, -0.005, 0.0),
    (Op.PRUNE, 2.0, -0.005, -(0.3 + 0.1)),  # pruning a useful seed
    (Op.PRUNE, 40.0, -0.005, -0.9),  # capped
    (Op.PRUNE, None, -0.005, 0.0),  # never measured
])
def test_action_cost_and_bonus(op, c, cost, bonus):
    comp = reward_components(SHAPED, transition(op=op, target_contribution=c))
    assert comp["action_cost"] == pytest.approx(cost)
    assert comp["action_bonus"] == pytest.approx(bonus)


def test_terminal_only_at_last_epoch():
    assert reward_components(SHAPED, transition(n_good_fossils=2))["terminal"] == 0.0
    comp = reward_components(SHAPED, transition(last_epoch=True, val_acc=30.0, n_good_fossils=2))
    assert comp["terminal"] == pytest.approx(0.05 * 30 + 3 * 2)


def test_sparse_and_accuracy_delta():
    sparse = RewardConfig(mode="sparse")
    assert reward_components(sparse, transition(val_acc=40.0))["sparse"] == 0.0
    value = reward_components(sparse, transition(last_epoch=True, val_acc=40.0,
                                                 seed_params=250_000))["sparse"]
    assert value == pytest.approx(0.4 - 0.05)
    clipped = reward_components(sparse, transition(last_epoch=True, val_acc=10.0,
                                                   seed_params=10**9))["sparse"]
    assert clipped == -1.0
    delta = RewardConfig(mode="accuracy_delta")
    comp = reward_components(delta, transition(val_acc=23.0, prev_val_acc=20.0,
                                               seeds=[seed(params=100)]))
    assert comp == pytest.approx({"accuracy_delta": 3.0, "rent": -0.5 * math.log(2.0)})


ALIGNED = RewardConfig(mode="aligned")


def test_aligned_pays_accuracy_gained_and_prices_parameters_in_doublings():
    comp = reward_components(ALIGNED, transition(val_acc=23.0, prev_val_acc=20.0))
    assert comp == pytest.approx({"accuracy": 0.3, "param_cost": 0.0})
    # A seed as large as the 77-parameter impaired host is one doubling: 1 pp worth (0.1).
    grown = reward_components(ALIGNED, transition(host_params=77, seed_params=77,
                                                  prev_seed_params=0))
    assert grown["param_cost"] == pytest.approx(-0.1)
    # The largest CNN seed (a bottleneck, ~650 parameters with its gate) costs ~3 pp there,
    # not the shaped rent's 0.5 ln(9.4) per epoch (~45 over a 40-epoch episode).
    assert size_cost(ALIGNED, 650, 77) == pytest.approx(0.1 * math.log2(1 + 650 / 77))
    assert size_cost(ALIGNED, 650, 77) < 0.35


def test_aligned_fossilize_pays_what_holding_pays_and_prune_refunds_the_price():
    held = dict(val_acc=25.0, prev_val_acc=24.0, host_params=77, seed_params=300,
                prev_seed_params=300, seeds=[seed(Stage.HOLDING, contribution=3.0)])
    fossilized = reward_components(ALIGNED, transition(op=Op.FOSSILIZE, **{
        **held, "seeds": [seed(Stage.FOSSILIZED, contribution=3.0)]}))
    assert fossilized == reward_components(ALIGNED, transition(op=Op.WAIT, **held))
    germinated = reward_components(ALIGNED, transition(op=Op.GERMINATE, host_params=77,
                                                       seed_params=300))
    pruned = reward_components(ALIGNED, transition(op=Op.PRUNE, host_params=77,
                                                   prev_seed_params=300))
    assert germinated["param_cost"] < 0
    assert germinated["param_cost"] + pruned["param_cost"] == pytest.approx(0.0)


def test_aligned_return_is_accuracy_gained_minus_the_final_seeds_price():
    """Through the env, with germinations, a prune and a fossil: the undiscounted return is
    0.1 x (final - initial accuracy) - size_cost(final seeds), whatever happened between."""
    env = small_env(reward="aligned", max_epochs=14)
    assert env.cfg.reward_normalization == "none", "aligned needs no normaliser"
    _, info = env.reset(seed=0)
    first_acc = info["val_acc"]
    script = [make_action(Op.GERMINATE, 1, blueprint=5, tempo=0, alpha_target=2),
              make_action(Op.GERMINATE, 2, blueprint=1, tempo=0, alpha_target=2),
              make_action(Op.ADVANCE, 1), make_action(Op.ADVANCE, 2), make_action(Op.PRUNE, 1),
              make_action(Op.ADVANCE, 2), make_action(Op.WAIT), make_action(Op.WAIT),
              make_action(Op.WAIT), make_action(Op.ADVANCE, 2), make_action(Op.FOSSILIZE, 2)]
    script += [make_action(Op.WAIT)] * (14 - len(script))
    total, refunded = 0.0, False
    for action in script:
        _, reward, _, _, info = env.step(action)
        assert info["action_valid"], action
        assert reward == pytest.approx(sum(info["reward_components"].values()))
        refunded |= info["reward_components"]["param_cost"] > 0
        total += reward
    assert refunded, "the prune refunded the bottleneck's price"
    assert info["slot_stages"][2] == Stage.FOSSILIZED and info["slot_stages"][1] != Stage.HOLDING
    expected = 0.1 * (info["val_acc"] - first_acc) - size_cost(
        env.cfg.reward, info["seed_params"], info["host_params"])
    assert total == pytest.approx(expected)


def test_coefficient_overrides():
    cfg = parse_reward({"mode": "shaped", "germinate_cost": 0.5, "pbrs_weight": 0})
    comp = reward_components(cfg, transition(op=Op.GERMINATE, phi_after=1.0))
    assert comp["action_cost"] == -0.5 and comp["pbrs"] == 0.0
    assert parse_reward("sparse").mode == "sparse"
    with pytest.raises(ValueError, match="mode"):
        parse_reward({"mode": "nope"})
    with pytest.raises(ValueError, match="germinate_cost.*finite number"):
        parse_reward({"germinate_cost": "high"})


def test_running_std_divides_without_centring_and_clips():
    norm = RunningStd()
    assert norm.normalize(3.0) == 3.0  # one sample: no scale yet
    values = [3.0, 5.0, 5.0, 3.0]
    for v in values[1:]:
        out = norm.normalize(v)
    assert out == pytest.approx(3.0 / np.std(values))  # population std, no mean subtraction
    for i in range(200):
        norm.normalize((-1.0) ** i)
    assert norm.normalize(1e3) == 10.0, "clipped"
    assert norm.normalize(-1e3) == -10.0


# ---- through the env ----------------------------------------------------------------------
def small_env(**kw):
    return SeedMorphogenesisEnv(**{"n_train": 256, "n_val": 200, "max_epochs": 30, **kw})


def test_pbrs_paid_on_every_stage_change_including_prunes():
    env = small_env(reward_normalization="none")
    env.reset(seed=0)
    script = [make_action(Op.GERMINATE, 1, blueprint=6, tempo=0, alpha_target=2),
              make_action(Op.ADVANCE, 1),
              make_action(Op.ADVANCE, 1), make_action(Op.WAIT), make_action(Op.WAIT),
              make_action(Op.ADVANCE, 1), make_action(Op.PRUNE, 1),
              make_action(Op.GERMINATE, 0, blueprint=6), make_action(Op.WAIT),
              make_action(Op.PRUNE, 0)]
    phi = 0.0
    for action in script:
        before = list(env.lifecycle.slots[i].stage for i in range(3))
        *_, info = env.step(action)
        assert info["action_valid"], action
        after = [Stage(s) for s in info["slot_stages"]]
        new_phi = potential(after)
        pbrs = info["reward_components"]["pbrs"]
        assert pbrs == pytest.approx(0.3 * (0.995 * new_phi - phi))
        if before != after:
            assert abs(pbrs) > 0.2, (before, after)  # a stage change moves phi by >= 1
        phi = new_phi
    assert info["slot_stages"][0] == Stage.EMBARGOED
    assert info["reward_components"]["pbrs"] == pytest.approx(-0.3 * 1.0), "prune pays -phi"


def test_raw_reward_is_sum_of_components_and_normalised():
    env = small_env()
    env.reset(seed=0)
    norm = RunningStd()
    for action in [make_action(Op.GERMINATE, 1, blueprint=1, tempo=0), make_action(Op.ADVANCE, 1),
                   make_action(Op.WAIT), make_action(Op.ADVANCE, 1), make_action(Op.WAIT)]:
        _, reward, _, _, info = env.step(action)
        assert info["raw_reward"] == pytest.approx(sum(info["reward_components"].values()))
        assert reward == pytest.approx(norm.normalize(info["raw_reward"]))


def test_reward_scale_persists_across_resets():
    env = small_env(max_epochs=3)
    for _ in range(2):
        env.reset(seed=0)
        for _ in range(3):
            env.step(make_action(Op.WAIT))
    assert env.reward_scale.count == 6


def test_pooled_reward_scale_is_the_scale_of_all_rewards_seen():
    rewards = np.random.default_rng(0).normal(3.0, 2.0, 50)
    whole, parts = RunningStd(), [RunningStd() for _ in range(3)]
    for i, r in enumerate(rewards):
        whole.normalize(r)
        parts[i % 3 if i < 40 else 0].normalize(r)
    merged = RunningStd()
    merged.set_state(RunningStd.pooled([p.state() for p in parts] + [RunningStd().state()]))
    assert merged.count == 50
    assert merged.std() == pytest.approx(whole.std())
    assert merged.mean == pytest.approx(whole.mean)


def test_injected_nan_rolls_back_and_episode_continues():
    env = small_env(inject_nan_at_epoch=7, max_epochs=9, reward_normalization="none")
    env.reset(seed=0)
    script = [make_action(Op.WAIT)] * 2 + [
        make_action(Op.GERMINATE, 1, blueprint=1, tempo=0), make_action(Op.ADVANCE, 1),
        make_action(Op.ADVANCE, 1)] + [make_action(Op.WAIT)] * 4
    infos = []
    for action in script:
        *_, truncated, info = env.step(action)
        infos.append(info)
    rolled = [i["epoch"] for i in infos if i["rollback"]]
    assert rolled == [7]
    at = infos[6]
    assert at["slot_stages"][1] == Stage.EMBARGOED, "live seeds are pruned"
    assert at["reward_components"]["rollback"] == -10.0
    assert at["raw_reward"] == pytest.approx(sum(v for k, v in at["reward_components"].items()
                                                 if k != "rollback"))
    assert math.isfinite(at["val_loss"]) and math.isfinite(at["val_acc"])
    assert all(torch.isfinite(p).all() for p in env.model.parameters())
    assert truncated and infos[-1]["epoch"] == 9 and not infos[-1]["rollback"]
    assert math.isfinite(infos[-1]["train_loss"])
    # The restored host is the epoch-5 snapshot: the run continues from there.
    assert infos[6]["val_acc"] == pytest.approx(infos[4]["val_acc"])


def test_rollback_keeps_fossils_of_the_snapshot_and_restores_their_weights():
    env = small_env(inject_nan_at_epoch=12, max_epochs=13)
    env.reset(seed=0)
    script = [make_action(Op.GERMINATE, 2, blueprint=1, tempo=0, alpha_target=2),
              make_action(Op.ADVANCE, 2), make_action(Op.ADVANCE, 2), make_action(Op.WAIT),
              make_action(Op.WAIT), make_action(Op.ADVANCE, 2), make_action(Op.FOSSILIZE, 2)]
    script += [make_action(Op.WAIT)] * (11 - len(script))
    for action in script:
        *_, info = env.step(action)
        assert info["action_valid"]
        if info["epoch"] == 10:
            snapshot = [p.detach().clone() for p in env.model.slots[2].parameters()]
    assert info["slot_stages"][2] == Stage.FOSSILIZED
    *_, info = env.step(make_action(Op.WAIT))
    assert info["rollback"] and info["slot_stages"][2] == Stage.FOSSILIZED
    restored = list(env.model.slots[2].parameters())
    assert all(torch.equal(a, b) for a, b in zip(snapshot, restored, strict=True))
    *_, info = env.step(make_action(Op.WAIT))
    assert not info["rollback"] and math.isfinite(info["train_loss"])
