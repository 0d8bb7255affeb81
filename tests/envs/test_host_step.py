"""The stacked host epoch (envs.stacked, envs.training.train_epochs): the z layout, the pool's
tie rule, K stacked hosts against K separate ones (losses, gradients, the SGD step, BatchNorm
statistics), for the 1x1 and the 3x3 host."""

import copy

import pytest
import torch
import torch.nn.functional as F

from envs.blueprints import build_blueprint
from envs.hosts import build_host
from envs.seeded_model import SeededModel
from envs.stacked import MaxPoolReLU, StackedHosts, from_z, to_z
from envs.tasks import get_task
from envs.training import host_optimizer, seed_optimizer, train_epochs

TASK = get_task("synth_impaired")


def models(kind, k, seed=0):
    torch.manual_seed(seed)
    return [SeededModel(build_host(kind)) for _ in range(k)]


def test_z_layout_round_trips():
    for levels, shape in ((3, (5, 3, 32, 32)), (2, (5, 2, 16, 16)), (0, (5, 4, 4, 4))):
        x = torch.randn(shape)
        assert torch.equal(from_z(to_z(x, levels), 5, levels), x)


def test_pool_matches_maxpool2d_then_relu_with_ties():
    x = torch.randn(4, 3, 8, 8)
    x[:, :, ::2] = x[:, :, 1::2]  # row ties everywhere
    x[:, 1, :, ::2] = x[:, 1, :, 1::2]  # and column ties in one channel
    g = torch.randn(4, 3, 4, 4)
    a = x.clone().requires_grad_()
    want = torch.relu(F.max_pool2d(a, 2))
    want.backward(g)
    z = to_z(x, 1).reshape(3, 4, -1).requires_grad_()
    got = MaxPoolReLU.apply(z)
    got.backward(to_z(g, 0))
    assert torch.equal(from_z(got.detach(), 4, 0), want.detach())
    assert torch.equal(from_z(z.grad.reshape(3, -1), 4, 1), a.grad)  # first max, bit for bit


@pytest.mark.parametrize("kind", ["impaired", "baseline"])
def test_stacked_losses_and_gradients_are_each_hosts_own(kind):
    ms = models(kind, 3)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    stack = StackedHosts(ms, [host_optimizer(m, TASK) for m in ms])
    xb = to_z(x, 3) if kind == "impaired" else x
    losses = stack.losses(xb, y, [list(m.slots) for m in ms])
    losses.sum().backward()
    for k, m in enumerate(ms):
        m.train()
        loss = F.cross_entropy(m(x), y)
        loss.backward()
        grad = torch.cat([p.grad.reshape(-1) for p in m.host.parameters()])
        assert torch.allclose(losses[k], loss, atol=1e-5)
        assert torch.allclose(stack.flat.grad[k], grad, atol=1e-4, rtol=1e-3)
        for i, c in enumerate(m.host.slot_channels):
            norm = m.host.blocks[i][1]
            assert torch.allclose(stack.running_mean[i][k * c:(k + 1) * c], norm.running_mean,
                                  atol=1e-6)
            assert torch.allclose(stack.running_var[i][k * c:(k + 1) * c], norm.running_var,
                                  atol=1e-5)


def test_a_seed_in_one_host_only_reaches_that_host():
    ms = models("impaired", 2)
    torch.manual_seed(1)
    slot = ms[1].slots[1]
    slot.install(build_blueprint(1, slot.channels), "LINEAR_ADD")
    slot.in_forward, slot.alpha = True, 0.5
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    stack = StackedHosts(ms, [host_optimizer(m, TASK) for m in ms])
    losses = stack.losses(to_z(x, 3), y, [list(m.slots) for m in ms])
    ref = [copy.deepcopy(m).train() for m in ms]
    for k in range(2):
        assert torch.allclose(losses[k], F.cross_entropy(ref[k](x), y), atol=1e-5)
    losses.sum().backward()
    assert all(p.grad is not None for p in slot.seed_parameters())


def test_train_epochs_matches_torch_sgd_and_clip_per_host():
    ms = models("impaired", 2)
    twins = [copy.deepcopy(m) for m in ms]
    x, y = torch.randn(256, 3, 32, 32), torch.randint(0, 10, (256,))
    opts = [host_optimizer(m, TASK) for m in ms]
    gen = torch.Generator().manual_seed(3)
    for _ in range(2):  # the second epoch starts from the written-back momentum buffers
        results = train_epochs(ms, opts, [{}, {}], x, y, task=TASK, gen=gen)
    gen = torch.Generator().manual_seed(3)
    twin_opts = [host_optimizer(m, TASK) for m in twins]
    for _ in range(2):
        perm = torch.randperm(256, generator=gen)
        for b in range(256 // TASK.batch_size):
            idx = perm[b * TASK.batch_size:(b + 1) * TASK.batch_size]
            for m, opt in zip(twins, twin_opts, strict=True):
                m.train()
                opt.zero_grad()
                F.cross_entropy(m(x[idx]), y[idx]).backward()
                torch.nn.utils.clip_grad_norm_(m.host.parameters(), TASK.grad_clip)
                opt.step()
    for m, twin, opt, twin_opt in zip(ms, twins, opts, twin_opts, strict=True):
        for (name, p), q in zip(m.host.state_dict().items(), twin.host.state_dict().values(),
                                strict=True):
            assert torch.allclose(p.float(), q.float(), atol=1e-5), name
        for p, q in zip(m.host.parameters(), twin.host.parameters(), strict=True):
            assert torch.allclose(opt.state[p]["momentum_buffer"],
                                  twin_opt.state[q]["momentum_buffer"], atol=1e-5)
    assert all(r.seed_grads == {} for r in results)


def test_a_nan_host_leaves_the_others_alone():
    ms = models("impaired", 2)
    twin = copy.deepcopy(ms[0])
    with torch.no_grad():
        next(ms[1].host.parameters()).view(-1)[0] = float("nan")
    x, y = torch.randn(256, 3, 32, 32), torch.randint(0, 10, (256,))
    both = train_epochs(ms, [host_optimizer(m, TASK) for m in ms], [{}, {}], x, y, task=TASK,
                        gen=torch.Generator().manual_seed(0))
    (alone,) = train_epochs([twin], [host_optimizer(twin, TASK)], [{}], x, y, task=TASK,
                            gen=torch.Generator().manual_seed(0))
    assert both[1].train_loss != both[1].train_loss  # nan
    assert abs(both[0].train_loss - alone.train_loss) < 1e-6


def test_seed_grad_stats_per_sub_env():
    ms = models("impaired", 2)
    slot = ms[0].slots[2]
    slot.install(build_blueprint(7, slot.channels), "LINEAR_ADD")
    slot.in_forward, slot.straight_through = True, True
    opt = seed_optimizer(slot.seed_parameters(), TASK)
    x, y = torch.randn(256, 3, 32, 32), torch.randint(0, 10, (256,))
    results = train_epochs(ms, [host_optimizer(m, TASK) for m in ms], [{2: opt}, {}], x, y,
                           task=TASK, gen=torch.Generator().manual_seed(0))
    assert set(results[0].seed_grads) == {2} and results[1].seed_grads == {}
    assert results[0].seed_grads[2].mean_norm > 0


def test_mismatched_inputs():
    ms = models("impaired", 2)
    with pytest.raises(ValueError, match="one host optimiser"):
        StackedHosts(ms, [host_optimizer(ms[0], TASK)])
    with pytest.raises(ValueError, match="one architecture"):
        mixed = [ms[0], SeededModel(build_host("baseline"))]
        StackedHosts(mixed, [host_optimizer(m, TASK) for m in mixed])
