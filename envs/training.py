"""One host epoch (host and seed optimisers) and the validation pass with counterfactuals."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from envs.seeded_model import SeededModel
from envs.tasks import TaskSpec

# Seed gradient health: a batch's gradient norm is healthy between these bounds.
VANISHING_NORM = 1e-6
EXPLODING_NORM = 10.0
EVAL_CHUNK = 2048  # validation images per forward pass (bounds memory on CIFAR-sized data)


def host_optimizer(model: SeededModel, task: TaskSpec) -> torch.optim.SGD:
    return torch.optim.SGD(model.host_parameters(), lr=task.host_lr,
                           momentum=task.host_momentum, weight_decay=task.host_weight_decay)


def seed_optimizer(params: list[nn.Parameter], task: TaskSpec) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=task.seed_lr, momentum=task.seed_momentum)


@dataclass
class SeedGradStats:
    mean_norm: float  # mean pre-clip gradient norm over the epoch's batches
    health: float  # fraction of batches with a finite norm in [VANISHING_NORM, EXPLODING_NORM]


@dataclass
class EpochResult:
    train_loss: float  # per-sample mean; nan if a batch's loss was not finite
    seed_grads: dict[int, SeedGradStats]


def _clip(params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Clip in place; returns the pre-clip norm (0 when nothing received a gradient)."""
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=params[0].device if params else None)
    return nn.utils.clip_grad_norm_(grads, max_norm)


def train_epoch(
    model: SeededModel,
    host_opt: torch.optim.Optimizer,
    seed_opts: dict[int, torch.optim.Optimizer],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    task: TaskSpec,
    gen: torch.Generator,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> EpochResult:
    """One shuffled pass over (x, y); the last partial batch is dropped (it corrupts BatchNorm).

    `seed_opts` holds the optimiser of every seed that learns this epoch (slot -> optimiser).
    Host and each seed are clipped separately. Stops early on a non-finite loss: the governor
    will roll the model back anyway.
    """
    model.train()
    n_batches = x.shape[0] // task.batch_size
    perm = torch.randperm(x.shape[0], generator=gen, device=gen.device).to(x.device)
    host_params = model.host_parameters()
    seed_params = {i: [p for g in o.param_groups for p in g["params"]]
                   for i, o in seed_opts.items()}
    total = torch.zeros((), device=x.device)
    # Accumulated on the device: no host sync per batch.
    norm_sum = {i: torch.zeros((), device=x.device) for i in seed_opts}
    healthy = {i: torch.zeros((), device=x.device) for i in seed_opts}
    for b in range(n_batches):
        idx = perm[b * task.batch_size:(b + 1) * task.batch_size]
        xb = x[idx]
        if augment is not None:
            xb = augment(xb, gen)
        loss = F.cross_entropy(model(xb), y[idx])
        if not torch.isfinite(loss):
            return EpochResult(math.nan, {})
        host_opt.zero_grad(set_to_none=True)
        for opt in seed_opts.values():
            opt.zero_grad(set_to_none=True)
        loss.backward()
        _clip(host_params, task.grad_clip)
        host_opt.step()
        for i, opt in seed_opts.items():
            norm = _clip(seed_params[i], task.grad_clip).detach()
            norm_sum[i] += norm
            healthy[i] += (torch.isfinite(norm) & (norm >= VANISHING_NORM)
                           & (norm <= EXPLODING_NORM)).float()
            opt.step()
        total += loss.detach()
    n = max(n_batches, 1)
    stats = {i: SeedGradStats(float(norm_sum[i]) / n, float(healthy[i]) / n) for i in seed_opts}
    return EpochResult(float(total) / n, stats)


@dataclass
class Validation:
    loss: float  # per-sample mean cross-entropy of the model as it is
    acc: float  # percent
    config_accs: list[float]  # percent, one per requested ablation config


@torch.no_grad()
def validate(model: SeededModel, x: torch.Tensor, y: torch.Tensor,
             configs: list[frozenset[int]]) -> Validation:
    """Validation loss/accuracy, plus the accuracy with each config's slots ablated.

    Counterfactual passes share each prefix with the main pass (SeededModel.counterfactual_logits).
    """
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros(1 + len(configs), device=x.device)
    for start in range(0, x.shape[0], EVAL_CHUNK):
        xb, yb = x[start:start + EVAL_CHUNK], y[start:start + EVAL_CHUNK]
        logits = model.counterfactual_logits(xb, [frozenset(), *configs])
        loss_sum += F.cross_entropy(logits[0], yb, reduction="sum")
        correct += torch.stack([(lg.argmax(1) == yb).sum() for lg in logits]).float()
    n = x.shape[0]
    accs = (correct * (100.0 / n)).tolist()
    return Validation(float(loss_sum) / n, accs[0], accs[1:])
