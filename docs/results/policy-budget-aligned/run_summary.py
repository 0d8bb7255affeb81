"""Per trial of a sweep folder: the online EV against the return-to-go per iteration and its
trailing mean at the end, the median seconds per iteration, the PPO update's size (KL, clip
fraction: mean over iterations) and each head's entropy (the learner's, normalised by its
maximum) at the first and the last iteration.

    python run_summary.py EXPERIMENT_DIR   (run from the repository root, in .venv)
"""

import statistics
import sys

from envs.contract import HEADS
from esper_rllib.ppo.metric_names import RESULT_KEY
from tuning.results import read_results, trial_dirs

for trial in trial_dirs(sys.argv[1]):
    results = [r for r in read_results(trial) if "training_iteration" in r]
    m = [r[RESULT_KEY] for r in results]
    times = [r["time_this_iter_s"] for r in results]
    ev = " ".join(f"{r.get('explained_variance_return', float('nan')):+.2f}" for r in m)
    print(f"{trial.name}: {len(m)} iterations")
    print(f"  EV vs return-to-go per iteration: {ev}")
    print(f"  trailing at the end {m[-1].get('ev_return_trailing', float('nan')):+.3f}; "
          f"final accuracy (last 4 batches) "
          f"{statistics.mean(r['episode_val_acc'] for r in m[-4:]):.2f}%; "
          f"WAIT share of ops {m[-1]['op_frac_WAIT']:.2f}")
    print(f"  kl {statistics.mean(r['kl'] for r in m):.4f}, clip fraction "
          f"{statistics.mean(r['clip_fraction'] for r in m):.4f} (means over iterations)")
    first = " ".join(f"{h} {m[0][f'entropy_{h}']:.2f}->{m[-1][f'entropy_{h}']:.2f}"
                     for h in HEADS)
    print(f"  entropy / max per head, first -> last: {first}")
    print(f"  seconds per iteration: median {statistics.median(times):.0f}, "
          f"min {min(times):.0f}")
