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

Queries on the truth (:func:`read_labels`, :func:`label_at`, :func:`class_fractions`)
live in :mod:`rsembed_store.testing.labels`; the land-cover model that paints the
scene (classes, spectra, phenology, noise, layout) in :mod:`rsembed_store.testing.landcover`.
"""

from __future__ import annotations

import calendar
import json
import math
import os
from dataclasses import asdict, dataclass, fields
from datetime import date, timedelta
from pathlib import Path
from typing import Any, List, Mapping, Sequence, Tuple

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.enums import Resampling
from rasterio.io import MemoryFile
from rasterio.warp import transform as _warp_transform
from rasterio.warp import transform_bounds

from ..errors import SpecError
from ..ingest.grid import utm_crs
from .labels import LABELS_PATH
from .landcover import (
    _BACKSCATTER_DB,
    _CLOUD_SPECTRUM,
    _COLORS,
    _S1_SPECKLE_DB,
    _S_DATE,
    _S_PLAN,
    _S_S1,
    _S_TEXTURE,
    _SPECKLE,
    _SPECTRA,
    _TEXTURE,
    BANDS,
    CLASSES,
    S1_BANDS,
    _circ_dist,
    _fractal,
    _layout,
    _phenology,
    _rng,
    _wedge,
)

__all__ = [
    "CLASSES",
    "BANDS",
    "S1_BANDS",
    "SceneSpec",
    "generate_s1",
    "generate_scene",
    "ensure_scene",
]


FORMAT = "rsembed_store.synthetic_s2"
FORMAT_VERSION = 1
BOA_SCALE = 1e-4
MANIFEST_NAME = "manifest.json"
SCENES_DIR = "scenes"

_WAVELENGTH_NM = {"B02": 492, "B03": 560, "B04": 665, "B08": 833, "B11": 1614, "B12": 2202}
_LONLAT = "EPSG:4326"

_CLEAR_B02_MAX = 0.17  # clear pixels: B02 <= 1700 DN; cloud pixels: B02, B03, B04 >= 2000 DN
_SUMMER_DOY_NORTH = 196.0  # mid-July


S1_DIR = "s1"


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
