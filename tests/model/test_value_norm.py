"""PopArt (esper_rllib.model.value_norm): target statistics, output preservation, and the module's
unnormalised values and checkpointed statistics."""

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModule

from envs.contract import action_space, observation_space
from esper_rllib.model.module import FactoredLSTM
from esper_rllib.model.value_norm import BETA, STD_MIN, PopArt

SMALL = {"lstm_hidden": 16, "feature_dim": 8, "embed_dim": 2, "head_hidden": 8,
         "blueprint_head_hidden": [8], "max_seq_len": 4, "value_head_gain": 1.0}


def head_and_inputs(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Linear(5, 1), torch.randn(32, 5)


def test_updates_preserve_the_unnormalised_outputs_exactly():
    norm = PopArt()
    layer, x = head_and_inputs()
    before = norm.denormalize(layer(x))
    gen = torch.Generator().manual_seed(1)
    for scale, shift in ((10.0, -4.0), (0.5, 30.0), (100.0, 0.0)):
        norm.update(scale * torch.randn(64, generator=gen) + shift, layer)
        with torch.no_grad():
            assert torch.allclose(norm.denormalize(layer(x)), before, rtol=1e-4, atol=1e-4)
    # ... while the normalised output moved to the new scale.
    assert not torch.allclose(layer(x), before)


def test_statistics_average_the_first_batches_then_track_recent_ones():
    norm = PopArt()
    layer, _ = head_and_inputs()
    batches = [torch.full((10,), float(v)) + torch.tensor([-1.0, 1.0] * 5) for v in (2, 4, 6)]
    norm.update(batches[0], layer)
    assert float(norm.mean) == pytest.approx(2.0) and float(norm.std) == pytest.approx(1.0)
    norm.update(batches[1], layer)
    norm.update(batches[2], layer)
    everything = torch.cat(batches)
    assert float(norm.mean) == pytest.approx(float(everything.mean()))
    assert float(norm.std) == pytest.approx(float(everything.std(correction=0)), rel=1e-5)
    for _ in range(int(6 / BETA)):  # many batches later, the old ones are forgotten
        norm.update(torch.full((10,), 50.0), layer)
    assert float(norm.mean) == pytest.approx(50.0, rel=0.01)


def test_constant_targets_hit_the_std_floor_and_round_trip():
    norm = PopArt()
    layer, x = head_and_inputs()
    norm.update(torch.full((8,), 3.0), layer)
    assert float(norm.std) == pytest.approx(STD_MIN)
    values = torch.randn(4, 3)
    assert torch.allclose(norm.denormalize(norm.normalize(values)), values, atol=1e-5)
    assert torch.allclose(norm.normalize(torch.full((2,), 3.0)), torch.zeros(2))


def _module(value_target_norm, critic="q_op"):
    torch.manual_seed(0)
    return FactoredLSTM(observation_space=observation_space(3), action_space=action_space(3),
                        model_config={**SMALL, "value_target_norm": value_target_norm,
                                      "critic": critic})


def _batch(module, B=2, T=3):
    space = observation_space(3)
    space.seed(0)
    obs = [[space.sample() for _ in range(T)] for _ in range(B)]
    obs = {k: torch.as_tensor(np.array([[o[k] for o in row] for row in obs])) for k in space}
    actions = torch.zeros((B, T, len(action_space(3).nvec)), dtype=torch.long)
    state = {k: torch.as_tensor(np.stack([v] * B)) for k, v in module.get_initial_state().items()}
    return {Columns.OBS: obs, Columns.ACTIONS: actions, Columns.STATE_IN: state}


@pytest.mark.parametrize("critic", ["q_op", "v"])
def test_module_values_are_unnormalised_and_the_statistics_are_checkpointed(critic, tmp_path):
    module = _module("popart", critic)
    batch = _batch(module)
    with torch.no_grad():
        before = module.compute_values(batch)
        module.value_norm.update(torch.tensor([5.0, 9.0, 13.0]), module.value_head[-1])
        after = module.compute_values(batch)
        raw = module.value_head[-1].bias.clone()
    assert torch.allclose(after, before, atol=1e-4)  # preserved through the update
    assert float(module.value_norm.mean) == pytest.approx(9.0)
    assert not torch.allclose(raw, torch.zeros_like(raw))
    module.save_to_path(tmp_path)
    restored = RLModule.from_checkpoint(tmp_path)
    assert float(restored.value_norm.mean) == pytest.approx(9.0)
    assert int(restored.value_norm.updates) == 1
    with torch.no_grad():
        assert torch.equal(restored.compute_values(batch), after)
    assert {"value_norm.mean", "value_norm.mean_sq"} <= set(module.get_state())


def test_without_popart_the_module_has_no_statistics():
    module = _module("none")
    assert module.value_norm is None
    assert not any(k.startswith("value_norm") for k in module.state_dict())
