"""Target grids: the UTM zone of a place and the pixel grid a request is answered on.

Every provider and product reader answers a request on the same north-up grid, so
that pixels from Earth Engine, from local GeoTIFFs and from precomputed products line
up one to one. This module is the only place that decides that grid:

* :func:`utm_zone` / :func:`utm_crs`: the standard 6-degree UTM zone of a longitude
  (zones 1..60, no Norway or Svalbard exceptions, so that a zone is a pure function of
  longitude, as the GSE and TESSERA products lay out their tiles) and its CRS,
  ``EPSG:326zz`` north of the equator (latitude 0 included), ``EPSG:327zz`` south.
  Latitudes beyond UTM's nominal -80..84 get the same zones (the projection still
  computes there; the grid is just more distorted).
* :func:`target_grid`: the grid of a request's ROI, in the UTM zone of the ROI centre,
  with square pixels of ``scale_m`` ground metres and its origin on a multiple of
  ``scale_m`` (see the function for each ROI kind).
* :func:`overview_level`: which internal overview of a raster to read for a grid of
  a given pixel size.

>>> utm_crs(11.0, 46.0), utm_crs(-70.6, -33.4)
('EPSG:32632', 'EPSG:32719')
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence, Tuple

import numpy as np
from affine import Affine
from rasterio.warp import transform as warp_transform, transform_bounds

from ..errors import ProviderError
from ..limits import Limits
from ..specs import BBox, H3Cell, PointBuffer

LONLAT = "EPSG:4326"
N_ZONES = 60


def utm_zones(lon) -> np.ndarray:
    """The UTM zone numbers (1..60) of an array of longitudes; 180 degrees is zone 60."""
    return np.clip(np.floor((np.asarray(lon, dtype=np.float64) + 180.0) / 6.0).astype(np.int64) + 1, 1, N_ZONES)


def utm_zone(lon: float) -> int:
    """The standard 6-degree UTM zone number (1..60) of one longitude; 180 degrees is zone 60."""
    return min(max(int(math.floor((float(lon) + 180.0) / 6.0)) + 1, 1), N_ZONES)


def utm_epsg_of_zone(zone: int, north: bool) -> int:
    """The EPSG code of UTM ``zone`` (1..60) on WGS 84: 326zz north, 327zz south."""
    if isinstance(zone, bool) or not isinstance(zone, (int, np.integer)) or not 1 <= int(zone) <= N_ZONES:
        raise ProviderError(f"UTM zone {zone!r} is not accepted; use an integer in [1, {N_ZONES}]")
    return (32600 if north else 32700) + int(zone)


def utm_epsg(lon: float, lat: float) -> int:
    """The EPSG code of the UTM zone of a point (``lat >= 0`` counts as north)."""
    return utm_epsg_of_zone(utm_zone(lon), lat >= 0)


def utm_crs(lon: float, lat: float) -> str:
    """``EPSG:326zz`` (north) or ``EPSG:327zz`` (south): the standard 6-degree UTM zone of a point."""
    return f"EPSG:{utm_epsg(lon, lat)}"


def utm_crs_of_zone(zone: int, north: bool) -> str:
    """``EPSG:326zz`` / ``EPSG:327zz`` of a zone number and hemisphere."""
    return f"EPSG:{utm_epsg_of_zone(zone, north)}"


# ------------------------------------------------------------------ the pixel grid of a request


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
        """``(left, bottom, right, top)`` in the grid's CRS."""
        t = self.transform
        return t.c, t.f + t.e * self.height, t.c + t.a * self.width, t.f

    def bounds_lonlat(self) -> Tuple[float, float, float, float]:
        """The lon/lat box of the grid (edges densified, so it contains the whole grid)."""
        return tuple(transform_bounds(self.crs, LONLAT, *self.bounds, densify_pts=21))  # type: ignore[return-value]

    def gdal(self) -> Tuple[float, float, float, float, float, float]:
        """The GDAL geotransform ``(x0, xres, 0, y0, 0, -yres)`` (``Affine.from_gdal`` reads it back)."""
        return tuple(float(v) for v in self.transform.to_gdal())  # type: ignore[return-value]


def project(crs: str, lons: Sequence[float], lats: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """Lon/lat points in ``crs`` as two float arrays; ProviderError when a point does not project."""
    xs, ys = warp_transform(LONLAT, crs, list(lons), list(lats))
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
        raise ProviderError(f"cannot project lon/lat {list(zip(lons, lats))} to {crs}")
    return xs, ys


def covering(minx: float, miny: float, maxx: float, maxy: float, s: float) -> Tuple[float, float, int, int]:
    """Left, top, width, height of the snapped grid that covers a box (1e-6 px of float slack)."""
    left = math.floor(minx / s + 1e-6) * s
    right = math.ceil(maxx / s - 1e-6) * s
    bottom = math.floor(miny / s + 1e-6) * s
    top = math.ceil(maxy / s - 1e-6) * s
    width = max(1, int(round((right - left) / s)))
    height = max(1, int(round((top - bottom) / s)))
    return left, top, width, height


def points_in_polygon(px: np.ndarray, py: np.ndarray, vx: np.ndarray, vy: np.ndarray) -> np.ndarray:
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
        xs, ys = project(crs, [spatial.lon], [spatial.lat])
        n = max(1, int(math.ceil(2.0 * spatial.buffer_m / s - 1e-9)))
        left = round((xs[0] - n * s / 2.0) / s) * s
        top = round((ys[0] + n * s / 2.0) / s) * s
        width = height = n
    elif isinstance(spatial, BBox):
        try:
            minx, miny, maxx, maxy = transform_bounds(LONLAT, crs, *spatial.bounds(), densify_pts=21)
        except Exception as exc:  # pragma: no cover - GDAL refusing a valid lon/lat box
            raise ProviderError(f"cannot project {spatial!r} to {crs}: {exc}") from exc
        left, top, width, height = covering(minx, miny, maxx, maxy, s)
    elif isinstance(spatial, H3Cell):
        ring = spatial.polygon()[:-1]
        vx, vy = project(crs, [p[0] for p in ring], [p[1] for p in ring])
        left, top, width, height = covering(vx.min(), vy.min(), vx.max(), vy.max(), s)
        n = max(width, height)
        left -= ((n - width) // 2) * s
        top += ((n - height) // 2) * s
        width = height = n
        hexagon = (vx, vy)
    else:
        raise ProviderError(
            f"no target grid for a {type(spatial).__name__} ROI; accepted: PointBuffer, BBox, H3Cell"
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
        roi = points_in_polygon(px, py, hexagon[0], hexagon[1])
    return TargetGrid(crs=crs, transform=transform, width=int(width), height=int(height), roi_mask=roi)


def overview_level(ds, scale_m: float, lat: float) -> Optional[int]:
    """The coarsest internal overview of ``ds`` still at least as fine as ``scale_m`` (None: full resolution).

    ``lat`` converts degrees to metres for rasters in geographic coordinates. Reading
    that overview instead of the full-resolution data gives the same grid pixels for
    averaging resamplers at a fraction of the I/O when the grid is coarser than the data.
    """
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


__all__ = [
    "LONLAT",
    "TargetGrid",
    "covering",
    "overview_level",
    "points_in_polygon",
    "project",
    "target_grid",
    "utm_crs",
    "utm_crs_of_zone",
    "utm_epsg",
    "utm_epsg_of_zone",
    "utm_zone",
    "utm_zones",
]
