"""The masked factored distribution: masks, causal relevance, padding safety."""

import itertools
import math

import numpy as np
import pytest
import torch

from envs.contract import HEADS, N_HEADS, RELEVANCE, Op, head_sizes
from esper_rllib.model.distribution import (
    FactoredCategorical,
    make_factored_distribution,
    mask_logits,
)

# Small heads so the joint action space can be enumerated exactly (6 * 2^7 = 768 actions).
SMALL_NVEC = (6, 2, 2, 2, 2, 2, 2, 2)


def _random_mask(nvec, batch, gen):
    """0/1 mask per head with at least one legal value in every head."""
    parts = []
    for n in nvec:
        m = (torch.rand(*batch, n, generator=gen) < 0.5).float()
        first = torch.randint(0, n, (*batch, 1), generator=gen)
        parts.append(m.scatter(-1, first, 1.0))
    return torch.cat(parts, -1)


def _dist(nvec, batch=(4,), seed=0, mask=None):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(*batch, sum(nvec), generator=gen)
    mask = _random_mask(nvec, batch, gen) if mask is None else mask
    return make_factored_distribution(nvec).from_logits(mask_logits(logits, mask)), mask


def _effective(action):
    """The part of an action that the env uses: the op and the heads relevant to it."""
    return tuple(int(a) if RELEVANCE[action[0], h] else -1 for h, a in enumerate(action))


def _effective_distribution(dist, row):
    """Exact distribution over effective actions by enumerating the joint action space."""
    probs = {}
    for action in itertools.product(*(range(n) for n in dist.nvec)):
        p = dist.head_logps(torch.tensor(action))[row].sum().exp().item()
        key = _effective(action)
        probs[key] = probs.get(key, 0.0) + p
    return probs


def test_masked_values_are_never_sampled():
    nvec = head_sizes(3)
    dist, mask = _dist(nvec, batch=(16,), seed=1)
    samples = dist.sample(sample_shape=(2000,))  # (2000, 16, 8)
    offsets = np.cumsum((0,) + nvec[:-1])
    legal = mask[torch.arange(16)[None, :, None], torch.as_tensor(offsets) + samples]
    assert samples.shape == (2000, 16, N_HEADS)
    assert bool((legal == 1.0).all())
    # Every legal value does come up (the mask does not over-restrict).
    for h, n in enumerate(nvec):
        seen = {(b, int(v)) for b in range(16) for v in samples[:, b, h].unique()}
        legal_values = {(b, v) for b in range(16) for v in range(n)
                        if mask[b, offsets[h] + v] == 1.0}
        assert seen == legal_values


def test_samples_follow_each_heads_probabilities():
    # One draw per call, as the env runner samples; every head at once from one padded table.
    nvec = head_sizes(3)
    dist, _ = _dist(nvec, batch=(3,), seed=2)
    torch.manual_seed(0)
    draws = torch.stack([dist.sample() for _ in range(4000)])  # (4000, 3, 8)
    for h, n in enumerate(nvec):
        freq = torch.stack([(draws[..., h] == v).float().mean(0) for v in range(n)], -1)
        every_value = torch.arange(n)[:, None, None].expand(n, 3, N_HEADS)
        probs = dist.head_logps(every_value)[..., h].T.exp()  # (3, n)
        # 5 standard errors of a proportion from 4,000 draws (p(1 - p) <= 1/4).
        assert torch.allclose(freq, probs, atol=5 * 0.5 / math.sqrt(4000)), HEADS[h]


def test_deterministic_sample_is_the_legal_argmax_and_keeps_logp():
    nvec = head_sizes(3)
    dist, mask = _dist(nvec, batch=(8,), seed=2)
    greedy = dist.to_deterministic()
    actions = greedy.sample()
    assert torch.equal(actions, dist.deterministic_sample())
    for h, chunk in enumerate(torch.split(dist.logits, list(nvec), -1)):
        assert torch.equal(actions[..., h], chunk.argmax(-1))
    assert torch.allclose(greedy.logp(actions), dist.logp(actions))


def test_logp_entropy_kl_are_those_of_the_effective_action():
    dist, mask = _dist(SMALL_NVEC, batch=(2,), seed=3)
    other, _ = _dist(SMALL_NVEC, batch=(2,), seed=4, mask=mask)  # same support: finite KL
    for row in range(2):
        p = _effective_distribution(dist, row)
        q = _effective_distribution(other, row)
        entropy = -sum(v * math.log(v) for v in p.values() if v > 0)
        kl = sum(v * (math.log(v) - math.log(q[k])) for k, v in p.items() if v > 0)
        assert dist.entropy()[row].item() == pytest.approx(entropy, abs=1e-4)
        assert dist.kl(other)[row].item() == pytest.approx(kl, abs=1e-4)
    p = _effective_distribution(dist, 0)
    for action in dist.sample(sample_shape=(5,))[:, 0]:
        logp = dist.logp(action)[0].item()
        assert logp == pytest.approx(math.log(p[_effective(action.tolist())]), abs=1e-4)


def test_irrelevant_heads_add_nothing():
    nvec = head_sizes(3)
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(4, sum(nvec), generator=gen)
    # Only WAIT and PRUNE legal: the blueprint, style and tempo heads are irrelevant to both.
    mask = torch.ones(4, sum(nvec))
    mask[:, :6] = 0.0
    mask[:, [Op.WAIT, Op.PRUNE]] = 1.0
    changed = logits.clone()
    offsets = np.cumsum((0,) + nvec)
    for head in ("blueprint", "style", "tempo"):
        h = HEADS.index(head)
        changed[:, offsets[h]:offsets[h + 1]] = 5 * torch.randn(4, nvec[h], generator=gen)
    cls = make_factored_distribution(nvec)
    a, b = cls.from_logits(mask_logits(logits, mask)), cls.from_logits(mask_logits(changed, mask))
    ref = cls.from_logits(mask_logits(torch.randn(4, sum(nvec), generator=gen), mask))
    actions = torch.tensor([[Op.WAIT, 0, 1, 2, 0, 1, 2, 3], [Op.PRUNE, 2, 3, 1, 2, 0, 1, 4],
                            [Op.WAIT, 1, 5, 0, 1, 2, 0, 0], [Op.PRUNE, 0, 7, 3, 0, 2, 3, 1]])
    assert torch.allclose(a.logp(actions), b.logp(actions))
    assert torch.allclose(a.entropy(), b.entropy())
    assert torch.allclose(a.kl(ref), b.kl(ref))
    # ...while the per-head numbers do differ, so the weighting is what removed them.
    assert not torch.allclose(a.head_entropies(), b.head_entropies())
    # A WAIT action's logp is the op head's alone.
    wait = actions[0]
    assert a.logp(wait)[0] == pytest.approx(a.head_logps(wait)[0, 0].item())


def test_wait_logp_gradient_reaches_only_the_op_logits():
    nvec = head_sizes(3)
    logits = torch.randn(3, sum(nvec), requires_grad=True)
    dist = make_factored_distribution(nvec).from_logits(logits)
    actions = torch.tensor([[Op.WAIT, 1, 2, 1, 0, 2, 3, 4]] * 3)
    dist.logp(actions).sum().backward()
    assert logits.grad[:, :6].abs().sum() > 0
    assert torch.count_nonzero(logits.grad[:, 6:]) == 0


def test_all_zero_mask_rows_are_finite():
    nvec = head_sizes(3)
    logits = torch.randn(2, 3, sum(nvec), requires_grad=True)
    mask = torch.ones(2, 3, sum(nvec))
    mask[:, -1] = 0.0  # the padded time step of each sequence
    cls = make_factored_distribution(nvec)
    dist = cls.from_logits(mask_logits(logits, mask))
    other = cls.from_logits(mask_logits(torch.randn(2, 3, sum(nvec)), mask))
    actions = torch.zeros(2, 3, N_HEADS, dtype=torch.long)  # what zero-padding puts there
    total = dist.logp(actions).sum() + dist.entropy().sum() + dist.kl(other).sum()
    for value in (dist.logp(actions), dist.entropy(), dist.kl(other), dist.head_entropies()):
        assert torch.isfinite(value).all()
    total.backward()
    assert torch.isfinite(logits.grad).all()
    assert torch.equal(dist.legal_counts()[:, -1], torch.zeros(2, N_HEADS, dtype=torch.long))


def test_helpers_read_the_mask_and_relevance_table():
    nvec = head_sizes(3)
    dist, mask = _dist(nvec, batch=(5,), seed=6)
    counts = torch.stack([m.sum(-1) for m in torch.split(mask, list(nvec), -1)], -1)
    assert torch.equal(dist.legal_counts(), counts.long())
    probs = dist.op_probs()
    assert torch.allclose(probs.sum(-1), torch.ones(5))
    assert torch.count_nonzero(probs[mask[:, :6] == 0]) == 0
    actions = dist.sample()
    assert torch.equal(dist.relevance(actions), torch.as_tensor(RELEVANCE)[actions[:, 0]])


def test_bad_construction_is_refused():
    with pytest.raises(ValueError, match="nvec"):
        make_factored_distribution((6, 3))
    with pytest.raises(ValueError, match="nvec"):
        make_factored_distribution((5, 3, 13, 4, 3, 3, 4, 5))
    cls = make_factored_distribution(head_sizes(3))
    with pytest.raises(ValueError, match="logits"):
        cls.from_logits(torch.zeros(2, 40))
    with pytest.raises(TypeError):
        FactoredCategorical(torch.zeros(2, 41))
