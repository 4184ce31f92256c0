"""A deterministic, Sentinel-2-L2A-like source directory of real Cloud-Optimized GeoTIFFs.

The demo, the tests and the benchmarks need imagery whose ground truth is known, so
that anyone can measure whether an embedding search finds the right kind of place.
:func:`generate_scene` paints a square scene of land-cover patches (plus a river),
renders one multi-band L2A-like acquisition per date with seasonal vegetation,
texture, clouds and a no-data wedge, and writes it to disk together with the label
raster it was painted from. Everything is a pure function of :class:`SceneSpec`
(the ``seed`` included): the same spec gives the same pixels, on any run.

On-disk layout (a contract: the local imagery provider reads it)
=================================================================
::

    out_dir/
      manifest.json                       written last; its presence means "complete"
      scenes/S2SYN_<YYYYMMDD>_<seed>.tif  one multi-band COG per acquisition date
      truth/labels.tif                    uint8 COG, label per pixel

``manifest.json`` (JSON object, paths relative to ``out_dir`` with ``/``):

* ``format`` = ``"rsembed_store.synthetic_s2"``, ``format_version`` = 1
* ``spec``: the :class:`SceneSpec` fields (``dataclasses.asdict``)
* ``crs``: ``"EPSG:326zz"`` (north) or ``"EPSG:327zz"`` (south), the UTM zone of
  the centre (standard 6-degree zones, no Norway/Svalbard exceptions)
* ``transform``: 6 numbers in GDAL order ``[x0, xres, 0, y0, 0, -yres]``
  (``affine.Affine.from_gdal(*transform)``); north-up, square pixels of
  ``scale_m`` metres, origin a multiple of ``scale_m`` like real S2 tiles
* ``width``, ``height`` (pixels, equal), ``bounds`` ``[left, bottom, right, top]``
  in the CRS, ``bounds_lonlat`` ``[west, south, east, north]`` (densified; west >
  east when the scene straddles the antimeridian), ``center_lonlat`` ``[lon, lat]``
* ``dates``: ``["YYYY-MM-DD", ...]`` ascending; date ``k`` of ``n`` is day-of-year
  ``round((k + 0.5) * days_in_year / n)`` of ``spec.year`` (no jitter)
* ``bands``: :data:`BANDS`; ``classes``: :data:`CLASSES` (label value = index + 1)
* ``boa_scale`` 0.0001, ``boa_offset`` 0, ``nodata`` 0
* ``files``: ``{"labels": "truth/labels.tif", "scenes": [path, ...]}`` (same
  order as ``dates``)
* ``scenes``: one object per date, ``{"date", "path", "cloudy_pixel_percentage",
  "nodata_pixel_percentage"}`` (the same values as the file tags)

Each scene file is a COG (``LAYOUT=COG``), GeoTIFF-readable by any GDAL: int16, 6
bands in :data:`BANDS` order, ``nodata=0``, band descriptions = band names (band
tags ``BAND_NAME`` and ``CENTRAL_WAVELENGTH_NM`` too), pixel-interleaved, tiled
256x256 (512x512 when ``size_px >= 2048``; scenes under 512 px get a smaller
power-of-two tile so that there are at least 2x2 tiles), DEFLATE with horizontal
predictor, internal overviews at factors 2, 4 and 8 (average resampling, which
skips no-data). Dataset tags::

    ACQUISITION_DATE=YYYY-MM-DD      CLOUDY_PIXEL_PERCENTAGE=<float 0-100>
    SPACECRAFT_NAME=SYNTHETIC        PROCESSING_LEVEL=L2A
    BOA_SCALE=0.0001                 BOA_OFFSET=0
    NODATA_PIXEL_PERCENTAGE=<float 0-100>    SYNTHETIC_SEED=<seed>

Reflectance = DN * 1e-4 (BOA_OFFSET is 0 here, unlike post-2022 ESA products
which use -1000). Valid DN lie in 1..10000; DN 0 in all six bands marks no data.
``CLOUDY_PIXEL_PERCENTAGE`` is the exact percentage of *valid* pixels that are
cloud; every cloud pixel is bright in the visible bands (B02, B03 and B04 all
>= 2000 DN) while every clear pixel has B02 <= 1700 DN, so a B02 threshold of
1800 DN recovers the cloud mask exactly. ``NODATA_PIXEL_PERCENTAGE`` is over all
pixels. Both are rounded to 4 decimals.

``truth/labels.tif``: uint8 COG on the same grid, ``nodata=0``, values 1..6 =
:data:`CLASSES` (every pixel of the scene is labelled), a colour table, tags
``CLASS_<value>=<name>``, overviews 2, 4, 8 (mode resampling).

Content
=======
* ``n_patches`` land-cover patches: a Voronoi tessellation of evenly spread seed
  points (best-candidate sampling) with domain-warped, noisy boundaries; each
  patch gets a class (each class goes to at least one patch when ``n_patches >= 6``,
  the rest are weighted draws favouring cropland, forest and grassland), and a
  meandering river (water, 50-110 m and at least 3 pixels wide) crosses the scene
  edge to edge. Patches are ``size_px * scale_m / sqrt(n_patches)`` across: ~1.3 km
  with the defaults, where ~80 % of 250 m cells are >= 80 % one class.
* Per-class L2A reflectance spectra; forest, cropland and grassland follow a
  phenology curve peaking in (local) summer, cropland strongest (bare soil in
  winter, NDVI ~0.85 at peak, per-patch peak day); per-patch brightness, static
  per-pixel texture (stronger for urban), per-date speckle and illumination.
* Dates: the date closest to mid-July (day 196; mid-January south of the equator) is
  cloud-free and complete; with ``n_dates >= 2`` another date is 45-75 % cloudy,
  the rest are clear or 3-30 % cloudy; with ``n_dates >= 2`` one date that is not
  the clear summer date carries a diagonal no-data wedge in a corner (swath edge).
  Cloud shadows and snow are not simulated.

Sentinel-1 companion (additive)
===============================
:func:`generate_s1` writes Sentinel-1 GRD-like backscatter for the same scene, on
the same grid and dates, into ``out_dir/s1/S1SYN_<YYYYMMDD>_<seed>.tif``: float32
COGs with bands ``VV`` and ``VH`` in dB (no scaling), a per-class backscatter
(water darkest, urban brightest, vegetation following the same phenology as the
optical scene) plus per-date speckle, tags ``ACQUISITION_DATE``,
``INSTRUMENT_MODE=IW``, ``PRODUCT_TYPE=GRD`` and no cloud percentage. It draws
from its own random stream, so the optical files of :func:`generate_scene` are
unchanged by it (byte for byte).

Queries on the truth: :func:`read_labels`, :func:`label_at`,
:func:`class_fractions`. The latter two take either ``out_dir`` or the tuple that
:func:`read_labels` returns (a cache, for many calls).
"""

from __future__ import annotations

import calendar
import json
import math
import os
from dataclasses import asdict, dataclass, fields
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.enums import Resampling
from rasterio.features import rasterize
from rasterio.io import MemoryFile
from rasterio.warp import transform as _warp_transform
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from ..errors import SpecError
from ..ingest.grid import utm_crs

__all__ = [
    "CLASSES",
    "BANDS",
    "S1_BANDS",
    "SceneSpec",
    "generate_s1",
    "generate_scene",
    "ensure_scene",
    "read_labels",
    "label_at",
    "class_fractions",
]

CLASSES: Tuple[str, ...] = ("water", "forest", "cropland", "urban", "bare_soil", "grassland")
BANDS: Tuple[str, ...] = ("B02", "B03", "B04", "B08", "B11", "B12")

FORMAT = "rsembed_store.synthetic_s2"
FORMAT_VERSION = 1
BOA_SCALE = 1e-4
MANIFEST_NAME = "manifest.json"
LABELS_PATH = "truth/labels.tif"
SCENES_DIR = "scenes"

_WAVELENGTH_NM = {"B02": 492, "B03": 560, "B04": 665, "B08": 833, "B11": 1614, "B12": 2202}
_LONLAT = "EPSG:4326"

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
_CLEAR_B02_MAX = 0.17  # clear pixels: B02 <= 1700 DN; cloud pixels: B02, B03, B04 >= 2000 DN
_SUMMER_DOY_NORTH = 196.0  # mid-July

# RNG stream ids, so that the parts of the scene draw from independent streams
_S_LAYOUT, _S_RIVER, _S_TEXTURE, _S_PLAN, _S_DATE = 1, 2, 3, 4, 100
_S_S1 = 200  # the Sentinel-1 companion's speckle (its own stream: the optical files do not change)

S1_BANDS: Tuple[str, ...] = ("VV", "VH")
S1_DIR = "s1"
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


# ------------------------------------------------------------------ spec


@dataclass(frozen=True)
class SceneSpec:
    """What to generate. Frozen and hashable; validated on creation (raises SpecError)."""

    center_lon: float = 11.0
    center_lat: float = 46.0
    size_px: int = 1024
    scale_m: float = 10.0
    year: int = 2023
    n_dates: int = 6
    seed: int = 0
    n_patches: int = 60

    def __post_init__(self):
        def number(name, lo, hi):
            value = getattr(self, name)
            if isinstance(value, bool):
                raise SpecError(f"SceneSpec.{name} must be a number, got {value!r}")
            try:
                out = float(value)
            except (TypeError, ValueError):
                raise SpecError(f"SceneSpec.{name} must be a number, got {value!r}") from None
            if not (math.isfinite(out) and lo <= out <= hi):
                raise SpecError(f"SceneSpec.{name}={value!r} is out of range; accepted: [{lo}, {hi}]")
            object.__setattr__(self, name, out)

        def integer(name, lo, hi):
            value = getattr(self, name)
            ok = not isinstance(value, bool) and isinstance(value, (int, np.integer))
            if not ok and isinstance(value, float) and value.is_integer():
                ok = True
            if not ok or not lo <= int(value) <= hi:
                raise SpecError(f"SceneSpec.{name}={value!r} is not accepted; use an integer in [{lo}, {hi}]")
            object.__setattr__(self, name, int(value))

        number("center_lon", -180.0, 180.0)
        number("center_lat", -90.0, 90.0)
        integer("size_px", 32, 20_000)
        number("scale_m", 0.01, 10_000.0)
        integer("year", 1, 9999)
        integer("n_dates", 1, 366)
        integer("seed", 0, 2**63 - 1)
        integer("n_patches", 1, 10_000)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SceneSpec":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# ------------------------------------------------------------------ geometry


def _grid(spec: SceneSpec) -> Tuple[str, Affine]:
    crs = utm_crs(spec.center_lon, spec.center_lat)
    xs, ys = _warp_transform(_LONLAT, crs, [spec.center_lon], [spec.center_lat])
    cx, cy = float(xs[0]), float(ys[0])
    if not (math.isfinite(cx) and math.isfinite(cy)):
        raise SpecError(f"cannot project lon={spec.center_lon}, lat={spec.center_lat} to {crs}")
    s = spec.scale_m
    left = (round(cx / s) - spec.size_px // 2) * s
    top = (round(cy / s) + spec.size_px // 2) * s
    return crs, Affine(s, 0.0, left, 0.0, -s, top)


def _dates(spec: SceneSpec) -> List[date]:
    days = 366 if calendar.isleap(spec.year) else 365
    first = date(spec.year, 1, 1)
    out = []
    for k in range(spec.n_dates):
        doy = min(max(int(round((k + 0.5) * days / spec.n_dates)), 1), days)
        out.append(first + timedelta(days=doy - 1))
    return out


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


# ------------------------------------------------------------------ writing


def _block(spec: SceneSpec) -> int:
    """Tile side: 256 (512 from 2048 px up); tiny scenes get a smaller power of two so
    that there are always at least 2x2 tiles (readers then report the file as tiled)."""
    if spec.size_px >= 2048:
        return 512
    block = 256
    while block > 16 and block > spec.size_px // 2:
        block //= 2
    return block


def _write_cog(path: Path, array: np.ndarray, *, crs: str, transform: Affine, block: int,
               resampling: Resampling, tags: Mapping[str, str], descriptions: Sequence[str] = (),
               band_tags: Sequence[Mapping[str, str]] = (), colormap=None, predictor: int = 2) -> None:
    count, height, width = array.shape
    profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=array.dtype.name,
                   crs=crs, transform=transform, nodata=0, tiled=True, blockxsize=block,
                   blockysize=block)
    # Build a tiled GTiff with overviews in memory, then let GDAL's COG driver lay it
    # out (IFDs first, overviews before full resolution) into a temporary file that
    # replaces the target atomically: readers never see a half-written file.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with MemoryFile() as mem:
            with mem.open(**profile) as dst:
                dst.write(array)
                for i, name in enumerate(descriptions, start=1):
                    dst.set_band_description(i, name)
                for i, btags in enumerate(band_tags, start=1):
                    dst.update_tags(i, **btags)
                if colormap is not None:
                    dst.write_colormap(1, colormap)
                dst.update_tags(**tags)
                dst.build_overviews([2, 4, 8], resampling)
            with mem.open() as src:
                rasterio.shutil.copy(
                    src, str(tmp), driver="COG", COMPRESS="DEFLATE", PREDICTOR=str(predictor),
                    BLOCKSIZE=str(block), OVERVIEWS="FORCE_USE_EXISTING", NUM_THREADS="ALL_CPUS",
                )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _scene_name(d: date, seed: int) -> str:
    return f"S2SYN_{d.strftime('%Y%m%d')}_{seed}.tif"


def _plan_dates(spec: SceneSpec, dates: List[date]) -> Tuple[List[float], int, int]:
    """Cloud fraction per date, the clear summer date and the no-data date (-1: none)."""
    rng = _rng(spec.seed, _S_PLAN)
    n = len(dates)
    south = spec.center_lat < 0
    summer_doy = (_SUMMER_DOY_NORTH + (182.6 if south else 0.0)) % 365.25
    doys = [d.timetuple().tm_yday for d in dates]
    summer = min(range(n), key=lambda k: (_circ_dist(doys[k], summer_doy), k))
    cloud = [0.0] * n
    others = [k for k in range(n) if k != summer]
    nodata = -1
    if others:
        heavy = others[int(rng.integers(0, len(others)))]
        cloud[heavy] = float(rng.uniform(0.45, 0.75))
        for k in others:
            if k != heavy:
                cloud[k] = 0.0 if rng.uniform() < 0.5 else float(rng.uniform(0.03, 0.30))
        rest = [k for k in others if k != heavy]
        nodata = rest[int(rng.integers(0, len(rest)))] if rest else heavy
    return cloud, summer, nodata


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


def _render_date(
    spec: SceneSpec, k: int, doy: int, cloud_frac: float, with_nodata: bool, static
) -> Tuple[np.ndarray, float, float]:
    """DN array (6, H, W) int16 of date ``k``, its cloudy and no-data percentages."""
    pid, values, jitter, brightness, texture, speckle = static
    rng = _rng(spec.seed, _S_DATE, k)
    size = spec.size_px
    south = spec.center_lat < 0
    n_ids = len(values)
    # per-patch mean reflectance for this date
    table = np.empty((n_ids, len(BANDS)), dtype=np.float32)
    for i in range(n_ids):
        name = CLASSES[int(values[i]) - 1]
        dormant, peak = _SPECTRA[name]
        g = _phenology(name, doy, float(jitter[i]), south)
        table[i] = [(lo + g * (hi - lo)) * float(brightness[i]) for lo, hi in zip(dormant, peak)]
    illumination = np.float32(1.0 + rng.uniform(-0.03, 0.03))

    valid = ~_wedge(rng, size) if with_nodata else np.ones((size, size), dtype=bool)
    cloud = np.zeros((size, size), dtype=bool)
    cloud_pct = 0.0
    if cloud_frac > 0:
        field = _fractal(rng, (size, size), size / 4.0, 4)
        thr = np.float32(np.quantile(field[valid], 1.0 - cloud_frac))
        cloud = (field > thr) & valid
        thickness = np.clip((field - thr) / np.float32(0.6), 0.0, 1.0)
        alpha = np.float32(0.6) + np.float32(0.4) * thickness
        cloud_pct = 100.0 * float(cloud.sum()) / max(int(valid.sum()), 1)

    out = np.empty((len(BANDS), size, size), dtype=np.int16)
    for b in range(len(BANDS)):
        refl = table[:, b][pid]
        refl *= texture
        noise = rng.standard_normal((size, size), dtype=np.float32)
        noise *= speckle
        noise += illumination
        refl *= noise
        if b == 0:  # keep clear land below the cloud brightness (see module docstring)
            np.minimum(refl, np.float32(_CLEAR_B02_MAX), out=refl)
        if cloud_frac > 0:
            cloud_refl = np.float32(_CLOUD_SPECTRUM[b]) * (np.float32(0.9) + np.float32(0.2) * thickness)
            blended = refl * (1.0 - alpha) + cloud_refl * alpha
            refl = np.where(cloud, blended, refl)
        dn = np.rint(refl * np.float32(1.0 / BOA_SCALE))
        np.clip(dn, 1, 10000, out=dn)
        dn[~valid] = 0
        out[b] = dn.astype(np.int16)
    nodata_pct = 100.0 * (1.0 - float(valid.mean()))
    return out, cloud_pct, nodata_pct


def _static_fields(spec: SceneSpec):
    pid, values, jitter, brightness = _layout(spec)
    labels = values[pid]
    rng = _rng(spec.seed, _S_TEXTURE)
    size = spec.size_px
    tex = _fractal(rng, (size, size), max(size / 40.0, 2.0), 3)
    tex_amp = np.array([0.0] + [_TEXTURE[c] for c in CLASSES], dtype=np.float32)[labels]
    texture = np.float32(1.0) + tex_amp * tex
    np.clip(texture, 0.6, 1.4, out=texture)
    speckle = np.array([0.0] + [_SPECKLE[c] for c in CLASSES], dtype=np.float32)[labels]
    return labels, (pid, values, jitter, brightness, texture, speckle)


def _remove_outputs(out_dir: Path) -> None:
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    (out_dir / LABELS_PATH).unlink(missing_ok=True)
    scenes = out_dir / SCENES_DIR
    if scenes.is_dir():
        for p in scenes.glob("S2SYN_*.tif"):
            p.unlink()


def _has_outputs(out_dir: Path) -> bool:
    if (out_dir / MANIFEST_NAME).exists() or (out_dir / LABELS_PATH).exists():
        return True
    scenes = out_dir / SCENES_DIR
    return scenes.is_dir() and any(scenes.glob("S2SYN_*.tif"))


def generate_scene(out_dir, spec: SceneSpec = SceneSpec(), *, overwrite: bool = False) -> dict:
    """Write the synthetic source directory for ``spec``; return its manifest.

    Raises FileExistsError if ``out_dir`` already holds a scene and ``overwrite`` is
    false. With ``overwrite``, only this module's files are removed first
    (manifest, labels, ``scenes/S2SYN_*.tif``); other files are left alone.
    """
    if not isinstance(spec, SceneSpec):
        raise SpecError(f"spec must be a SceneSpec, got {type(spec).__name__}")
    out_dir = Path(out_dir)
    if _has_outputs(out_dir):
        if not overwrite:
            raise FileExistsError(
                f"{out_dir} already holds a synthetic scene; pass overwrite=True or use ensure_scene()"
            )
        _remove_outputs(out_dir)
    (out_dir / SCENES_DIR).mkdir(parents=True, exist_ok=True)
    (out_dir / LABELS_PATH).parent.mkdir(parents=True, exist_ok=True)

    crs, transform = _grid(spec)
    size = spec.size_px
    block = _block(spec)
    dates = _dates(spec)
    cloud_plan, _summer, nodata_idx = _plan_dates(spec, dates)

    labels, static = _static_fields(spec)
    _write_cog(
        out_dir / LABELS_PATH, labels[None], crs=crs, transform=transform, block=block,
        resampling=Resampling.mode, predictor=1, colormap=_COLORS,
        tags={"SYNTHETIC_SEED": str(spec.seed),
              **{f"CLASS_{i}": name for i, name in enumerate(CLASSES, start=1)}},
        descriptions=["label"],
    )
    del labels

    band_tags = [{"BAND_NAME": b, "CENTRAL_WAVELENGTH_NM": str(_WAVELENGTH_NM[b])} for b in BANDS]
    scene_entries = []
    for k, d in enumerate(dates):
        array, cloud_pct, nodata_pct = _render_date(
            spec, k, d.timetuple().tm_yday, cloud_plan[k], k == nodata_idx, static
        )
        cloud_pct, nodata_pct = round(cloud_pct, 4), round(nodata_pct, 4)
        rel = f"{SCENES_DIR}/{_scene_name(d, spec.seed)}"
        _write_cog(
            out_dir / rel, array, crs=crs, transform=transform, block=block,
            resampling=Resampling.average, descriptions=BANDS, band_tags=band_tags,
            tags={
                "ACQUISITION_DATE": d.isoformat(),
                "CLOUDY_PIXEL_PERCENTAGE": repr(cloud_pct),
                "NODATA_PIXEL_PERCENTAGE": repr(nodata_pct),
                "SPACECRAFT_NAME": "SYNTHETIC",
                "PROCESSING_LEVEL": "L2A",
                "BOA_SCALE": "0.0001",
                "BOA_OFFSET": "0",
                "SYNTHETIC_SEED": str(spec.seed),
            },
        )
        scene_entries.append({"date": d.isoformat(), "path": rel, "cloudy_pixel_percentage": cloud_pct,
                              "nodata_pixel_percentage": nodata_pct})

    left, top = transform.c, transform.f
    bounds = [left, top - size * spec.scale_m, left + size * spec.scale_m, top]
    lonlat = transform_bounds(crs, _LONLAT, *bounds, densify_pts=21)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": asdict(spec),
        "crs": crs,
        "transform": list(transform.to_gdal()),
        "width": size,
        "height": size,
        "bounds": bounds,
        "bounds_lonlat": [float(v) for v in lonlat],
        "center_lonlat": [spec.center_lon, spec.center_lat],
        "dates": [d.isoformat() for d in dates],
        "bands": list(BANDS),
        "classes": list(CLASSES),
        "boa_scale": BOA_SCALE,
        "boa_offset": 0,
        "nodata": 0,
        "files": {"labels": LABELS_PATH, "scenes": [e["path"] for e in scene_entries]},
        "scenes": scene_entries,
    }
    tmp = out_dir / f".{MANIFEST_NAME}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out_dir / MANIFEST_NAME)
    return json.loads(json.dumps(manifest))  # exactly what a later read returns


def generate_s1(out_dir, spec: SceneSpec = SceneSpec()) -> dict:
    """Write the Sentinel-1 companion of ``spec`` under ``out_dir/s1`` (see the module
    docstring); return ``{"dir", "bands", "dates", "paths"}`` (paths relative to ``out_dir``).

    Rewrites its own files each call; never touches the optical scene.
    """
    if not isinstance(spec, SceneSpec):
        raise SpecError(f"spec must be a SceneSpec, got {type(spec).__name__}")
    out_dir = Path(out_dir)
    (out_dir / S1_DIR).mkdir(parents=True, exist_ok=True)
    crs, transform = _grid(spec)
    _labels, (pid, values, jitter, _brightness, texture, _speckle) = _static_fields(spec)
    south = spec.center_lat < 0
    paths = []
    for k, d in enumerate(_dates(spec)):
        doy = d.timetuple().tm_yday
        table = np.zeros((len(values), len(S1_BANDS)), dtype=np.float32)
        for patch, value in enumerate(values):
            name = CLASSES[int(value) - 1]
            g = _phenology(name, doy, float(jitter[patch]), south)
            dormant, peak = _BACKSCATTER_DB[name]
            table[patch] = [(1.0 - g) * a + g * b for a, b in zip(dormant, peak)]
        rng = _rng(spec.seed, _S_S1, k)
        out = np.empty((len(S1_BANDS), spec.size_px, spec.size_px), dtype=np.float32)
        for b in range(len(S1_BANDS)):
            db = table[:, b][pid] + np.float32(10.0) * np.log10(texture)
            db += rng.standard_normal(db.shape, dtype=np.float32) * np.float32(_S1_SPECKLE_DB)
            out[b] = np.clip(db, -35.0, -0.5)  # never 0: 0 is the files' nodata value
        rel = f"{S1_DIR}/S1SYN_{d.strftime('%Y%m%d')}_{spec.seed}.tif"
        _write_cog(
            out_dir / rel, out, crs=crs, transform=transform, block=_block(spec), resampling=Resampling.average,
            descriptions=S1_BANDS, predictor=3,
            tags={"ACQUISITION_DATE": d.isoformat(), "INSTRUMENT_MODE": "IW", "PRODUCT_TYPE": "GRD",
                  "UNITS": "dB", "SPACECRAFT_NAME": "SYNTHETIC", "SYNTHETIC_SEED": str(spec.seed)},
        )
        paths.append(rel)
    return {"dir": S1_DIR, "bands": list(S1_BANDS), "dates": [d.isoformat() for d in _dates(spec)], "paths": paths}


def _read_manifest(out_dir: Path):
    try:
        return json.loads((out_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def ensure_scene(out_dir, spec: SceneSpec = SceneSpec()) -> dict:
    """Return the manifest of ``out_dir``, generating the scene first unless a complete
    one for exactly ``spec`` is already there (nothing is rewritten in that case)."""
    if not isinstance(spec, SceneSpec):
        raise SpecError(f"spec must be a SceneSpec, got {type(spec).__name__}")
    out_dir = Path(out_dir)
    manifest = _read_manifest(out_dir)
    if (
        isinstance(manifest, dict)
        and manifest.get("format") == FORMAT
        and manifest.get("format_version") == FORMAT_VERSION
        and manifest.get("spec") == asdict(spec)
        and all((out_dir / p).is_file() for p in [manifest["files"]["labels"], *manifest["files"]["scenes"]])
    ):
        return manifest
    return generate_scene(out_dir, spec, overwrite=True)


# ------------------------------------------------------------------ truth queries

LabelCache = Tuple[np.ndarray, Affine, str]


def read_labels(out_dir) -> LabelCache:
    """Return ``(labels uint8 (H, W), transform, crs string)`` of ``out_dir/truth/labels.tif``.

    The tuple doubles as a cache for :func:`label_at` and :func:`class_fractions`.
    """
    with rasterio.open(Path(out_dir) / LABELS_PATH) as src:
        return src.read(1), src.transform, src.crs.to_string()


def _is_cache(obj) -> bool:
    return isinstance(obj, tuple) and len(obj) == 3 and isinstance(obj[0], np.ndarray)


def _finite_lonlat(lon, lat) -> Tuple[float, float]:
    try:
        lon_f, lat_f = float(lon), float(lat)
    except (TypeError, ValueError):
        raise ValueError(f"lon={lon!r}, lat={lat!r} must be numbers") from None
    if not (math.isfinite(lon_f) and math.isfinite(lat_f) and -180 <= lon_f <= 180 and -90 <= lat_f <= 90):
        raise ValueError(f"lon={lon!r}, lat={lat!r} is not a valid WGS84 coordinate")
    return lon_f, lat_f


def _apply(t: Affine, x, y):
    """``t * (x, y)`` for scalars or arrays (without the operator affine 3 deprecates)."""
    return t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f


def _to_crs(crs: str, lons: Sequence[float], lats: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    xs, ys = _warp_transform(_LONLAT, crs, list(lons), list(lats))
    return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)


def label_at(out_dir_or_cache, lon: float, lat: float) -> str:
    """Class name of the label pixel under WGS84 ``(lon, lat)``.

    ``out_dir_or_cache`` is the scene directory or the tuple from :func:`read_labels`.
    Raises ValueError (naming lon/lat) when the point is outside the scene.
    """
    lon_f, lat_f = _finite_lonlat(lon, lat)
    if _is_cache(out_dir_or_cache):
        labels, transform, crs = out_dir_or_cache
        height, width = labels.shape
        src = None
    else:
        src = rasterio.open(Path(out_dir_or_cache) / LABELS_PATH)
        labels, transform, crs = None, src.transform, src.crs.to_string()
        height, width = src.height, src.width
    try:
        xs, ys = _to_crs(crs, [lon_f], [lat_f])
        x, y = float(xs[0]), float(ys[0])
        inside = math.isfinite(x) and math.isfinite(y)
        if inside:
            # reject far-away points the projection folds back (round trip must hold)
            blon, blat = _warp_transform(crs, _LONLAT, [x], [y])
            dlon = abs((blon[0] - lon_f + 180.0) % 360.0 - 180.0)
            inside = dlon * math.cos(math.radians(lat_f)) < 1e-6 and abs(blat[0] - lat_f) < 1e-6
        if inside:
            colf, rowf = _apply(~transform, x, y)
            col, row = int(math.floor(colf)), int(math.floor(rowf))
            inside = 0 <= col < width and 0 <= row < height
        if not inside:
            raise ValueError(f"lon={lon_f}, lat={lat_f} is outside the synthetic scene")
        if src is None:
            value = int(labels[row, col])
        else:
            value = int(src.read(1, window=Window(col, row, 1, 1))[0, 0])
    finally:
        if src is not None:
            src.close()
    if not 1 <= value <= len(CLASSES):
        raise ValueError(f"lon={lon_f}, lat={lat_f} falls on an unlabelled pixel (value {value})")
    return CLASSES[value - 1]


def _rings(polygon) -> List[List[Tuple[float, float]]]:
    if isinstance(polygon, Mapping):
        if polygon.get("type") != "Polygon":
            raise ValueError(
                f"only a GeoJSON Polygon or a lon/lat ring is accepted, got type {polygon.get('type')!r}"
            )
        rings = [list(r) for r in polygon["coordinates"]]
    else:
        rings = [list(polygon)]
    out = []
    for ring in rings:
        pts = []
        for p in ring:
            if len(p) < 2:
                raise ValueError(f"polygon vertex {p!r} is not a (lon, lat) pair")
            pts.append(_finite_lonlat(p[0], p[1]))
        if len(pts) >= 2 and pts[0] == pts[-1]:
            pts = pts[:-1]
        if len(pts) < 3:
            raise ValueError(f"a polygon ring needs at least 3 distinct vertices, got {ring!r}")
        out.append(pts)
    return out


def _densify(ring: List[Tuple[float, float]], steps: int = 16) -> Tuple[List[float], List[float]]:
    lons, lats = [], []
    n = len(ring)
    for i in range(n):
        (x0, y0), (x1, y1) = ring[i], ring[(i + 1) % n]
        for s in range(steps):
            t = s / steps
            lons.append(x0 + t * (x1 - x0))
            lats.append(y0 + t * (y1 - y0))
    lons.append(ring[0][0])
    lats.append(ring[0][1])
    return lons, lats


def class_fractions(out_dir_or_cache, geometry_lonlat_polygon) -> Dict[str, float]:
    """Fraction of the label pixels of each class inside a lon/lat polygon.

    ``geometry_lonlat_polygon`` is a ring ``[(lon, lat), ...]`` (closed or not) or a
    GeoJSON Polygon mapping. Pixels count when their centre is inside (all touched
    pixels when no centre is, for polygons smaller than a pixel); the part of the
    polygon outside the scene is ignored. Returns every class name (in
    :data:`CLASSES` order) with fractions summing to 1; the majority class is the
    argmax. Raises ValueError when the polygon does not overlap the scene.
    """
    rings = _rings(geometry_lonlat_polygon)
    cache = out_dir_or_cache if _is_cache(out_dir_or_cache) else None
    src = None if cache is not None else rasterio.open(Path(out_dir_or_cache) / LABELS_PATH)
    try:
        if cache is not None:
            labels, transform, crs = cache
            height, width = labels.shape
        else:
            transform, crs, height, width = src.transform, src.crs.to_string(), src.height, src.width
        projected = []
        for ring in rings:
            lons, lats = _densify(ring)
            xs, ys = _to_crs(crs, lons, lats)
            if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
                raise ValueError(f"polygon {rings[0]!r} cannot be projected to {crs}")
            projected.append(list(zip(xs.tolist(), ys.tolist())))
        outer = np.asarray(projected[0], dtype=np.float64)
        cols, rows = _apply(~transform, outer[:, 0], outer[:, 1])
        c0 = max(int(math.floor(float(np.min(cols)))), 0)
        c1 = min(int(math.ceil(float(np.max(cols)))), width)
        r0 = max(int(math.floor(float(np.min(rows)))), 0)
        r1 = min(int(math.ceil(float(np.max(rows)))), height)
        if c1 <= c0 or r1 <= r0:
            raise ValueError(f"polygon {rings[0]!r} (lon/lat) does not overlap the synthetic scene")
        window = Window(c0, r0, c1 - c0, r1 - r0)
        t = transform
        wtransform = Affine(t.a, t.b, t.c + t.a * c0 + t.b * r0, t.d, t.e, t.f + t.d * c0 + t.e * r0)
        geom = {"type": "Polygon", "coordinates": projected}
        mask = None
        for all_touched in (False, True):
            mask = rasterize([(geom, 1)], out_shape=(r1 - r0, c1 - c0), transform=wtransform, fill=0,
                             all_touched=all_touched, dtype="uint8").astype(bool)
            if mask.any():
                break
        window_labels = labels[r0:r1, c0:c1] if cache is not None else src.read(1, window=window)
    finally:
        if src is not None:
            src.close()
    counts = np.bincount(window_labels[mask].ravel(), minlength=len(CLASSES) + 1)[: len(CLASSES) + 1]
    total = int(counts[1:].sum())
    if total == 0:
        raise ValueError(f"polygon {rings[0]!r} (lon/lat) covers no labelled pixel of the synthetic scene")
    return {name: float(counts[i + 1]) / total for i, name in enumerate(CLASSES)}
