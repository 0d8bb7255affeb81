"""Learner overhead: one PPO update of ``FactoredPPOLearner`` (RLlib's learner pipeline, our
GAE connector, loss and every telemetry metric, the post-update kl/EV pass included) on a fixed
batch of episodes, versus a plain-PyTorch, CleanRL-style implementation of the same update
written here (episodes -> tensors, GAE with the sampled-op baseline from the values stored at
rollout, per-head clipped ratios over relevant steps, value loss, normalised weighted entropy,
global-norm clip, Adam step: one forward and one backward pass, no metrics) on an identical
copy of the module. Calls alternate in one process, and each is timed in CPU seconds of the
process (``time.process_time``; torch runs on one thread): other processes on a busy machine do
not enter it, where they did enter wall time (1.14x-1.83x in seven runs at one commit, under a
sweep's load, against 1.42x-1.54x in CPU time).

Prints a summary line, then ``ratio=<RLlib CPU seconds / plain CPU seconds per update>``.

    .venv/bin/python benchmarks/bench_learner.py [--profile standard] [--episodes 4] [--reps 9]
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import time

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from envs.contract import RELEVANCE, head_sizes  # noqa: E402
from esper_rllib.model.module import CRITIC_OUT  # noqa: E402
from esper_rllib.ppo.critic_training import make_optimizer  # noqa: E402
from esper_rllib.ppo.env_runner import SeedOnceEnvRunner, bootstrap_value  # noqa: E402
from esper_rllib.ppo.learner import HEAD_ENTROPY_COEFS  # noqa: E402
from esper_rllib.run.config import build_ppo_config, resolve_knobs  # noqa: E402

ENTROPY_COEFS = torch.tensor(list(HEAD_ENTROPY_COEFS.values()))


def _stack(episodes: list, get: str) -> np.ndarray:
    return np.stack([getattr(e, get)() for e in episodes])


def _stack_outputs(episodes: list, key: str) -> np.ndarray:
    return np.stack([e.get_extra_model_outputs(key) for e in episodes])


def _obs_batch(episodes: list) -> dict[str, torch.Tensor]:
    obs = [e.get_observations() for e in episodes]  # each a dict of (T + 1, ...) arrays
    return {k: torch.as_tensor(np.stack([o[k] for o in obs])) for k in obs[0]}


class PlainPPO:
    """The same update in plain PyTorch (no connectors, no metrics logger)."""

    def __init__(self, module: torch.nn.Module, knobs: dict) -> None:
        self.module, self.k = module, knobs
        # The learner's optimiser (fused AdamW; no weight decay by default: Adam).
        self.opt = make_optimizer(module.parameters(), lr=knobs["lr"])
        self.sizes = head_sizes(3)
        self.relevance = torch.as_tensor(RELEVANCE)

    def _forward(self, obs: dict[str, torch.Tensor]) -> dict:
        b = obs["features"].shape[0]
        h = self.module.model_config["lstm_hidden"]
        state = {"h": torch.zeros(b, h), "c": torch.zeros(b, h)}
        return self.module.forward_train({"obs": obs, "state_in": state})

    def update(self, episodes: list) -> None:
        k = self.k
        obs = _obs_batch(episodes)  # (B, T + 1, ...): the final obs bootstraps
        actions = torch.as_tensor(_stack(episodes, "get_actions")).long()  # (B, T, heads)
        rewards = torch.as_tensor(_stack(episodes, "get_rewards")).float()
        old_logits = torch.as_tensor(_stack_outputs(episodes, "action_dist_inputs")).float()
        t = actions.shape[1]

        # GAE baseline, stored at rollout: Q(s_t, op taken), and the bootstrap value after the
        # last step (Q(s_T, argmax op)).
        q_all = torch.as_tensor(_stack_outputs(episodes, CRITIC_OUT))  # (B, T, 6)
        values = torch.cat([q_all.gather(-1, actions[..., :1]).squeeze(-1),
                            torch.tensor([[bootstrap_value(e)] for e in episodes])], dim=1)
        adv = torch.zeros_like(rewards)
        last = torch.zeros(rewards.shape[0])
        for i in reversed(range(t)):  # truncated at max_epochs: bootstrap from V(s_T)
            delta = rewards[:, i] + k["gamma"] * values[:, i + 1] - values[:, i]
            last = delta + k["gamma"] * k["lambda_"] * last
            adv[:, i] = last
        targets = adv + values[:, :t]
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)

        out = self._forward({key: v[:, :t] for key, v in obs.items()})  # the one forward pass
        logits = out["action_dist_inputs"]
        rel = self.relevance[actions[..., 0]]  # (B, T, heads)
        logp, logp_old, ent, legal = [], [], [], []
        masks = torch.split(obs["action_mask"][:, :t], self.sizes, dim=-1)
        parts = zip(torch.split(logits, self.sizes, -1), torch.split(old_logits, self.sizes, -1),
                    masks, strict=True)
        for i, (new_h, old_h, mask_h) in enumerate(parts):
            lp = torch.log_softmax(new_h, -1)
            logp.append(lp.gather(-1, actions[..., i:i + 1]).squeeze(-1))
            logp_old.append(torch.log_softmax(old_h, -1).gather(
                -1, actions[..., i:i + 1]).squeeze(-1))
            ent.append(-(lp.exp() * lp).sum(-1))
            legal.append(mask_h.sum(-1))
        logp, logp_old = torch.stack(logp, -1), torch.stack(logp_old, -1)
        ent, legal = torch.stack(ent, -1), torch.stack(legal, -1)

        def per_head_mean(x: torch.Tensor) -> torch.Tensor:
            return (x * rel).sum((0, 1)) / rel.sum((0, 1)).clamp(min=1.0)

        ratio = torch.exp(logp - logp_old)
        a = adv.unsqueeze(-1)
        clip = k["clip_param"]
        policy = per_head_mean(-torch.min(ratio * a, ratio.clamp(1 - clip, 1 + clip) * a)).sum()
        value = 0.5 * ((self.module.value_of_ops(out["embeddings"], actions[..., 0])
                        - targets) ** 2).mean()
        norm_ent = torch.where(legal > 1, ent / torch.log(legal.clamp(min=2)), 0.0)
        entropy = (ENTROPY_COEFS * per_head_mean(norm_ent)).sum()
        total = policy + k["value_coef"] * value - k["entropy_coef"] * entropy
        self.opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(self.module.parameters(), k["max_grad_norm"])
        self.opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="standard")
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--reps", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(1)

    knobs = resolve_knobs(args.profile, overrides={
        "n_train": 256, "n_val": 128, "max_epochs": args.max_epochs,
        "episodes_per_batch": args.episodes})
    config = build_ppo_config(knobs)
    runner = SeedOnceEnvRunner(config=config)
    episodes = runner.sample(num_episodes=args.episodes, explore=True)
    learner = config.build_learner(env=runner.env.unwrapped)
    learner.module["default_policy"].load_state_dict(runner.module.state_dict())
    plain = PlainPPO(copy.deepcopy(learner.module["default_policy"].unwrapped()), knobs)
    steps = sum(len(e) for e in episodes)

    def rllib_update() -> float:
        batch = copy.deepcopy(episodes)  # the learner connector extends episodes in place
        start = time.process_time()
        learner.update(episodes=batch, timesteps={"num_env_steps_sampled_lifetime": steps},
                       num_epochs=1, minibatch_size=None)  # as PPO does: one step
        return time.process_time() - start

    def plain_update() -> float:
        batch = copy.deepcopy(episodes)
        start = time.process_time()
        plain.update(batch)
        return time.process_time() - start

    rllib_update(), plain_update()  # warm-up
    rllib_s, plain_s = [], []
    for _ in range(args.reps):
        rllib_s.append(rllib_update())
        plain_s.append(plain_update())
    r, p = float(np.median(rllib_s)), float(np.median(plain_s))
    params = sum(x.numel() for x in plain.module.parameters())
    assert math.isfinite(r) and math.isfinite(p)
    print(f"learner ({args.profile}, module {params:,} params, batch {args.episodes} episodes x "
          f"{args.max_epochs} steps): FactoredPPOLearner {r:.4f}s/update, plain PyTorch "
          f"{p:.4f}s/update (CPU seconds, median of {args.reps}; one gradient step)")
    runner.stop()
    print(f"ratio={r / p:.2f}")


if __name__ == "__main__":
    main()
