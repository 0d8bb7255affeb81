"""Recording episodes of a behaviour policy over Ray actors (``esper-rllib record``).

One actor per core (``workers``; every CPU of the local Ray or of the cluster at ``address`` by
default) holds an env and the behaviour policy and plays whole episodes; the driver writes each
episode's file as it arrives (``esper_rllib.offline.dataset``), so a cluster's workers need no
shared disk and an interrupted recording keeps every finished episode. Re-running the same
command resumes: episodes already on disk are skipped, and each episode is fully determined by
its id (env seed ``RECORD_SEED_BASE + seed x SEED_STRIDE + id``, the policy's sampling seeded by
the env seed), so a resumed recording holds the same episodes as an uninterrupted one.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from esper_rllib.analysis.outputs import make_out_dir
from esper_rllib.offline import dataset
from esper_rllib.offline.behaviour import build_module, make_behaviour
from esper_rllib.offline.record_spec import POLICY_CHOICES, SCRIPTED, SEED_STRIDE
from esper_rllib.run.config import ConfigError, env_config, resolve_knobs
from esper_rllib.run.preflight import make_env

# Env seeds of recorded episodes: apart from training (seed x 10000 + runner offsets, seeds
# below 20), the oracle search (100_000) and evaluation (500_000).
RECORD_SEED_BASE = 200_000
# What must match for a recording in an existing folder to be resumed or extended.
IDENTITY = ("profile", "overrides", "policy", "seed")

Tick = Callable[[int, str], None]


@dataclass(frozen=True)
class RecordPlan:
    profile: str
    overrides: dict[str, Any]  # the --set knobs
    policy: str  # initial | random | heuristic | a checkpoint's absolute path
    episodes: int
    seed: int

    @property
    def knobs(self) -> dict[str, Any]:
        return resolve_knobs(self.profile, overrides=self.overrides)

    def env_seed(self, episode_id: int) -> int:
        return RECORD_SEED_BASE + self.seed * SEED_STRIDE + episode_id

    def identity(self) -> dict[str, Any]:
        # As meta.json holds it (tuples as lists), so the two compare.
        return json.loads(json.dumps({k: getattr(self, k) for k in IDENTITY}))

    def meta(self) -> dict[str, Any]:
        knobs = self.knobs
        return {**self.identity(), "episodes": self.episodes, "env": knobs["env"],
                "env_config": env_config(knobs), "gamma": knobs["gamma"],
                "model_config": _model_config(knobs) if self.policy == "initial" else None,
                "env_seeds": [self.env_seed(0), self.env_seed(self.episodes - 1)],
                "columns": None, "commit": git_commit()}


def _model_config(knobs: Mapping[str, Any]) -> dict[str, Any]:
    from esper_rllib.run.config import build_ppo_config

    return dict(build_ppo_config(knobs).model_config)


def git_commit() -> str:
    """The working tree's commit, ``+dirty`` when it has uncommitted changes; "unknown" outside
    a git checkout."""
    repo = Path(__file__).resolve().parents[2]  # this checkout, wherever the command runs
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, cwd=repo).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True,
                               cwd=repo).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


def plan_recording(profile: str, overrides: Mapping[str, Any], policy: str, episodes: int,
                   seed: int) -> RecordPlan:
    """A validated plan; ConfigError naming the bad flag."""
    if episodes < 1 or episodes > SEED_STRIDE:
        raise ConfigError(f"--episodes {episodes}: allowed: 1..{SEED_STRIDE}")
    if seed < 0:
        raise ConfigError(f"--seed {seed}: allowed: an int >= 0")
    if policy not in POLICY_CHOICES:
        from esper_rllib.run.trainer import check_checkpoint

        try:
            policy = str(check_checkpoint(policy))
        except ConfigError as err:
            raise ConfigError(f"--policy: {err} (allowed: {' | '.join(POLICY_CHOICES)} | "
                              "a checkpoint folder)".replace("--restore ", "")) from None
    plan = RecordPlan(profile, dict(overrides), policy, episodes, seed)
    plan.knobs  # noqa: B018 (validates the knobs)
    return plan


def check_out(out: Path, plan: RecordPlan) -> set[int]:
    """The episode ids already recorded in ``out`` (a resumed recording); ConfigError when
    ``out`` holds a recording of something else or cannot be created."""
    meta_path = out / dataset.META_FILE
    if meta_path.is_file():
        theirs = {k: dataset.read_meta(out).get(k) for k in IDENTITY}
        for key, value in plan.identity().items():
            if theirs[key] != value:
                raise ConfigError(f"--out {out}: holds a recording with {key}={theirs[key]!r}, "
                                  f"this one has {key}={value!r}; resuming needs the same "
                                  f"{', '.join(IDENTITY)} (or another --out)")
    elif out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: not empty and not a recording (no "
                          f"{dataset.META_FILE}); give a new or empty folder")
    return {i for i in dataset.recorded_ids(out) if i < plan.episodes}


class _Recorder:
    """A Ray actor: one env and one behaviour policy, whole episodes on request."""

    def __init__(self, knobs: Mapping[str, Any], kind: str, module: Any) -> None:
        import torch

        torch.set_num_threads(1)  # one core per actor, as an env runner
        self.env = make_env(dict(knobs)).unwrapped
        nvec = tuple(int(n) for n in self.env.action_space.nvec)
        self.policy = make_behaviour(kind, module, nvec)

    def play(self, episode_id: int, env_seed: int) -> dataset.EpisodeRecord:
        return play_episode(self.env, self.policy, episode_id, env_seed)


def play_episode(env: Any, policy: Any, episode_id: int, env_seed: int
                 ) -> dataset.EpisodeRecord:
    """One episode of a behaviour policy (``reset(seed)``, ``act -> (action, logp)``)."""
    policy.reset(env_seed)
    obs, info = env.reset(seed=env_seed)
    observations, actions, logps, rewards = [], [], [], []
    terminated = truncated = False
    while not (terminated or truncated):
        action, logp = policy.act(obs, info)
        observations.append(obs)
        actions.append(action)
        logps.append(logp)
        obs, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
    return dataset.EpisodeRecord(
        episode_id=episode_id, env_seed=env_seed,
        obs={k: np.stack([o[k] for o in observations]) for k in observations[0]},
        actions=np.stack(actions), logp=np.asarray(logps), rewards=np.asarray(rewards),
        terminated=bool(terminated), truncated=bool(truncated),
        final_acc=float(info.get("val_acc", np.nan)))


def behaviour_module(plan: RecordPlan, env: Any) -> Any:
    """The RLModule the plan's policy plays (None for a scripted policy)."""
    if plan.policy in SCRIPTED:
        return None
    if plan.policy == "initial":
        return build_module(plan.knobs, plan.seed, env.observation_space, env.action_space)
    from esper_rllib.offline.behaviour import load_checkpoint_module

    return load_checkpoint_module(plan.policy)


def record(plan: RecordPlan, out: Path, *, workers: int | None = None, tick: Tick | None = None
           ) -> dict[str, Any]:
    """Records the plan's missing episodes into ``out`` on the running Ray (``ray.init`` first);
    returns the final meta.json."""
    import ray
    from ray.util import ActorPool

    done = check_out(out, plan)
    knobs = plan.knobs
    env = make_env(knobs).unwrapped  # bad env inputs fail here, before anything is written
    make_out_dir(out)
    kind = plan.policy if plan.policy in POLICY_CHOICES else "checkpoint"
    module = behaviour_module(plan, env)
    meta = plan.meta()
    meta["columns"] = list(dataset.columns(sorted(env.observation_space.spaces)))
    dataset.write_meta(out, {**meta, "complete": False})

    todo = [i for i in range(plan.episodes) if i not in done]
    start = time.monotonic()
    if todo:
        n_workers = min(len(todo), workers or max(int(ray.cluster_resources().get("CPU", 1)), 1))
        actor = ray.remote(num_cpus=1)(_Recorder)
        module_ref = ray.put(module)
        pool = ActorPool([actor.remote(knobs, kind, module_ref) for _ in range(n_workers)])
        for episode in pool.map_unordered(lambda a, i: a.play.remote(i, plan.env_seed(i)),
                                          todo):
            dataset.write_episode(out, episode)
            if tick is not None:
                tick(len(episode), f"episode {episode.episode_id} "
                                   f"({len(done) + 1}/{plan.episodes})")
            done.add(episode.episode_id)
    meta.update(complete=True, resumed_from=plan.episodes - len(todo),
                wall_s=round(time.monotonic() - start, 1))
    dataset.write_meta(out, meta)
    return meta
