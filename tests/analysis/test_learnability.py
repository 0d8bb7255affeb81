"""The learnability audit: the EV ceiling where it is known exactly, its statistics on known
inputs, env branching, and `esper-rllib signal` end to end on a tiny env."""

import copy
import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from envs.contract import Op, Stage
from envs.env import SeedMorphogenesisEnv
from envs.heuristic import make_action
from envs.probes import Probe2Env, Probe4Env
from envs.scripted import OraclePolicy, RandomPolicy, parse_oracle
from esper_rllib.analysis import learnability as lb
from esper_rllib.cli import main
from esper_rllib.ppo.telemetry import returns_to_go
from tests.helpers import REPO


def ceilings_on(env, n_states=24, continuations=6, policy=RandomPolicy):
    """{"ev_ceiling": the Markov-state ceiling, "ev_ceiling_shared_stream": ...}"""
    fresh, shared = [], []
    for i in range(n_states):
        episode = lb.play(env, policy(i), seed=i, name="random", branch_at=[0])
        branch = episode.branches[0]
        own = float(returns_to_go(episode.rewards, 0.99)[0])
        for groups, redraw in ((fresh, lb.redraw_stream), (shared, None)):
            others = lb.continuation_returns(branch, continuations - 1, 0.99, lb.reseed_rng,
                                             seed=1000 * (i + 1), redraw=redraw)
            groups.append([own, *others])
    return lb.ev_ceiling(fresh, shared)


def ceiling_on(env, n_states=24, continuations=6):
    return ceilings_on(env, n_states, continuations)["ev_ceiling"]


def test_ev_ceiling_is_one_when_the_state_fixes_the_reward():
    ceiling = ceiling_on(Probe2Env())  # reward = the episode's signal, whatever the action
    assert ceiling["estimate"] == pytest.approx(1.0)
    assert ceiling["low"] == pytest.approx(1.0)


def test_ev_ceiling_is_zero_when_the_reward_is_the_policys_coin_flip():
    # Probe 4 pays 1 for one of four legal ops: under the random policy a coin flip of the
    # action, the same in every state.
    ceiling = ceiling_on(Probe4Env(), n_states=40)
    assert abs(ceiling["estimate"]) < 0.2
    assert ceiling["low"] <= 0.0 <= ceiling["high"]


def test_ev_ceiling_rejects_too_few_returns():
    with pytest.raises(ValueError, match=">= 2 states"):
        lb.ev_ceiling([[1.0, 2.0]])
    with pytest.raises(ValueError, match="3 shared-stream states for 2"):
        lb.ev_ceiling([[1.0, 2.0], [3.0, 4.0]], [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])


class DiceEnv(gym.Env):
    """Two steps; each pays a coin the env flips from its own np_random: after the first step
    nothing in the state tells the return, the future's dice do."""

    observation_space = gym.spaces.Dict({"features": gym.spaces.Box(0.0, 1.0, (1,))})
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return {"features": np.zeros(1, np.float32)}, {"effective_op": 0}

    def step(self, action):
        self.t += 1
        reward = float(self.np_random.integers(0, 2))
        return ({"features": np.zeros(1, np.float32)}, reward, self.t == 2, False,
                {"effective_op": 0})


class Constant:
    """A policy with a random stream it never uses: only the env's dice can differ."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def reset(self):
        pass

    def act(self, obs, info):
        return 0


def test_ev_ceiling_returns_both_figures_and_only_the_shared_stream_knows_the_dice():
    both = ceilings_on(DiceEnv(), n_states=40, continuations=4, policy=Constant)
    markov, shared = both["ev_ceiling"], both["ev_ceiling_shared_stream"]
    assert markov["stream"] == "fresh" and shared["stream"] == "shared"
    assert markov["states"] == shared["states"] == 40
    assert markov["continuations"] == shared["continuations"] == 4
    # Copies that share the stream replay the same coins: their returns never differ.
    assert shared["estimate"] == pytest.approx(1.0)
    assert abs(markov["estimate"]) < 0.2 and markov["low"] <= 0.0 <= markov["high"]
    assert shared["minus_fresh"]["estimate"] == pytest.approx(1.0 - markov["estimate"])
    assert shared["minus_fresh"]["low"] > 0.5
    assert len(markov["returns"]) == 40 and len(markov["returns"][0]) == 4
    assert lb.ev_ceiling([[1.0, 2.0], [3.0, 4.0]])["ev_ceiling_shared_stream"] is None


def test_redrawn_stream_changes_the_data_order_and_leaves_the_state():
    env = SeedMorphogenesisEnv(n_train=512, n_val=100, max_epochs=6, reward="aligned")
    env.reset(seed=3)
    env.step(make_action(Op.GERMINATE, 1, blueprint=1, tempo=0))
    env.step(make_action(Op.ADVANCE, 1))
    same, other, again = (copy.deepcopy(env) for _ in range(3))
    other.redraw_future(7)
    again.redraw_future(7)

    def state(e):
        return {"model": e.model.state_dict(), "host_opt": e._host_opt.state_dict(),
                "seed_opts": {i: o.state_dict() for i, o in e._seed_opts.items()},
                "slots": [(s.stage, s.alpha.alpha) for s in e.lifecycle.slots],
                "epoch": e.epoch, "loss": list(e._loss_hist), "acc": list(e._acc_hist),
                "obs": e._observation()}

    def equal(a, b):
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
        if isinstance(a, list | tuple):
            return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))
        if isinstance(a, torch.Tensor):
            return torch.equal(a, b)
        if isinstance(a, np.ndarray):
            return np.array_equal(a, b)
        return a == b

    assert equal(state(other), state(env)), "redrawing the stream touched the state"
    assert other.model is not env.model  # a branch: the env itself is untouched too
    # The next epoch's minibatch order (train_epochs' permutation) and new seeds' init draws.
    perms = [torch.randperm(512, generator=e._gen) for e in (same, env, other, again)]
    assert torch.equal(perms[0], perms[1]), "a plain copy shares the env's stream"
    assert not torch.equal(perms[2], perms[1])
    assert torch.equal(perms[2], perms[3]), "the same seed draws the same stream"
    draws = [e.np_random.integers(0, 2**62) for e in (same, env, other)]
    assert draws[0] == draws[1] != draws[2]
    # Same state, same action: a plain copy replays the env's future, other dice give another.
    for e in (env, same, other):
        e.step(make_action(Op.WAIT))
    assert equal(same.model.state_dict(), env.model.state_dict())
    assert not equal(other.model.state_dict(), env.model.state_dict())


def test_env_branch_replays_the_same_future_for_the_same_actions():
    env = SeedMorphogenesisEnv(n_train=128, n_val=100, max_epochs=6, reward="aligned")
    env.reset(seed=3)
    env.step(make_action(Op.GERMINATE, 1, blueprint=1, tempo=0))
    branch = copy.deepcopy(env)
    assert branch._data is env._data, "the data set is shared, not copied"
    script = [make_action(Op.ADVANCE, 1), make_action(Op.WAIT), make_action(Op.ADVANCE, 1)]
    for e in (env, branch):
        e.infos = [e.step(a)[4] for a in script]
    assert [i["val_acc"] for i in env.infos] == [i["val_acc"] for i in branch.infos]
    assert [i["raw_reward"] for i in env.infos] == [i["raw_reward"] for i in branch.infos]
    # Had they shared the host or its optimiser, the second would have trained it further.
    assert env.infos[-1]["slot_stages"][1] == Stage.BLENDING


def test_paired_t_wins_and_correlations_on_known_numbers():
    stats = lb.paired([3.0, 5.0, 7.0], [1.0, 2.0, 3.0])  # differences 2, 3, 4
    assert stats["diff"] == pytest.approx(3.0) and stats["wins"] == 3
    assert stats["t"] == pytest.approx(3.0 / (1.0 / math.sqrt(3)))
    half = 4.302653 / math.sqrt(3)  # t(0.975, 2 dof) x sd / sqrt(n)
    assert (stats["low"], stats["high"]) == pytest.approx((3.0 - half, 3.0 + half))
    assert lb.paired([1.0, 2.0], [1.0, 2.0])["t"] == 0.0
    corr = lb.correlations([1, 2, 3, 4], [1, 4, 9, 100])
    assert corr["spearman"] == pytest.approx(1.0) and corr["pearson"] < 0.9
    assert lb.correlations([1, 2, 2, 3], [1, 2, 2, 3])["spearman"] == pytest.approx(1.0)


def _episode(features, rewards):
    return lb.Episode("p", 0, 0.0, np.asarray(rewards, float), np.asarray(rewards, float), {},
                      [0] * len(rewards), np.asarray(features, float))


def test_ridge_r2_held_out_by_episode():
    rng = np.random.default_rng(0)
    # The last reward is a feature the first step already shows: G_0 is predictable.
    predictable = []
    for _ in range(40):
        x = rng.normal()
        predictable.append(_episode([[x, 0.0], [x, 1.0]], [0.0, x]))
    assert lb.ridge_r2(predictable, gamma=1.0)["held_out"] > 0.95
    noise = [_episode([[rng.normal(), t] for t in range(2)], rng.normal(size=2))
             for _ in range(10)]
    r2 = lb.ridge_r2(noise, gamma=1.0)
    assert r2["held_out"] < 0.2 < r2["in_sample"] + 1.0  # nothing held out to explain


def test_oracle_grows_its_seed_and_hold_fossilizes_only_at_the_last_step():
    env = SeedMorphogenesisEnv(n_train=128, n_val=100, max_epochs=12, reward="aligned")
    for hold in (False, True):
        episode = lb.play(env, OraclePolicy(1, 1, 12, hold=hold), seed=0, name="oracle")
        assert episode.ops[0] == Op.GERMINATE
        fossilized_at = episode.ops.index(Op.FOSSILIZE)
        assert (fossilized_at == 11) == hold
        # In the forward pass from the step after GERMINATE on, fossilized included.
        assert episode.seed_epochs == {"conv_light@r0c1": 11}
    assert parse_oracle("bottleneck@r0c1") == (5, 1) == parse_oracle("bottleneck@1")
    with pytest.raises(ValueError, match="BLUEPRINT@SLOT"):
        parse_oracle("lora@r0c1")


TINY = ["--set", "n_train=128", "--set", "n_val=100", "--set", "max_epochs=4"]


def test_signal_command_writes_its_tables(tmp_path, capsys):
    out = tmp_path / "sig"
    code = main(["signal", *TINY, "--seeds", "2", "--oracle", "conv_light@r0c1",
                 "--ev-states", "2", "--ev-continuations", "2", "--out", str(out)])
    assert code == 0
    result = json.loads((out / "signal.json").read_text())
    policies = result["policies"]
    assert set(policies) == {"wait", "random", "heuristic", "oracle", "oracle_hold"}
    assert policies["wait"]["op_mix"]["WAIT"] == 1.0
    assert policies["wait"]["vs_wait"]["final_acc"]["diff"] == 0.0
    assert policies["oracle"]["op_mix"]["GERMINATE"] == pytest.approx(1 / 4)  # once an episode
    assert policies["wait"]["seeds_grown"] == {}
    assert policies["oracle"]["seeds_grown"] == {"conv_light@r0c1": 3.0}  # steps 2-4 of 4
    for p in policies.values():  # aligned: no normaliser, so received == raw
        assert p["return"]["mean"] == pytest.approx(p["raw_return"]["mean"])
        assert set(p["components"]) == {"accuracy", "param_cost", "rollback"}
    assert result["correlation"]["n"] == 10
    assert result["ev_ceiling"]["random"]["states"] == 2
    assert result["ev_ceiling"]["random"]["stream"] == "fresh"
    shared = result["ev_ceiling_shared_stream"]["random"]
    assert shared["stream"] == "shared" and shared["states"] == 2 and "minus_fresh" in shared
    assert result["ev_ceiling"]["random"]["states_at"] == shared["states_at"]
    # The same states: each group starts with the sampled episode's own return.
    assert [g[0] for g in shared["returns"]] == [
        g[0] for g in result["ev_ceiling"]["random"]["returns"]]
    assert set(result["ridge_r2"]) == {"random", "heuristic"}
    assert result["meta"]["reward"] == "aligned" and result["meta"]["oracle"] == "conv_light@r0c1"
    md = (out / "signal.md").read_text()
    assert "EV ceiling, Markov state" in md and "| oracle_hold |" in md
    assert "| oracle | 3.0 | conv_light@r0c1 3.0 |" in md


def test_signal_results_from_before_the_markov_state_ceiling_still_render():
    from esper_rllib.analysis.audit import ceiling_figures, render_markdown

    old = json.loads((REPO / "docs" / "results" / "signal-quick-aligned" / "signal.json")
                     .read_text())
    markov, shared = ceiling_figures(old, "random")
    assert markov is None and shared["estimate"] == pytest.approx(0.4254, abs=1e-4)
    headroom = render_markdown(old).split("## Critic headroom", 1)[1]
    row = next(line for line in headroom.splitlines() if line.startswith("| random |"))
    assert row.startswith("| random | n/a (not measured: older audit) | 0.43 [0.25, 0.56] |")


@pytest.mark.parametrize("args, message", [
    (["--oracle", "lora@r0c1"], "--oracle"),
    (["--oracle", "conv_light@r0c7"], "r0c0..r0c2"),
    (["--seeds", "1"], "--seeds 1"),
])
def test_signal_bad_input_is_one_line_exit_2(tmp_path, capsys, args, message):
    assert main(["signal", *TINY, *args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists(), "nothing written"
