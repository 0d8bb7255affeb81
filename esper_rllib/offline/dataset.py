"""The recorded-rollout dataset of ``esper-rllib record``: one Parquet file per episode, one row
per env step, and ``meta.json`` beside them.

Why Parquet through pyarrow and not RLlib 2.60's own recording (``config.offline_data(output=
...)``, ``ray/rllib/offline/offline_env_runner.py``): that runner writes the episodes an
``Algorithm``'s env runner samples with its RLModule, so the scripted behaviour policies
(random legal, heuristic) cannot record through it, and its ``random_actions`` ignore the
masks; it replaces our env runner class (``SeedOnceEnvRunner``, which seeds each env once and
distinctly) by one that re-seeds identically in ``complete_episodes`` mode; its columnar rows
carry obs, actions, rewards, flags and model outputs but no ``infos`` (so no final accuracy)
and no env seed; it buffers episodes and writes them per ``sample()`` through Ray Data, catching
and only logging write errors, so an interrupted run loses its buffer and cannot resume. The
observation dict (features, blueprint ids, legal masks) and the LSTM's needs (whole episodes in
order: ``episode_id`` + ``t``; the critic is re-run from the initial state) are all plain
columns here, and one file per episode, written to a temporary name and renamed, is what makes
a recording resumable with no half-written file.

Columns (``COLUMNS``): ``episode_id``, ``env_seed``, ``t``; ``obs_<field>`` for every
observation field as a fixed-size list (``obs_action_mask`` is the legal mask of every head,
concatenated in ``envs.contract.HEADS`` order); ``action_<head>`` per head; ``logp`` (the
behaviour policy's log-probability of the action with causal relevance, 0 for a deterministic
policy); ``reward``; ``terminated``, ``truncated``; ``final_acc`` (the episode's last
``val_acc``, NaN where the env reports none, e.g. a probe).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from envs.contract import HEADS
from esper_rllib.analysis.outputs import write_json
from tuning.storage import atomic_path

META_FILE = "meta.json"
EPISODES_DIR = "episodes"
OBS_PREFIX = "obs_"
ACTION_PREFIX = "action_"
ID_COLUMNS = ("episode_id", "env_seed", "t")
STEP_COLUMNS = ("logp", "reward", "terminated", "truncated", "final_acc")
ACTION_COLUMNS = tuple(f"{ACTION_PREFIX}{h}" for h in HEADS)


def columns(obs_fields: Sequence[str]) -> tuple[str, ...]:
    """Every column of a recording whose observation has ``obs_fields``, in file order."""
    return (*ID_COLUMNS, *(f"{OBS_PREFIX}{k}" for k in obs_fields), *ACTION_COLUMNS,
            *STEP_COLUMNS)


@dataclass
class EpisodeRecord:
    """One recorded episode: ``obs[field]`` is (T, ...) for the T observations the actions saw,
    ``actions`` (T, n_heads), the rest (T,)."""

    episode_id: int
    env_seed: int
    obs: dict[str, np.ndarray]
    actions: np.ndarray
    logp: np.ndarray
    rewards: np.ndarray
    terminated: bool
    truncated: bool
    final_acc: float

    def __len__(self) -> int:
        return len(self.rewards)

    def to_table(self) -> pa.Table:
        n = len(self)
        last = np.arange(n) == n - 1
        data: dict[str, pa.Array] = {
            "episode_id": pa.array(np.full(n, self.episode_id, np.int64)),
            "env_seed": pa.array(np.full(n, self.env_seed, np.int64)),
            "t": pa.array(np.arange(n, dtype=np.int32)),
        }
        for key in sorted(self.obs):
            data[f"{OBS_PREFIX}{key}"] = _fixed_size_list(self.obs[key])
        for i, name in enumerate(ACTION_COLUMNS):
            data[name] = pa.array(self.actions[:, i].astype(np.int64))
        data["logp"] = pa.array(self.logp.astype(np.float32))
        data["reward"] = pa.array(self.rewards.astype(np.float32))
        data["terminated"] = pa.array(last & self.terminated)
        data["truncated"] = pa.array(last & self.truncated)
        data["final_acc"] = pa.array(np.full(n, self.final_acc, np.float32))
        return pa.table(data)

    @classmethod
    def from_table(cls, table: pa.Table) -> EpisodeRecord:
        """The episode of a table holding exactly one episode's rows, in step order."""
        t = table.column("t").to_numpy()
        if not np.array_equal(t, np.arange(len(t))):
            raise ValueError(f"episode {table.column('episode_id')[0]}: steps out of order")
        obs = {name[len(OBS_PREFIX):]: _numpy_of_list(table.column(name))
               for name in table.column_names if name.startswith(OBS_PREFIX)}
        return cls(
            episode_id=int(table.column("episode_id")[0].as_py()),
            env_seed=int(table.column("env_seed")[0].as_py()),
            obs=obs,
            actions=np.stack([table.column(c).to_numpy() for c in ACTION_COLUMNS], axis=-1),
            logp=table.column("logp").to_numpy(),
            rewards=table.column("reward").to_numpy(),
            terminated=bool(table.column("terminated").to_numpy()[-1]),
            truncated=bool(table.column("truncated").to_numpy()[-1]),
            final_acc=float(table.column("final_acc")[0].as_py()),
        )


def _fixed_size_list(x: np.ndarray) -> pa.FixedSizeListArray:
    x = np.ascontiguousarray(x)
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), int(np.prod(x.shape[1:])))


def _numpy_of_list(column: pa.ChunkedArray) -> np.ndarray:
    array = column.combine_chunks()
    return array.flatten().to_numpy().reshape(len(array), array.type.list_size)


def episode_path(out: Path, episode_id: int) -> Path:
    return out / EPISODES_DIR / f"episode-{episode_id:06d}.parquet"


def write_episode(out: Path, episode: EpisodeRecord) -> Path:
    """The episode's file, written under a temporary name and renamed: a reader never sees a
    half-written one (an interrupted write leaves only a ``.tmp``, ignored and overwritten)."""
    path = episode_path(out, episode.episode_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(episode.to_table(), tmp)
    return path


def recorded_ids(out: Path) -> set[int]:
    """Ids of the episodes whose files are complete in ``out``."""
    folder = out / EPISODES_DIR
    if not folder.is_dir():
        return set()
    return {int(p.stem.removeprefix("episode-")) for p in folder.glob("episode-*.parquet")}


def read_meta(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / META_FILE).read_text())


def write_meta(folder: Path, meta: Mapping[str, Any]) -> None:
    write_json(Path(folder) / META_FILE, dict(meta))


def read_table(folder: Path) -> pa.Table:
    """Every recorded step of ``folder`` as one table, ordered by episode id and step."""
    files = sorted((Path(folder) / EPISODES_DIR).glob("episode-*.parquet"))
    if not files:
        raise FileNotFoundError(f"{folder}: no recorded episodes in {EPISODES_DIR}/")
    return pa.concat_tables([pq.read_table(f) for f in files])


def read_episodes(folder: Path) -> list[EpisodeRecord]:
    """The recorded episodes of ``folder``, by episode id."""
    table = read_table(folder)
    ids = table.column("episode_id").to_numpy()
    bounds = np.flatnonzero(np.diff(ids)) + 1
    starts, ends = np.r_[0, bounds], np.r_[bounds, len(ids)]
    return [EpisodeRecord.from_table(table.slice(s, e - s)) for s, e in zip(starts, ends,
                                                                            strict=True)]
