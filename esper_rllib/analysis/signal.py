"""The learnability audit of a profile and reward as ``esper-rllib signal`` runs it (signal.json
and signal.md): the oracle found or cached, the scripted policies played, the EV ceiling (the
Markov-state one, and the shared-stream figure beside it)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
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
    return cache_root() / "oracle" / f"{digest}.json"


def cache_root() -> Path:
    """Where what is slow to play and the same for every run of an env is kept between
    processes: the oracle's search, the scripted episodes (``ESPER_CACHE_DIR``)."""
    return Path(os.environ.get("ESPER_CACHE_DIR", Path.home() / ".cache" / "esper-rllib"))


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


def step_seconds(env: Any, max_epochs: int) -> float:
    """Seconds one env step takes here, timed on ``env`` (unwrapped; reset here) as the oracle
    plays it (a seed of the largest blueprint growing: the costliest steps the audit and the
    evaluation play): 2 steps after an untimed first, which allocates, with the caller's torch
    threads (the audit and the evaluation play with one). What a long step's estimate before it
    starts is made of (about a second on `quick`)."""
    from envs.contract import CNN_BLUEPRINTS
    from envs.scripted import OraclePolicy
    from esper_rllib.analysis.audit import SEARCH_SEED_BASE

    policy = OraclePolicy(CNN_BLUEPRINTS[-1], 0, max_epochs)
    obs, info = env.reset(seed=SEARCH_SEED_BASE)
    timed, start = 0, 0.0
    for step in range(min(3, max_epochs)):
        if step == 1:
            start = time.monotonic()
        obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
        timed += step >= 1
        if terminated or truncated:
            break
    return (time.monotonic() - start) / timed if timed else 0.0


def duration(seconds: float) -> str:
    """``under a second``, ``40 s``, ``12 min``, ``1 h 24 min``: an estimate's precision."""
    if seconds < 1:
        return "under a second"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def announce(what: str, steps: int, seconds_per_step: float) -> None:
    """One line on stderr before a long step starts: what it does, its size and its time."""
    print(f"{what}: {steps:,} env steps, about {duration(steps * seconds_per_step)} "
          f"({seconds_per_step:.2f} s per step, timed here)", file=sys.stderr, flush=True)


def audit_steps(max_epochs: int, seeds: int, ev_states: int, ev_continuations: int) -> int:
    """Env steps of the audit's episodes after the oracle search: every policy's episodes and,
    per state of the EV ceiling, ev_continuations - 1 continuations per stream (fresh and
    shared) of half an episode on average."""
    from esper_rllib.analysis.audit import POLICIES

    return max_epochs * (len(POLICIES) * seeds + ev_states * (ev_continuations - 1))


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

    def known(self) -> tuple[int, int] | None:
        """The oracle without a search (given or cached), else None."""
        from envs.scripted import parse_oracle

        if self.oracle is None and self.search is not None:
            return parse_oracle(self.search["choice"])
        return self.oracle

    def search_steps(self, n_slots: int, max_epochs: int) -> int:
        """Env steps the search will take (0 when given or cached)."""
        from envs.contract import CNN_BLUEPRINTS

        if self.oracle is not None or self.search is not None:
            return 0
        return n_slots * len(CNN_BLUEPRINTS) * self.search_seeds * max_epochs

    def candidates(self, n_slots: int) -> str:
        """What the search plays, in words."""
        from envs.contract import CNN_BLUEPRINTS

        return (f"{n_slots * len(CNN_BLUEPRINTS)} blueprint@slot candidates x "
                f"{self.search_seeds} episodes")

    def find(self, make_env: Any, max_epochs: int, tick: Any) -> tuple[int, int]:
        from esper_rllib.analysis.audit import search_oracle

        if self.oracle is None:
            if self.search is None:
                self.search = search_oracle(make_env, max_epochs, self.search_seeds, tick)
                self.source = (f"searched: best of {len(self.search['mean_final_acc'])} "
                               f"over {self.search_seeds} seeds")
                self.cache.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(self.cache, json.dumps(self.search, indent=1))
            self.oracle = self.known()
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
    search = finder.search_steps(probe_env.n_slots, max_epochs)
    played = audit_steps(max_epochs, seeds, ev_states, ev_continuations)
    rate = step_seconds(probe_env, max_epochs)
    if search:
        announce(f"oracle search first ({finder.candidates(probe_env.n_slots)}; cached in "
                 f"{finder.cache}, --oracle BLUEPRINT@SLOT skips it)", search, rate)
    announce(f"audit: {len(POLICIES)} policies x {seeds} episodes and the EV ceiling's "
             f"{ev_states} states x {ev_continuations - 1} continuations per stream", played, rate)
    progress, start = Progress(search + played), time.monotonic()
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
