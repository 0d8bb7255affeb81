"""The package layout is the architecture: imports point down the layers and never in a cycle
(function-level imports included: they are imports all the same).

The seed document: docs/seed-document.md."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Each layer may import those with a lower rank; `tuning` sits beside them (see RULES).
RANK = {"envs": 0, "model": 1, "ppo": 2, "run": 3, "analysis": 4, "offline": 4, "commands": 5,
        "cli": 5}


TUNING_MAY_IMPORT = ("esper_rllib.ppo.metric_names", "esper_rllib.failure_runs")


def _modules() -> dict[str, Path]:
    found = {}
    for package in ("envs", "esper_rllib", "tuning"):
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                # `from package import module` imports the module, not the package's others.
                submodules = [f"{node.module}.{a.name}" for a in node.names]
                targets = [t for t in submodules if t in modules] or [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[0] if parts[0] != "esper_rllib" or len(parts) == 1 else parts[1]


def test_no_import_cycle():
    graph = _imports(_modules())
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])
    assert cycles == []


def test_imports_point_down_the_layers():
    upward = []
    for module, targets in _imports(_modules()).items():
        for target in targets:
            here, there = _layer(module), _layer(target)
            if here == "tuning":
                # Tune orchestration receives the builder: it may import the metric names and
                # the seed document's two runs (pure data: the sweeps are built on the fix).
                if there not in ("tuning", "envs") and target not in TUNING_MAY_IMPORT:
                    upward.append((module, target))
            elif here == "envs" and there != "envs":
                upward.append((module, target))
            elif here in RANK and there in RANK and RANK[there] > RANK[here]:
                upward.append((module, target))
    assert upward == []
