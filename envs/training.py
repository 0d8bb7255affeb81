"""One host epoch (host and seed optimisers) and the validation pass with counterfactuals."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from envs.fused import eval_block
from envs.seeded_model import SeededModel
from envs.stacked import StackedHosts, _z_data, from_z, to_z
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


@torch.no_grad()
def _sgd_step_seeds(opts: Sequence[torch.optim.Optimizer]) -> None:
    """Every seed's SGD step at once, as each optimiser's own ``step()`` (seed_optimizer's SGD:
    momentum without dampening, no weight decay), then its gradients released, as
    ``zero_grad(set_to_none=True)``. torch.optim's per-call overhead was ~0.2 ms a seed a
    minibatch, more than a small seed's own update."""
    group = opts[0].param_groups[0]
    lr, momentum = group["lr"], group["momentum"]
    params, steps, old_bufs, old_grads = [], [], [], []
    for opt in opts:
        for g in opt.param_groups:
            if (g["lr"], g["momentum"], g["weight_decay"], g["dampening"], g["nesterov"],
                    g["maximize"]) != (lr, momentum, 0, 0, False, False):
                raise ValueError("seeds' SGD must share lr and momentum, without weight decay, "
                                 "dampening, Nesterov or maximize")
            for p in g["params"]:
                if p.grad is None:
                    continue
                params.append(p)
                if momentum == 0:
                    steps.append(p.grad)
                    continue
                state = opt.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:  # SGD's first step: the buffer is the gradient
                    buf = state["momentum_buffer"] = p.grad.detach().clone()
                else:
                    old_bufs.append(buf)
                    old_grads.append(p.grad)
                steps.append(buf)
    if old_bufs:
        torch._foreach_mul_(old_bufs, momentum)
        torch._foreach_add_(old_bufs, old_grads)
    if params:
        torch._foreach_add_(params, steps, alpha=-lr)
    for p in params:
        p.grad = None


@torch.no_grad()
def _clip_seeds(params: Sequence[list[nn.Parameter]], max_norm: float) -> torch.Tensor:
    """Each seed's gradient clipped in place to ``max_norm`` (its own norm, as
    nn.utils.clip_grad_norm_ per seed), the norms taken for all seeds at once; returns the
    pre-clip norms, (seeds,), 0 for a seed whose parameters received no gradient."""
    owner, grads = [], []
    for s, ps in enumerate(params):
        for p in ps:
            if p.grad is not None:
                owner.append(s)
                grads.append(p.grad)
    device = grads[0].device if grads else None
    squares = torch.zeros(len(params), device=device)
    if not grads:
        return squares
    per_param = torch.stack(torch._foreach_norm(grads))
    owners = torch.tensor(owner, device=device)
    norms = squares.index_add_(0, owners, per_param * per_param).sqrt_()
    # As clip_grad_norm_: coefficient max_norm / (norm + 1e-6), at most 1.
    coef = torch.clamp(max_norm / (norms + 1e-6), max=1.0)
    start = 0
    for s, count in zip(*torch.unique_consecutive(owners, return_counts=True), strict=True):
        torch._foreach_mul_(grads[start:start + int(count)], coef[int(s)])
        start += int(count)
    return norms


def train_epochs(
    models: Sequence[SeededModel],
    host_opts: Sequence[torch.optim.SGD],
    seed_opts: Sequence[dict[int, torch.optim.Optimizer]],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    task: TaskSpec,
    gen: torch.Generator,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    fused: bool = False,
) -> list[EpochResult]:
    """One shuffled pass over (x, y) for each model, all K hosts as one stacked network
    (envs.stacked), on one data order drawn from ``gen``; the last partial batch is dropped
    (it corrupts BatchNorm).

    ``seed_opts[k]`` holds the optimiser of every seed of model k that learns this epoch
    (slot -> optimiser). Each host and each seed is clipped separately. Nothing syncs with the
    host per minibatch: a non-finite loss in one model makes its train_loss nan at the end (its
    later updates are garbage, which the governor's rollback discards) and leaves the others
    untouched (no parameter is shared between them). ``fused`` computes the 1x1 host's
    blocks with envs.fused's kernels (the same function; envs.stacked says where it applies).
    """
    if not len(models) == len(host_opts) == len(seed_opts):
        raise ValueError("train_epochs needs one host optimiser and one seed dict per model")
    for model in models:
        model.train()
    stack = StackedHosts(models, host_opts, fused=fused)
    bs = task.batch_size
    n_batches = x.shape[0] // bs
    perm = torch.randperm(x.shape[0], generator=gen, device=gen.device).to(x.device)
    slots = [list(model.slots) for model in models]
    seeds = [(k, i, opt, [p for g in opt.param_groups for p in g["params"]])
             for k, opts in enumerate(seed_opts) for i, opt in opts.items()]
    total = torch.zeros(len(models), device=x.device)
    # Accumulated on the device: no host sync per batch.
    norm_sum = torch.zeros(len(seeds), device=x.device)
    healthy = torch.zeros(len(seeds), device=x.device)
    for _, _, opt, _ in seeds:
        opt.zero_grad(set_to_none=True)
    for xb, yb in stack.batches(x, y, perm, bs, gen, augment):
        losses = stack.losses(xb, yb, slots)
        losses.sum().backward()  # each host's gradient is its own loss's
        stack.step(task.grad_clip)
        if seeds:
            norms = _clip_seeds([params for *_, params in seeds], task.grad_clip)
            norm_sum += norms
            healthy += (torch.isfinite(norms) & (norms >= VANISHING_NORM)
                        & (norms <= EXPLODING_NORM)).float()
            _sgd_step_seeds([opt for _, _, opt, _ in seeds])
        total += losses.detach()
    stack.write_back()
    n = max(n_batches, 1)
    results = [EpochResult(loss / n, {}) for loss in total.tolist()]
    for (k, i, _, _), norm, ok in zip(seeds, norm_sum.tolist(), healthy.tolist(), strict=True):
        results[k].seed_grads[i] = SeedGradStats(norm / n, ok / n)
    return results


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


@torch.no_grad()
def validate_stacked(models: Sequence[SeededModel], x: torch.Tensor, y: torch.Tensor,
                     configs: Sequence[list[frozenset[int]]]) -> list[Validation]:
    """``validate`` of every model at once, for 1x1 hosts on the CPU (envs.fused): each host
    block runs once for all K hosts and their counterfactual prefixes, in the z layout.

    A row is one (host, ablation prefix) path, as in SeededModel.counterfactual_logits: at
    slot i a row splits into the prefixes its host's configs need, the seed applied (in the
    image layout, through the host's own SeedSlot) on the branch that keeps it."""
    k_n, n_slots = len(models), models[0].n_slots
    for model in models:
        model.eval()
    wanted = [[tuple(i in cfg for i in range(n_slots)) for cfg in [frozenset(), *own]]
              for own in configs]
    blocks = [_eval_affine([m.host.blocks[i] for m in models]) for i in range(n_slots)]
    lin = [m.host.classifier[1] for m in models]
    lin_w, lin_b = torch.stack([ln.weight for ln in lin]), torch.stack([ln.bias for ln in lin])
    loss_sum = torch.zeros(k_n)
    correct = [torch.zeros(len(w)) for w in wanted]
    zx = _z_data(x, n_slots)  # (C x 4^L, N, pixels at the last level)
    for start in range(0, x.shape[0], EVAL_CHUNK):
        yb = y[start:start + EVAL_CHUNK]
        nb = yb.shape[0]
        h = zx[:, start:start + nb].reshape(x.shape[1], -1)
        rows: list[tuple[int, tuple[bool, ...]]] = [(k, ()) for k in range(k_n)]
        for i in range(n_slots):
            w, scale, shift = blocks[i]
            hosts = torch.tensor([k for k, _ in rows])
            out = eval_block(h, w[hosts], scale[hosts], shift[hosts])
            levels = n_slots - i - 1
            after, parts = [], []
            for r, (k, prefix) in enumerate(rows):
                slot = models[k].slots[i]
                for ablated in sorted({p[i] for p in wanted[k] if p[:i] == prefix}):
                    part = out[r]
                    if not ablated and slot.seed is not None and slot.in_forward:
                        part = to_z(slot(from_z(part, nb, levels)), levels)
                    after.append((k, (*prefix, ablated)))
                    parts.append(part)
            rows, h = after, torch.stack(parts)
        hosts = torch.tensor([k for k, _ in rows])
        pooled = h.reshape(len(rows), h.shape[1], nb, -1).mean(-1)  # (R, C, B)
        logits = torch.baddbmm(lin_b[hosts][..., None], lin_w[hosts], pooled)  # (R, cl., B)
        index = {row: r for r, row in enumerate(rows)}
        for k in range(k_n):
            for j, path in enumerate(wanted[k]):
                lg = logits[index[(k, path)]].T
                if j == 0:
                    loss_sum[k] += F.cross_entropy(lg, yb, reduction="sum")
                correct[k][j] += (lg.argmax(1) == yb).sum()
    n = x.shape[0]
    out_vals = []
    for k in range(k_n):
        accs = (correct[k] * (100.0 / n)).tolist()
        out_vals.append(Validation(float(loss_sum[k]) / n, accs[0], accs[1:]))
    return out_vals


def _eval_affine(blocks: Sequence[nn.Module]) -> tuple[torch.Tensor, ...]:
    """The stacked (K, C_out, C_in) 1x1 weights of one host block and its eval-mode BatchNorm
    as a per-channel scale and shift, (K, C_out) each."""
    convs, norms = [b[0] for b in blocks], [b[1] for b in blocks]
    w = torch.stack([c.weight[:, :, 0, 0] for c in convs])
    scale = torch.stack([n.weight / torch.sqrt(n.running_var + n.eps) for n in norms])
    shift = torch.stack([n.bias - n.running_mean * s for n, s in zip(norms, scale, strict=True)])
    return w, scale, shift
