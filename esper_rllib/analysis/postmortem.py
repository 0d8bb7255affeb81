"""One trial in the seed document's table form: PPO
update progression, op distribution, advantage statistics, KL, the first iteration's rewards,
and the collapse flags with the verdict.

The seed document: docs/seed-document.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from envs.contract import Op
from esper_rllib.analysis.outputs import markdown_table
from esper_rllib.ppo.collapse import UNDETERMINED, verdict_wait
from esper_rllib.ppo.metric_names import COLLAPSE_FLAGS, VERDICT, final_evs
from tuning.results import TrialRecord, load_trial

# The batches the seed document tabulates.
PROGRESSION_ITERATIONS = (1, 5, 10, 14, 20, 27, 32)


def nearest_iterations(available: Sequence[int],
                       wanted: Sequence[int] = PROGRESSION_ITERATIONS) -> list[int]:
    """For each wanted iteration the nearest one the trial has (duplicates dropped, in order)."""
    if not available:
        return []
    picked = [min(available, key=lambda i, w=w: (abs(i - w), i)) for w in wanted]
    return list(dict.fromkeys(picked))


def _fmt(value: object, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, fmt)


def _rows(trial: TrialRecord, columns: Sequence[tuple[str, str]]) -> list[list[str]]:
    at = {it: m for it, m in zip(trial.iterations, trial.metrics, strict=True)}
    return [[str(it), *(_fmt(at[it].get(name), fmt) for name, fmt in columns)]
            for it in nearest_iterations(trial.iterations)]


def progression(trial: TrialRecord) -> list[str]:
    columns = (("value_loss", ".4g"), ("explained_variance", "+.3f"), ("entropy", ".3f"),
               ("q_spread", ".3f"), ("value_std", ".3f"), ("grad_norm_pre_clip", ".2f"),
               ("clip_ratio", ".1f"))
    return markdown_table(["Batch", "Value Loss", "Expl.Var", "Entropy", "Q-Spread", "Value.Std",
                          "Pre-Clip Grad", "Clip Ratio"], _rows(trial, columns), right_from=0)


def op_distribution(trial: TrialRecord) -> list[str]:
    counts = {op.name: sum(c for c in trial.series(f"op_count_{op.name}") if not math.isnan(c))
              for op in Op}
    total = sum(counts.values())
    rows = [[name, f"{int(n):,}", f"{100 * n / total:.1f}%" if total else "n/a"]
            for name, n in sorted(counts.items(), key=lambda kv: -kv[1])]
    return markdown_table(["Operation", "Count", "Percentage"], rows, right_from=1)


def advantages(trial: TrialRecord) -> list[str]:
    columns = (("pre_norm_advantage_mean", ".3g"), ("pre_norm_advantage_std", ".3g"),
               ("advantage_mean", ".3g"), ("advantage_std", ".3f"))
    return markdown_table(["Batch", "Mean before norm.", "Std before norm.", "Mean after norm.",
                          "Std after norm."], _rows(trial, columns), right_from=0)


def kl_table(trial: TrialRecord) -> list[str]:
    columns = (("kl", ".2e"), ("approx_kl_pre", ".2e"), ("clip_fraction", ".3f"),
               ("ratio_max", ".3f"))
    return markdown_table(["Batch", "KL (after update)", "Approx KL (before)", "Clip fraction",
                          "Max ratio"], _rows(trial, columns), right_from=0)


def first_rewards(trial: TrialRecord) -> list[str]:
    if not trial.metrics:
        return ["(no iterations)"]
    m = trial.metrics[0]
    return [
        "```",
        f"Zero rewards:     {_fmt(100 * m.get('reward_zero_frac', math.nan), '.1f')}%",
        f"Positive rewards: {_fmt(100 * m.get('reward_pos_frac', math.nan), '.1f')}%",
        f"Negative rewards: {_fmt(100 * m.get('reward_neg_frac', math.nan), '.1f')}%",
        f"Mean reward:      {_fmt(m.get('reward_mean'), '.3f')}",
        f"Range:            {_fmt(m.get('reward_min'), '.3f')} to "
        f"{_fmt(m.get('reward_max'), '.3f')}",
        "```",
    ]


def flags(trial: TrialRecord) -> list[str]:
    rows = []
    for flag in COLLAPSE_FLAGS:
        raised = [it for it, v in zip(trial.iterations, trial.series(f"flag_{flag}"),
                                      strict=True) if v == 1.0]
        rows.append([flag, str(len(raised)), str(raised[0]) if raised else "-",
                     str(raised[-1]) if raised else "-"])
    last = trial.metrics[-1] if trial.metrics else {}
    return [
        *markdown_table(["Flag", "Iterations raised", "First", "Last"], rows, right_from=1),
        "",
        final_verdict(last, len(trial.iterations)),
    ]


def final_verdict(last: Mapping[str, Any], iterations: int) -> str:
    """The verdict and the final EVs (``metric_names.final_evs``, as the console and report.md
    give them), and the iterations a verdict needs when there is none yet."""
    ev, ev_return = final_evs(last)
    verdict = last.get(VERDICT) or UNDETERMINED
    return (f"Final verdict: **{verdict}** (after {iterations} iterations"
            f"{verdict_wait(verdict, iterations)}); final EV "
            f"{_fmt(ev, '+.3g')}, against the return-to-go {_fmt(ev_return, '+.3g')}")


def postmortem(trial_dir: str | Path) -> str:
    trial = load_trial(trial_dir)
    if not trial.metrics:
        raise ValueError(f"{trial_dir}: the trial reported no iterations (empty result.json)")
    return "\n".join([
        f"# Post-mortem: {trial.name}",
        "",
        "## PPO update progression",
        *progression(trial), "",
        "## Operation distribution (effective ops, all iterations)",
        *op_distribution(trial), "",
        "## Advantage statistics",
        *advantages(trial), "",
        "## KL divergence",
        *kl_table(trial), "",
        "## Reward distribution (raw env rewards of the first iteration)",
        *first_rewards(trial), "",
        "## Collapse flags and verdict",
        *flags(trial), "",
    ])
