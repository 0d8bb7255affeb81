"""``EsperPPO``: RLlib's PPO whose checkpoints also keep what the envs carry across episodes:
the reward scale and the random streams.

A `running_std` reward (the `shaped` reward's default) is divided by a running std that lives in
each env (``SeedMorphogenesisEnv.reward_scale``) and spans the run. RLlib 2.60 checkpoints the
local env runner's connector states only (``Algorithm.get_state``); the remote env runners'
envs, where sampling happens, would restart from a scale of 1 on ``train --restore`` or when
Tune restores a failed trial, so the first batch after a restore would be scaled up to 10x. The
checkpoint keeps one scale pooled over every env of every runner (they all see the same reward
distribution); a restore gives it to every env, so a restore onto a different number of runners
works too.

Each env is seeded once, on its runner's first reset (``env_runner.SeedOnceEnvRunner``), and
every later episode draws its host initialisation and data order from the env's own random
stream. The runners of a restored run are new: seeded as at the run's start they would replay
its first episodes. The checkpoint keeps every env's stream (``np_random``'s state, per runner);
a restore gives each env its own back, so a run interrupted and continued plays the episodes
an uninterrupted one plays. An env with no stream in the checkpoint (one from before, or a
restore onto more runners or envs) gets a fresh one drawn from the seed, the iteration, the
runner and the env, never the run's first.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import numpy as np
from ray.rllib.algorithms.ppo import PPO
from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME
from ray.tune.result import TRAINING_ITERATION

from envs.rewards import RunningStd
from esper_rllib.ppo.env_runner import SeedOnceEnvRunner

# The algorithm state's key for the pooled reward scale: (count, mean, m2).
REWARD_SCALE_STATE = "esper_reward_scale"
# The algorithm state's key for the envs' random streams: worker index -> [bit-generator state
# of each of _stream_holders(runner)].
ENV_STREAMS_STATE = "esper_env_streams"


def _subs(runner: Any) -> list[Any]:
    vector = getattr(runner, "env", None)
    return [] if vector is None else [env.unwrapped for env in getattr(vector.unwrapped,
                                                                      "envs", [])]


def env_reward_scales(runner: Any) -> list[RunningStd]:
    """The reward scale of each env an env runner samples from (none without envs)."""
    return [scale for env in _subs(runner)
            if isinstance(scale := getattr(env, "reward_scale", None), RunningStd)]


def _stream_holders(runner: Any) -> list[Any]:
    """What draws an env runner's episodes from a random stream of its own: its vector env if
    it has one (a stacked one draws the shared data order; Gymnasium's SyncVectorEnv has a
    tuple of its sub-envs' instead) and each sub-env (host initialisations, seed modules)."""
    vector = getattr(runner, "env", None)
    if vector is None:
        return []
    return [holder for holder in (vector.unwrapped, *_subs(runner))
            if isinstance(holder.np_random, np.random.Generator)]


def _runner_state(runner: Any) -> tuple[int, list[tuple[int, float, float]], list[dict]]:
    """(worker index, each env's reward scale, each stream holder's generator state)."""
    return (runner.worker_index or 0, [scale.state() for scale in env_reward_scales(runner)],
            [holder.np_random.bit_generator.state for holder in _stream_holders(runner)])


def _generator(state: dict) -> np.random.Generator:
    generator = np.random.Generator(getattr(np.random, state["bit_generator"])())
    generator.bit_generator.state = state
    return generator


def _set_runner_state(scale: tuple[int, float, float] | None, streams: dict[int, list[dict]],
                      iteration: int) -> Callable[[Any], None]:
    def apply(runner: Any) -> None:
        if scale is not None:
            for env_scale in env_reward_scales(runner):
                env_scale.set_state(scale)
        holders = _stream_holders(runner)
        if not holders or not isinstance(runner, SeedOnceEnvRunner):
            return
        worker = runner.worker_index or 0
        saved = streams.get(worker)
        if saved is None or len(saved) != len(holders):
            entropy = [runner.config.seed or 0, iteration, worker]
            saved = [np.random.default_rng([*entropy, k]).bit_generator.state
                     for k in range(len(holders))]
        for holder, state in zip(holders, saved, strict=True):
            holder.np_random = _generator(state)
        runner.continue_streams()

    return apply


class SamplingTimeout(RuntimeError):
    """An iteration's sample() returned no episodes within ``sample_timeout_s``."""


class EsperPPO(PPO):
    def training_step(self) -> None:
        # RLlib's PPO returns early, trains nothing and goes on when no env runner answered in
        # time (the episodes they were sampling are dropped): a run on a busy machine would
        # report "env steps 0" iterations for hours. Stop it with one line instead.
        key = (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME)
        before = self.metrics.peek(key, default=0)
        super().training_step()
        runners = self.env_runner_group
        # A runner that died (the other way to sample nothing) is restarted by RLlib's fault
        # tolerance before the next iteration: the run goes on.
        if self.metrics.peek(key, default=0) == before and \
                self.config.sample_timeout_s is not None and \
                runners.num_healthy_remote_workers() == runners.num_remote_workers():
            raise SamplingTimeout(
                f"iteration {self.iteration + 1} sampled no episodes within sample_timeout_s="
                f"{self.config.sample_timeout_s:g} s (on a busy machine Ray's workers, at nice "
                "15, get little CPU): continue with --restore and --set sample_timeout_s=none, "
                "which waits for the episodes")

    def get_state(self, components: str | Collection[str] | None = None, *,
                  not_components: str | Collection[str] | None = None,
                  **kwargs: Any) -> dict[str, Any]:
        state = super().get_state(components, not_components=not_components, **kwargs)
        if components is None and self.env_runner_group is not None:
            per_runner = self.env_runner_group.foreach_env_runner(
                _runner_state, local_env_runner=True)
            state[REWARD_SCALE_STATE] = RunningStd.pooled(
                [s for _, scales, _ in per_runner for s in scales])
            state[ENV_STREAMS_STATE] = {worker: streams for worker, _, streams in per_runner
                                        if streams}
        return state

    def set_state(self, state: dict[str, Any]) -> Any:
        if self.env_runner_group is not None and TRAINING_ITERATION in state:  # a checkpoint
            scale = state.get(REWARD_SCALE_STATE)
            # Every env gets a stream, the checkpoint's or a fresh one: none replays the start.
            self.env_runner_group.foreach_env_runner(
                _set_runner_state(None if scale is None else tuple(scale),
                                  state.get(ENV_STREAMS_STATE, {}), state[TRAINING_ITERATION]),
                local_env_runner=True)
        return super().set_state(state)
