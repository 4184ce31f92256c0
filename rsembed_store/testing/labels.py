"""Queries on a synthetic scene's ground truth: the label raster, the class at a point, class fractions.

:func:`read_labels` reads ``truth/labels.tif`` of a directory that
:func:`rsembed_store.testing.scenes.generate_scene` wrote; :func:`label_at` and
:func:`class_fractions` take that directory or the tuple :func:`read_labels`
returns (a cache, for many calls). Polygons follow :mod:`rsembed_store.geo`'s rules.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np
import rasterio
from affine import Affine
from rasterio.features import rasterize
from rasterio.warp import transform as _warp_transform
from rasterio.windows import Window

from .. import geo
from ..errors import SpecError
from .landcover import CLASSES

LABELS_PATH = "truth/labels.tif"  # inside a scene directory (the layout of rsembed_store.testing.scenes)
_LONLAT = "EPSG:4326"

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
    """The rings of a GeoJSON Polygon mapping or of one bare lon/lat ring, validated by :mod:`rsembed_store.geo`."""
    if isinstance(polygon, Mapping):
        if polygon.get("type") != "Polygon":
            raise SpecError(
                f"only a GeoJSON Polygon or a lon/lat ring is accepted, got type {polygon.get('type')!r}"
            )
        return geo.geojson_polygons(polygon, "polygon")[0]
    return [geo.ring("polygon", polygon)]


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


__all__ = ["LabelCache", "class_fractions", "label_at", "read_labels"]
