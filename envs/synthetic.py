"""The embedded synthetic data set: CIFAR-shaped, generated from a seed.

Class c = 2 j + a: texture level j in 0..4 (how fine a checkerboard is; a 1x1-conv host can
partly read it) and shape orientation a (horizontal/vertical; needs a spatial filter, i.e. a
seed). Size, position, hue, luminance and foreground pixel count are independent of the class,
so colour statistics alone are at chance.
"""

from __future__ import annotations

import numpy as np

SIZE = 32
N_CLASSES = 10
N_LEVELS = 5
# Images rendered per vectorised chunk: bounds memory (~20 float32 maps of 1024x32x32).
CHUNK = 1024

# Pixel-centre coordinates.
_COORD = np.arange(SIZE, dtype=np.float32) + 0.5
_X = _COORD[None, None, :]
_Y = _COORD[None, :, None]
# Orthonormal basis of the zero-luminance plane (luminance = channel mean): adding a chroma
# vector from it changes hue and saturation but not brightness.
_CHROMA_BASIS = np.array(
    [[1.0, -1.0, 0.0], [1.0, 1.0, -2.0]], dtype=np.float32
) / np.array([[np.sqrt(2.0)], [np.sqrt(6.0)]], dtype=np.float32)


def _uniform(rng: np.random.Generator, low: float, high: float, n: int) -> np.ndarray:
    return rng.uniform(low, high, n).astype(np.float32)


def _col(v: np.ndarray) -> np.ndarray:
    """Per-image scalars (B,) -> (B, 1, 1) to broadcast over a 32x32 map."""
    return v[:, None, None]


def _bar_distance(along: np.ndarray, across: np.ndarray, radius: np.ndarray, t: np.ndarray
                  ) -> np.ndarray:
    """Box signed distance; aspect q = 3.5 + 1.5 t, area pi R^2."""
    q = 3.5 + 1.5 * t
    width = np.sqrt(np.pi * radius**2 / q)
    ox = np.abs(along) - _col(q * width / 2)
    oy = np.abs(across) - _col(width / 2)
    return np.hypot(np.maximum(ox, 0), np.maximum(oy, 0)) + np.minimum(np.maximum(ox, oy), 0)


def _ellipse_distance(along: np.ndarray, across: np.ndarray, radius: np.ndarray, t: np.ndarray
                      ) -> np.ndarray:
    """First-order distance g / |grad g| of the implicit ellipse (exact at the edge, which is
    all the anti-aliasing needs); q = 2 + t, semi-axes R sqrt(q) and R / sqrt(q)."""
    q = 2.0 + t
    a1, a2 = _col(radius * np.sqrt(q)), _col(radius / np.sqrt(q))
    g = (along / a1) ** 2 + (across / a2) ** 2 - 1
    grad = 2 * np.hypot(along / a1**2, across / a2**2)
    return g / np.maximum(grad, 1e-6)


def _shape_distance(rng: np.random.Generator, orientation: np.ndarray) -> np.ndarray:
    """Signed distance (B, 32, 32) to a bar or ellipse of area pi R^2, long axis by class."""
    b = len(orientation)
    cx, cy = _uniform(rng, 10, 22, b), _uniform(rng, 10, 22, b)
    theta = orientation * (np.pi / 2) + np.deg2rad(_uniform(rng, -10, 10, b))
    radius = _uniform(rng, 7, 9, b)
    t = _uniform(rng, 0, 1, b)
    is_bar = rng.random(b) < 0.5
    dx, dy = _X - _col(cx), _Y - _col(cy)
    cos, sin = _col(np.cos(theta)), _col(np.sin(theta))
    along, across = dx * cos + dy * sin, dy * cos - dx * sin
    distance = np.empty_like(along)
    for family, rows in ((_bar_distance, is_bar), (_ellipse_distance, ~is_bar)):
        distance[rows] = family(along[rows], across[rows], radius[rows], t[rows])
    return distance


def _checker(rng: np.random.Generator, level: np.ndarray, cell_jitter: float) -> np.ndarray:
    """Axis-aligned 0/1 checkerboard, cell 1.5^j x U(1 -+ jitter) px, random phase."""
    b = len(level)
    jitter = _uniform(rng, 1 - cell_jitter, 1 + cell_jitter, b)
    cell = _col(1.5 ** level.astype(np.float32) * jitter)
    px, py = (_col(_uniform(rng, 0, 2, b)) * cell for _ in range(2))
    parity = np.floor((_X + px) / cell) + np.floor((_Y + py) / cell)
    return (parity % 2).astype(np.float32)


def _hued(rng: np.random.Generator, luminance: np.ndarray) -> np.ndarray:
    """(B,) luminances -> (B, 3) colours with a random hue of saturation U(0, 0.35)."""
    b = len(luminance)
    saturation = _uniform(rng, 0, 0.35, b)
    hue = _uniform(rng, 0, 2 * np.pi, b)
    chroma = np.stack([np.cos(hue), np.sin(hue)], axis=1) @ _CHROMA_BASIS
    return luminance[:, None] + saturation[:, None] * chroma


def _render_chunk(
    labels: np.ndarray, rng: np.random.Generator, n_distractors: int, noise: float,
    cell_jitter: float,
) -> np.ndarray:
    b = len(labels)
    mask = np.clip(0.5 - _shape_distance(rng, labels % 2), 0, 1)
    mask *= _checker(rng, labels // 2, cell_jitter)

    bg_lum = _uniform(rng, 0.15, 0.35, b)
    fg_lum = bg_lum + _uniform(rng, 0.30, 0.50, b)
    bg, fg = _hued(rng, bg_lum), _hued(rng, fg_lum)
    img = bg[:, :, None, None] + mask[:, None] * (fg - bg)[:, :, None, None]

    for _ in range(n_distractors):
        cx, cy = _uniform(rng, 0, SIZE, b), _uniform(rng, 0, SIZE, b)
        radius = _uniform(rng, 1.5, 3, b)
        colour = rng.random((b, 3), dtype=np.float32)
        edge = np.hypot(_X - _col(cx), _Y - _col(cy)) - _col(radius)
        alpha = np.clip(0.5 - edge, 0, 1)[:, None]
        img += alpha * (colour[:, :, None, None] - img)

    # Uniform noise on [-h, h] has std h / sqrt(3).
    half_width = np.float32(noise * np.sqrt(3.0))
    img += (rng.random(img.shape, dtype=np.float32) - np.float32(0.5)) * (2 * half_width)
    img *= 255
    return np.clip(np.rint(img, out=img), 0, 255, out=img).astype(np.uint8)


def _render_split(
    n: int, rng: np.random.Generator, n_distractors: int, noise: float, cell_jitter: float
) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.permutation(np.arange(n, dtype=np.int64) % N_CLASSES)
    images = np.empty((n, 3, SIZE, SIZE), dtype=np.uint8)
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        images[start:stop] = _render_chunk(labels[start:stop], rng, n_distractors, noise,
                                           cell_jitter)
    return images, labels


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def make_synthetic(
    n_train: int, n_val: int, seed: int, *, n_distractors: int = 1, noise: float = 0.10,
    cell_jitter: float = 0.25,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (x_train, y_train, x_val, y_val): uint8 (N, 3, 32, 32) images, int64 labels.

    Labels are exactly balanced (``arange(n) % 10`` shuffled). Train and validation come from
    independent random streams derived from ``seed``; the same arguments give identical bytes.
    Knobs: ``n_distractors`` (more lowers the host's accuracy), ``noise`` (per-pixel std;
    >= 0.2 pushes the host to chance), ``cell_jitter`` (texture-size spread; caps every model).
    """
    _check_int("n_train", n_train, 1)
    _check_int("n_val", n_val, 1)
    _check_int("seed", seed, 0)
    _check_int("n_distractors", n_distractors, 0)
    if not 0 <= noise <= 1:
        raise ValueError(f"noise must be in [0, 1], got {noise!r}")
    if not 0 <= cell_jitter < 1:
        raise ValueError(f"cell_jitter must be in [0, 1), got {cell_jitter!r}")
    train_seq, val_seq = np.random.SeedSequence(seed).spawn(2)
    knobs = (n_distractors, float(noise), float(cell_jitter))
    x_train, y_train = _render_split(n_train, np.random.default_rng(train_seq), *knobs)
    x_val, y_val = _render_split(n_val, np.random.default_rng(val_seq), *knobs)
    return x_train, y_train, x_val, y_val
