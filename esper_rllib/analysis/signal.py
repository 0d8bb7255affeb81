"""The learnability audit of a profile and reward as ``esper-rllib signal`` runs it (signal.json
and signal.md): the oracle found or cached, the scripted policies played, the EV ceiling (the
Markov-state one, and the shared-stream figure beside it)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from esper_rllib.analysis.defaults import EV_STATES
from esper_rllib.analysis.outputs import Progress, command_line, write_atomic, write_json
from esper_rllib.run.config import ConfigError, env_config
from esper_rllib.run.preflight import make_env

SIGNAL_JSON = "signal.json"


SIGNAL_MD = "signal.md"


def _cache_path(env_kwargs: dict[str, Any], search_seeds: int) -> Path:
    """The oracle depends on final accuracy only: the reward is not part of the key."""
    key = {k: v for k, v in env_kwargs.items() if k not in ("reward", "reward_normalization")}
    digest = hashlib.sha256(json.dumps([key, search_seeds], sort_keys=True,
                                       default=str).encode()).hexdigest()[:16]
    root = Path(os.environ.get("ESPER_CACHE_DIR", Path.home() / ".cache" / "esper-rllib"))
    return root / "oracle" / f"{digest}.json"


def check_audit_args(oracle: str | None, n_slots: int | None,
                     **counts: int) -> tuple[int, int] | None:
    """The parsed --oracle; ConfigError for a count below its minimum or a bad oracle (its slot
    checked against ``n_slots`` when known)."""
    minimum = {"seeds": 2, "search_seeds": 1, "ev_states": 2, "ev_continuations": 2}
    for name, value in counts.items():
        if value < minimum[name]:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} {value}: allowed: an int >= {minimum[name]}")
    if oracle is None:
        return None
    from envs.scripted import parse_oracle

    try:
        blueprint, slot = parse_oracle(oracle)
    except ValueError as err:
        raise ConfigError(f"--oracle: {err}") from None
    if n_slots is not None and slot >= n_slots:
        raise ConfigError(f"--oracle {oracle}: slot must be r0c0..r0c{n_slots - 1}")
    return blueprint, slot


class OracleFinder:
    """The oracle: given (--oracle), cached for this env config, or searched (then cached)."""

    def __init__(self, given: tuple[int, int] | None, env_kwargs: dict[str, Any],
                 search_seeds: int) -> None:
        self.oracle, self.search_seeds = given, search_seeds
        self.cache = _cache_path(env_kwargs, search_seeds)
        self.search: dict[str, Any] | None = None
        self.source = "given with --oracle"
        if given is None and self.cache.is_file():
            self.search, self.source = json.loads(self.cache.read_text()), \
                f"cached in {self.cache}"

    def search_steps(self, n_slots: int, max_epochs: int) -> int:
        """Env steps the search will take (0 when given or cached)."""
        from envs.contract import CNN_BLUEPRINTS

        if self.oracle is not None or self.search is not None:
            return 0
        return n_slots * len(CNN_BLUEPRINTS) * self.search_seeds * max_epochs

    def find(self, make_env: Any, max_epochs: int, tick: Any) -> tuple[int, int]:
        from envs.scripted import parse_oracle
        from esper_rllib.analysis.audit import search_oracle

        if self.oracle is None:
            if self.search is None:
                self.search = search_oracle(make_env, max_epochs, self.search_seeds, tick)
                self.source = (f"searched: best of {len(self.search['mean_final_acc'])} "
                               f"over {self.search_seeds} seeds")
                self.cache.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(self.cache, json.dumps(self.search, indent=1))
            self.oracle = parse_oracle(self.search["choice"])
        return self.oracle


def signal_audit(knobs: dict[str, Any], *, profile: str, seeds: int, oracle: str | None = None,
                 search_seeds: int = 2, ev_states: int = EV_STATES,
                 ev_continuations: int = 4) -> dict[str, Any]:
    """The audit of the env ``knobs`` describe (signal.json's content)."""
    import torch

    import envs
    from esper_rllib.analysis.audit import POLICIES, oracle_name, run_audit, scripted_policies

    if knobs["env"] != envs.ENV_ID:
        raise ConfigError(f"env={knobs['env']}: the audit runs on the real env only")
    # One thread, as in an env runner: the host's small convolutions gain nothing from more,
    # and on a busy machine extra threads stall each other.
    torch.set_num_threads(1)

    def new_env() -> Any:
        return make_env(knobs).unwrapped

    probe_env = new_env()
    given = check_audit_args(oracle, probe_env.n_slots, seeds=seeds, search_seeds=search_seeds,
                        ev_states=ev_states, ev_continuations=ev_continuations)
    max_epochs, kwargs = knobs["max_epochs"], env_config(knobs)
    finder = OracleFinder(given, kwargs, search_seeds)
    # Each state: ev_continuations - 1 continuations per stream (fresh and shared), of half an
    # episode on average.
    steps = finder.search_steps(probe_env.n_slots, max_epochs) + max_epochs * (
        len(POLICIES) * seeds + ev_states * (ev_continuations - 1))
    progress, start = Progress(steps), time.monotonic()
    best = finder.find(new_env, max_epochs, progress)
    env_seeds = [knobs["rng_seed"] + i for i in range(seeds)]
    result = run_audit(new_env, scripted_policies(best, max_epochs), seeds=env_seeds,
                       max_epochs=max_epochs, gamma=knobs["gamma"], ev_states=ev_states,
                       ev_continuations=ev_continuations, tick=progress)
    progress.close()
    result["oracle_search"] = finder.search
    result["meta"] = {
        "profile": profile, "reward": knobs["reward"],
        "reward_normalization": probe_env.cfg.reward_normalization, "max_epochs": max_epochs,
        "seeds": env_seeds, "gamma": knobs["gamma"], "oracle": oracle_name(*best),
        "oracle_source": finder.source, "env_config": kwargs,
        "command": command_line("signal"), "wall_s": round(time.monotonic() - start, 1),
    }
    return result


def write_signal(out: Path, result: dict[str, Any]) -> None:
    from esper_rllib.analysis.audit import render_markdown

    write_json(out / SIGNAL_JSON, result)
    write_atomic(out / SIGNAL_MD, render_markdown(result))
