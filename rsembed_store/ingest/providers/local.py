"""The ``local`` imagery provider: GeoTIFF/COG scenes in local directories -> :class:`Pixels`.

Configuration (machine-specific, never part of a key)::

    LocalProvider({"sources": {"s2-l2a": "/data/s2", ...},   # collection -> directory
                   "resampling": "bilinear"})                 # optional (nearest, cubic, average, ...)

The environment variable ``RSEMBED_SOURCES=name=dir[,name=dir]`` is the fallback for
collections the configuration does not name.

Scenes
======
Every ``*.tif``/``*.tiff`` under a source directory (recursively) is inspected once;
the resulting catalogue is kept in memory per directory (thread-safe). A scene is

* a multi-band file whose band descriptions name its bands (``B02``, ``B03``, ...), or
* a folder holding one single-band file per band, named after the band (``B04.tif``
  or an alias such as ``red.tif``), the layout of Element84 earth-search
  Sentinel-2 L2A COGs.

The acquisition date and cloud percentage come from the dataset tags
``ACQUISITION_DATE`` (``YYYY-MM-DD``) and ``CLOUDY_PIXEL_PERCENTAGE``, or from the
``index.json`` of the source directory (see :meth:`LocalProvider.build_index`), or
from a STAC item JSON next to the scene (``properties.datetime``,
``properties["eo:cloud_cover"]``). Files without a date (a label raster, say) are
skipped. Digital numbers become physical values as ``DN * BOA_SCALE + BOA_OFFSET``
(dataset tags; else GDAL's per-band scale/offset; else the STAC ``raster:bands``;
else 1 and 0).

The grid
========
Every request is answered on a north-up grid in the UTM zone of the ROI centre
(``EPSG:326zz`` north, ``EPSG:327zz`` south), with square pixels of
``sensor.scale_m`` ground metres and the origin on a multiple of ``scale_m``. See
:func:`target_grid` for how each ROI kind maps onto it.

Landsat and HLS
===============
The collection names ``landsat-c2-l2``, ``landsat-l1``, ``hls-s30``, ``hls-l30`` and
``hls`` (see :mod:`.sensors`) read product files grouped by product id
(``<product id>_SR_B4.TIF``, ``HLS.S30.<tile>.<date>.v2.0.B04.tif``), name bands by
common name (``red``, ``nir``, ...), scale DN as each product documents (the MTL for
Level-1) and mask the pixels each product's quality band rejects. See
:mod:`.local_products` and ``docs/providers/local.md``.

Reading and compositing
=======================
Each selected scene is read through a GDAL warped VRT on the target grid: GDAL
computes the source window the grid needs and reads only those blocks, from the
coarsest internal overview that is still at least as fine as the grid when the grid
is coarser than the data. No data (the file's nodata value, NaN, or
outside the file) becomes NaN. A scene pixel counts only when every requested band
has data there. ``median`` takes the per-band NaN-median over scenes; ``mosaic``
takes the whole spectrum of the latest valid scene (by date, then id).
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import Resampling, transform as warp_transform, transform_bounds

from ...errors import NoImageryError, ProviderError
from ...keys import ResolvedRequest
from ...limits import Limits
from ...specs import BBox, H3Cell, PointBuffer
from .base import Pixels, Provider
from .sensors import family

LONLAT = "EPSG:4326"
INDEX_NAME = "index.json"
ENV_SOURCES = "RSEMBED_SOURCES"
_TIFF_SUFFIXES = (".tif", ".tiff")

# Sentinel-2 band aliases (earth-search v1 asset keys and common names) -> canonical names.
BAND_ALIASES: Dict[str, str] = {
    "coastal": "B01",
    "coastal_aerosol": "B01",
    "blue": "B02",
    "green": "B03",
    "red": "B04",
    "rededge1": "B05",
    "rededge2": "B06",
    "rededge3": "B07",
    "nir": "B08",
    "nir08": "B8A",
    "nir09": "B09",
    "cirrus": "B10",
    "swir16": "B11",
    "swir22": "B12",
    "scl": "SCL",
    "aot": "AOT",
    "wvp": "WVP",
}
_BAND_RE = re.compile(r"^b0?(\d{1,2})(a?)$", re.IGNORECASE)
_CATEGORICAL_BANDS = {"SCL"}  # always resampled with nearest neighbour

_DATE_TAGS = ("ACQUISITION_DATE", "SENSING_DATE", "DATE_ACQUIRED")
_CLOUD_TAGS = ("CLOUDY_PIXEL_PERCENTAGE", "CLOUD_COVERAGE_ASSESSMENT", "CLOUD_COVER", "CLOUD_COVERAGE")


def canonical_band(name: str) -> str:
    """The canonical spelling of a band name: ``red``/``b4``/``B04`` -> ``B04``; others upper-cased."""
    text = str(name).strip()
    alias = BAND_ALIASES.get(text.lower())
    if alias:
        return alias
    m = _BAND_RE.match(text)
    if m:
        number = int(m.group(1))
        return f"B{number}A" if m.group(2) else f"B{number:02d}"
    return text.upper()


def _band_from_stem(stem: str) -> Optional[str]:
    """The band a single-band file is named after (``B04``, ``red``), or None."""
    text = stem.strip()
    if text.lower() in BAND_ALIASES or _BAND_RE.match(text):
        return canonical_band(text)
    return None


def utm_crs(lon: float, lat: float) -> str:
    """``EPSG:326zz`` (north) or ``EPSG:327zz`` (south): the standard 6-degree UTM zone of a point."""
    zone = min(max(int(math.floor((lon + 180.0) / 6.0)) + 1, 1), 60)
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"


# ------------------------------------------------------------------ the target grid


@dataclass(frozen=True)
class TargetGrid:
    """A north-up grid: ``crs``, affine ``transform``, ``width`` x ``height`` and the ROI mask."""

    crs: str
    transform: Affine
    width: int
    height: int
    roi_mask: np.ndarray = field(repr=False, compare=False)

    @property
    def bounds(self) -> Tuple[float, float, float, float]:
        t = self.transform
        return t.c, t.f + t.e * self.height, t.c + t.a * self.width, t.f

    def bounds_lonlat(self) -> Tuple[float, float, float, float]:
        return tuple(transform_bounds(self.crs, LONLAT, *self.bounds, densify_pts=21))  # type: ignore[return-value]

    def gdal(self) -> Tuple[float, float, float, float, float, float]:
        """The GDAL geotransform ``(x0, xres, 0, y0, 0, -yres)`` (``Affine.from_gdal`` reads it back)."""
        return tuple(float(v) for v in self.transform.to_gdal())  # type: ignore[return-value]


def _project(crs: str, lons: Sequence[float], lats: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    xs, ys = warp_transform(LONLAT, crs, list(lons), list(lats))
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
        raise ProviderError(f"cannot project lon/lat {list(zip(lons, lats))} to {crs}")
    return xs, ys


def _covering(minx, miny, maxx, maxy, s) -> Tuple[float, float, int, int]:
    """Left, top, width, height of the snapped grid that covers a box (1e-6 px of float slack)."""
    left = math.floor(minx / s + 1e-6) * s
    right = math.ceil(maxx / s - 1e-6) * s
    bottom = math.floor(miny / s + 1e-6) * s
    top = math.ceil(maxy / s - 1e-6) * s
    width = max(1, int(round((right - left) / s)))
    height = max(1, int(round((top - bottom) / s)))
    return left, top, width, height


def _points_in_polygon(px: np.ndarray, py: np.ndarray, vx: np.ndarray, vy: np.ndarray) -> np.ndarray:
    """Even-odd rule, vectorised over points; the polygon ring may or may not be closed."""
    inside = np.zeros(px.shape, dtype=bool)
    n = len(vx)
    j = n - 1
    for i in range(n):
        xi, yi, xj, yj = vx[i], vy[i], vx[j], vy[j]
        if yi != yj:
            crosses = (yi > py) != (yj > py)
            x_at = (xj - xi) * (py - yi) / (yj - yi) + xi
            inside ^= crosses & (px < x_at)
        j = i
    return inside


def target_grid(spatial, scale_m: float, *, max_pixels: Optional[int] = None) -> TargetGrid:
    """The grid a request is answered on: UTM zone of the ROI centre, ``scale_m`` metre pixels.

    * ``PointBuffer(lon, lat, buffer_m)``: ``n = ceil(2 * buffer_m / scale_m)`` pixels
      square, centred on the point's UTM coordinates, the origin rounded to the nearest
      multiple of ``scale_m`` (so 1000 m at 10 m is 200 x 200 at any latitude; the centre
      moves by at most half a pixel).
    * ``BBox``: the snapped grid covering the UTM bounding box of the densified lon/lat
      rectangle.
    * ``H3Cell``: the smallest snapped square covering the UTM-projected hexagon;
      ``roi_mask`` marks the pixel centres inside the hexagon.

    ``roi_mask`` is all True for the square ROIs.

    A grid of more than ``max_pixels`` pixels (default: the ``max_roi_pixels`` limit of
    the environment, see :mod:`rsembed_store.limits`; callers with a configuration pass
    theirs) is refused with a LimitError before anything is allocated.
    """
    s = float(scale_m)
    if not (math.isfinite(s) and s > 0):
        raise ProviderError(f"scale_m={scale_m!r} must be a positive number of metres")
    lon, lat = spatial.center()
    crs = utm_crs(lon, lat)
    hexagon = None
    if isinstance(spatial, PointBuffer):
        xs, ys = _project(crs, [spatial.lon], [spatial.lat])
        n = max(1, int(math.ceil(2.0 * spatial.buffer_m / s - 1e-9)))
        left = round((xs[0] - n * s / 2.0) / s) * s
        top = round((ys[0] + n * s / 2.0) / s) * s
        width = height = n
    elif isinstance(spatial, BBox):
        try:
            minx, miny, maxx, maxy = transform_bounds(LONLAT, crs, *spatial.bounds(), densify_pts=21)
        except Exception as exc:  # pragma: no cover - GDAL refusing a valid lon/lat box
            raise ProviderError(f"cannot project {spatial!r} to {crs}: {exc}") from exc
        left, top, width, height = _covering(minx, miny, maxx, maxy, s)
    elif isinstance(spatial, H3Cell):
        ring = spatial.polygon()[:-1]
        vx, vy = _project(crs, [p[0] for p in ring], [p[1] for p in ring])
        left, top, width, height = _covering(vx.min(), vy.min(), vx.max(), vy.max(), s)
        n = max(width, height)
        left -= ((n - width) // 2) * s
        top += ((n - height) // 2) * s
        width = height = n
        hexagon = (vx, vy)
    else:
        raise ProviderError(
            f"the local provider cannot grid a {type(spatial).__name__}; accepted: PointBuffer, BBox, H3Cell"
        )
    limits = Limits.from_config(None) if max_pixels is None else Limits(max_roi_pixels=int(max_pixels))
    limits.check_pixels(int(width), int(height), f"{spatial!r} at {s:g} m")
    transform = Affine(s, 0.0, float(left), 0.0, -s, float(top))
    if hexagon is None:
        roi = np.ones((height, width), dtype=bool)
    else:
        cols = left + (np.arange(width) + 0.5) * s
        rows = top - (np.arange(height) + 0.5) * s
        px, py = np.meshgrid(cols, rows)
        roi = _points_in_polygon(px, py, hexagon[0], hexagon[1])
    return TargetGrid(crs=crs, transform=transform, width=int(width), height=int(height), roi_mask=roi)


# ------------------------------------------------------------------ the scene catalogue


@dataclass(frozen=True)
class BandSource:
    """Where one band of a scene lives: a file, its 1-based band index, and how DN become values."""

    path: str
    index: int
    scale: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True)
class Scene:
    """One acquisition: an id (path relative to the source dir), its date, cloud %, footprint, bands."""

    id: str
    path: str
    date: date
    cloud_pct: Optional[float]
    crs: str
    bounds_lonlat: Tuple[float, float, float, float]  # west > east when it crosses the antimeridian
    bands: Mapping[str, BandSource]  # canonical band name -> source (common names for Landsat/HLS)
    sensor: Optional[str] = None  # the instrument, for product families (Landsat 7 ETM+, HLS S30, ...)
    qa: Optional[BandSource] = None  # the quality band whose rule masks pixels
    qa_rule: Any = None  # a sensors.QaRule
    fill_dn: Optional[float] = None  # a stored value that means no data when the file declares none

    def missing(self, canonical_bands: Sequence[str]) -> List[str]:
        return [b for b in canonical_bands if b not in self.bands]


def _parse_date(value: Any) -> Optional[date]:
    if value is None:
        return None
    if isinstance(value, date):
        return value
    text = str(value).strip()
    for candidate in (text[:10], text[:10].replace(":", "-"), text[:8]):
        try:
            if len(candidate) == 8 and candidate.isdigit():
                return date(int(candidate[:4]), int(candidate[4:6]), int(candidate[6:8]))
            return date.fromisoformat(candidate)
        except ValueError:
            continue
    return None


def _parse_float(value: Any) -> Optional[float]:
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _first_tag(tags: Mapping[str, str], names: Sequence[str]) -> Optional[str]:
    upper = {k.upper(): v for k, v in tags.items()}
    for name in names:
        if upper.get(name) not in (None, ""):
            return upper[name]
    return None


def _lonlat_bounds(crs, bounds) -> Tuple[float, float, float, float]:
    return tuple(float(v) for v in transform_bounds(crs, LONLAT, *bounds, densify_pts=21))  # type: ignore[return-value]


def _union_lonlat(boxes: Sequence[Tuple[float, float, float, float]]) -> Tuple[float, float, float, float]:
    if len(boxes) == 1 or any(b[0] > b[2] for b in boxes):
        return boxes[0]
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def _intersects(a: Tuple[float, float, float, float], b: Tuple[float, float, float, float]) -> bool:
    """Do two lon/lat boxes overlap (either may cross the antimeridian: west > east)?"""
    if not (a[1] < b[3] and b[1] < a[3]):
        return False

    def spans(box):
        w, e = box[0], box[2]
        return [(w, 180.0), (-180.0, e)] if w > e else [(w, e)]

    return any(x0 < y1 and y0 < x1 for x0, x1 in spans(a) for y0, y1 in spans(b))


@dataclass
class _FileInfo:
    path: Path
    crs: str
    bounds: Tuple[float, float, float, float]
    bounds_lonlat: Tuple[float, float, float, float]
    count: int
    descriptions: Tuple[Optional[str], ...]
    date: Optional[date]
    cloud_pct: Optional[float]
    scales: Tuple[float, ...]
    offsets: Tuple[float, ...]
    has_scale: bool  # scale/offset came from the file (tags or GDAL metadata)
    width: int
    height: int
    res: Tuple[float, float]


def _inspect(path: Path) -> Optional[_FileInfo]:
    """Read a file's header (never its pixels). None when it is not a georeferenced raster."""
    try:
        with rasterio.open(path) as ds:
            if ds.crs is None:
                return None
            tags = ds.tags()
            scale_tag = _parse_float(_first_tag(tags, ("BOA_SCALE",)))
            offset_tag = _parse_float(_first_tag(tags, ("BOA_OFFSET",)))
            if scale_tag is not None or offset_tag is not None:
                scales = (scale_tag if scale_tag is not None else 1.0,) * ds.count
                offsets = (offset_tag if offset_tag is not None else 0.0,) * ds.count
                has_scale = True
            else:
                scales = tuple(float(v) if v is not None else 1.0 for v in ds.scales)
                offsets = tuple(float(v) if v is not None else 0.0 for v in ds.offsets)
                has_scale = any(v != 1.0 for v in scales) or any(v != 0.0 for v in offsets)
            crs = ds.crs.to_string()
            bounds = tuple(float(v) for v in ds.bounds)
            return _FileInfo(
                path=path,
                crs=crs,
                bounds=bounds,  # type: ignore[arg-type]
                bounds_lonlat=_lonlat_bounds(ds.crs, bounds),
                count=ds.count,
                descriptions=tuple(ds.descriptions),
                date=_parse_date(_first_tag(tags, _DATE_TAGS)),
                cloud_pct=_parse_float(_first_tag(tags, _CLOUD_TAGS)),
                scales=scales,
                offsets=offsets,
                has_scale=has_scale,
                width=ds.width,
                height=ds.height,
                res=(float(ds.res[0]), float(ds.res[1])),
            )
    except (RasterioError, ValueError):
        return None


def _stac_sidecar(candidates: Sequence[Path]) -> Optional[dict]:
    """Date, cloud % and per-band scale/offset from a STAC item JSON, if one of ``candidates`` is one."""
    for path in candidates:
        if path.name == INDEX_NAME or not path.is_file():
            continue
        try:
            item = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        props = item.get("properties") if isinstance(item, dict) else None
        if not isinstance(props, dict):
            continue
        when = _parse_date(props.get("datetime") or props.get("start_datetime"))
        if when is None:
            continue
        scales: Dict[str, Tuple[float, float]] = {}
        for key, asset in (item.get("assets") or {}).items():
            rb = asset.get("raster:bands") if isinstance(asset, dict) else None
            if isinstance(rb, list) and rb and isinstance(rb[0], dict) and "scale" in rb[0]:
                scales[canonical_band(key)] = (float(rb[0].get("scale", 1.0)), float(rb[0].get("offset", 0.0)))
        return {"date": when, "cloud_pct": _parse_float(props.get("eo:cloud_cover")), "scales": scales}
    return None


def _relative_id(root: Path, path: Path, *, strip_suffix: bool) -> str:
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = path
    if strip_suffix:
        rel = rel.with_suffix("")
    text = rel.as_posix()
    return path.name if text in ("", ".") else text


def _file_scene(root: Path, info: _FileInfo, hint: Mapping[str, Any]) -> Tuple[Optional[Scene], str]:
    """A multi-band file as a scene, or (None, why it was skipped)."""
    names: Sequence[Optional[str]] = hint.get("bands") or info.descriptions
    if len(names) != info.count:
        names = list(names)[: info.count] + [None] * max(0, info.count - len(names))
    side = _stac_sidecar([info.path.with_suffix(".json")])
    when = info.date or _parse_date(hint.get("date")) or (side or {}).get("date")
    if when is None:
        return None, "no acquisition date"
    cloud = info.cloud_pct if info.cloud_pct is not None else _parse_float(hint.get("cloud_pct"))
    if cloud is None and side:
        cloud = side["cloud_pct"]
    bands: Dict[str, BandSource] = {}
    for i, name in enumerate(names):
        if not name:
            continue
        band = canonical_band(name)
        scale, offset = info.scales[i], info.offsets[i]
        if not info.has_scale:
            scale, offset = _hinted_scale(hint, band, scale, offset)
        bands.setdefault(band, BandSource(str(info.path), i + 1, scale, offset))
    if not bands:
        return None, "no band names (set band descriptions or list 'bands' in index.json)"
    scene = Scene(
        id=_relative_id(root, info.path, strip_suffix=True),
        path=str(info.path),
        date=when,
        cloud_pct=cloud,
        crs=info.crs,
        bounds_lonlat=info.bounds_lonlat,
        bands=bands,
    )
    return scene, ""


def _hinted_scale(hint: Mapping[str, Any], band: str, scale: float, offset: float) -> Tuple[float, float]:
    per_band = hint.get("scales") or {}
    per_band_off = hint.get("offsets") or {}
    if band in per_band:
        return float(per_band[band]), float(per_band_off.get(band, 0.0))
    if hint.get("boa_scale") is not None or hint.get("boa_offset") is not None:
        s = _parse_float(hint.get("boa_scale"))
        o = _parse_float(hint.get("boa_offset"))
        return (s if s is not None else 1.0), (o if o is not None else 0.0)
    return scale, offset


def _folder_scene(root: Path, folder: Path, members: Mapping[str, _FileInfo], hint: Mapping[str, Any]):
    """A folder of single-band files as a scene, or (None, why it was skipped)."""
    dated = [m for m in members.values() if m.date is not None]
    side = _stac_sidecar(sorted(folder.glob("*.json")))
    when = (dated[0].date if dated else None) or _parse_date(hint.get("date")) or (side or {}).get("date")
    if when is None:
        return None, "no acquisition date"
    clouds = [m.cloud_pct for m in members.values() if m.cloud_pct is not None]
    cloud = clouds[0] if clouds else _parse_float(hint.get("cloud_pct"))
    if cloud is None and side:
        cloud = side["cloud_pct"]
    bands: Dict[str, BandSource] = {}
    for band, info in sorted(members.items()):
        scale, offset = info.scales[0], info.offsets[0]
        if not info.has_scale:
            if side and band in side["scales"]:
                scale, offset = side["scales"][band]
            else:
                scale, offset = _hinted_scale(hint, band, scale, offset)
        bands[band] = BandSource(str(info.path), 1, scale, offset)
    first = next(iter(members.values()))
    scene = Scene(
        id=_relative_id(root, folder, strip_suffix=False),
        path=str(folder),
        date=when,
        cloud_pct=cloud,
        crs=first.crs,
        bounds_lonlat=_union_lonlat([m.bounds_lonlat for m in members.values()]),
        bands=bands,
    )
    return scene, ""


def _tiff_files(root: Path) -> List[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(_TIFF_SUFFIXES):
                out.append(Path(dirpath) / name)
    return out


def _read_index(root: Path) -> Optional[List[dict]]:
    path = root / INDEX_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ProviderError(f"{path} is not a readable JSON index: {exc}; rebuild it with LocalProvider.build_index") from exc
    if isinstance(data, dict):
        data = data.get("scenes")
    if not isinstance(data, list) or not all(isinstance(e, dict) and "path" in e for e in data):
        raise ProviderError(
            f"{path} must be a JSON list of objects with at least 'path' (and 'date', 'cloud_pct'); "
            "rebuild it with LocalProvider.build_index"
        )
    return data


def _index_key(root: Path, value: str) -> str:
    p = Path(value)
    return str((p if p.is_absolute() else root / p).resolve())


def _scan(root: Path, hints: Mapping[str, Mapping[str, Any]]) -> Tuple[List[Scene], List[Tuple[str, str]]]:
    """Inspect every GeoTIFF under ``root``; ``hints`` (absolute path -> index entry) fill gaps."""
    scenes: List[Scene] = []
    skipped: List[Tuple[str, str]] = []
    folders: Dict[Path, Dict[str, _FileInfo]] = {}
    for path in _tiff_files(root):
        info = _inspect(path)
        if info is None:
            skipped.append((str(path), "not a georeferenced raster"))
            continue
        band = _band_from_stem(path.stem) if info.count == 1 else None
        if band is not None:
            folders.setdefault(path.parent, {}).setdefault(band, info)
            continue
        scene, why = _file_scene(root, info, hints.get(str(path.resolve()), {}))
        if scene is None:
            skipped.append((str(path), why))
        else:
            scenes.append(scene)
    for folder, members in sorted(folders.items()):
        scene, why = _folder_scene(root, folder, members, hints.get(str(folder.resolve()), {}))
        if scene is None:
            skipped.append((str(folder), why))
        else:
            scenes.append(scene)
    scenes.sort(key=lambda sc: (sc.date, sc.id))
    return scenes, skipped


def _scene_from_entry(root: Path, entry: Mapping[str, Any]) -> Tuple[Optional[Scene], str]:
    """An index entry as a scene; complete entries need no file access, others are inspected."""
    path = Path(_index_key(root, str(entry["path"])))
    when = _parse_date(entry.get("date"))
    if when is None:
        return None, "index entry without a valid 'date'"
    is_dir = entry.get("kind") == "folder" or (entry.get("kind") is None and path.is_dir())
    complete = bool(entry.get("bounds_lonlat") and entry.get("crs") and entry.get("bands"))
    if complete and is_dir and not entry.get("files"):
        complete = False
    if complete:
        bands: Dict[str, BandSource] = {}
        scales = entry.get("scales") or {}
        offsets = entry.get("offsets") or {}
        default_scale = _parse_float(entry.get("boa_scale"))
        default_offset = _parse_float(entry.get("boa_offset"))
        files = entry.get("files") or {}
        for i, name in enumerate(entry["bands"]):
            if not name:
                continue
            band = canonical_band(name)
            if files:
                rel = files.get(band) or files.get(name)
                if rel is None:
                    continue
                source_path, index = str((path / rel).resolve()), 1
            else:
                source_path, index = str(path), i + 1
            scale = _parse_float(scales.get(band))
            offset = _parse_float(offsets.get(band))
            bands.setdefault(
                band,
                BandSource(
                    source_path,
                    index,
                    scale if scale is not None else (default_scale if default_scale is not None else 1.0),
                    offset if offset is not None else (default_offset if default_offset is not None else 0.0),
                ),
            )
        box = tuple(float(v) for v in entry["bounds_lonlat"])
        scene = Scene(
            id=_relative_id(root, path, strip_suffix=not is_dir),
            path=str(path),
            date=when,
            cloud_pct=_parse_float(entry.get("cloud_pct")),
            crs=str(entry["crs"]),
            bounds_lonlat=box,  # type: ignore[arg-type]
            bands=bands,
        )
        return scene, ""
    # incomplete (hand-written) entry: inspect the file or folder, the entry wins for date/cloud
    if is_dir:
        members: Dict[str, _FileInfo] = {}
        for f in sorted(path.iterdir()):
            if f.suffix.lower() in _TIFF_SUFFIXES and _band_from_stem(f.stem):
                info = _inspect(f)
                if info is not None and info.count == 1:
                    members.setdefault(_band_from_stem(f.stem), info)  # type: ignore[arg-type]
        if not members:
            return None, "index entry folder holds no single-band files named after bands"
        scene, why = _folder_scene(root, path, members, entry)
    else:
        info = _inspect(path)
        if info is None:
            return None, "index entry path is not a readable georeferenced raster"
        scene, why = _file_scene(root, info, entry)
    if scene is None:
        return None, why
    cloud = _parse_float(entry.get("cloud_pct"))
    return (
        Scene(scene.id, scene.path, when, cloud if cloud is not None else scene.cloud_pct, scene.crs,
              scene.bounds_lonlat, scene.bands),
        "",
    )


@dataclass
class _Catalogue:
    scenes: List[Scene]
    skipped: List[Tuple[str, str]]
    index_stamp: Optional[Tuple[int, int]]  # (mtime_ns, size) of index.json when read; None: scanned
    from_index: bool


_CATALOGUES: Dict[str, _Catalogue] = {}
_CATALOGUE_LOCK = threading.Lock()
_DIR_LOCKS: Dict[str, threading.Lock] = {}


def _index_stamp(root: Path) -> Optional[Tuple[int, int]]:
    try:
        st = (root / INDEX_NAME).stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _load_catalogue(root: Path) -> _Catalogue:
    stamp = _index_stamp(root)
    entries = _read_index(root) if stamp is not None else None
    if entries is None:
        scenes, skipped = _scan(root, {})
        return _Catalogue(scenes, skipped, None, False)
    scenes, skipped = [], []
    for entry in entries:
        scene, why = _scene_from_entry(root, entry)
        if scene is None:
            skipped.append((str(entry.get("path")), why))
        else:
            scenes.append(scene)
    scenes.sort(key=lambda sc: (sc.date, sc.id))
    return _Catalogue(scenes, skipped, stamp, True)


def catalogue(directory) -> _Catalogue:
    """The (cached) scene catalogue of a source directory; re-read when its index.json changes."""
    root = Path(directory).expanduser().resolve()
    if not root.is_dir():
        raise ProviderError(f"local imagery source {str(root)!r} is not a directory")
    key = str(root)
    with _CATALOGUE_LOCK:
        dir_lock = _DIR_LOCKS.setdefault(key, threading.Lock())
    with dir_lock:  # one scan per directory at a time; other directories proceed
        with _CATALOGUE_LOCK:
            cached = _CATALOGUES.get(key)
        stamp = _index_stamp(root)
        if cached is not None and cached.index_stamp == stamp:
            return cached
        fresh = _load_catalogue(root)
        with _CATALOGUE_LOCK:
            _CATALOGUES[key] = fresh
        return fresh


def forget(directory=None) -> None:
    """Drop the cached catalogue of ``directory`` (all directories when None)."""
    from .local_products import forget as forget_products

    forget_products(directory)
    with _CATALOGUE_LOCK:
        if directory is None:
            _CATALOGUES.clear()
        else:
            _CATALOGUES.pop(str(Path(directory).expanduser().resolve()), None)


def _index_entry(root: Path, scene: Scene) -> dict:
    path = Path(scene.path)
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        rel = str(path)
    names = list(scene.bands)
    entry: Dict[str, Any] = {
        "path": rel,
        "kind": "folder" if path.is_dir() else "file",
        "date": scene.date.isoformat(),
        "cloud_pct": scene.cloud_pct,
        "crs": scene.crs,
        "bounds_lonlat": [round(v, 9) for v in scene.bounds_lonlat],
    }
    if path.is_dir():
        entry["bands"] = names
        entry["files"] = {b: Path(src.path).relative_to(path).as_posix() for b, src in scene.bands.items()}
    else:
        by_index: List[Optional[str]] = [None] * max(src.index for src in scene.bands.values())
        for b, src in scene.bands.items():
            by_index[src.index - 1] = b
        entry["bands"] = by_index
    first = next(iter(scene.bands.values()))
    try:
        with rasterio.open(first.path) as ds:
            entry["bounds"] = [float(v) for v in ds.bounds]
            entry["width"], entry["height"] = ds.width, ds.height
            entry["res"] = [float(ds.res[0]), float(ds.res[1])]
            entry["nodata"] = ds.nodata if ds.nodata is None or math.isfinite(ds.nodata) else None
    except RasterioError:  # pragma: no cover - the scan just opened it
        pass
    scales = {b: src.scale for b, src in scene.bands.items()}
    offsets = {b: src.offset for b, src in scene.bands.items()}
    if len(set(scales.values())) == 1 and len(set(offsets.values())) == 1:
        entry["boa_scale"] = first.scale
        entry["boa_offset"] = first.offset
    entry["scales"] = scales
    entry["offsets"] = offsets
    return entry


# ------------------------------------------------------------------ the provider


def _parse_sources_env(text: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, directory = part.partition("=")
        if not sep or not name.strip() or not directory.strip():
            raise ProviderError(
                f"{ENV_SOURCES}={text!r} is not accepted: entry {part!r} must be 'name=dir' "
                "(several entries separated by commas)"
            )
        out[name.strip()] = directory.strip()
    return out


class LocalProvider(Provider):
    """Imagery from GeoTIFF/COG scenes on local disk (see the module docstring)."""

    name = "local"

    def __init__(self, config: Optional[Mapping] = None):
        super().__init__(config)
        sources = self.config.get("sources", {})
        if not isinstance(sources, Mapping) or not all(
            isinstance(k, str) and isinstance(v, (str, os.PathLike)) for k, v in sources.items()
        ):
            raise ProviderError(
                f"local provider config 'sources'={sources!r} must map collection names to directories, "
                "e.g. {'s2-l2a': '/data/s2'}"
            )
        self._sources = {k: os.fspath(v) for k, v in sources.items()}
        name = str(self.config.get("resampling", "bilinear"))
        try:
            self._resampling = Resampling[name]
        except KeyError:
            raise ProviderError(
                f"local provider config resampling={name!r} is not accepted; use one of "
                "['nearest', 'bilinear', 'cubic', 'average', 'lanczos', 'mode']"
            ) from None

    # -------------------------------------------------------------- configuration

    def sources(self) -> Dict[str, str]:
        """Collection -> directory: the configuration, over ``RSEMBED_SOURCES`` as fallback."""
        merged = _parse_sources_env(os.environ.get(ENV_SOURCES, ""))
        merged.update(self._sources)
        return merged

    def source_dir(self, collection: str) -> Path:
        sources = self.sources()
        if collection not in sources:
            raise ProviderError(
                f"the local provider has no source for collection {collection!r}; configured: "
                f"{sorted(sources)}; give it with --source {collection}=DIR on the command line, config "
                f"{{'sources': {{{collection!r}: '/path/to/dir'}}}} in Python, or "
                f"{ENV_SOURCES}='{collection}=/path/to/dir'"
            )
        root = Path(sources[collection]).expanduser()
        if not root.is_dir():
            raise ProviderError(f"the local source of collection {collection!r} is {str(root)!r}, which is not a directory")
        return root.resolve()

    def scenes(self, collection: str) -> List[Scene]:
        """Every dated scene of a collection's directory, by date (cached in memory)."""
        fam = family(collection)
        if fam is not None:
            from .local_products import product_catalogue

            return list(product_catalogue(self.source_dir(collection), fam)[0])
        return list(catalogue(self.source_dir(collection)).scenes)

    @staticmethod
    def build_index(directory) -> Path:
        """Scan ``directory`` and write its ``index.json``; return the path.

        One entry per scene: ``path`` (relative), ``kind`` (file|folder), ``date``,
        ``cloud_pct``, ``crs``, ``bounds_lonlat``, ``bounds``, ``bands`` (in band order
        for a file), ``files`` (band -> file, folders), ``width``/``height``/``res``,
        ``nodata``, ``boa_scale``/``boa_offset`` and per-band ``scales``/``offsets``.
        Dates, clouds and scales in an existing index fill in what file tags lack.
        """
        root = Path(directory).expanduser().resolve()
        if not root.is_dir():
            raise ProviderError(f"cannot index {str(root)!r}: not a directory")
        hints: Dict[str, Mapping[str, Any]] = {}
        for entry in _read_index(root) or []:
            hints[_index_key(root, str(entry["path"]))] = entry
        scenes, _skipped = _scan(root, hints)
        entries = [_index_entry(root, sc) for sc in scenes]
        target = root / INDEX_NAME
        tmp = root / f".{INDEX_NAME}.tmp-{os.getpid()}-{threading.get_ident()}"
        tmp.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, target)
        forget(root)
        return target

    # -------------------------------------------------------------- fetching

    def fetch(self, request: ResolvedRequest) -> Pixels:
        """One composite of the window, or one per frame (see ``Provider.assemble``); extra
        modalities are read on the primary sensor's grid."""
        sensor, _, spatial = self.inputs(request)
        grid = target_grid(spatial, sensor.scale_m, max_pixels=self.limits.max_roi_pixels)
        return self.assemble(request, lambda s, start, end: self._composite(s, spatial, grid, start, end))

    def _composite(self, sensor, spatial, grid: TargetGrid, start: date, end: date) -> Pixels:
        """The composite of ``[start, end)`` of one sensor on ``grid``; NoImageryError when empty."""
        root = self.source_dir(sensor.collection)
        fam = family(sensor.collection)
        if fam is None:
            cat = catalogue(root)
            scenes, skipped = cat.scenes, cat.skipped
            wanted = [canonical_band(b) for b in sensor.bands]
        else:  # Landsat / HLS products: common band names, each scene's own band numbering
            from .local_products import product_catalogue

            scenes, skipped = product_catalogue(root, fam)
            wanted = fam.resolve(sensor.bands)
        roi_box = grid.bounds_lonlat()

        rejected = {"date": 0, "footprint": 0, "cloud": 0, "bands": 0}
        selected: List[Scene] = []
        for scene in scenes:
            if not start <= scene.date < end:
                rejected["date"] += 1
            elif not _intersects(scene.bounds_lonlat, roi_box):
                rejected["footprint"] += 1
            elif scene.cloud_pct is not None and scene.cloud_pct > sensor.cloudy_pct:
                rejected["cloud"] += 1
            elif scene.missing(wanted):
                rejected["bands"] += 1
            else:
                selected.append(scene)
        where = (
            f"collection {sensor.collection!r} ({root}), window [{start.isoformat()}, {end.isoformat()}), "
            f"ROI {spatial!r}"
        )
        if not selected:
            raise NoImageryError(
                f"no scene passes the filters for {where}: {len(scenes)} scene(s) catalogued "
                f"({len(skipped)} file(s) skipped as undated or unreadable); rejected: "
                f"{rejected['date']} outside the window, {rejected['footprint']} not over the ROI, "
                f"{rejected['cloud']} with cloud % > {sensor.cloudy_pct:g}, "
                f"{rejected['bands']} missing a band of {list(sensor.bands)}"
            )

        stacks: List[np.ndarray] = []
        used: List[Scene] = []
        empty: List[str] = []
        for scene in selected:
            data = self._read_scene(scene, wanted, grid, sensor.scale_m)
            if np.isnan(data[0]).all():
                empty.append(scene.id)
                continue
            stacks.append(data)
            used.append(scene)
        if not used:
            raise NoImageryError(
                f"{len(selected)} scene(s) pass the filters for {where} but none has data inside the ROI "
                f"(all nodata there): {empty}"
            )

        array, valid = composite(stacks, sensor.composite)
        array[:, ~valid] = sensor.fill_value
        array = np.ascontiguousarray(array, dtype=np.float32)
        gt = grid.gdal()
        meta = {
            "scenes": [sc.id for sc in used],
            "n_scenes": len(used),
            "dates": [sc.date.isoformat() for sc in used],
            "cloud_pct": [sc.cloud_pct for sc in used],
            "nodata_fraction": float(1.0 - valid.mean()),
            "composite": sensor.composite,
            "crs": grid.crs,
            "transform": list(gt),
            "provider": self.name,
            "resampling": self._resampling.name,
            "rejected": dict(rejected, no_data_in_roi=len(empty)),
        }
        if fam is not None:
            meta["family"] = fam.name
            meta["sensors"] = [sc.sensor for sc in used]
            meta["bands_common"] = list(wanted)
        return Pixels(
            array=array,
            bands=tuple(sensor.bands),
            valid=valid,
            roi_mask=grid.roi_mask.copy(),
            crs=grid.crs,
            transform=gt,
            fill_value=float(sensor.fill_value),
            meta=meta,
        )

    def _read_scene(self, scene: Scene, wanted: Sequence[str], grid: TargetGrid, scale_m: float) -> np.ndarray:
        """The scene's ``wanted`` bands on ``grid`` as float32 (C, H, W); NaN where any band lacks data."""
        out = np.full((len(wanted), grid.height, grid.width), np.nan, dtype=np.float32)
        by_file: Dict[Tuple[str, bool], List[Tuple[int, BandSource]]] = {}
        for k, band in enumerate(wanted):
            src = scene.bands[band]
            by_file.setdefault((src.path, band in _CATEGORICAL_BANDS), []).append((k, src))
        lat = 0.5 * (scene.bounds_lonlat[1] + scene.bounds_lonlat[3])
        for (path, categorical), items in by_file.items():
            resampling = Resampling.nearest if categorical else self._resampling
            dest = np.full((len(items), grid.height, grid.width), np.nan, dtype=np.float32)
            _read_file(scene, path, [src.index for _, src in items], dest, grid, resampling, scale_m, lat)
            for j, (k, src) in enumerate(items):
                band = dest[j]
                if src.scale != 1.0 or src.offset != 0.0:
                    band *= np.float32(src.scale)
                    band += np.float32(src.offset)
                out[k] = band
        if scene.qa is not None and scene.qa_rule is not None:
            qa = np.full((1, grid.height, grid.width), np.nan, dtype=np.float32)
            _read_file(scene, scene.qa.path, [scene.qa.index], qa, grid, Resampling.nearest, scale_m, lat,
                       quality=True)
            seen = ~np.isnan(qa[0])
            rejected = np.zeros(seen.shape, dtype=bool)
            rejected[seen] = scene.qa_rule.reject(qa[0][seen])
            out[:, rejected] = np.nan
        out[:, np.isnan(out).any(axis=0)] = np.nan
        return out


def _read_file(scene: Scene, path: str, indexes: List[int], dest: np.ndarray, grid: TargetGrid,
               resampling: Resampling, scale_m: float, lat: float, *, quality: bool = False) -> None:
    """Warp bands ``indexes`` of ``path`` onto ``grid`` into ``dest`` (NaN = no data).

    A ``quality`` band (bit flags) is always read at full resolution, since an overview
    averages bits into nonsense, and its zero is a value, not the scene's fill DN."""
    try:
        with rasterio.open(path) as ds:
            src_nodata = scene.fill_dn if not quality and ds.nodata is None else None
            level = None if quality else _overview_level(ds, scale_m, lat)
            if level is None:
                _warp(ds, indexes, dest, grid, resampling, src_nodata)
            else:
                with rasterio.open(path, overview_level=level) as ovr:
                    _warp(ovr, indexes, dest, grid, resampling, src_nodata)
    except RasterioError as exc:
        raise ProviderError(f"could not read {path} (scene {scene.id!r}): {exc}") from exc


def _overview_level(ds, scale_m: float, lat: float) -> Optional[int]:
    """The coarsest internal overview still at least as fine as ``scale_m`` (None: full resolution)."""
    factors = ds.overviews(1)
    if not factors:
        return None
    rx, ry = abs(ds.res[0]), abs(ds.res[1])
    if ds.crs.is_geographic:
        res_m = min(rx * 111_320.0 * max(math.cos(math.radians(lat)), 1e-6), ry * 110_574.0)
    else:
        try:
            unit = float(ds.crs.linear_units_factor[1])
        except Exception:  # pragma: no cover - unusual CRS
            unit = 1.0
        res_m = min(rx, ry) * unit
    level = None
    for i, f in enumerate(factors):
        if res_m * f <= scale_m * (1.0 + 1e-6):
            level = i
    return level


def _warp(ds, indexes: List[int], dest: np.ndarray, grid: TargetGrid, resampling: Resampling,
          src_nodata: Optional[float] = None) -> None:
    """Warp the needed part of ``ds`` onto ``grid`` into ``dest`` (float32, NaN = no data).

    A GDAL warped VRT on the target grid: reading it makes GDAL compute, block by block,
    the source window each part of the grid needs and read only those source blocks.
    (``rasterio.warp.reproject`` into an array does the same but builds an in-memory
    dataset whose creation emits spurious NotGeoreferencedWarnings under threads.)
    """
    extra = {} if src_nodata is None else {"src_nodata": src_nodata}
    with WarpedVRT(
        ds,
        **extra,
        crs=grid.crs,
        transform=grid.transform,
        width=grid.width,
        height=grid.height,
        resampling=resampling,
        nodata=np.nan,
        dtype="float32",
        init_dest_nodata=True,
    ) as vrt:
        vrt.read(indexes, out=dest)


def composite(stacks: Sequence[np.ndarray], how: str) -> Tuple[np.ndarray, np.ndarray]:
    """Composite scenes (each (C, H, W), NaN = no data, in date order) -> (array, valid).

    ``median``: per-band NaN-median over scenes (the mean of the two middle values for an
    even count). ``mosaic``: the latest scene with data at a pixel gives its whole spectrum.
    A scene pixel counts only where the scene has data in every band. ``valid`` marks
    pixels where at least one scene counts; elsewhere the array is NaN.
    """
    if how not in ("median", "mosaic"):
        raise ProviderError(f"composite={how!r} is not accepted; use 'median' or 'mosaic'")
    if not stacks:
        raise ProviderError("nothing to composite: no scene has data")
    cube = np.stack([np.asarray(d, dtype=np.float32) for d in stacks])  # (S, C, H, W), a copy
    cube[np.broadcast_to(np.isnan(cube).any(axis=1, keepdims=True), cube.shape)] = np.nan
    if how == "mosaic":
        out = np.full(cube.shape[1:], np.nan, dtype=np.float32)
        for data in cube:  # in date order: later scenes overwrite earlier ones
            ok = ~np.isnan(data[0])
            out[:, ok] = data[:, ok]
        return out, ~np.isnan(out[0])
    cube.sort(axis=0)  # NaN sorts last
    count = (~np.isnan(cube[:, 0])).sum(axis=0)  # scenes with data per pixel (same for every band)
    seen = count > 0
    lo = np.clip((count - 1) // 2, 0, None)[None, None]
    hi = np.clip(count // 2, 0, None)[None, None]
    shape = (1,) + cube.shape[1:]
    a = np.take_along_axis(cube, np.broadcast_to(lo, shape), axis=0)[0]
    b = np.take_along_axis(cube, np.broadcast_to(hi, shape), axis=0)[0]
    out = (0.5 * (a.astype(np.float64) + b)).astype(np.float32)
    out[:, ~seen] = np.nan
    return out, seen


__all__ = [
    "BAND_ALIASES",
    "BandSource",
    "LocalProvider",
    "Scene",
    "TargetGrid",
    "canonical_band",
    "catalogue",
    "composite",
    "forget",
    "target_grid",
    "utm_crs",
]
