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

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from envs.blending import SeedSlot
from envs.hosts import HostCNN
from envs.seeded_model import SeededModel


class StackedHosts:
    """The hosts of ``models`` as one network for one epoch (gather, train steps, write back).

    ``host_opts[k]`` is sub-env k's host SGD: its hyper-parameters and momentum buffers are
    read here and the buffers written back by ``write_back`` (a missing buffer is zeros, which
    is what torch's SGD does on its first step: buf = grad = 0.9 x 0 + grad).
    """

    def __init__(self, models: Sequence[SeededModel], host_opts: Sequence[torch.optim.SGD]
                 ) -> None:
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

    # ---- the stacked forward pass --------------------------------------------------------
    def _views(self) -> list[Tensor]:
        """Each host parameter as a (K, *shape) view of the flat (K, P) leaf."""
        out, offset = [], 0
        for shape in self._shapes:
            n = shape.numel()
            out.append(self.flat[:, offset:offset + n].reshape(self.k, *shape))
            offset += n
        return out

    def _conv(self, i: int, h: Tensor, weight: Tensor) -> Tensor:
        """Block i's convolution for all K hosts; ``weight`` is (K, C_out, C_in, k, k)."""
        k, c_out, c_in = weight.shape[:3]
        if self.kernel == 1:
            if i == 0:  # the shared input, read once: one (K x C_out, C_in) matmul
                return torch.einsum("oi,bihw->bohw", weight.reshape(k * c_out, c_in), h)
            b, _, hh, ww = h.shape
            out = torch.einsum("koi,bkin->bkon", weight.reshape(k, c_out, c_in),
                               h.reshape(b, k, c_in, hh * ww))
            return out.reshape(b, k * c_out, hh, ww)
        return F.conv2d(h, weight.reshape(k * c_out, c_in, self.kernel, self.kernel),
                        padding=self.kernel // 2, groups=1 if i == 0 else k)

    def forward(self, x: Tensor, slots: Sequence[Sequence[SeedSlot]]) -> Tensor:
        """Training-mode logits (B, K, n_classes); ``slots[k]`` are sub-env k's seed slots."""
        views = self._views()
        h = x
        for i, c in enumerate(self.channels):
            conv_w, bn_w, bn_b = views[3 * i:3 * i + 3]
            h = self._conv(i, h, conv_w)
            h = F.batch_norm(h, self.running_mean[i], self.running_var[i], bn_w.reshape(-1),
                             bn_b.reshape(-1), True, self.bn_momentum, self.bn_eps)
            # ReLU after the pool: max commutes with it (values and the max's position, hence
            # gradients, are the same) and it runs on a quarter of the elements.
            h = torch.relu(F.max_pool2d(h, 2))
            live = [k for k in range(self.k) if slots[k][i].seed is not None
                    and slots[k][i].in_forward]
            if live:
                parts = list(h.split(c, dim=1))
                for k in live:
                    parts[k] = slots[k][i](parts[k])
                h = torch.cat(parts, dim=1)
        lin_w, lin_b = views[-2:]
        b = h.shape[0]
        pooled = h.mean(dim=(2, 3)).reshape(b, self.k, self.channels[-1])
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
