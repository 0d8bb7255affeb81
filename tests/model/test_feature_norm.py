"""The robust feature standardisation (model knob feature_norm) and the critic's piecewise-linear
encoding (critic_feature_bins): their statistics, where the learner and critic-fit fit them, and
that they travel with the module's weights."""

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns

from esper_rllib.knob import ConfigError
from esper_rllib.model.feature_norm import (
    CLIP,
    MAD_TO_SIGMA,
    FeatureNorm,
    PiecewiseLinearEncoding,
)
from esper_rllib.model.model_config import resolve_model_config
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


def test_piecewise_linear_encoding_places_each_feature_in_its_quantile_bins():
    # Column 0: 0..8 (4 bins of width 2); column 1: mostly 0 (tied edges: steps).
    x = torch.stack([torch.arange(9.0), torch.tensor([0.0] * 7 + [1.0, 3.0])], dim=1)
    ple = PiecewiseLinearEncoding(2, 4)
    assert ple.edges[0].tolist() == pytest.approx([-CLIP, -CLIP / 2, 0.0, CLIP / 2, CLIP])
    ple.fit(x)
    assert ple.edges[0].tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
    # Centred: the positions of the rows it was fitted on average 0.
    assert torch.allclose(ple(x).mean(dim=0), torch.zeros(8), atol=1e-6)
    out = (ple(torch.tensor([[5.0, 0.0], [-2.0, 2.0], [9.0, 0.5]])).reshape(3, 2, 4)
           + ple.center)
    # 5 is past bins 1-2, halfway through bin 3, before bin 4.
    assert out[0, 0].tolist() == pytest.approx([1.0, 1.0, 0.5, 0.0])
    # Open ends: below the first edge and above the last the position goes on linearly.
    assert out[1, 0].tolist() == pytest.approx([-1.0, 0.0, 0.0, 0.0])
    assert out[2, 0].tolist() == pytest.approx([1.0, 1.0, 1.0, 1.5])
    # Column 1's edges are tied at 0 but for the last bin: steps at 0, then a slope to 3.
    assert ple.edges[1, :4].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert out[0, 1].tolist() == pytest.approx([1.0, 1.0, 1.0, 0.0])
    assert out[2, 1, 3].item() == pytest.approx(0.5 / ple.edges[1, 4].item())


def test_critic_reads_the_encoded_features_and_the_module_carries_the_edges():
    module = small_module(feature_norm="robust", critic_trunk="mlp", critic_feature_bins=4)
    batch = random_batch(module)
    features = batch[Columns.OBS]["features"].flatten(0, 1)
    n = features.shape[1]
    assert module.critic_trunk["feature_net"][0].in_features == n * 4 + (
        module.blueprint_embedding.embedding_dim * batch[Columns.OBS]["blueprints"].shape[-1])
    module.fit_features(features)
    # The edges are quantiles of the normalised features: the critic reads bins of what the
    # policy reads.
    normed = module.feature_norm(features.float())
    assert torch.allclose(module.critic_encoding.edges[:, 2], normed.quantile(0.5, dim=0))
    assert module.critic_features(batch[Columns.OBS]).shape[-1] == n * 4
    twin = small_module(feature_norm="robust", critic_trunk="mlp", critic_feature_bins=4)
    twin.load_state_dict(module.state_dict())
    assert torch.equal(twin.critic_features(batch[Columns.OBS]),
                       module.critic_features(batch[Columns.OBS]))
    # Fitted once: later data leaves the edges alone.
    edges = module.critic_encoding.edges.clone()
    module.fit_features(features * 2)
    assert torch.equal(module.critic_encoding.edges, edges)


@pytest.mark.parametrize(("given", "message"), [
    ({"critic_feature_bins": 1}, r"critic_feature_bins'\]=1: not allowed; allowed: 0 \(off\) "
                                 r"or >= 2"),
    ({"critic_feature_bins": 8, "critic_trunk": "shared"},
     r"critic_feature_bins'\]=8: needs a critic trunk of its own \(critic_trunk mlp or "
     r"separate\)")])
def test_critic_feature_bins_needs_two_bins_and_a_critic_trunk(given, message):
    with pytest.raises(ConfigError, match=message):
        resolve_model_config(given)


@pytest.mark.ray
def test_learner_fits_the_statistics_from_its_first_batch_and_keeps_them():
    config = learners.make_config(env="Probe2").rl_module(
        model_config={**learners.SMALL_MODEL, "feature_norm": "robust", "critic_trunk": "mlp",
                      "critic_feature_bins": 4})
    learner, runner = learners.build(config)
    norm = learners.module_of(learner).feature_norm
    encoding = learners.module_of(learner).critic_encoding
    episodes = learners.sample(learner, runner)
    learners.learn(learner, episodes)
    # Every real step's observation (an episode's last observation follows its last action).
    feats = torch.as_tensor(np.concatenate(
        [e.get_observations()["features"][:-1] for e in episodes]))
    assert bool(norm.fitted)
    assert torch.allclose(norm.center, feats.median(dim=0).values)
    assert bool(encoding.fitted)
    assert torch.allclose(encoding.edges[:, -1], norm(feats).max(dim=0).values)
    # A second batch leaves them as they are (marked so a refit would show even where the
    # batches' medians agree).
    norm.center.fill_(7.0)
    learners.update(learner, runner)
    center = torch.full_like(norm.center, 7.0)
    assert torch.equal(norm.center, center)
    # The env runner gets them with the weights.
    learners.sample(learner, runner, n_episodes=1)
    assert torch.equal(runner.module.feature_norm.center, center)
