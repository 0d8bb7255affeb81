"""The EV ceiling's 95% interval width against the number of states, from a signal.json's saved
returns: each figure at every state (n = all), and on random subsets of n states (the mean
half-width over subsets); and a bootstrap over episodes (states of one episode resampled together)
beside the audit's bootstrap over states. Usage: python width.py signal.json"""

import json
import sys

import numpy as np

from esper_rllib.analysis.learnability import _ceiling_estimate

BOOTS, SUBSETS = 1000, 40


def half_width(groups: list[np.ndarray], picks: list[np.ndarray]) -> float:
    boots = [_ceiling_estimate([groups[i] for i in p]) for p in picks]
    low, high = np.nanpercentile(boots, [2.5, 97.5])
    return float(high - low) / 2


def main(path: str) -> None:
    data = json.loads(open(path).read())
    rng = np.random.default_rng(0)
    for key in ("ev_ceiling", "ev_ceiling_shared_stream"):
        entry = data[key]["random"]
        groups = [np.asarray(g) for g in entry["returns"]]
        n_all = len(groups)
        print(f"{key}: {entry['estimate']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}], "
              f"{n_all} states: half-width {(entry['high'] - entry['low']) / 2:.3f}")
        for n in sorted({30, 60, n_all // 2, n_all}):
            if n > n_all:
                continue
            widths = []
            for _ in range(SUBSETS if n < n_all else 1):
                sub = [groups[i] for i in rng.choice(n_all, n, replace=False)]
                widths.append(half_width(sub, [rng.integers(0, n, n) for _ in range(BOOTS)]))
            print(f"  {n} states: mean 95% half-width {np.mean(widths):.3f}")
        episodes = sorted({s for s, _ in entry["states_at"]})
        by_episode = {e: [i for i, (s, _) in enumerate(entry["states_at"]) if s == e]
                      for e in episodes}
        picks = [np.concatenate([by_episode[episodes[j]]
                                 for j in rng.integers(0, len(episodes), len(episodes))])
                 for _ in range(BOOTS)]
        boots = [_ceiling_estimate([groups[i] for i in p]) for p in picks]
        low, high = np.nanpercentile(boots, [2.5, 97.5])
        print(f"  bootstrap over the {len(episodes)} episodes instead: [{low:.3f}, {high:.3f}]")


if __name__ == "__main__":
    main(sys.argv[1])
