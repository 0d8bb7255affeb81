"""Task data as normalised tensors on the env's device.

Data sets are small, so they live whole on the device (no DataLoader). One copy per process is
cached and shared by every env in that worker; nothing is downloaded at run time.
"""

from __future__ import annotations

import functools
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from envs.synthetic import make_synthetic
from envs.tasks import TaskSpec

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_DIR_ENV = "ESPER_DATA_DIR"
_CIFAR10_SUBDIR = "cifar-10-batches-py"  # the archive's folder name, also accepted
_CIFAR10_LAYOUT = (
    f"the CIFAR-10 python-pickle files {', '.join(CIFAR10_TRAIN_FILES)}, {CIFAR10_TEST_FILE} "
    "(dicts with b'data' (N, 3072) uint8 and b'labels')"
)
CROP_PADDING = 4


@dataclass
class TaskData:
    """Normalised float32 images (N, 3, 32, 32) and int64 labels, on one device.

    Shared between envs through the cache: callers must not mutate the tensors.
    """

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    augment: bool


def find_cifar10_dir(data_dir: str | os.PathLike | None) -> Path:
    """The folder holding the CIFAR-10 files (FileNotFoundError naming what is missing)."""
    if data_dir is None:
        data_dir = os.environ.get(CIFAR10_DIR_ENV)
        if not data_dir:
            raise FileNotFoundError(
                f"no CIFAR-10 directory: pass data_dir or set ${CIFAR10_DIR_ENV} to a folder "
                f"holding {_CIFAR10_LAYOUT}"
            )
    root = Path(data_dir)
    for candidate in (root, root / _CIFAR10_SUBDIR):
        if all((candidate / f).is_file() for f in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)):
            return candidate
    raise FileNotFoundError(
        f"CIFAR-10 not found: looked in {root} and {root / _CIFAR10_SUBDIR} for {_CIFAR10_LAYOUT}"
    )


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as err:  # any unpickling or key error means the same thing to the user
        raise ValueError(f"malformed CIFAR-10 file {path}: expected {_CIFAR10_LAYOUT} ({err!r})"
                         ) from err
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),):
        raise ValueError(
            f"malformed CIFAR-10 file {path}: data shape {data.shape}, labels shape "
            f"{labels.shape}; expected {_CIFAR10_LAYOUT} with one label per row"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"malformed CIFAR-10 file {path}: labels must be in 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar10(
    data_dir: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read (x_train, y_train, x_test, y_test) from the standard python-pickle layout.

    ``data_dir`` (default ``$ESPER_DATA_DIR``) holds the files directly or in
    ``cifar-10-batches-py/``. Images are uint8 (N, 3, 32, 32), labels int64.
    """
    root = find_cifar10_dir(data_dir)
    train = [_read_batch(root / f) for f in CIFAR10_TRAIN_FILES]
    x_test, y_test = _read_batch(root / CIFAR10_TEST_FILE)
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return x_train, y_train, x_test, y_test


def _subset(x: np.ndarray, y: np.ndarray, n: int, field: str, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
    """The first n of a fixed shuffle: deterministic and roughly class-balanced."""
    if n > len(x):
        raise ValueError(f"{field}={n} exceeds the {len(x)} images available")
    keep = rng.permutation(len(x))[:n]
    return x[keep], y[keep]


def _check_size(field: str, value: object, low: int, high: int, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not (
        low <= value <= high
    ):
        raise ValueError(f"{field} must be an int in [{low}, {high}]{why}, got {value!r}")
    return int(value)


def _normalise(x: np.ndarray, mean: np.ndarray, std: np.ndarray, device: torch.device) -> Tensor:
    t = torch.from_numpy(x).to(device=device, dtype=torch.float32).div_(255)
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=device)[:, None, None]
    std_t = torch.as_tensor(std, dtype=torch.float32, device=device)[:, None, None]
    return t.sub_(mean_t).div_(std_t)


@functools.lru_cache(maxsize=8)
def _load(task: TaskSpec, n_train: int, n_val: int, data_dir: str | None, device: torch.device,
          data_seed: int) -> TaskData:
    if task.dataset == "synthetic":
        x_tr, y_tr, x_va, y_va = make_synthetic(n_train, n_val, data_seed)
        scaled = x_tr.astype(np.float64) / 255
        mean, std = scaled.mean(axis=(0, 2, 3)), scaled.std(axis=(0, 2, 3))
    else:
        x_tr, y_tr, x_va, y_va = read_cifar10(data_dir)
        rng = np.random.default_rng(data_seed)
        x_tr, y_tr = _subset(x_tr, y_tr, n_train, "n_train", rng)
        x_va, y_va = _subset(x_va, y_va, n_val, "n_val", rng)
        mean, std = np.array(CIFAR10_MEAN), np.array(CIFAR10_STD)
    return TaskData(
        x_train=_normalise(x_tr, mean, std, device),
        y_train=torch.from_numpy(y_tr).to(device),
        x_val=_normalise(x_va, mean, std, device),
        y_val=torch.from_numpy(y_va).to(device),
        augment=task.augment,
    )


# The largest subsets: CIFAR-10's split sizes; the synthetic generator has no hard limit.
_MAX_SIZES = {"cifar10": (50000, 10000), "synthetic": (1_000_000, 1_000_000)}


def load_task_data(
    task: TaskSpec, *, n_train: int | None = None, n_val: int | None = None,
    data_dir: str | None = None, device: str | torch.device = "cpu", data_seed: int = 0,
) -> TaskData:
    """Load a task's data set (cached per process; do not mutate the result).

    ``n_train`` must be at least the batch size (the last partial batch is dropped, so fewer
    images would mean no training at all). Subsets are the first n of a fixed shuffle
    (``data_seed``); the synthetic set is generated from ``data_seed``.
    """
    n_train, n_val, data_seed = check_sizes(task, n_train=n_train, n_val=n_val,
                                            data_seed=data_seed)
    data_dir = None if data_dir is None else str(data_dir)
    return _load(task, n_train, n_val, data_dir, torch.device(device), data_seed)


def check_sizes(task: TaskSpec, *, n_train: int | None = None, n_val: int | None = None,
                data_seed: int = 0) -> tuple[int, int, int]:
    """(n_train, n_val, data_seed) with the task's defaults, or a ValueError naming the field."""
    max_train, max_val = _MAX_SIZES[task.dataset]
    n_train = _check_size("n_train", task.n_train if n_train is None else n_train,
                          task.batch_size, max_train,
                          " (at least the batch size: the last partial batch is dropped)")
    n_val = _check_size("n_val", task.n_val if n_val is None else n_val, 1, max_val)
    data_seed = _check_size("data_seed", data_seed, 0, 2**63 - 1)
    return n_train, n_val, data_seed


def augment_batch(x: Tensor, generator: torch.Generator) -> Tensor:
    """Random crop (32, zero padding 4) and horizontal flip per image, one gather, on x's device.

    Zero padding of normalised images pads with the data mean. ``generator`` must live on
    x's device; the same generator state gives the same result.
    """
    n, _, h, w = x.shape
    p = CROP_PADDING
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    offsets = torch.randint(0, 2 * p + 1, (2, n), generator=generator, device=x.device)
    flip = torch.rand(n, generator=generator, device=x.device) < 0.5
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)
    cols_fwd = torch.arange(w, device=x.device)
    cols = offsets[1, :, None] + torch.where(flip[:, None], cols_fwd.flip(0), cols_fwd)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]
