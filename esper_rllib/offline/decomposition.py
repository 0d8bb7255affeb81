"""Where the critic's explained variance goes (issue 18, item 3): for a critic config, from the
EV ceiling (the Markov-state one: the whole env state) down to what PPO's online critic ends at.

Levels, each an IQM over seeds with its 95% interval:
1. the EV ceiling (``esper-rllib signal``: branching the whole env state, host weights included,
   each continuation with the env's random stream drawn afresh: the Markov-state ceiling, never
   the shared-stream figure, which credits a critic with the future's dice);
2. what the observation tells: the best held-out EV on ALL training episodes of any learner in
   the fit, the reference learners (``offline.reference``, no step picking) and every critic
   cell (at its best step), labelled with the one that reached it; never the critic alone
   (ceiling - this = the information gap);
3. this config's critic on ALL training episodes, best of up to S steps: the learner gap (how
   far this critic stays below the best learner on the same data);
4. the same from 32 episodes (one quick trial's data): the data gap;
5. from 32 episodes and 8 gradient steps (the reference recipe's optimisation in a quick
   trial): the optimisation gap;
6. the online final EV against the return-to-go of the same config in a sweep (ablation.csv's
   ``final_ev_return``, on the offline levels' target): what non-stationarity, the policy loss
   on the shared trunk and fresh data per batch cost;
7. its online final EV against the GAE targets (``final_ev``, the verdict's metric), shown
   beside it: it carries the critic's own values, so it is no level of the gap chain.
"Best" picks the step on the held-out IQM itself (optimistic). The online trials match a fit
cell when every knob that shapes the critic or its training (``MATCH_KEYS``) is equal; knobs an
ablation.csv does not list are the sweep's (its sweep.json, else the named sweep's fixed knobs
on the profile).

The seed document: docs/seed-document.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esper_rllib.analysis.outputs import markdown_table
from esper_rllib.analysis.stats import MISSING, Estimate, bootstrap_iqm
from esper_rllib.offline.fit_plan import allowed_knobs
from esper_rllib.offline.fit_summary import CurveSummary
from esper_rllib.run.config import KNOBS, ConfigError, resolve_knobs

DATA_EPISODES = 32  # one quick trial: 8 batches x 4 episodes
RECIPE_STEPS = 8  # its gradient steps: one per batch
# What must agree between a fit cell and an online trial beyond what a fit may set: the online
# recipe's knobs (their entries say online_only).
ONLINE_ONLY = tuple(n for n, k in KNOBS.items() if k.online_only)
LEVELS = ("EV ceiling (Markov state)", "what the observation tells (best learner, all episodes)",
          "this critic, all episodes, best step",
          f"{DATA_EPISODES} episodes, best step", f"{DATA_EPISODES} episodes, {RECIPE_STEPS} steps",
          "online final EV vs return-to-go", "online final EV (GAE targets)")
# The levels the gaps run along (the last level is on another target).
GAPS = ("information", "learner", "data", "optimisation", "online")


def match_keys() -> list[str]:
    return [*allowed_knobs(), *ONLINE_ONLY]


def _normal(knobs: Mapping[str, Any]) -> dict[str, Any]:
    """Only the matched knobs, as JSON holds them (tuples as lists); a knob a record does not
    name (one made before the knob existed) at its default. Without a value phase the replay
    does nothing (the learner keeps no batches), so it is matched at its default."""
    normal = {k: knobs.get(k, KNOBS[k].default) for k in match_keys()}
    if "critic_replay" in normal and not normal.get("critic_steps"):
        normal["critic_replay"] = KNOBS["critic_replay"].default
    return json.loads(json.dumps(normal))


def cell_knobs(knobs: Mapping[str, Any]) -> dict[str, Any]:
    """What fit.json keeps of a fit cell's knobs for matching."""
    return _normal(knobs)


@dataclass(frozen=True)
class OnlineTrial:
    source: str
    knobs: dict[str, Any]
    final_ev: float
    final_ev_return: float  # NaN for sweeps from before it was logged


def load_online(spec: str, profile: str) -> list[OnlineTrial]:
    """The trials of ``DIR[@SWEEP]``'s ablation.csv with their full knobs."""
    from tuning.plan import PLAN_FILE, SEED, SweepPlan
    from tuning.results import read_ablation_csv
    from tuning.sweeps import SWEEPS, saved_sweep_name

    text, _, sweep = spec.partition("@")
    folder = Path(text)
    if not (folder / "ablation.csv").is_file():
        raise ConfigError(f"--online {spec}: no ablation.csv in {folder}")
    if (folder / PLAN_FILE).is_file():
        base = dict(SweepPlan.load(folder).base)
    else:
        sweep = saved_sweep_name(sweep or folder.name.split("-")[0])
        if sweep not in SWEEPS:
            raise ConfigError(f"--online {spec}: no {PLAN_FILE} and no named sweep "
                              f"{sweep!r}; give DIR@SWEEP with SWEEP one of {', '.join(SWEEPS)}")
        base = resolve_knobs(profile, overrides=dict(SWEEPS[sweep].fixed))
    trials = []
    for row in read_ablation_csv(folder / "ablation.csv"):
        knobs = {**base, **{k: KNOBS[k].parse(k, v) for k, v in row.items()
                            if k in KNOBS and k != SEED and v != ""}}
        trials.append(OnlineTrial(str(folder), knobs, float(row["final_ev"]),
                                  float(row.get("final_ev_return") or "nan")))
    return trials


def online_estimates(trials: Sequence[OnlineTrial], knobs: Mapping[str, Any]
                     ) -> tuple[tuple[Estimate, Estimate], str]:
    """IQMs of the final EV against the return-to-go and against the GAE targets of the trials
    whose knobs match, and where they are from."""
    want = _normal(knobs)
    matched = [t for t in trials if _normal(t.knobs) == want]
    if not matched:
        return (MISSING, MISSING), "no matching online trials"
    sources = sorted({t.source for t in matched})
    return ((bootstrap_iqm([t.final_ev_return for t in matched]),
             bootstrap_iqm([t.final_ev for t in matched])),
            ", ".join(f"`{s}`" for s in sources))


@dataclass(frozen=True)
class Decomposition:
    role: str  # the broken head | the fix | the best fit cell
    cell: str
    levels: tuple[Estimate, ...]  # in LEVELS order
    online_source: str
    observation_learner: str = ""  # which learner reached "what the observation tells"


def _level(summary: CurveSummary, cell: str, size: int | None, step: int | None) -> Estimate:
    if size is None or size not in summary.sizes[cell]:
        return MISSING
    return summary.get(cell, size, summary.best_step(cell, size) if step is None else step)


def observation_level(summary: CurveSummary) -> tuple[Estimate, str]:
    """What the observation tells: the highest held-out EV IQM on the largest training set
    among the reference learners and the critic cells (each critic at its best step), and
    which learner it is (a reference's name, or ``critic <cell> @ step``)."""
    sizes = [*(max(summary.sizes[c]) for c in summary.cells),
             *(max(summary.reference_sizes[r]) for r in summary.references)]
    if not sizes:
        return MISSING, "none"
    size = max(sizes)
    candidates = [(summary.reference(r, size), f"{r} (reference)") for r in summary.references
                  if size in summary.reference_sizes[r]]
    for c in summary.cells:
        if size in summary.sizes[c]:
            best = summary.best_step(c, size)
            candidates.append((summary.get(c, size, best), f"critic {c} @ {best}"))
    finite = [c for c in candidates if not math.isnan(c[0].value)]
    return max(finite, key=lambda c: c[0].value) if finite else (MISSING, "none")


def decompose(summary: CurveSummary, cells: Mapping[str, Mapping[str, Any]],
              ceiling: Mapping[str, Any] | None, online: Sequence[OnlineTrial],
              profile: str, frozen: Sequence[str] = ()) -> list[Decomposition]:
    """The levels for the broken head, the seed document's fix (the fit cells whose knobs are
    the presets on ``profile``, trunk trained) and the fit cell with the best all-episode
    held-out EV. A ``frozen``-trunk cell is no online config: it has no online level."""
    observed, learner = observation_level(summary)
    ceiling_estimate = (MISSING if ceiling is None else
                        Estimate(ceiling["estimate"], ceiling["low"], ceiling["high"],
                                 ceiling["states"]))
    roles: list[tuple[str, str]] = []
    for role, preset in (("broken head", "seed_before"), ("seed document's fix", "seed_after")):
        want = _normal(resolve_knobs(profile, preset, {"critic_trunk": "shared"}))
        roles += [(role, c) for c, k in cells.items() if _normal(k) == want and c not in frozen]
    best = max(summary.cells, key=lambda c: _level(summary, c, max(summary.sizes[c]),
                                                   None).value)
    roles.append(("best fit cell", best))
    out = []
    for role, cell in roles:
        all_data = max(summary.sizes[cell])
        step = RECIPE_STEPS if RECIPE_STEPS in summary.steps else None
        estimates, source = (((MISSING, MISSING), "none: a frozen trunk is not trained online")
                             if cell in frozen else online_estimates(online, cells[cell]))
        out.append(Decomposition(role, cell, (
            ceiling_estimate, observed, _level(summary, cell, all_data, None),
            _level(summary, cell, DATA_EPISODES, None),
            _level(summary, cell, DATA_EPISODES, step) if step else MISSING,
            *estimates), source, learner))
    return out


def render_table(rows: Sequence[Decomposition]) -> list[str]:
    head = ["role", "cell", *LEVELS]
    table = []
    for r in rows:
        levels = [e.format(".3f") for e in r.levels]
        levels[1] += f" ({r.observation_learner})" if r.observation_learner else ""
        table.append([r.role, r.cell, *levels])
    lines = [*markdown_table(head, table), "",
             f"Gaps (differences of the IQMs above: {', '.join(GAPS)}):", ""]
    for r in rows:
        v = [e.value for e in r.levels]
        gaps = ", ".join(f"{name} {a - b:+.3f}" if not math.isnan(a - b) else f"{name} n/a"
                         for name, a, b in zip(GAPS, v, v[1:], strict=False))
        lines.append(f"- {r.role} (`{r.cell}`): {gaps}; online trials from {r.online_source}")
    return lines
