"""The robust feature standardisation (model knob feature_norm): its statistics, where the
learner and critic-fit fit them, and that they travel with the module's weights."""

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns

from esper_rllib.model.feature_norm import CLIP, MAD_TO_SIGMA, FeatureNorm
from tests.helpers import learners
from tests.helpers.modules import random_batch, small_module


def test_fit_centres_on_the_median_and_scales_by_the_mad_falling_back_to_std_then_one():
    # Column 0: a tight bulk with one outlier (the MAD ignores it, the std would not);
    # column 1: mostly 0 (MAD 0: its std); column 2: constant (scale 1).
    x = torch.tensor([[0.430, 0.0, 2.0], [0.431, 0.0, 2.0], [0.432, 1.0, 2.0],
                      [0.433, 0.0, 2.0], [0.690, 0.0, 2.0]])
    norm = FeatureNorm(3)
    assert torch.equal(norm(x), x)  # the identity before it is fitted
    norm.fit(x)
    assert norm.center.tolist() == pytest.approx([0.432, 0.0, 2.0])
    assert norm.scale[0].item() == pytest.approx(0.001 * MAD_TO_SIGMA, rel=1e-3)
    assert norm.scale[1].item() == pytest.approx(0.4)
    assert norm.scale[2].item() == 1.0
    y = norm(x)
    # The bulk spreads to ~+-1.3 sigma; the outlier is clipped, the constant is 0.
    assert y[1, 0].item() == pytest.approx(-1 / MAD_TO_SIGMA, rel=1e-2)
    assert y[4, 0].item() == CLIP and torch.all(y[:, 2] == 0)


def test_robust_module_reads_normalised_features_and_carries_the_statistics_in_its_state():
    module = small_module(feature_norm="robust")
    batch = random_batch(module)
    assert "feature_norm.center" in module.state_dict()
    before = module.features(batch[Columns.OBS])
    module.feature_norm.fit(batch[Columns.OBS]["features"].flatten(0, 1))
    after = module.features(batch[Columns.OBS])
    assert not torch.allclose(before, after) and after.abs().max() <= CLIP
    twin = small_module(feature_norm="robust")
    twin.load_state_dict(module.state_dict())
    assert bool(twin.feature_norm.fitted)
    assert torch.equal(twin.features(batch[Columns.OBS]), after)
    assert small_module().feature_norm is None  # the default reads the env's features as given


@pytest.mark.ray
def test_learner_fits_the_statistics_from_its_first_batch_and_keeps_them():
    config = learners.make_config(env="Probe2").rl_module(
        model_config={**learners.SMALL_MODEL, "feature_norm": "robust"})
    learner, runner = learners.build(config)
    norm = learners.module_of(learner).feature_norm
    episodes = learners.sample(learner, runner)
    learners.learn(learner, episodes)
    # Every real step's observation (an episode's last observation follows its last action).
    feats = torch.as_tensor(np.concatenate(
        [e.get_observations()["features"][:-1] for e in episodes]))
    assert bool(norm.fitted)
    assert torch.allclose(norm.center, feats.median(dim=0).values)
    # A second batch leaves them as they are (marked so a refit would show even where the
    # batches' medians agree).
    norm.center.fill_(7.0)
    learners.update(learner, runner)
    center = torch.full_like(norm.center, 7.0)
    assert torch.equal(norm.center, center)
    # The env runner gets them with the weights.
    learners.sample(learner, runner, n_episodes=1)
    assert torch.equal(runner.module.feature_norm.center, center)
