"""Seed blueprints for CNN hosts.

Every blueprint is a residual, shape-preserving module on (N, C, H, W). Indices follow
``contract.BLUEPRINT_NAMES``; 0 (noop) and 8..12 (transformer-only) are not buildable here.

Branch-final ReLUs pass a gradient of 1 at exactly 0 (same forward as ReLU). A branch that
starts at exactly zero (zero-initialised norm or conv) would otherwise get no gradient at all
and the seed could never leave the identity.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from envs.contract import BLUEPRINT_NAMES, CNN_BLUEPRINTS
from envs.hosts import PointwiseConv2d

# Blueprints that return their input exactly at creation without zero_last.
_IDENTITY_AT_INIT = frozenset({3, 5, 6})  # norm, bottleneck, conv_small
# Initial bias of the attention gate's last layer: sigmoid(3) ~ 0.95, an almost open gate.
ATTENTION_GATE_BIAS = 3.0


def _relu(x: Tensor) -> Tensor:
    # Not clamp(min=0): its gradient at the bound is 1 up to torch 2.13 and 0 from 2.14 on.
    # where's gradient is the mask itself, the same in every torch.
    return torch.where(x >= 0, x, 0.0)


def _groups(channels: int) -> int:
    return 1 if channels <= 16 else 2


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(_groups(channels), channels)


def _conv(in_ch: int, out_ch: int, kernel: int, groups: int = 1) -> nn.Conv2d:
    if kernel == 1 and groups == 1:
        # A 1x1 conv as one einsum: stock Conv2d's CPU path is 5-50x slower at 1-8 channels.
        return PointwiseConv2d(in_ch, out_ch)
    return SmallConv2d(in_ch, out_ch, kernel, padding=kernel // 2, groups=groups, bias=False)


class _ConvInputGradAsConv(torch.autograd.Function):
    """F.conv2d (stride 1, 'same' padding, no bias) whose input gradient is computed as the
    forward convolution of the output gradient with the flipped, transposed kernel: the same
    sums as PyTorch's conv backward, which on a CPU is 5-20x slower at these channel counts
    (measured for issue 34: docs/design.md)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, padding: int, groups: int) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.groups = padding, groups
        return F.conv2d(x, weight, padding=padding, groups=groups)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        p, g = ctx.padding, ctx.groups
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            o, i_g, kh, kw = weight.shape
            flipped = (weight.reshape(g, o // g, i_g, kh, kw).transpose(1, 2)
                       .reshape(g * i_g, o // g, kh, kw).flip(2, 3))
            grad_x = F.conv2d(grad, flipped, padding=p, groups=g)
        if ctx.needs_input_grad[1]:
            grad_w = torch.nn.grad.conv2d_weight(x, weight.shape, grad, padding=p, groups=g)
        return grad_x, grad_w, None, None


class SmallConv2d(nn.Conv2d):
    """A seed's k x k Conv2d (odd k, 'same' padding, no bias): on a CPU its input gradient is
    computed as a convolution (``_ConvInputGradAsConv``); elsewhere it is stock Conv2d. The
    parameter is Conv2d's, so state_dicts and parameter counts are unchanged."""

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu" or not torch.is_grad_enabled():
            return super().forward(x)
        return _ConvInputGradAsConv.apply(x, self.weight, self.padding[0], self.groups)


def _bottleneck_width(channels: int) -> int:
    return max(8, channels // 4)


def _attention_width(channels: int) -> int:
    return max(1, channels // 4)


def _zero_affine(norm: nn.GroupNorm) -> None:
    nn.init.zeros_(norm.weight)
    nn.init.zeros_(norm.bias)


class ConvLight(nn.Module):
    """x + relu(GN(conv3x3(x)))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = _conv(channels, channels, 3)
        self.norm = _group_norm(channels)

    def zero_last(self) -> None:
        _zero_affine(self.norm)

    def forward(self, x: Tensor) -> Tensor:
        return x + _relu(self.norm(self.conv(x)))


class Attention(nn.Module):
    """Squeeze-excite gate: x * g, g = scale * sigmoid(up(relu(down(avgpool(x))))).

    Layers: down = Linear(C, r, bias=False), up = Linear(r, C) with zero weight and bias 3:
    2Cr + C parameters. With zero_last the up bias is 0 too and scale is 2, so the gate is
    exactly 1 at creation (the identity) while staying a smooth gate in (0, 2).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        width = _attention_width(channels)
        self.down = nn.Linear(channels, width, bias=False)
        self.up = nn.Linear(width, channels)
        nn.init.zeros_(self.up.weight)
        nn.init.constant_(self.up.bias, ATTENTION_GATE_BIAS)
        # A buffer, so a checkpoint restores which gate form the seed was created with.
        self.register_buffer("scale", torch.tensor(1.0))

    def zero_last(self) -> None:
        nn.init.zeros_(self.up.bias)
        self.scale.fill_(2.0)

    def forward(self, x: Tensor) -> Tensor:
        gate = torch.sigmoid(self.up(torch.relu(self.down(x.mean(dim=(2, 3))))))
        return x * (self.scale * gate)[:, :, None, None]


class Norm(nn.Module):
    """x + tanh(s) (GN(x) - x), s = 0 at creation."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _group_norm(channels)
        self.s = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        return x + torch.tanh(self.s) * (self.norm(x) - x)


class Depthwise(nn.Module):
    """x + relu(GN(conv1x1(dwconv3x3(x))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = _conv(channels, channels, 3, groups=channels)
        self.pointwise = _conv(channels, channels, 1)
        self.norm = _group_norm(channels)

    def zero_last(self) -> None:
        _zero_affine(self.norm)

    def forward(self, x: Tensor) -> Tensor:
        return x + _relu(self.norm(self.pointwise(self.depthwise(x))))


class Bottleneck(nn.Module):
    """x + GN(up1x1(relu(conv3x3(relu(down1x1(x)))))), b = max(8, C//4), up zero-init."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        width = _bottleneck_width(channels)
        self.down = _conv(channels, width, 1)
        self.conv = _conv(width, width, 3)
        self.up = _conv(width, channels, 1)
        self.norm = _group_norm(channels)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.norm(self.up(torch.relu(self.conv(torch.relu(self.down(x))))))


class ConvSmall(nn.Module):
    """x + relu(GN(conv1x1(x))), conv zero-init (the 1x1 control: no spatial filter)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = _conv(channels, channels, 1)
        self.norm = _group_norm(channels)
        nn.init.zeros_(self.conv.weight)

    def forward(self, x: Tensor) -> Tensor:
        return x + _relu(self.norm(self.conv(x)))


class ConvHeavy(nn.Module):
    """x + [conv3x3 -> GN -> relu] x 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv(channels, channels, 3)
        self.norm1 = _group_norm(channels)
        self.conv2 = _conv(channels, channels, 3)
        self.norm2 = _group_norm(channels)

    def zero_last(self) -> None:
        _zero_affine(self.norm2)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.norm1(self.conv1(x)))
        return x + _relu(self.norm2(self.conv2(h)))


_MODULES: dict[int, type[nn.Module]] = {
    1: ConvLight, 2: Attention, 3: Norm, 4: Depthwise, 5: Bottleneck, 6: ConvSmall, 7: ConvHeavy,
}
assert tuple(_MODULES) == CNN_BLUEPRINTS


def _check(index: int, channels: int) -> None:
    if index not in _MODULES:
        allowed = ", ".join(f"{i} ({BLUEPRINT_NAMES[i]})" for i in CNN_BLUEPRINTS)
        name = BLUEPRINT_NAMES[index] if 0 <= index < len(BLUEPRINT_NAMES) else "unknown"
        raise ValueError(
            f"blueprint index {index} ({name}) cannot be built for a CNN host; allowed: {allowed}"
        )
    if channels < 1 or (_groups(channels) == 2 and channels % 2):
        raise ValueError(f"channels must be >= 1 (and even above 16), got {channels}")


def build_blueprint(index: int, channels: int, *, zero_last: bool = False) -> nn.Module:
    """A seed module for CNN blueprint ``index`` at a slot with ``channels`` channels.

    ``zero_last`` zero-initialises the layer feeding the residual branch, so the module is
    exactly the identity at creation (for the LINEAR_MULTIPLY blend style). Blueprints already
    identity at init are unchanged by it. Parameters come from torch's global RNG.
    """
    _check(index, channels)
    module = _MODULES[index](channels)
    if zero_last and index not in _IDENTITY_AT_INIT:
        module.zero_last()
    return module


def blueprint_param_count(index: int, channels: int) -> int:
    """Parameter count from the table's formulas (C = channels)."""
    _check(index, channels)
    c = channels
    r = _attention_width(c)
    b = _bottleneck_width(c)
    return {
        1: 9 * c * c + 2 * c,
        2: 2 * c * r + c,
        3: 2 * c + 1,
        4: c * c + 11 * c,
        5: 2 * c * b + 9 * b * b + 2 * c,
        6: c * c + 2 * c,
        7: 18 * c * c + 4 * c,
    }[index]


def is_identity_at_init(index: int) -> bool:
    """True for blueprints that return their input exactly at creation (norm, bottleneck,
    conv_small)."""
    _check(index, 1)
    return index in _IDENTITY_AT_INIT
