"""A random legal action (``envs.scripted.random_legal_action``): the audit's random policy and
``esper-rllib check-env`` draw it; each head uniform over its legal values, and a head with none
is an error that names it."""

import numpy as np
import pytest

from envs.contract import HEADS, head_sizes
from envs.probes import legal_mask
from envs.scripted import RandomPolicy, random_legal_action

N_SLOTS = 3


def test_each_head_draws_only_its_legal_values_and_reaches_all_of_them():
    mask = legal_mask(N_SLOTS)
    sizes = head_sizes(N_SLOTS)
    starts = np.cumsum((0, *sizes[:-1]))
    rng = np.random.default_rng(0)
    seen = [set() for _ in sizes]
    for _ in range(400):
        action = random_legal_action(mask, N_SLOTS, rng)
        assert action.dtype == np.int64 and action.shape == (len(HEADS),)
        for head, (value, start) in enumerate(zip(action, starts, strict=True)):
            assert mask[start + value] == 1.0
            seen[head].add(int(value))
    for head, (start, size) in enumerate(zip(starts, sizes, strict=True)):
        assert seen[head] == set(np.flatnonzero(mask[start:start + size]).tolist())


def test_a_head_whose_mask_is_all_zero_is_an_error_naming_it():
    # Every head of an observation keeps a legal value; an all-zero head is a broken mask, not
    # a head where any value will do (the value played could be illegal).
    mask = legal_mask(N_SLOTS)
    start = sum(head_sizes(N_SLOTS)[:HEADS.index("slot")])
    mask[start:start + N_SLOTS] = 0.0
    with pytest.raises(ValueError, match="head 'slot' has no legal value"):
        random_legal_action(mask, N_SLOTS, np.random.default_rng(0))


def test_the_random_policy_plays_the_same_draws():
    obs = {"action_mask": legal_mask(N_SLOTS), "blueprints": np.zeros(N_SLOTS, np.int64)}
    policy, rng = RandomPolicy(seed=5), np.random.default_rng(5)
    for _ in range(5):
        np.testing.assert_array_equal(policy.act(obs, {}),
                                      random_legal_action(obs["action_mask"], N_SLOTS, rng))
