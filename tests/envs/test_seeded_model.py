"""Seed slots in the host: straight-through TRAINING, gradient isolation, blend styles, and the
prefix-shared counterfactual evaluation."""

import pytest
import torch

from envs.blending import SeedSlot, blend
from envs.blueprints import blueprint_param_count, build_blueprint
from envs.contract import BLEND_STYLES
from envs.hosts import build_host
from envs.seeded_model import SeededModel
from envs.training import validate


def make_model(kind="impaired", seed=0):
    """A fresh model in train mode (batch statistics: a fresh impaired host in eval mode maps
    every image to the same logits, which would hide what these tests look for)."""
    torch.manual_seed(seed)
    return SeededModel(build_host(kind))


def install(model, slot, blueprint=1, style="LINEAR_ADD", alpha=1.0, straight_through=False):
    m = model.slots[slot]
    m.install(build_blueprint(blueprint, m.channels, zero_last=style == "LINEAR_MULTIPLY"), style)
    m.in_forward, m.alpha, m.straight_through = True, alpha, straight_through
    return m


def images(n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def grad_of(params):
    return torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel())
                      for p in params])


@pytest.mark.parametrize("kind", ["impaired", "baseline"])
def test_training_seed_leaves_output_unchanged_but_gets_gradient(kind):
    model = make_model(kind)
    x, y = images()
    before = model(x)
    slot = install(model, 1, blueprint=7, straight_through=True)
    out = model(x)
    assert torch.equal(out, before), "straight-through output is exactly the host's"
    torch.nn.functional.cross_entropy(out, y).backward()
    assert grad_of(slot.seed_parameters()).abs().sum() > 0, "the seed learns"


def test_straight_through_gradient_is_the_residual_branch_gradient():
    model = make_model("baseline")
    x, y = images()
    slot = install(model, 1, blueprint=1, straight_through=True)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    ste = [p.grad.clone() for p in slot.seed_parameters()]
    # Expected: d(loss)/d(slot output) of the plain host, pulled back through the seed.
    host = model.host
    h = host.blocks[1](host.blocks[0](x))
    h.retain_grad()
    torch.nn.functional.cross_entropy(host.classifier(host.blocks[2](h)), y).backward()
    s = slot.seed(h.detach())
    expected = torch.autograd.grad(s, slot.seed_parameters(), grad_outputs=h.grad)
    for got, want in zip(ste, expected, strict=True):
        assert torch.allclose(got, want, atol=1e-7)
    assert any(g.abs().sum() > 0 for g in ste)


def test_host_upstream_gets_no_gradient_through_seed_at_alpha_one():
    model = make_model("baseline")
    x, y = images()
    install(model, 1, blueprint=1, alpha=1.0)  # ADD at alpha 1: output is the seed's
    torch.nn.functional.cross_entropy(model(x), y).backward()
    upstream = list(model.host.blocks[0].parameters()) + list(model.host.blocks[1].parameters())
    assert grad_of(upstream).abs().sum() == 0
    downstream = list(model.host.blocks[2].parameters())
    assert grad_of(downstream).abs().sum() > 0
    # Control: at alpha 0.5 the host keeps half its own path and learns upstream.
    model.zero_grad()
    model.slots[1].alpha = 0.5
    torch.nn.functional.cross_entropy(model(x), y).backward()
    assert grad_of(upstream).abs().sum() > 0


@pytest.mark.parametrize("style", BLEND_STYLES)
def test_alpha_zero_is_the_host_for_every_style(style):
    model = make_model("baseline")
    x, _ = images()
    before = model(x)
    install(model, 0, blueprint=7, style=style, alpha=0.0)
    assert torch.allclose(model(x), before, atol=0, rtol=0)


def test_blend_formulas():
    h, s = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    assert torch.allclose(blend("LINEAR_ADD", h, s, 0.3), 0.7 * h + 0.3 * s)
    assert torch.allclose(blend("SIGMOID_ADD", h, s, 0.3), 0.7 * h + 0.3 * s)
    assert torch.allclose(blend("LINEAR_MULTIPLY", h, s, 0.3), h * (1 + 0.3 * torch.tanh(s - h)))
    slot = SeedSlot(4)
    slot.install(torch.nn.Identity(), "GATED_GATE")
    g = slot.gate(h)
    assert g.shape == (2, 1, 1, 1) and torch.all((g > 0) & (g < 1))
    assert torch.allclose(blend("GATED_GATE", h, s, 0.3, slot.gate), h + 0.3 * g * (s - h))
    with pytest.raises(ValueError, match="LINEAR_ADD"):
        blend("nope", h, s, 0.3)


def test_multiply_seed_is_identity_at_germination_and_any_alpha():
    model = make_model("baseline")
    x, _ = images()
    before = model(x)
    install(model, 2, blueprint=1, style="LINEAR_MULTIPLY", alpha=1.0)  # zero_last seed
    assert torch.allclose(model(x), before, atol=1e-6)


def test_gate_parameters_count_toward_the_seed():
    model = make_model("baseline")
    slot = install(model, 2, blueprint=1, style="GATED_GATE")
    c, hidden = 32, 8
    gate = c * hidden + hidden + hidden + 1
    assert slot.param_count() == blueprint_param_count(1, c) + gate


@pytest.mark.parametrize("kind", ["impaired", "baseline"])
def test_prefix_shared_counterfactuals_equal_separate_passes(kind):
    model = make_model(kind)
    for i, (bp, style) in enumerate([(1, "LINEAR_ADD"), (7, "GATED_GATE"), (4, "SIGMOID_ADD")]):
        install(model, i, blueprint=bp, style=style, alpha=[0.5, 1.0, 0.7][i])
    x, _ = images(64)
    configs = [frozenset(), frozenset({0}), frozenset({1}), frozenset({2}),
               frozenset({0, 1, 2}), frozenset({1, 2})]
    shared = model.counterfactual_logits(x, configs)
    with torch.no_grad():
        for cfg, logits in zip(configs, shared, strict=True):
            assert torch.allclose(logits, model(x, ablate=cfg), atol=1e-6), cfg
            if cfg:
                assert not torch.allclose(logits, shared[0]), "ablation changes the output"


def test_validate_accuracies_match_separate_passes():
    model = make_model("impaired")
    install(model, 1, blueprint=7, alpha=1.0)
    install(model, 2, blueprint=1, alpha=0.7)
    x, y = images(300)
    val = validate(model, x, y, [frozenset({1}), frozenset({2})])
    with torch.no_grad():
        for cfg, acc in [(frozenset(), val.acc), (frozenset({1}), val.config_accs[0]),
                         (frozenset({2}), val.config_accs[1])]:
            expected = (model(x, ablate=cfg).argmax(1) == y).float().mean().item() * 100
            assert acc == pytest.approx(expected)
        loss = torch.nn.functional.cross_entropy(model(x), y).item()
    assert val.loss == pytest.approx(loss, rel=1e-5)
