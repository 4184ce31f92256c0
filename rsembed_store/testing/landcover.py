"""The land-cover model behind the synthetic scenes: classes, spectra, phenology, noise and layout.

Pure functions of a :class:`~rsembed_store.testing.scenes.SceneSpec` and a seed
(every part draws from its own random stream, :func:`_rng`), so the same spec
paints the same scene on any run. :mod:`rsembed_store.testing.scenes` renders and
writes what these functions paint.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Tuple

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .scenes import SceneSpec

CLASSES: Tuple[str, ...] = ("water", "forest", "cropland", "urban", "bare_soil", "grassland")
BANDS: Tuple[str, ...] = ("B02", "B03", "B04", "B08", "B11", "B12")
S1_BANDS: Tuple[str, ...] = ("VV", "VH")

# RNG stream ids, so that the parts of the scene draw from independent streams
_S_LAYOUT, _S_RIVER, _S_TEXTURE, _S_PLAN, _S_DATE = 1, 2, 3, 4, 100
_S_S1 = 200  # the Sentinel-1 companion's speckle (its own stream: the optical files do not change)

# ------------------------------------------------------------------ class model
# Reflectance (0-1) per band in BANDS order: (dormant, peak) spectra; the mix
# follows a phenology weight g in [0, 1] (a Gaussian in day-of-year).
_SPECTRA = {
    "water": ((0.040, 0.050, 0.035, 0.020, 0.012, 0.008),) * 2,
    "forest": (
        (0.026, 0.040, 0.026, 0.240, 0.130, 0.062),
        (0.022, 0.045, 0.020, 0.320, 0.140, 0.060),
    ),
    "cropland": (
        (0.070, 0.090, 0.110, 0.170, 0.250, 0.190),
        (0.030, 0.065, 0.030, 0.420, 0.200, 0.095),
    ),
    "urban": ((0.090, 0.100, 0.110, 0.160, 0.210, 0.190),) * 2,
    "bare_soil": ((0.090, 0.120, 0.160, 0.210, 0.300, 0.260),) * 2,
    "grassland": (
        (0.050, 0.075, 0.080, 0.200, 0.230, 0.150),
        (0.035, 0.070, 0.045, 0.300, 0.200, 0.110),
    ),
}
# Phenology: (peak day-of-year in the north, per-patch jitter of the peak, width in days)
_PHENOLOGY = {
    "forest": (190.0, 10.0, 70.0),
    "cropland": (190.0, 25.0, 40.0),
    "grassland": (170.0, 15.0, 80.0),
}
_CLASS_WEIGHTS = {
    "water": 0.04, "forest": 0.24, "cropland": 0.32, "urban": 0.10, "bare_soil": 0.08, "grassland": 0.22,
}
# Relative amplitude of the static texture and of the per-date speckle.
_TEXTURE = {
    "water": 0.03, "forest": 0.08, "cropland": 0.06, "urban": 0.16, "bare_soil": 0.08, "grassland": 0.07,
}
_SPECKLE = {
    "water": 0.02, "forest": 0.025, "cropland": 0.02, "urban": 0.05, "bare_soil": 0.02, "grassland": 0.02,
}
_CLOUD_SPECTRUM = (0.44, 0.43, 0.44, 0.46, 0.30, 0.21)
_COLORS = {
    0: (0, 0, 0, 0),
    1: (31, 120, 180, 255),
    2: (27, 100, 40, 255),
    3: (230, 200, 60, 255),
    4: (200, 40, 40, 255),
    5: (160, 120, 80, 255),
    6: (140, 210, 110, 255),
}
# Backscatter in dB per class, (VV, VH): (dormant, peak) as for the optical spectra.
_BACKSCATTER_DB = {
    "water": ((-22.0, -28.0),) * 2,
    "forest": ((-8.0, -14.0), (-7.0, -12.5)),
    "cropland": ((-13.0, -21.0), (-9.0, -15.0)),
    "urban": ((-4.0, -11.0),) * 2,
    "bare_soil": ((-14.0, -22.0),) * 2,
    "grassland": ((-11.0, -18.0), (-9.5, -16.0)),
}
_S1_SPECKLE_DB = 0.8


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


def _circ_dist(a: float, b: float, period: float = 365.25) -> float:
    d = abs(a - b) % period
    return min(d, period - d)


# ------------------------------------------------------------------ noise


def _interp_weights(n_out: int, cell: float) -> Tuple[np.ndarray, np.ndarray, int]:
    t = (np.arange(n_out, dtype=np.float64) + 0.5) / cell
    i0 = np.floor(t).astype(np.intp)
    f = t - i0
    w = (f * f * (3.0 - 2.0 * f)).astype(np.float32)  # smoothstep
    return i0, w, int(i0[-1]) + 2


def _value_noise(rng: np.random.Generator, shape: Tuple[int, int], cell: float) -> np.ndarray:
    """Smooth random field (value noise, smoothstep interpolation), float32.

    Uses gathers and element-wise arithmetic only (no BLAS), so it is bit-stable.
    """
    h, w = shape
    cell = max(float(cell), 1.0)
    iy, wy, gh = _interp_weights(h, cell)
    ix, wx, gw = _interp_weights(w, cell)
    grid = rng.standard_normal((gh, gw), dtype=np.float32)
    rows = grid[iy] * (1.0 - wy)[:, None] + grid[iy + 1] * wy[:, None]
    return rows[:, ix] * (1.0 - wx)[None, :] + rows[:, ix + 1] * wx[None, :]


def _fractal(rng: np.random.Generator, shape: Tuple[int, int], cell: float, octaves: int = 3) -> np.ndarray:
    """Sum of value-noise octaves, normalised to zero mean and unit variance."""
    out = np.zeros(shape, dtype=np.float32)
    amp = 1.0
    for _ in range(octaves):
        out += np.float32(amp) * _value_noise(rng, shape, cell)
        cell /= 2.0
        amp *= 0.5
    out -= out.mean(dtype=np.float64)
    std = float(out.std(dtype=np.float64))
    if std > 0:
        out /= np.float32(std)
    return out


def _noise_1d(rng: np.random.Generator, n: int, cell: float) -> np.ndarray:
    return _value_noise(rng, (n, 1), cell)[:, 0]


# ------------------------------------------------------------------ land cover


def _seed_points(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Evenly spread points in [0, size)^2 (Mitchell's best-candidate sampling)."""
    pts = np.empty((n, 2), dtype=np.float64)
    pts[0] = rng.uniform(0, size, 2)
    for i in range(1, n):
        cand = rng.uniform(0, size, (12, 2))
        d2 = ((cand[:, None, :] - pts[None, :i, :]) ** 2).sum(-1).min(1)
        pts[i] = cand[int(np.argmax(d2))]
    return pts


def _river_mask(spec: SceneSpec) -> np.ndarray:
    rng = _rng(spec.seed, _S_RIVER)
    n = spec.size_px
    x0 = rng.uniform(0.25, 0.75) * n
    a1, l1, p1 = rng.uniform(0.04, 0.10) * n, rng.uniform(0.6, 1.3) * n, rng.uniform(0, 2 * math.pi)
    a2, l2, p2 = rng.uniform(0.01, 0.03) * n, rng.uniform(0.15, 0.3) * n, rng.uniform(0, 2 * math.pi)
    half_w = max(1.5, rng.uniform(50.0, 110.0) / spec.scale_m / 2.0)
    vertical = bool(rng.integers(0, 2))
    wobble = _noise_1d(rng, n, max(n / 8.0, 2.0)) * np.float32(0.02 * n)
    bank = 1.0 + 0.15 * _noise_1d(rng, n, max(n / 16.0, 2.0)).astype(np.float64)
    t = np.arange(n, dtype=np.float64) + 0.5
    k1, k2 = 2 * math.pi / l1, 2 * math.pi / l2
    centre = np.array(
        [x0 + a1 * math.sin(k1 * v + p1) + a2 * math.sin(k2 * v + p2) for v in t]
    ) + wobble.astype(np.float64)
    slope = np.array([a1 * k1 * math.cos(k1 * v + p1) + a2 * k2 * math.cos(k2 * v + p2) for v in t])
    slope += np.gradient(wobble.astype(np.float64))
    stretch = np.sqrt(1.0 + slope * slope)  # |dx| across a sloping line -> perpendicular distance
    across = np.arange(n, dtype=np.float64)[None, :] + 0.5
    mask = np.abs(across - centre[:, None]) <= (half_w * bank * stretch)[:, None]
    return mask.T if not vertical else mask


def _layout(spec: SceneSpec) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Patch id per pixel (int32; id n_patches = river), class value and peak day per patch id."""
    rng = _rng(spec.seed, _S_LAYOUT)
    n, size = spec.n_patches, spec.size_px
    pts = _seed_points(rng, n, size).astype(np.float32)
    spacing = size / math.sqrt(n)
    warp_amp = np.float32(0.22 * spacing)
    wx = _fractal(rng, (size, size), spacing / 1.5, 2) * warp_amp
    wy = _fractal(rng, (size, size), spacing / 1.5, 2) * warp_amp
    coords = np.arange(size, dtype=np.float32) + np.float32(0.5)
    px = coords[None, :] + wx
    py = coords[:, None] + wy
    del wx, wy
    best = np.full((size, size), np.inf, dtype=np.float32)
    pid = np.zeros((size, size), dtype=np.int32)
    tmp = np.empty_like(best)
    for i in range(n):
        dx = px - pts[i, 0]
        np.multiply(dx, dx, out=tmp)
        dx = py - pts[i, 1]
        tmp += dx * dx
        closer = tmp < best
        best[closer] = tmp[closer]
        pid[closer] = i
    del px, py, best, tmp

    # classes: every class once (if there are enough patches), then weighted draws
    values = np.empty(n + 1, dtype=np.uint8)
    forced = rng.permutation(len(CLASSES))[: min(n, len(CLASSES))] + 1
    order = rng.permutation(n)
    weights = np.array([_CLASS_WEIGHTS[c] for c in CLASSES], dtype=np.float64)
    drawn = rng.choice(len(CLASSES), size=n, p=weights / weights.sum()) + 1
    values[:n] = drawn
    values[order[: len(forced)]] = forced
    values[n] = CLASSES.index("water") + 1
    peak_jitter = rng.uniform(-1.0, 1.0, n + 1)
    brightness = np.clip(1.0 + 0.06 * rng.standard_normal(n + 1), 0.85, 1.15)

    pid[_river_mask(spec)] = n
    return pid, values, peak_jitter, brightness


def _phenology(class_name: str, doy: float, jitter: float, south: bool) -> float:
    if class_name not in _PHENOLOGY:
        return 0.0
    peak, spread, width = _PHENOLOGY[class_name]
    peak = peak + jitter * spread + (182.6 if south else 0.0)
    d = _circ_dist(doy, peak)
    return math.exp(-0.5 * (d / width) ** 2)


def _wedge(rng: np.random.Generator, size: int) -> np.ndarray:
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    u, v = c[None, :], c[:, None]
    corner = int(rng.integers(0, 4))
    if corner & 1:
        u = 1.0 - u
    if corner & 2:
        v = 1.0 - v
    a, b = rng.uniform(0.7, 1.4, 2)
    reach = rng.uniform(0.35, 0.6)
    return (u * np.float32(a) + v * np.float32(b)) < np.float32(reach)
