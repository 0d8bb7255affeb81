"""The masked factored action distribution with causal relevance.

One categorical per action head over masked logits. Heads are sampled independently (as in the
reference); the log-probability, entropy and KL only count the heads relevant to the op
(``envs.contract.RELEVANCE``), so an irrelevant head neither adds noise to the policy gradient nor
earns entropy bonus. The same class serves exploration, inference and training, because PPO
compares the env runner's ``logp`` with the learner's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.distribution.distribution import Distribution
from ray.rllib.utils.torch_utils import FLOAT_MIN
from torch import Tensor

from envs.contract import HEADS, N_HEADS, N_OPS, RELEVANCE

# A masked logit sits at ~FLOAT_MIN; anything above half of it was legal.
_LEGAL_THRESHOLD = FLOAT_MIN / 2


def mask_logits(logits: Tensor, mask: Tensor) -> Tensor:
    """Push illegal logits to a large finite negative value.

    Not -inf: zero-padded LSTM steps carry all-zero masks, and -inf would make their softmax,
    entropy and KL NaN.
    """
    return logits + torch.clamp(torch.log(mask.to(logits.dtype)), min=FLOAT_MIN)


class FactoredCategorical(Distribution):
    """Independent categoricals over the action heads, weighted by causal relevance.

    Build it with ``make_factored_distribution(nvec)``: ``nvec`` (values per head, in
    ``HEADS`` order) is a class attribute because RLlib calls ``from_logits(logits)`` only.
    The heads are held side by side, (..., n_heads, max(nvec)), each padded with -inf, so every
    operation runs once for all heads (this distribution serves every env step and every loss).
    """

    nvec: tuple[int, ...] = ()
    _pad_index: Tensor  # (n_heads, max(nvec)): where each padded entry sits in the logits
    _real: Tensor  # (n_heads, max(nvec)) bool: the entries that are not padding

    def __init__(self, logits: Tensor, greedy: bool = False) -> None:
        super().__init__()
        if not self.nvec:
            raise TypeError("use make_factored_distribution(nvec) to get a usable class")
        if logits.shape[-1] != sum(self.nvec):
            raise ValueError(
                f"logits: last dimension must be sum(nvec) = {sum(self.nvec)} for nvec "
                f"{self.nvec}, got shape {tuple(logits.shape)}"
            )
        self.logits = logits
        pad = logits.new_full((*logits.shape[:-1], 1), -math.inf)
        self._padded = torch.cat([logits, pad], -1)[..., self._pad_index.to(logits.device)]
        # Normalised log-probabilities per head; masked values stay finite (~FLOAT_MIN). The
        # padding has probability exactly 0 and log-probability 0 here, so it adds 0 to every
        # sum over a head's values (and no NaN to any gradient).
        logp = torch.log_softmax(self._padded, dim=-1)
        self._probs = logp.exp()
        self._logp = torch.where(self._real.to(logits.device), logp, 0.0)
        self._greedy = greedy

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_logits(cls, logits: Tensor, **kwargs) -> FactoredCategorical:
        """``logits``: (..., sum(nvec)), already masked (see ``mask_logits``)."""
        return cls(logits)

    @classmethod
    def required_input_dim(cls, space: gym.Space, **kwargs) -> int:
        if not isinstance(space, gym.spaces.MultiDiscrete) or tuple(
            int(n) for n in space.nvec
        ) != tuple(cls.nvec):
            raise ValueError(f"space: expected MultiDiscrete({list(cls.nvec)}), got {space}")
        return sum(cls.nvec)

    def to_deterministic(self) -> FactoredCategorical:
        """Same distribution whose ``sample()`` is the per-head argmax (RLlib's inference path)."""
        return type(self)(self.logits, greedy=True)

    # -- sampling ---------------------------------------------------------------------------
    def sample(self, *, sample_shape: Sequence[int] | None = None, **kwargs) -> Tensor:
        """(..., n_heads) int64; each head drawn independently. Masked values have probability
        exactly 0 (exp(FLOAT_MIN) underflows), so they are never drawn."""
        if self._greedy:
            return self.deterministic_sample()
        shape = torch.Size(sample_shape or ())
        probs = self._probs
        rows = probs.reshape(-1, probs.shape[-1])
        draws = torch.multinomial(rows, max(shape.numel(), 1), replacement=True)  # (rows, n)
        draws = draws.T.reshape(*shape, *probs.shape[:-1])
        return draws

    def deterministic_sample(self) -> Tensor:
        return self._padded.argmax(dim=-1)

    def rsample(self, *, sample_shape: Sequence[int] | None = None, **kwargs) -> Tensor:
        raise NotImplementedError("FactoredCategorical is discrete: no reparameterised sample")

    # -- per-head quantities (unweighted) ---------------------------------------------------
    def head_logps(self, actions: Tensor) -> Tensor:
        """(..., n_heads): log pi_h(a_h) of each head (actions broadcast against the batch)."""
        shape = torch.broadcast_shapes(actions.shape[:-1], self.logits.shape[:-1])
        logp = self._logp.expand(*shape, *self._logp.shape[-2:])
        index = actions.long().expand(*shape, len(self.nvec)).unsqueeze(-1)
        return logp.gather(-1, index).squeeze(-1)

    def head_entropies(self) -> Tensor:
        """(..., n_heads) in nats. Masked values contribute 0 * finite = 0."""
        return -(self._probs * self._logp).sum(-1)

    def head_kls(self, other: FactoredCategorical) -> Tensor:
        """(..., n_heads): KL(self_h || other_h) of each head."""
        return (self._probs * (self._logp - other._logp)).sum(-1)

    def legal_counts(self) -> Tensor:
        """(..., n_heads): number of legal values of each head, read off the masked logits."""
        return (self._padded > _LEGAL_THRESHOLD).sum(-1)

    def op_probs(self) -> Tensor:
        """(..., 6): pi(op | s) over the masked op head."""
        return self._probs[..., 0, :self.nvec[0]]

    def relevance(self, actions: Tensor) -> Tensor:
        """(..., n_heads) 0/1 float: which heads matter for each action's op."""
        return self._relevance_table()[actions[..., 0].long()]

    def expected_relevance(self) -> Tensor:
        """(..., n_heads): P(head relevant) when op ~ pi(op | s); 1 for the op head."""
        return self.op_probs() @ self._relevance_table()

    # -- what PPO uses ----------------------------------------------------------------------
    def logp(self, actions: Tensor, **kwargs) -> Tensor:
        """(...,): sum of the log-probabilities of the heads relevant to the action's op."""
        return (self.head_logps(actions) * self.relevance(actions)).sum(-1)

    def entropy(self, **kwargs) -> Tensor:
        """(...,) nats: H(op) + sum_h P(h relevant) H_h, the entropy of the effective action."""
        return (self.head_entropies() * self.expected_relevance()).sum(-1)

    def kl(self, other: FactoredCategorical, **kwargs) -> Tensor:
        """(...,): KL(op) + sum_h E_{op~pi_self}[rel_h] KL_h, the KL of the effective actions."""
        return (self.head_kls(other) * self.expected_relevance()).sum(-1)

    def _relevance_table(self) -> Tensor:
        return torch.as_tensor(RELEVANCE, dtype=self.logits.dtype, device=self.logits.device)


def make_factored_distribution(nvec: Sequence[int]) -> type[FactoredCategorical]:
    """A ``FactoredCategorical`` subclass for heads of sizes ``nvec`` (``HEADS`` order)."""
    nvec = tuple(int(n) for n in nvec)
    if len(nvec) != N_HEADS or nvec[0] != N_OPS or min(nvec) < 1:
        raise ValueError(
            f"nvec: expected {N_HEADS} positive head sizes in order {HEADS} with op = {N_OPS}, "
            f"got {nvec}"
        )
    width = max(nvec)
    pad_index = torch.full((len(nvec), width), sum(nvec))  # the -inf column appended last
    real = torch.zeros(len(nvec), width, dtype=torch.bool)
    for head, (start, n) in enumerate(zip(np.cumsum((0, *nvec[:-1])), nvec, strict=True)):
        pad_index[head, :n] = torch.arange(start, start + n)
        real[head, :n] = True
    return type("FactoredCategorical", (FactoredCategorical,),
                {"nvec": nvec, "_pad_index": pad_index, "_real": real})
