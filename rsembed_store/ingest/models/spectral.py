"""``spectral``: robust band statistics and spectral indices (no learning, no weights).

Layers (11): the six bands B02 (blue), B03 (green), B04 (red), B08 (NIR),
B11 (SWIR1), B12 (SWIR2) as reflectance, then five normalised differences
``(a - b) / (a + b)`` per pixel, clipped to [-1, 1] (denominator floored at 1e-6):

* NDVI = (B08 - B04) / (B08 + B04)      vegetation
* NDWI = (B03 - B08) / (B03 + B08)      open water (McFeeters 1996)
* NDBI = (B11 - B08) / (B11 + B08)      built-up / bare (NDMI would be its negative)
* MNDWI = (B03 - B11) / (B03 + B11)     water, robust to built-up (Xu 2006)
* NBR = (B08 - B12) / (B08 + B12)       burn / moisture

Statistics (4) per layer over the usable pixels: median, p10, p90 and the
inter-quartile range p75 - p25 (linear-interpolated quantiles). D = 11 x 4 = 44,
in the order of :func:`feature_names` (layer-major: ``B02_median, B02_p10,
B02_p90, B02_iqr, B03_median, ...``).

Every value is standardised with fixed, declared constants (never per image):
``(value - CENTER[layer]) / SCALE[layer]`` for the quantiles and
``iqr / SCALE[layer]`` for the spread, so all dimensions have comparable ranges.

Outputs: ``pooled`` with pooling ``mean`` is the statistics over every usable
pixel of the (resized or tiled) ROI; pooling ``max`` is the per-dimension
maximum over the 8 x 8 px block cells of the grid. ``grid`` computes the same
44 statistics over each 8 x 8 px block of the model input (the last row/column of
blocks may be partial), north-up; blocks without usable pixels are NaN.

Metric ``l2``: after the fixed standardisation, Euclidean distance is a
diagonal-Mahalanobis distance between physical quantities; the vector's length
carries brightness and index levels (water vs. urban) and a place near the
prior centre has a near-zero vector whose direction would be noise under cosine.
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from ...model import ModelInfo
from ...specs import SensorSpec
from .base import OnTheFlyModel

BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")
INDICES = (  # name, a, b: (a - b) / (a + b)
    ("NDVI", "B08", "B04"),
    ("NDWI", "B03", "B08"),
    ("NDBI", "B11", "B08"),
    ("MNDWI", "B03", "B11"),
    ("NBR", "B08", "B12"),
)
LAYERS = BANDS + tuple(name for name, _, _ in INDICES)
STATS = ("median", "p10", "p90", "iqr")
QUANTILES = (0.10, 0.25, 0.50, 0.75, 0.90)
BLOCK_PX = 8
EPS = 1e-6
# fixed standardisation per layer (rough global priors of L2A land surfaces)
CENTER = np.array([0.06, 0.09, 0.09, 0.25, 0.20, 0.13, 0.3, -0.3, -0.1, -0.3, 0.2], np.float32)
SCALE = np.array([0.05, 0.05, 0.07, 0.10, 0.08, 0.08, 0.3, 0.3, 0.2, 0.3, 0.3], np.float32)


def feature_names() -> List[str]:
    """The name of every output dimension, in order."""
    return [f"{layer}_{stat}" for layer in LAYERS for stat in STATS]


def layers(x: np.ndarray) -> np.ndarray:
    """``(6, ...)`` band reflectances -> ``(11, ...)`` bands then indices, float32."""
    idx = {b: i for i, b in enumerate(BANDS)}
    out = [x[i] for i in range(len(BANDS))]
    for _, a, b in INDICES:
        va, vb = x[idx[a]], x[idx[b]]
        out.append(np.clip((va - vb) / np.maximum(va + vb, EPS), -1.0, 1.0))
    return np.stack(out).astype(np.float32)


def masked_quantiles(v: np.ndarray, qs) -> np.ndarray:
    """Quantiles along the last axis ignoring NaN (linear interpolation): ``(..., len(qs))``.
    Rows without any value give NaN."""
    s = np.sort(v, axis=-1)  # NaN sort last
    n = np.count_nonzero(~np.isnan(v), axis=-1)
    last = (np.maximum(n, 1) - 1)[..., None]
    pos = last * np.asarray(qs, np.float64)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, last)
    a, b = np.take_along_axis(s, lo, -1), np.take_along_axis(s, hi, -1)
    out = a + (b - a) * (pos - lo)
    out[n == 0] = np.nan
    return out.astype(np.float32)


def _stats(v: np.ndarray) -> np.ndarray:
    """``(11, ..., N)`` samples -> ``(44, ...)`` standardised statistics."""
    q = masked_quantiles(v, QUANTILES)  # (11, ..., 5)
    stats = np.stack([q[..., 2], q[..., 0], q[..., 4], q[..., 3] - q[..., 1]], axis=1)  # (11, 4, ...)
    tail = (1,) * (stats.ndim - 2)
    center = np.zeros((len(LAYERS), len(STATS)), np.float32)
    center[:, :3] = CENTER[:, None]  # the iqr is a spread: scaled, not centred
    z = (stats - center.reshape(center.shape + tail)) / SCALE.reshape((-1, 1) + tail)
    return z.reshape((-1,) + stats.shape[2:]).astype(np.float32)


class SpectralModel(OnTheFlyModel):
    """Per-band robust statistics and spectral indices of Sentinel-2 L2A reflectance."""

    info = ModelInfo(
        id="spectral",
        revision="spectral-v1",
        kind="on_the_fly",
        dim=len(LAYERS) * len(STATS),
        metric="l2",
        outputs=("pooled", "grid"),
        temporal="composite",
        default_sensor=SensorSpec("s2-l2a", BANDS, scale_m=10, cloudy_pct=30, composite="median"),
        providers=("local", "gee"),
        input_size=64,
        seconds_per_request=0.03,  # wall seconds on 2 cores, demo scene (docs/ingest.md)
        description=(
            "Median, p10, p90 and IQR of 6 S2 bands and 5 indices (NDVI, NDWI, NDBI, MNDWI, NBR), "
            "standardised by fixed constants; grid = the same statistics per 8x8 px block"
        ),
        params={
            "layers": list(LAYERS),
            "stats": list(STATS),
            "indices": {name: f"({a}-{b})/({a}+{b})" for name, a, b in INDICES},
            "block_px": BLOCK_PX,
            "center": CENTER.tolist(),
            "scale": SCALE.tolist(),
            "eps": EPS,
        },
    )
    band_note = "; " + ", ".join(f"{n} uses {a},{b}" for n, a, b in INDICES)

    @staticmethod
    def feature_names() -> List[str]:
        return feature_names()

    def features(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        h, w = mask.shape
        gh, gw = -(-h // BLOCK_PX), -(-w // BLOCK_PX)
        lay = np.full((len(LAYERS), gh * BLOCK_PX, gw * BLOCK_PX), np.nan, np.float32)
        lay[:, :h, :w] = np.where(mask, layers(x), np.nan)
        blocks = lay.reshape(len(LAYERS), gh, BLOCK_PX, gw, BLOCK_PX).transpose(0, 1, 3, 2, 4)
        return _stats(blocks.reshape(len(LAYERS), gh, gw, BLOCK_PX * BLOCK_PX))

    def pool(self, x: np.ndarray, mask: np.ndarray, pooling: str) -> Optional[np.ndarray]:
        if pooling == "max":
            return super().pool(x, mask, pooling)
        if not mask.any():
            return None
        return _stats(layers(x[:, mask]))
