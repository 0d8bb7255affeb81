"""K host CNNs of one architecture trained as one stacked network (issue 19).

The K hosts' parameters sit side by side in one (K, P) tensor for the epoch; each host layer runs
once per minibatch for all K: block 0 reads the shared input once and writes K x C channels,
later blocks are block-diagonal (grouped) convolutions, BatchNorm runs over the K x C channels
(per-channel statistics, exactly K separate BatchNorms), the classifier is one batched matmul.
The loss is the sum of the K per-sample-mean losses, so each host's gradient is its own; the
gradient clip and SGD step act on each host's row separately. K = 1 is the single env's step.

Seeds differ per host (blueprint, style, alpha), so they do not stack: each runs on its own
host's channel slice of the activations, through the same ``SeedSlot`` as the single env.

Between epochs each sub-env's ``SeededModel`` and host optimiser stay the source of truth:
the stack is gathered from them at the start of an epoch and written back at its end, so the
governor's snapshots and rollbacks, validation and parameter counts work per sub-env unchanged.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from envs.blending import SeedSlot
from envs.fused import FusedPointwiseBlock
from envs.hosts import HostCNN
from envs.seeded_model import SeededModel

# Training images gathered in the epoch's order at once (bounds the copy on CIFAR-sized data).
GATHER_IMAGES = 4096


class StackedHosts:
    """The hosts of ``models`` as one network for one epoch (gather, train steps, write back).

    ``host_opts[k]`` is sub-env k's host SGD: its hyper-parameters and momentum buffers are
    read here and the buffers written back by ``write_back`` (a missing buffer is zeros, which
    is what torch's SGD does on its first step: buf = grad = 0.9 x 0 + grad).
    """

    def __init__(self, models: Sequence[SeededModel], host_opts: Sequence[torch.optim.SGD],
                 *, fused: bool = False) -> None:
        if not models or len(models) != len(host_opts):
            raise ValueError("need one host optimiser per model, and at least one model")
        hosts: list[HostCNN] = [m.host for m in models]
        first = hosts[0]
        self.k = len(hosts)
        self.channels = first.slot_channels
        self.kernel = first.blocks[0][0].kernel_size[0]
        self._params = [list(h.parameters()) for h in hosts]
        self._shapes = [p.shape for p in self._params[0]]
        # forward() reads the views in this order: (conv, bn weight, bn bias) per block, then
        # the classifier's weight and bias.
        names = [n for n, _ in first.named_parameters()]
        expected = [f"blocks.{i}.{j}" for i in range(len(first.blocks))
                    for j in ("0.weight", "1.weight", "1.bias")]
        if names != [*expected, "classifier.1.weight", "classifier.1.bias"]:
            raise ValueError(f"unexpected host parameter layout {names}")
        if any([p.shape for p in ps] != self._shapes for ps in self._params):
            raise ValueError("stacked hosts must share one architecture")
        group = host_opts[0].param_groups[0]
        if group["dampening"] != 0 or group["nesterov"]:
            raise ValueError("StackedHosts implements SGD without dampening or Nesterov")
        self.lr, self.momentum = group["lr"], group["momentum"]
        self.weight_decay = group["weight_decay"]
        self._opts = list(host_opts)
        with torch.no_grad():
            self.flat = torch.stack([torch.cat([p.reshape(-1) for p in ps])
                                     for ps in self._params]).requires_grad_()
            self.buf = torch.stack([
                torch.cat([_momentum(opt, p).reshape(-1) for p in ps])
                for opt, ps in zip(host_opts, self._params, strict=True)])
        self._norms = [h.blocks[i][1] for h in hosts for i in range(len(self.channels))]
        bn = first.blocks[0][1]
        self.bn_momentum, self.bn_eps = bn.momentum, bn.eps
        n_blocks = len(self.channels)
        self.running_mean = [torch.cat([h.blocks[i][1].running_mean for h in hosts])
                             for i in range(n_blocks)]
        self.running_var = [torch.cat([h.blocks[i][1].running_var for h in hosts])
                            for i in range(n_blocks)]
        self._n_steps = 0
        # The fused kernels (envs.fused) serve 1x1 hosts on the CPU; k x k hosts and GPUs keep
        # the PyTorch path.
        self.fused = fused and self.kernel == 1 and self.flat.device.type == "cpu"

    # ---- the stacked forward pass --------------------------------------------------------
    def _views(self) -> list[Tensor]:
        """Each host parameter as a (K, *shape) view of the flat (K, P) leaf."""
        out, offset = [], 0
        for shape in self._shapes:
            n = shape.numel()
            out.append(self.flat[:, offset:offset + n].reshape(self.k, *shape))
            offset += n
        return out

    def losses(self, xb: Tensor, yb: Tensor, slots: Sequence[Sequence[SeedSlot]]) -> Tensor:
        """Training-mode per-sample-mean cross-entropy of each host, (K,). ``xb`` is a batch
        from ``batches``; ``slots[k]`` are sub-env k's seed slots."""
        views = self._views()
        b = yb.shape[0]
        if self.kernel == 1:
            logits = self._logits_pointwise(xb, b, views, slots).transpose(1, 2)  # (K, B, cl.)
        else:
            logits = self._logits_conv(xb, views, slots).transpose(0, 1)  # (K, B, classes)
        # As (K x B, classes) rows: cross-entropy's (N, C, d) form is ~10x slower on a CPU.
        per_sample = F.cross_entropy(logits.reshape(self.k * b, -1), yb.repeat(self.k),
                                     reduction="none")
        return per_sample.reshape(self.k, b).mean(1)

    def batches(self, x: Tensor, y: Tensor, perm: Tensor, batch_size: int, gen: torch.Generator,
                augment: Callable[[Tensor, torch.Generator], Tensor] | None = None
                ) -> Iterator[tuple[Tensor, Tensor]]:
        """The epoch's minibatches (last partial one dropped) in ``perm``'s order, laid out for
        ``losses``; ``augment`` (random crop and flip) draws from ``gen`` per batch."""
        n_batches = x.shape[0] // batch_size
        if self.kernel == 1 and augment is None:
            # The data set once in the z layout; a batch is then one gather of 64-byte rows.
            zx = _z_data(x, len(self.channels))
            for b in range(n_batches):
                idx = perm[b * batch_size:(b + 1) * batch_size]
                yield zx.index_select(1, idx).reshape(x.shape[1], -1), y.index_select(0, idx)
            return
        per_gather = max(1, GATHER_IMAGES // batch_size)
        for first in range(0, n_batches, per_gather):
            # One gather of many batches' images, not one per batch; index_select on rows of
            # a 2-D view is ~6x faster than on the 4-D tensor on a CPU.
            last = min(first + per_gather, n_batches)
            idx = perm[first * batch_size:last * batch_size]
            xs = x.reshape(x.shape[0], -1).index_select(0, idx).reshape(-1, *x.shape[1:])
            ys = y.index_select(0, idx)
            for j in range(last - first):
                xb = xs[j * batch_size:(j + 1) * batch_size]
                if augment is not None:
                    xb = augment(xb, gen)
                if self.kernel == 1:
                    xb = to_z(xb, len(self.channels))
                yield xb, ys[j * batch_size:(j + 1) * batch_size]

    def _logits_pointwise(self, x: Tensor, batch: int, views: list[Tensor],
                          slots: Sequence[Sequence[SeedSlot]]) -> Tensor:
        """1x1 hosts in the z layout (see ``to_z``): (K, classes, B).

        Every pixel is a column of a (C, M) matrix, ordered so that each 2x2 max-pool is the
        max of four contiguous quarters: a 1x1 conv is one (batched) matmul, BatchNorm reduces
        contiguous rows, the pool is three elementwise maxima. Values and gradients are the
        host's (conv, BatchNorm, ReLU, MaxPool2d) to float rounding.
        """
        h = x  # (C_in, M): the shared input, read once for every host
        n_levels = len(self.channels)
        for i, c in enumerate(self.channels):
            conv_w, bn_w, bn_b = views[3 * i:3 * i + 3]
            w = conv_w.reshape(self.k, c, -1)  # (K, C_out, C_in)
            if self.fused:
                h = FusedPointwiseBlock.apply(h, w, bn_w, bn_b, self.running_mean[i],
                                              self.running_var[i], self.bn_momentum, self.bn_eps)
            elif i == 0:
                out = torch.mm(w.reshape(self.k * c, -1), h)  # (K x C_out, M)
            else:
                out = torch.bmm(w, h)  # (K, C_out, M)
            if not self.fused:
                m = out.shape[-1]
                # One "image" of K x C_out channels: each channel's statistics are a reduction
                # over contiguous memory (stock BatchNorm's numerics and running statistics).
                out = F.batch_norm(out.reshape(1, self.k * c, m), self.running_mean[i],
                                   self.running_var[i], bn_w.reshape(-1), bn_b.reshape(-1),
                                   True, self.bn_momentum, self.bn_eps)
                h = MaxPoolReLU.apply(out.reshape(self.k, c, 4, m // 4))  # (K, C_out, M / 4)
            live = _live(slots, i)
            if live:
                # The live hosts' features to the image layout in one copy, each seed on its
                # own host's channels, back in one copy.
                index = torch.tensor(live, device=h.device)
                levels = n_levels - i - 1
                std = from_z(h.index_select(0, index).reshape(len(live) * c, -1), batch, levels)
                seeded = torch.cat([slots[k][i](std[:, j * c:(j + 1) * c])
                                    for j, k in enumerate(live)], dim=1)
                h = h.index_copy(0, index, to_z(seeded, levels).reshape(len(live), c, -1))
        lin_w, lin_b = views[-2:]
        pooled = h.reshape(self.k, self.channels[-1], batch, -1).mean(-1)  # (K, C, B)
        return torch.baddbmm(lin_b[..., None], lin_w, pooled)

    def _logits_conv(self, x: Tensor, views: list[Tensor],
                     slots: Sequence[Sequence[SeedSlot]]) -> Tensor:
        """k x k hosts in the usual (B, K x C, H, W) layout: (B, K, classes). Block 0 reads the
        shared input once (K x C_out filters), later blocks are grouped convolutions."""
        h = x
        for i, c in enumerate(self.channels):
            conv_w, bn_w, bn_b = views[3 * i:3 * i + 3]
            weight = conv_w.reshape(self.k * c, *conv_w.shape[2:])
            h = F.conv2d(h, weight, padding=self.kernel // 2, groups=1 if i == 0 else self.k)
            h = F.batch_norm(h, self.running_mean[i], self.running_var[i], bn_w.reshape(-1),
                             bn_b.reshape(-1), True, self.bn_momentum, self.bn_eps)
            h = torch.relu(F.max_pool2d(h, 2))  # ReLU after the pool, as above
            live = _live(slots, i)
            if live:
                parts = list(h.split(c, dim=1))
                for k in live:
                    parts[k] = slots[k][i](parts[k])
                h = torch.cat(parts, dim=1)
        lin_w, lin_b = views[-2:]
        pooled = h.mean(dim=(2, 3)).reshape(h.shape[0], self.k, self.channels[-1])
        return torch.einsum("koc,bkc->bko", lin_w, pooled) + lin_b

    # ---- the update ----------------------------------------------------------------------
    @torch.no_grad()
    def step(self, max_norm: float) -> None:
        """Clip each host's gradient to ``max_norm`` (its own norm), then one SGD step each."""
        g = self.flat.grad
        norm = torch.linalg.vector_norm(g, dim=1, keepdim=True)
        # As nn.utils.clip_grad_norm_: coefficient max_norm / (norm + 1e-6), at most 1.
        g.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
        # As torch.optim.SGD (weight decay, momentum without dampening), row by row at once.
        d = g.add(self.flat, alpha=self.weight_decay)
        self.buf.mul_(self.momentum).add_(d)
        self.flat.add_(self.buf, alpha=-self.lr)
        self.flat.grad = None
        self._n_steps += 1

    @torch.no_grad()
    def write_back(self) -> None:
        """Parameters, momentum buffers and BatchNorm statistics back into each sub-env."""
        for k, (ps, opt) in enumerate(zip(self._params, self._opts, strict=True)):
            offset = 0
            for p in ps:
                n = p.numel()
                p.copy_(self.flat[k, offset:offset + n].view_as(p))
                opt.state[p]["momentum_buffer"] = self.buf[k, offset:offset + n].view_as(p).clone()
                offset += n
        n_blocks = len(self.channels)
        for idx, norm in enumerate(self._norms):
            k, i = divmod(idx, n_blocks)
            c = self.channels[i]
            norm.running_mean.copy_(self.running_mean[i][k * c:(k + 1) * c])
            norm.running_var.copy_(self.running_var[i][k * c:(k + 1) * c])
            norm.num_batches_tracked += self._n_steps


def _momentum(opt: torch.optim.Optimizer, p: nn.Parameter) -> Tensor:
    buf = opt.state.get(p, {}).get("momentum_buffer")
    return torch.zeros_like(p) if buf is None else buf


class MaxPoolReLU(torch.autograd.Function):
    """relu(max over dim -2 of size 4) for the z layout: a 2x2 MaxPool2d then ReLU, its window
    on dim -2 in row-major order. The backward sends each gradient to the window's first
    maximum, MaxPool2d's rule on ties (exact ties are common on flat image regions), and
    zero where the max is <= 0 (ReLU's gradient at 0 is 0)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        a, b, c, d = x.unbind(-2)
        top, bottom = torch.maximum(a, b), torch.maximum(c, d)
        peak = torch.maximum(top, bottom)
        # Where the first maximum is: top row or bottom, then left or right in that row.
        ctx.save_for_backward(peak > 0, top >= bottom, a >= b, c >= d)
        ctx.shape = x.shape
        return peak.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        positive, in_top, left_top, left_bottom = ctx.saved_tensors
        out = grad.new_empty(ctx.shape)
        a, b, c, d = out.unbind(-2)
        grad = torch.where(positive, grad, 0.0)
        top = torch.where(in_top, grad, 0.0)
        bottom = grad - top  # exact: grad or 0 minus grad or 0
        torch.mul(top, left_top, out=a)
        torch.sub(top, a, out=b)
        torch.mul(bottom, left_bottom, out=c)
        torch.sub(bottom, c, out=d)
        return out


def _live(slots: Sequence[Sequence[SeedSlot]], i: int) -> list[int]:
    """The hosts whose slot i has a seed in the forward pass."""
    return [k for k, own in enumerate(slots) if own[i].seed is not None and own[i].in_forward]


# ---- the z layout of the 1x1 hosts ---------------------------------------------------------
# An (N, C, H, W) image batch with H = W = R x 2^L (L pooling levels) becomes (C, M): pixel
# (h, w) with h = 2^L hr + sum_j 2^j r_j (likewise w) sits at column
# (q_0, q_1, ..., q_{L-1}, n, hr, wr), q_j = 2 r_j + s_j: the finest 2x2 window's position is
# the outermost index, so the level-j pool is the max of four contiguous quarters (in q_j's
# row-major order, as MaxPool2d scans its window) and leaves the next level outermost.


def _z_perm(levels: int) -> list[int]:
    """Permutation of the (N, C, R, r_{L-1}..r_0, R, s_{L-1}..s_0) view into z order."""
    pairs = [d for j in range(levels) for d in (2 + levels - j, 3 + 2 * levels - j)]
    return [1, *pairs, 0, 2, 3 + levels]


def _z_view(x: Tensor, levels: int) -> Tensor:
    n, c, h, w = x.shape
    r = h >> levels
    return x.reshape(n, c, r, *[2] * levels, w >> levels, *[2] * levels)


def to_z(x: Tensor, levels: int) -> Tensor:
    """(N, C, H, W) -> (C, M) in z order (a copy)."""
    return _z_view(x, levels).permute(_z_perm(levels)).reshape(x.shape[1], -1)


def from_z(z: Tensor, batch: int, levels: int) -> Tensor:
    """(C, M) in z order -> (N, C, H, W) (a copy); the inverse of ``to_z``."""
    c = z.shape[0]
    side = math.isqrt(z.shape[1] // batch)  # H = W
    r = side >> levels
    perm = _z_perm(levels)
    shape = [batch, c, r, *[2] * levels, r, *[2] * levels]
    zs = z.reshape([shape[d] for d in perm])
    inverse = sorted(range(len(perm)), key=perm.__getitem__)
    return zs.permute(inverse).reshape(batch, c, side, side)


_Z_CACHE: dict[int, tuple[weakref.ref, Tensor]] = {}


def _z_data(x: Tensor, levels: int) -> Tensor:
    """A whole data set in z order with images on dim 1: (C x 4^L, N, R^2), cached per tensor
    (the task data are cached per process and never mutated)."""
    hit = _Z_CACHE.get(id(x))
    if hit is not None and hit[0]() is x:
        return hit[1]
    n, c = x.shape[:2]
    z = to_z(x, levels).reshape(c * 4 ** levels, n, -1)
    _Z_CACHE[id(x)] = (weakref.ref(x), z)
    return z
