"""Geometry in lon/lat: GeoJSON polygons, their area, and the H3 cells that cover them.

The one home of the geometry every wing needs: ingest plans cover a region
with cells, search's ``within`` filter covers a polygon with cells before its
exact test, and the synthetic fixtures measure class fractions in a polygon.

Conventions (the same everywhere)
---------------------------------
- A polygon is a list of rings, outer ring first, then holes; a ring is a list
  of ``(lon, lat)`` pairs in degrees, not closed (GeoJSON's repeated first
  position is dropped on parsing).
- Edges are straight lines in lon/lat degrees, as GeoJSON (RFC 7946) means
  them, and a polygon never crosses the antimeridian: a ring from lon 170 to
  -170 spans 340 degrees the long way round, it does not take the 20-degree
  short cut. A region across 180 degrees is written as a MultiPolygon with one
  part on each side (RFC 7946, section 3.1.9).
- h3 reads a polygon spanning more than 180 degrees of longitude as one that
  crosses the antimeridian (and would cover its complement), so every polygon
  goes to h3 through :func:`antimeridian_safe`, which cuts polygons wider than
  :data:`MAX_STRIP_DEG` into strips h3 reads as meant. Planning and search both
  use it, so a polygon gives the same cells in both.
- Areas are spherical (:func:`polygon_area_m2`, on a sphere of the mean Earth
  radius), good to a fraction of a percent for the cell-count estimates they
  serve; no planar approximation is kept beside it.
- Cells covering an area are those whose CENTRE lies inside
  (:func:`polygon_cells`, h3's ``polygon_to_cells`` rule).

Bad input raises :class:`~rsembed_store.errors.SpecError` naming the argument
(``where``), the position, the bad value and what is accepted.

>>> polys = geojson_polygons({"type": "Polygon", "coordinates": [[[10, 45], [11, 45], [11, 46], [10, 46], [10, 45]]]})
>>> round(area_m2(polys) / 1e6)
8666
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, List, Mapping, Sequence, Set, Tuple, Union

import h3

from .errors import SpecError
from .specs import EARTH_RADIUS_M  # the mean Earth radius, one constant for the package


MAX_STRIP_DEG = 120.0  # polygons wider than this (in longitude) go to h3 as strips

Ring = List[Tuple[float, float]]  # (lon, lat), not closed
Polygon = List[Ring]  # outer ring, then holes

POLYGON_TYPES = ("Polygon", "MultiPolygon", "Feature", "FeatureCollection", "GeometryCollection")
_ACCEPTED = "accepted: a GeoJSON Polygon or MultiPolygon, or a Feature/FeatureCollection of them"


# ---------------------------------------------------------------- positions


def is_number(value: Any) -> bool:
    """A real number (int, float or numpy number), not a bool."""
    if isinstance(value, bool):
        return False
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return isinstance(value, (np.integer, np.floating))
    except ImportError:  # pragma: no cover
        pass
    return isinstance(value, (int, float))


def lonlat(where: str, lon: Any, lat: Any) -> Tuple[float, float]:
    """One coordinate pair as floats in range; the error names ``where`` and the value."""
    if not (is_number(lon) and is_number(lat)):
        raise SpecError(f"{where}=({lon!r}, {lat!r}) is not a coordinate; use numbers (lon, lat) in degrees")
    try:
        lon, lat = float(lon), float(lat)
    except OverflowError:  # an int beyond any float, e.g. 10**400
        raise SpecError(f"{where} holds a number too large for a coordinate; accepted: lon in [-180, 180], "
                        "lat in [-90, 90]") from None
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise SpecError(f"{where}=({lon!r}, {lat!r}) is not finite; use (lon, lat) in degrees")
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        raise SpecError(
            f"{where}=({lon!r}, {lat!r}) is out of range; accepted: lon in [-180, 180], lat in [-90, 90] "
            "(GeoJSON order is [lon, lat])"
        )
    return lon, lat


# ---------------------------------------------------------------- GeoJSON parsing


def ring(where: str, coords: Any) -> Ring:
    """A validated ring from a list of ``[lon, lat]`` positions (closed or not)."""
    if not isinstance(coords, (list, tuple)):
        raise SpecError(f"{where}={_short(coords)} is not a ring; use a list of [lon, lat] positions")
    out: Ring = []
    for i, pos in enumerate(coords):
        if not isinstance(pos, (list, tuple)) or len(pos) < 2:
            raise SpecError(f"{where}[{i}]={_short(pos)} is not a position; use [lon, lat]")
        out.append(lonlat(f"{where}[{i}]", pos[0], pos[1]))
    if len(out) > 1 and out[0] == out[-1]:
        out.pop()  # GeoJSON rings repeat their first position
    if len(set(out)) < 3:
        raise SpecError(f"{where} has fewer than 3 distinct positions; a polygon ring needs at least 3")
    return out


def polygon(where: str, coords: Any) -> Polygon:
    """A validated polygon from GeoJSON Polygon coordinates (a list of rings, outer first)."""
    if not isinstance(coords, (list, tuple)) or not coords:
        raise SpecError(f"{where}={_short(coords)} is not a polygon; use a list of rings (outer ring first)")
    return [ring(f"{where}[{i}]", r) for i, r in enumerate(coords)]


def geojson_polygons(obj: Any, where: str = "region", accepted: str = _ACCEPTED) -> List[Polygon]:
    """Every polygon of a GeoJSON geometry, Feature, FeatureCollection or GeometryCollection, validated.

    An object with ``__geo_interface__`` (shapely, geopandas rows) is read
    through it. ``where`` names the argument in errors; ``accepted`` is the
    sentence listing what the caller takes. An empty collection gives ``[]``.
    """
    if hasattr(obj, "__geo_interface__") and not isinstance(obj, Mapping):
        obj = obj.__geo_interface__
    if not isinstance(obj, Mapping):
        raise SpecError(f"{where}={_short(obj)} is not a GeoJSON object; {accepted}")
    kind = obj.get("type")
    if kind == "Polygon":
        return [polygon(f"{where}.coordinates", obj.get("coordinates"))]
    if kind == "MultiPolygon":
        coords = obj.get("coordinates")
        if not isinstance(coords, (list, tuple)):
            raise SpecError(f"{where}.coordinates={_short(coords)} is not a list of polygons")
        return [polygon(f"{where}.coordinates[{i}]", c) for i, c in enumerate(coords)]
    if kind == "Feature":
        geom = obj.get("geometry")
        if geom is None:
            raise SpecError(f"{where} is a Feature without a geometry; it needs a Polygon or MultiPolygon")
        return geojson_polygons(geom, f"{where}.geometry", accepted)
    if kind in ("FeatureCollection", "GeometryCollection"):
        member = "features" if kind == "FeatureCollection" else "geometries"
        items = obj.get(member)
        if not isinstance(items, (list, tuple)):
            raise SpecError(f"{where}.{member}={_short(items)} is not a list")
        out: List[Polygon] = []
        for i, item in enumerate(items):
            out.extend(geojson_polygons(item, f"{where}.{member}[{i}]", accepted))
        return out
    raise SpecError(f"{where} is GeoJSON of type {kind!r}, which has no area; {accepted}")


def read_geojson(path: Union[str, "os.PathLike[str]"], what: str = "region file") -> Any:
    """The parsed JSON of a GeoJSON file; ``what`` names the argument (``'--within'``) in errors."""
    path = Path(os.fspath(path)).expanduser()
    if not path.is_file():
        raise SpecError(f"{what} {str(path)!r} does not exist (or is not a file); give the path of a "
                        ".geojson/.json file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SpecError(f"{what} {str(path)!r} is not readable GeoJSON: {exc}") from None


def bbox_polygon(minlon: float, minlat: float, maxlon: float, maxlat: float) -> Polygon:
    """The polygon of a lon/lat box (its edges are meridians and parallels)."""
    return [[(minlon, minlat), (maxlon, minlat), (maxlon, maxlat), (minlon, maxlat)]]


def bounds(polys: Sequence[Polygon]) -> Tuple[float, float, float, float]:
    """(minlon, minlat, maxlon, maxlat) of the outer rings of ``polys``."""
    lons = [x for p in polys for x, _ in p[0]]
    lats = [y for p in polys for _, y in p[0]]
    return min(lons), min(lats), max(lons), max(lats)


def to_geojson(polys: Sequence[Polygon]) -> dict:
    """A GeoJSON Polygon (one part) or MultiPolygon, rings closed."""
    coords = [[[list(pt) for pt in r + r[:1]] for r in p] for p in polys]
    if len(coords) == 1:
        return {"type": "Polygon", "coordinates": coords[0]}
    return {"type": "MultiPolygon", "coordinates": coords}


def to_wkt(polys: Sequence[Polygon]) -> str:
    """The WKT of ``polys`` (rings closed), for SQL's ``ST_GeomFromText``."""

    def ring_text(r: Ring) -> str:
        return "(" + ", ".join(f"{float(x)!r} {float(y)!r}" for x, y in r + r[:1]) + ")"

    def poly_text(p: Polygon) -> str:
        return "(" + ", ".join(ring_text(r) for r in p) + ")"

    if len(polys) == 1:
        return "POLYGON " + poly_text(polys[0])
    return "MULTIPOLYGON (" + ", ".join(poly_text(p) for p in polys) + ")"


# ---------------------------------------------------------------- area


def ring_area_m2(r: Ring) -> float:
    """Spherical area of a lon/lat ring (Chamberlain & Duquette, 2007), in square metres."""
    n = len(r)
    total = 0.0
    for i in range(n):
        lon_prev = r[i - 1][0]
        lon_next = r[(i + 1) % n][0]
        total += math.radians(lon_next - lon_prev) * math.sin(math.radians(r[i][1]))
    return abs(total) * EARTH_RADIUS_M**2 / 2.0


def polygon_area_m2(poly: Polygon) -> float:
    """Spherical area of a polygon: its outer ring less its holes, in square metres."""
    return max(ring_area_m2(poly[0]) - sum(ring_area_m2(h) for h in poly[1:]), 0.0)


def area_m2(polys: Sequence[Polygon]) -> float:
    """Total spherical area of ``polys`` (parts are assumed not to overlap), in square metres."""
    return sum(polygon_area_m2(p) for p in polys)


# ---------------------------------------------------------------- the antimeridian and H3


def _clip(r: Ring, lon: float, keep_east: bool) -> Ring:
    """Sutherland-Hodgman clip of a ring to the half-plane east (or west) of meridian ``lon``."""

    def inside(p):
        return p[0] >= lon if keep_east else p[0] <= lon

    out: Ring = []
    n = len(r)
    for i in range(n):
        cur, prev = r[i], r[i - 1]
        if inside(cur):
            if not inside(prev):
                out.append(_cross(prev, cur, lon))
            out.append(cur)
        elif inside(prev):
            out.append(_cross(prev, cur, lon))
    return out


def _cross(a, b, lon):
    t = (lon - a[0]) / (b[0] - a[0])
    return lon, a[1] + t * (b[1] - a[1])


def antimeridian_safe(poly: Polygon) -> List[Polygon]:
    """``poly`` as pieces no wider than :data:`MAX_STRIP_DEG` degrees of longitude, for h3.

    h3 reads a polygon spanning more than 180 degrees of longitude as one that
    crosses the antimeridian; our polygons never do (see the module notes), so
    a wide one is cut along meridians into strips that h3 reads as meant. The
    strips share their cut edges; a narrow polygon comes back unchanged.
    """
    lons = [p[0] for p in poly[0]]
    lo, hi = min(lons), max(lons)
    pieces = math.ceil((hi - lo) / MAX_STRIP_DEG)
    if pieces <= 1:
        return [poly]
    width = (hi - lo) / pieces
    out = []
    for k in range(pieces):
        a = lo + k * width
        b = hi if k == pieces - 1 else a + width
        rings = [_clip(_clip(r, a, True), b, False) for r in poly]
        if len(set(rings[0])) < 3:
            continue
        out.append([rings[0]] + [h for h in rings[1:] if len(set(h)) >= 3])
    return out


def h3_shape(polys: Sequence[Polygon]) -> "h3.H3Shape":
    """An h3 shape of ``polys`` after :func:`antimeridian_safe`, for h3's cover functions."""
    parts = [h3.LatLngPoly(*[[(lat, lon) for lon, lat in r] for r in piece])
             for poly in polys for piece in antimeridian_safe(poly)]
    if not parts:
        raise SpecError("the area holds no polygon with an extent; " + _ACCEPTED)
    return parts[0] if len(parts) == 1 else h3.LatLngMultiPoly(*parts)


def estimated_cells(polys: Sequence[Polygon], res: int) -> float:
    """About how many cells at ``res`` cover ``polys`` (area over the average hexagon area)."""
    return area_m2(polys) / 1e6 / h3.average_hexagon_area(res, unit="km^2")


def polygon_cells(polys: Sequence[Polygon], res: int) -> Set[str]:
    """The cells at ``res`` whose centres lie inside ``polys`` (holes excluded), as hex ids.

    Enumerates every cell: check :func:`estimated_cells` first for large areas.
    """
    cells: Set[str] = set()
    for poly in polys:
        for piece in antimeridian_safe(poly):
            shape = h3.LatLngPoly(*[[(lat, lon) for lon, lat in r] for r in piece])
            cells.update(h3.h3shape_to_cells(shape, res))
    return cells


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."



# ---------------------------------------------------------------- lon/lat boxes (west > east: across 180)


def union_lonlat(boxes: Sequence[Tuple[float, float, float, float]]) -> Tuple[float, float, float, float]:
    """The lon/lat box of several files of one scene (the first box when any crosses the antimeridian)."""
    if len(boxes) == 1 or any(b[0] > b[2] for b in boxes):
        return boxes[0]
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def intersects(a: Tuple[float, float, float, float], b: Tuple[float, float, float, float]) -> bool:
    """Do two lon/lat boxes overlap (either may cross the antimeridian: west > east)?"""
    if not (a[1] < b[3] and b[1] < a[3]):
        return False

    def spans(box):
        w, e = box[0], box[2]
        return [(w, 180.0), (-180.0, e)] if w > e else [(w, e)]

    return any(x0 < y1 and y0 < x1 for x0, x1 in spans(a) for y0, y1 in spans(b))


__all__ = [
    "EARTH_RADIUS_M",
    "MAX_STRIP_DEG",
    "POLYGON_TYPES",
    "Polygon",
    "Ring",
    "antimeridian_safe",
    "area_m2",
    "bbox_polygon",
    "bounds",
    "estimated_cells",
    "intersects",
    "geojson_polygons",
    "h3_shape",
    "is_number",
    "lonlat",
    "polygon",
    "polygon_area_m2",
    "polygon_cells",
    "read_geojson",
    "ring",
    "ring_area_m2",
    "to_geojson",
    "to_wkt",
    "union_lonlat",
]
