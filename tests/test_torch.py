"""One torch, tested: pyproject.toml allows exactly the torch the suite runs on, and `make`
installs that one wherever it runs (no fallback to whatever pip picks)."""

import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _pinned() -> str:
    (line,) = [m for m in re.findall(r'^\s*"(torch[^"]*)"', (ROOT / "pyproject.toml").read_text(),
                                     flags=re.M)]
    match = re.fullmatch(r"torch==(\d+\.\d+\.\d+)", line)
    assert match, f"pyproject.toml allows a range of torch ({line!r}); CI tests one version"
    return match.group(1)


def test_the_suite_runs_on_the_torch_pyproject_allows():
    assert torch.__version__.split("+")[0] == _pinned()


def test_make_installs_the_pinned_torch_and_nothing_else():
    makefile = (ROOT / "Makefile").read_text()
    # pip install -e . installs the pin; a second torch line could only disagree with it, and
    # "|| true" would go on with whichever torch pip found.
    assert "torch==" not in makefile and "|| true" not in makefile
    assert '$(BIN)/pip install -q -e ".[dev]"' in makefile


def test_a_seed_branch_at_exactly_zero_still_gets_a_gradient():
    # clamp(min=0) passed gradient 1 at 0 up to torch 2.13 and 0 from 2.14 on: zero-initialised
    # seed branches then never left the identity. The branch ReLU must not depend on it.
    from envs.blueprints import _relu

    x = torch.zeros(3, requires_grad=True)
    _relu(x).sum().backward()
    assert torch.equal(x.grad, torch.ones(3))
    assert torch.equal(_relu(torch.tensor([-2.0, 0.0, 3.0])), torch.tensor([0.0, 0.0, 3.0]))
