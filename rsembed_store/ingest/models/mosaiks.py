"""``mosaiks``: random convolutional features (Rolf et al. 2021, Nat. Commun. 12:4392,
"A generalizable and accessible approach to machine learning with global satellite imagery").

Recipe (all of it is fixed by the revision string ``mosaiks-k{K}-s{k}-seed{S}-b{bias}-v1``):

1. Input: the six S2 L2A bands B02, B03, B04, B08, B11, B12 as reflectance,
   normalised per band by fixed constants ``(x - MEAN) / STD`` (never per image).
2. Filters: ``K`` filters of ``C x k x k`` (C = 6, default K = 256, k = 3). The paper
   samples its filters as (whitened) patches of the imagery; here they are
   standard-normal draws made of a counter-based generator (SplitMix64 hashes
   of ``seed`` and the entry index -> Box-Muller), each scaled to unit L2 norm.
   The draws do not depend on numpy's random streams, which may change between versions.
3. Valid convolution (im2col with ``sliding_window_view`` + float32 matmuls):
   one response ``r`` per filter at each position whose ``k x k`` window is
   entirely usable (other positions are ignored).
4. Two features per filter, as in the paper: ``relu(r - bias)`` then
   ``relu(-r - bias)``, so D = 2K (the first K dimensions are the positive
   responses of filters 0..K-1, the next K the negative ones). Default bias 0.5
   (the paper uses 1 on whitened patches; with 0.5 and these unit-norm filters,
   40-60 % of the pooled features of the test land covers are non-zero).
5. ``pooled``: the mean (paper) or max of those features over the usable positions.
   ``grid``: the features averaged over 8 x 8 px blocks of the model input
   (a position belongs to the block holding its window's centre pixel),
   north-up; blocks without a usable position are NaN.

Metric ``l2``, as in the paper's ridge regressions on the raw features.
Other parameters make another embedding space: :meth:`MosaiksModel.variant`.
"""

from __future__ import annotations

from typing import ClassVar, Optional, Tuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ...errors import SpecError
from ...model import ModelInfo
from ...specs import SensorSpec
from .base import OnTheFlyModel

BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")
MEAN = np.array([0.06, 0.09, 0.09, 0.25, 0.20, 0.13], np.float32)
STD = np.array([0.05, 0.05, 0.07, 0.10, 0.08, 0.08], np.float32)
BLOCK_PX = 8
_CHUNK = 1024  # positions per matmul in pool()
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(counter: np.ndarray) -> np.ndarray:
    z = counter * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def filter_bank(n_filters: int, channels: int, kernel: int, seed: int) -> np.ndarray:
    """``(C*k*k, K)`` float32 matrix of unit-norm Gaussian filters (rows in ``(c, dy, dx)`` order)."""
    n = n_filters * channels * kernel * kernel
    base = np.uint64((seed * 0x2545F4914F6CDD1D) & 0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        bits = _splitmix64((np.arange(2 * n, dtype=np.uint64) + np.uint64(1)) ^ base) & _M64
    u = ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53  # (0, 1)
    gauss = np.sqrt(-2.0 * np.log(u[:n])) * np.cos(2.0 * np.pi * u[n:])
    w = gauss.reshape(n_filters, channels * kernel * kernel)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    return np.ascontiguousarray(w.T.astype(np.float32))


def _info(model_id: str, n_filters: int, kernel: int, seed: int, bias: float) -> ModelInfo:
    return ModelInfo(
        id=model_id,
        revision=f"mosaiks-k{n_filters}-s{kernel}-seed{seed}-b{bias:g}-v1",
        kind="on_the_fly",
        dim=2 * n_filters,
        metric="l2",
        outputs=("pooled", "grid"),
        temporal="composite",
        default_sensor=SensorSpec("s2-l2a", BANDS, scale_m=10, cloudy_pct=30, composite="median"),
        providers=("local", "gee"),
        input_size=64,
        seconds_per_request=0.05,  # wall seconds on 2 cores, demo scene
        description=(
            f"MOSAIKS random convolutional features: {n_filters} random {kernel}x{kernel}x6 filters, "
            f"relu(+r-{bias:g}) and relu(-r-{bias:g}), averaged over the image (grid: 8x8 px blocks)"
        ),
        citation="Rolf et al. 2021, Nature Communications 12:4392, doi:10.1038/s41467-021-24638-z",
        params={
            "n_filters": n_filters, "kernel": kernel, "seed": seed, "bias": bias,
            "features_per_filter": 2, "filters": "unit-norm Gaussian (SplitMix64 + Box-Muller)",
            "norm_mean": MEAN.tolist(), "norm_std": STD.tolist(), "block_px": BLOCK_PX,
        },
    )


class MosaiksModel(OnTheFlyModel):
    """MOSAIKS-style random convolutional features of S2 L2A reflectance (D = 2K = 512)."""

    n_filters: ClassVar[int] = 256
    kernel: ClassVar[int] = 3
    seed: ClassVar[int] = 0
    bias: ClassVar[float] = 0.5
    info = _info("mosaiks", 256, 3, 0, 0.5)

    def __init__(self, config=None):
        super().__init__(config)
        for name in ("n_filters", "kernel", "seed", "bias"):
            if name in self.config and self.config[name] != getattr(self, name):
                raise SpecError(
                    f"{self.info.id} config {name}={self.config[name]!r} differs from the declared "
                    f"{name}={getattr(self, name)!r} of revision {self.info.revision!r}: parameters that "
                    "change the vectors make another space; use MosaiksModel.variant(...)"
                )
        self.weights = filter_bank(self.n_filters, len(BANDS), self.kernel, self.seed)

    @classmethod
    def variant(cls, *, n_filters: int = 256, kernel: int = 3, seed: int = 0, bias: float = 0.5,
                model_id: Optional[str] = None) -> type:
        """A subclass for other parameters: its own revision, hence its own embedding space.
        ``model_id`` defaults to ``mosaiks-k{K}-s{k}-seed{S}-b{bias}``; register it under that name
        (``rsembed_store.registry.register_model``) to request it."""
        if min(n_filters, kernel) < 1 or seed < 0 or not np.isfinite(bias):
            raise ValueError(f"variant needs n_filters, kernel >= 1, seed >= 0, finite bias; got "
                             f"{n_filters}, {kernel}, {seed}, {bias}")
        info = _info(model_id or f"mosaiks-k{n_filters}-s{kernel}-seed{seed}-b{bias:g}",
                     n_filters, kernel, seed, float(bias))
        attrs = dict(n_filters=n_filters, kernel=kernel, seed=seed, bias=float(bias), info=info)
        return type(f"MosaiksModel_{info.revision.replace('-', '_').replace('.', 'p')}", (cls,), attrs)

    def _responses(self, x: np.ndarray, mask: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """``(h', w', K)`` filter responses at every valid position and which positions are usable."""
        k = self.kernel
        c, h, w = x.shape
        if h < k or w < k:
            return np.zeros((0, 0, self.n_filters), np.float32), np.zeros((0, 0), bool)
        z = (x - MEAN[:, None, None]) / STD[:, None, None]
        win = sliding_window_view(z, (k, k), axis=(1, 2))  # (C, h', w', k, k)
        hp, wp = win.shape[1:3]
        cols = win.transpose(1, 2, 0, 3, 4).reshape(hp * wp, c * k * k)
        ok = sliding_window_view(mask, (k, k)).all(axis=(-2, -1))
        return cols, ok

    def pool(self, x: np.ndarray, mask: np.ndarray, pooling: str) -> Optional[np.ndarray]:
        cols, ok = self._responses(x, mask)
        if not ok.any():
            return None
        cols = cols if ok.all() else cols[ok.ravel()]
        b, nf = np.float32(self.bias), self.n_filters
        # rows in chunks: large temporaries cost more than the arithmetic
        hi, lo = np.full(nf, -np.inf, np.float32), np.full(nf, np.inf, np.float32)
        pos, neg = np.zeros(nf, np.float64), np.zeros(nf, np.float64)
        for s in range(0, cols.shape[0], _CHUNK):
            r = cols[s:s + _CHUNK] @ self.weights
            if pooling == "max":  # max relu(r - b) = relu(max r - b); max relu(-r - b) = relu(-min r - b)
                np.maximum(hi, r.max(axis=0), out=hi)
                np.minimum(lo, r.min(axis=0), out=lo)
                continue
            t = r - b
            pos += np.maximum(t, 0.0, out=t).sum(axis=0)
            np.add(r, b, out=t)
            neg -= np.minimum(t, 0.0, out=t).sum(axis=0)
        if pooling == "max":
            return np.concatenate([np.maximum(hi - b, 0.0), np.maximum(-lo - b, 0.0)]).astype(np.float32)
        return (np.concatenate([pos, neg]) / cols.shape[0]).astype(np.float32)

    def features(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        h, w = mask.shape
        gh, gw, nf, b = -(-h // BLOCK_PX), -(-w // BLOCK_PX), self.n_filters, np.float32(self.bias)
        grid = np.full((2 * nf, gh, gw), np.nan, np.float32)
        cols, ok = self._responses(x, mask)
        if not ok.any():
            return grid
        hp, wp = ok.shape
        half = self.kernel // 2  # a position belongs to the block of its window's centre pixel
        row_block = (np.arange(hp) + half) // BLOCK_PX
        rx = ((np.arange(wp) + half) // BLOCK_PX == np.arange(gw)[:, None]).astype(np.float32)  # (gw, wp)
        for a in np.unique(row_block):  # one band of block rows at a time
            i0, i1 = np.searchsorted(row_block, [a, a + 1])
            m = ok[i0:i1].astype(np.float32)[..., None]  # (ni, wp, 1)
            count = rx @ m.sum(axis=0)[:, 0]
            if not count.any():
                continue
            r = (cols[i0 * wp:i1 * wp] @ self.weights).reshape(i1 - i0, wp, nf)
            pos = (np.maximum(r - b, 0.0) * m).sum(axis=0)  # (wp, K)
            neg = (np.maximum(-r - b, 0.0) * m).sum(axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                grid[:nf, a] = np.where(count > 0, (rx @ pos).T / count, np.nan)
                grid[nf:, a] = np.where(count > 0, (rx @ neg).T / count, np.nan)
        return grid
