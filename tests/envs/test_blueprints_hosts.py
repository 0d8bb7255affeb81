"""Hosts and blueprints: parameter counts, shapes, identity at creation, the einsum path."""

import pytest
import torch
import torch.nn.functional as F

from envs.blueprints import (
    blueprint_param_count,
    build_blueprint,
    is_identity_at_init,
)
from envs.contract import CNN_BLUEPRINTS
from envs.hosts import HOST_KINDS, MaxPool2x2, PointwiseConv2d, build_host

# (channels, spatial size) at every slot of both hosts.
SLOTS = [(1, 16), (2, 8), (4, 4), (8, 16), (16, 8), (32, 4)]


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(("kind", "expected"), [("impaired", 77), ("baseline", 6418)])
def test_host_param_counts(kind, expected):
    assert n_params(build_host(kind)) == expected


@pytest.mark.parametrize("kind", HOST_KINDS)
def test_host_slots_and_output(kind):
    torch.manual_seed(0)
    host = build_host(kind)
    x = torch.randn(5, 3, 32, 32)
    h = x
    for block, c, s in zip(host.blocks, host.slot_channels, host.slot_sizes, strict=True):
        h = block(h)
        assert h.shape == (5, c, s, s)
    assert torch.equal(host.classifier(h), host(x))
    assert host(x).shape == (5, 10)
    assert host.slot_names == ("r0c0", "r0c1", "r0c2")


def test_host_init_follows_global_rng():
    torch.manual_seed(3)
    a = build_host("impaired").state_dict()
    torch.manual_seed(3)
    b = build_host("impaired").state_dict()
    torch.manual_seed(4)
    c = build_host("impaired").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_unknown_host_kind_names_allowed():
    with pytest.raises(ValueError, match="impaired"):
        build_host("resnet")


def test_pool_without_gradients_is_maxpool2d_bit_for_bit():
    # Validation's fast pool must give exactly the stock op's values (accuracies to the last
    # digit, ties included: ReLU outputs many exact zeros); with gradients the stock op runs.
    x = torch.randn(64, 3, 16, 16).relu()
    x[:, :, ::2] = x[:, :, 1::2]  # ties between rows
    with torch.no_grad():
        assert torch.equal(MaxPool2x2()(x), F.max_pool2d(x, 2))
    xg = x.clone().requires_grad_(True)
    MaxPool2x2()(xg).sum().backward()
    expected = x.clone().requires_grad_(True)
    F.max_pool2d(expected, 2).sum().backward()
    assert torch.equal(xg.grad, expected.grad)


def test_impaired_host_uses_einsum_matching_conv2d():
    torch.manual_seed(0)
    host = build_host("impaired")
    stock = build_host("impaired", pointwise_einsum=False)
    stock.load_state_dict(host.state_dict())  # same state_dict layout either way
    convs = [b[0] for b in host.blocks]
    assert all(isinstance(c, PointwiseConv2d) for c in convs)
    x = torch.randn(4, 3, 32, 32)
    for conv in convs:
        x_in = torch.randn(4, conv.in_channels, 16, 16)
        assert torch.allclose(conv(x_in), F.conv2d(x_in, conv.weight), atol=1e-6)
    host.eval()
    stock.eval()
    assert torch.allclose(host(x), stock(x), atol=1e-6)


@pytest.mark.parametrize("index", CNN_BLUEPRINTS)
@pytest.mark.parametrize(("channels", "size"), SLOTS)
def test_blueprint_param_count_and_shape(index, channels, size):
    module = build_blueprint(index, channels)
    assert n_params(module) == blueprint_param_count(index, channels)
    x = torch.randn(3, channels, size, size)
    assert module(x).shape == x.shape


@pytest.mark.parametrize("zero_last", [False, True])
@pytest.mark.parametrize("index", CNN_BLUEPRINTS)
@pytest.mark.parametrize(("channels", "size"), SLOTS)
def test_identity_at_creation(index, channels, size, zero_last):
    torch.manual_seed(1)
    module = build_blueprint(index, channels, zero_last=zero_last)
    x = torch.randn(3, channels, size, size)
    out = module(x)
    if zero_last or is_identity_at_init(index):
        assert torch.equal(out, x)
    else:
        assert not torch.equal(out, x)


def test_identity_at_init_table():
    assert [i for i in CNN_BLUEPRINTS if is_identity_at_init(i)] == [3, 5, 6]


@pytest.mark.parametrize("zero_last", [False, True])
@pytest.mark.parametrize("index", CNN_BLUEPRINTS)
def test_seed_leaves_identity_after_one_step(index, zero_last):
    """An identity-initialised seed must still learn: a dead seed is worthless to the agent."""
    torch.manual_seed(2)
    module = build_blueprint(index, 4, zero_last=zero_last)
    x = torch.randn(8, 4, 8, 8)
    target = torch.randn(8, 4, 8, 8)
    opt = torch.optim.SGD(module.parameters(), lr=0.01)
    F.mse_loss(module(x), target).backward()
    opt.step()
    with torch.no_grad():
        assert not torch.equal(module(x), x)


def test_attention_gate_starts_almost_open():
    module = build_blueprint(2, 8)
    x = torch.randn(2, 8, 4, 4)
    assert torch.allclose(module(x), x * torch.sigmoid(torch.tensor(3.0)))


@pytest.mark.parametrize("index", [0, 8, 12, 13, -1])
def test_unbuildable_blueprints_name_allowed(index):
    with pytest.raises(ValueError, match="conv_light"):
        build_blueprint(index, 4)
    with pytest.raises(ValueError, match="allowed"):
        blueprint_param_count(index, 4)


def test_bad_channels():
    with pytest.raises(ValueError, match="channels"):
        build_blueprint(1, 0)
    with pytest.raises(ValueError, match="channels"):
        build_blueprint(1, 33)
