"""Per trial of a sweep folder: the evaluated policy's final accuracy paired by env seed against
random, WAIT and the heuristic (mean difference, paired t), and its share of the oracle's gain
over WAIT.

    python paired.py EXPERIMENT_DIR | EVALUATION_JSON ...   (from the repository root, in .venv)
"""

import json
import statistics
import sys
from pathlib import Path


def paired(a: dict[int, float], b: dict[int, float]) -> tuple[float, float]:
    d = [a[s] - b[s] for s in sorted(a)]
    sd = statistics.stdev(d)
    return statistics.mean(d), statistics.mean(d) / (sd / len(d) ** 0.5) if sd else float("nan")


paths = [found for arg in map(Path, sys.argv[1:]) for found in
         ([arg] if arg.is_file() else sorted(arg.glob("*/evaluation/evaluation.json")))]
for path in paths:
    policies = json.loads(path.read_text())["policies"]
    acc = {name: {e["seed"]: e["final_acc"] for e in p["episodes"]}
           for name, p in policies.items()}
    mean = {name: statistics.mean(a.values()) for name, a in acc.items()}
    parts = [f"{other} {paired(acc['trained'], acc[other])[0]:+.2f} "
             f"(t {paired(acc['trained'], acc[other])[1]:+.2f})"
             for other in ("random", "wait", "heuristic")]
    share = (mean["trained"] - mean["wait"]) / (mean["oracle"] - mean["wait"])
    name = path.parent.parent.name if path.parent.name == "evaluation" else path.parent.name
    print(f"{name}: {mean['trained']:.2f}%; vs " + ", ".join(parts)
          + f"; {share:.0%} of the oracle's gain over WAIT")
