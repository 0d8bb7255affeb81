"""The seam to RLlib and Tune (esper_rllib.rllib_seam): every private name the project uses is
on the installed Ray with the signature expected, the checker names a changed one in one line,
and the table is complete for the files that subclass Ray's classes. No Ray is started."""

import re
from pathlib import Path

import pytest
from ray.rllib.algorithms.ppo import PPO
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.learner.learner import Learner
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.tune.logger import TBXLoggerCallback
from ray.tune.stopper import Stopper

from esper_rllib import rllib_seam
from esper_rllib.rllib_seam import ATTRIBUTE, MODULE, PRIVATE_NAMES, PrivateName, problem

ROOT = Path(__file__).resolve().parents[2]
# The project's files that subclass (or reach into) Ray's classes, with those classes.
RAY_SUBCLASSES = {
    "esper_rllib/ppo/learner.py": (PPOTorchLearner, TorchRLModule),
    "esper_rllib/ppo/env_runner.py": (SingleAgentEnvRunner,),
    "esper_rllib/rllib_seam.py": (PPOTorchLearner, SingleAgentEnvRunner),
    "esper_rllib/model/module.py": (TorchRLModule,),
    "esper_rllib/ppo/learner_batch.py": (ConnectorV2,),
    "esper_rllib/ppo/callbacks.py": (RLlibCallback,),
    "esper_rllib/ppo/algorithm.py": (PPO,),
    "tuning/tensorboard.py": (TBXLoggerCallback,),
    "tuning/stopper.py": (Stopper,),
}


def _entry(name):
    (entry,) = [e for e in PRIVATE_NAMES if e.name == name]
    return entry


@pytest.mark.parametrize("entry", PRIVATE_NAMES, ids=lambda e: e.label)
def test_each_private_name_is_on_the_installed_ray(entry):
    line = problem(entry)
    assert line is None, line


def test_a_removed_hook_is_one_line_naming_it(monkeypatch):
    monkeypatch.delattr(Learner, "_make_batch_if_necessary")
    line = problem(_entry("_make_batch_if_necessary"))
    assert line.count("\n") == 0
    assert line.startswith("PPOTorchLearner._make_batch_if_necessary (hook) on ray 2.")
    assert line.endswith("used by ppo/learner.py: PPOTorchLearner has no _make_batch_if_necessary")
    assert rllib_seam.problems() == [line]  # the others still hold


def test_a_changed_signature_is_one_line_with_both(monkeypatch):
    monkeypatch.setattr(SingleAgentEnvRunner, "_sample", lambda self, *, num_episodes: [])
    line = problem(_entry("_sample"))
    assert line.count("\n") == 0 and line.startswith("SingleAgentEnvRunner._sample (hook)")
    assert line.endswith("signature (self, *, num_episodes), expected (self, *, "
                         "num_timesteps=None, num_episodes=None, explore, random_actions=False, "
                         "force_reset=False)")


def test_a_hook_ray_no_longer_calls_is_named(monkeypatch):
    def update(self, *, training_data=None, **kwargs):
        return {}

    monkeypatch.setattr(Learner, "update", update)
    line = problem(_entry("_create_iterator_if_necessary"))
    assert line.endswith("PPOTorchLearner.update no longer calls it")


def test_a_renamed_attribute_or_module_is_named():
    renamed = PrivateName(rllib_seam._RUNNER, "_initial_seed", ATTRIBUTE, "ppo/env_runner.py: x")
    assert problem(renamed).endswith(
        "no class of SingleAgentEnvRunner's assigns self._initial_seed")
    moved = PrivateName("", "ray.train._internal.no_such_module", MODULE, "tuning/output.py: x")
    assert problem(moved).endswith("used by tuning/output.py: no such module")


@pytest.mark.parametrize("path", RAY_SUBCLASSES)
def test_every_private_ray_name_in_the_project_is_in_the_table(path):
    """A private name that a file uses (``x._name``, ``def _name``) and that its Ray classes
    define or assign is in PRIVATE_NAMES; the project's own private names are not Ray's."""
    text = (ROOT / path).read_text()
    used = set(re.findall(r"\.(_[a-z]\w*)", text)) | set(re.findall(r"def (_[a-z]\w*)", text))
    rays = {name for name in used
            if any(hasattr(cls, name) or rllib_seam.assigns(cls, name)
                   for cls in RAY_SUBCLASSES[path])}
    assert rays <= {e.name for e in PRIVATE_NAMES}, sorted(rays - {e.name for e in PRIVATE_NAMES})


def test_learner_and_env_runner_touch_rays_private_attributes_only_through_the_seam():
    attributes = {e.name for e in PRIVATE_NAMES if e.kind == ATTRIBUTE}
    for path in ("esper_rllib/ppo/learner.py", "esper_rllib/ppo/env_runner.py"):
        text = (ROOT / path).read_text()
        assert not {n for n in attributes if re.search(rf"\.{n}\b", text)}, path
