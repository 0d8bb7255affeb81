"""Host CNNs: the networks the agent grows seeds into.

Three blocks, each Conv2d (no bias) -> BatchNorm2d -> ReLU -> MaxPool2d(2), then global average
pooling and Linear(C, 10). Slot ``r0c{i}`` sits after block i (after its pool).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

HOST_KINDS = ("impaired", "baseline")

N_CLASSES = 10
IN_CHANNELS = 3
# Spatial size at each slot for 32x32 inputs: every block halves it.
SLOT_SIZES = (16, 8, 4)

_KERNEL = {"impaired": 1, "baseline": 3}
_SLOT_CHANNELS = {"impaired": (1, 2, 4), "baseline": (8, 16, 32)}


class PointwiseConv2d(nn.Conv2d):
    """A bias-free 1x1 Conv2d computed with ``torch.einsum``.

    Stock Conv2d's CPU path is 3-5x slower for 1-4 channels (benchmarks/bench_synthetic.py);
    the parameter keeps Conv2d's shape, so state_dicts and parameter counts are unchanged.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("oi,bihw->bohw", self.weight[:, :, 0, 0], x)


class MaxPool2x2(nn.MaxPool2d):
    """MaxPool2d(2), computed without autograd as two pairwise maxima over views.

    Max is exact, so the values are MaxPool2d's bit for bit; stock MaxPool2d's CPU path is 5-30x
    slower on 1-4 channels, which made pooling most of a validation pass. With gradients (the
    host's training step) the stock op stays: its backward is the faster one there.
    """

    def __init__(self) -> None:
        super().__init__(kernel_size=2)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        if (torch.is_grad_enabled() and x.requires_grad) or h % 2 or w % 2:
            return super().forward(x)
        rows = x.reshape(b, c, h // 2, 2, w)
        pairs = torch.maximum(rows[:, :, :, 0], rows[:, :, :, 1]).reshape(b, c, h // 2, w // 2, 2)
        return torch.maximum(pairs[..., 0], pairs[..., 1])


def _block(in_ch: int, out_ch: int, kernel: int, pointwise_einsum: bool) -> nn.Sequential:
    if kernel == 1 and pointwise_einsum:
        conv: nn.Conv2d = PointwiseConv2d(in_ch, out_ch)
    else:
        conv = nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_ch), nn.ReLU(), MaxPool2x2())


class GlobalAvgPool(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3))


class HostCNN(nn.Module):
    """A three-block host; ``forward`` is the plain host (no seeds).

    The environment composes ``blocks[i]`` with whatever sits in slot i, then ``classifier``.
    """

    def __init__(self, kind: str, *, pointwise_einsum: bool = True) -> None:
        super().__init__()
        if kind not in HOST_KINDS:
            raise ValueError(f"host kind must be one of {HOST_KINDS}, got {kind!r}")
        self.kind = kind
        self.slot_channels: tuple[int, ...] = _SLOT_CHANNELS[kind]
        self.slot_sizes: tuple[int, ...] = SLOT_SIZES
        self.slot_names: tuple[str, ...] = tuple(f"r0c{i}" for i in range(len(SLOT_SIZES)))
        ins = (IN_CHANNELS, *self.slot_channels[:-1])
        kernel = _KERNEL[kind]
        self.blocks = nn.ModuleList(
            _block(i, o, kernel, pointwise_einsum)
            for i, o in zip(ins, self.slot_channels, strict=True)
        )
        self.classifier = nn.Sequential(
            GlobalAvgPool(), nn.Linear(self.slot_channels[-1], N_CLASSES)
        )

    @property
    def n_slots(self) -> int:
        return len(self.blocks)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return self.classifier(x)


def build_host(kind: str, *, pointwise_einsum: bool = True) -> HostCNN:
    """Build a host; parameters come from torch's global RNG (seed it with torch.manual_seed).

    ``pointwise_einsum=False`` uses stock Conv2d for 1x1 convolutions (benchmarks only).
    """
    return HostCNN(kind, pointwise_einsum=pointwise_einsum)

