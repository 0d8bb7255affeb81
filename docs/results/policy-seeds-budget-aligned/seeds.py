"""Three training seeds of one cell, each evaluated on the same env seeds: per seed and pooled
(the seeds' mean accuracy per env seed), the trained policy paired by env seed against random,
WAIT and the heuristic (mean difference, paired t), and the share of the oracle's gain over
WAIT; across seeds, the mean accuracy with a t interval over the training seeds.

    python seeds.py LABEL EVALUATION_JSON... [-- LABEL EVALUATION_JSON...]
"""

import json
import statistics
import sys
from pathlib import Path

# Two-sided 95% t quantiles by degrees of freedom (the seeds' count less one).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776}


def paired(a: dict[int, float], b: dict[int, float]) -> tuple[float, float]:
    d = [a[s] - b[s] for s in sorted(a)]
    sd = statistics.stdev(d)
    return statistics.mean(d), statistics.mean(d) / (sd / len(d) ** 0.5) if sd else float("nan")


def line(name: str, acc: dict[str, dict[int, float]]) -> str:
    mean = {k: statistics.mean(v.values()) for k, v in acc.items()}
    parts = [f"{other} {paired(acc['trained'], acc[other])[0]:+.2f} "
             f"(t {paired(acc['trained'], acc[other])[1]:+.2f})"
             for other in ("random", "wait", "heuristic")]
    share = (mean["trained"] - mean["wait"]) / (mean["oracle"] - mean["wait"])
    return (f"{name}: {mean['trained']:.2f}%; vs {', '.join(parts)}; {share:.0%} of the "
            "oracle's gain over WAIT")


def name(path: Path) -> str:
    """The trial a saved evaluation is of: its folder's name, or the file's own."""
    if path.name != "evaluation.json":
        return path.stem
    return path.parent.parent.name if path.parent.name == "evaluation" else path.parent.name


def group(label: str, paths: list[str]) -> None:
    runs = []
    for path in paths:
        policies = json.loads(open(path).read())["policies"]
        runs.append({k: {e["seed"]: e["final_acc"] for e in p["episodes"]}
                     for k, p in policies.items()})
    for other in ("random", "wait", "heuristic", "oracle"):  # the same scripted episodes
        assert all(r[other] == runs[0][other] for r in runs), other
    print(f"## {label}")
    for path, run in zip(paths, runs, strict=True):
        print(line(name(Path(path)), run))
    pooled = {**runs[0], "trained": {s: statistics.mean(r["trained"][s] for r in runs)
                                     for s in runs[0]["trained"]}}
    print(line(f"pooled ({len(runs)} seeds, mean per env seed)", pooled))
    means = [statistics.mean(r["trained"].values()) for r in runs]
    half = T95[len(means) - 1] * statistics.stdev(means) / len(means) ** 0.5
    scripted = {k: statistics.mean(v.values()) for k, v in runs[0].items() if k != "trained"}
    print(f"across seeds: {statistics.mean(means):.2f}% [{statistics.mean(means) - half:.2f}, "
          f"{statistics.mean(means) + half:.2f}] (per seed "
          + ", ".join(f"{m:.2f}" for m in means) + "); "
          + ", ".join(f"{k} {v:.2f}%" for k, v in scripted.items()))
    print()


args = sys.argv[1:]
while args:
    end = args.index("--") if "--" in args else len(args)
    group(args[0], args[1:end])
    args = args[end + 1:]
