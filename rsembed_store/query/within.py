"""Search's ``within`` filter: a box, a GeoJSON area or H3 cells -> one exact Lance SQL predicate.

:func:`within_clause` writes each area in the form Lance evaluates fastest
while staying exact:

- a :class:`BBox` (or a PointBuffer's box): ROI centre inside the box; a box
  small against the space's extent is narrowed by ``h3`` ranges first;
- H3 cells at any resolution: the row's ``h3`` cell descends from one of them
  (a finer cell counts as its parent at the space's resolution), as ``BETWEEN``
  ranges on the index, or a prefix test while scanning for long lists;
- a GeoJSON Polygon/MultiPolygon: ROI centre inside, with edges straight in
  lon/lat and polygons that never cross the antimeridian (the rules of
  :mod:`rsembed_store.geo`, the same as ingest planning); rows in cells well
  inside pass at once, rows near the border get ``ST_Within``.

The H3 integer arithmetic is :mod:`rsembed_store.h3int`'s and the geometry
:mod:`rsembed_store.geo`'s.
"""

from __future__ import annotations

import functools
import json
from typing import List, Mapping, Optional, Sequence, Tuple, Union

import h3
import numpy as np

from .. import geo
from ..errors import SpecError
from ..h3int import cell_int, cell_ranges, prefix_sql, ranges_sql
from ..specs import BBox, H3Cell, PointBuffer, coerce_spec

# an OR of BETWEEN ranges costs Lance about 0.2-0.3 ms per range to plan and look up:
# cell lists up to this many ranges go to the index as they are ...
MAX_DIRECT_RANGES = 32
# ... small areas are narrowed by at most this many ranges first
MAX_COARSE_RANGES = 32
# a polygon is covered with at most about this many H3 cells (computed once per polygon, cached);
# only rows in the cells along its border need the exact (slow) point-in-polygon test
MAX_COVER_CELLS = 20_000
# an area or a time window below this share of the space's extent is looked up through the
# indexes; above it the rows are scanned. Lance answers indexed comparisons from its scalar
# indexes and then reads each row they keep to test the rest, which costs about 1 us per row,
# while scanning a few columns of every row costs a few tens of ns per row.
SMALL_SHARE = 0.02

_SPATIAL_SPEC_TYPES = ("BBox", "PointBuffer", "H3Cell")
_ACCEPTED = "accepted: a GeoJSON Polygon or MultiPolygon (or a Feature/FeatureCollection of them)"


def within_clause(within, h3_res: int, hints: Optional[Mapping] = None) -> str:
    """A filter keeping rows inside ``within``: a BBox, a GeoJSON polygon, or H3 cells.

    ``hints`` (the space's lon/lat extent, stored by maintenance) only choose
    between equivalent forms: small areas go through the ``h3`` index first.
    """
    area = within_area(within)
    if isinstance(area, BBox):
        return bbox_clause(area, h3_res, hints)
    if isinstance(area, list):
        return cells_clause(area, h3_res)
    return polygon_clause(area, h3_res, hints)


def within_area(within) -> Union[BBox, List[int], Mapping]:
    """What a ``within`` filter names: a :class:`BBox` (a PointBuffer gives its box), a list of
    valid H3 cell ids as ints, or a GeoJSON area (a mapping, validated); anything else is a SpecError."""
    if hasattr(within, "__geo_interface__") and not isinstance(within, (BBox, PointBuffer, H3Cell)):
        within = within.__geo_interface__
    if isinstance(within, Mapping):
        kind = within.get("type")
        if kind in _SPATIAL_SPEC_TYPES:
            within = coerce_spec(within, BBox if kind == "BBox" else (PointBuffer if kind == "PointBuffer" else H3Cell))
        elif kind in geo.POLYGON_TYPES:
            _polygons(within)  # refuse a bad area here, naming the bad position
            return within
        else:
            raise SpecError(f"within={_short(within)} is not accepted: a GeoJSON object needs type "
                            f"{list(geo.POLYGON_TYPES[:2])} (or a Feature/FeatureCollection of them)")
    if isinstance(within, PointBuffer):
        within = BBox(*within.bounds())
    if isinstance(within, BBox):
        return within
    if isinstance(within, (H3Cell, str, int, np.integer)) and not isinstance(within, bool):
        return [cell_int(within, "within cell")]
    if isinstance(within, (list, tuple, set, frozenset, np.ndarray)):
        items = list(within)
        if not items:
            raise SpecError("within is an empty list of H3 cells; give at least one cell")
        return sorted({cell_int(c, "within cell") for c in items})
    raise SpecError(f"within={_short(within)} is not accepted; use a BBox, a GeoJSON Polygon/MultiPolygon dict "
                    "or a list of H3 cells")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def cells_clause(cells: Sequence, res: int) -> str:
    """Rows whose ``h3`` cell descends from (or, for finer cells, is the parent of) one of ``cells``.

    Up to :data:`MAX_DIRECT_RANGES` ranges go to the ``h3`` index; longer
    lists are tested while scanning with :func:`~rsembed_store.h3int.prefix_sql`.
    """
    ints = sorted({cell_int(c, "within cell") for c in cells})
    ranges = cell_ranges(ints, res)
    if len(ranges) <= MAX_DIRECT_RANGES:
        return ranges_sql(ranges)
    return prefix_sql(ints, res)


def _num(x) -> str:
    return repr(float(x))


def _small_area(bounds: Tuple[float, float, float, float], hints: Optional[Mapping]) -> bool:
    """Whether an area covers a small share of the space's extent (then the ``h3`` index pays off)."""
    if not hints or hints.get("minlon") is None:
        return False
    w, s, e, n = bounds
    ew, es, ee, en = (float(hints[k]) for k in ("minlon", "minlat", "maxlon", "maxlat"))
    extent = max(ee - ew, 1e-9) * max(en - es, 1e-9)
    overlap = max(0.0, min(e, ee) - max(w, ew)) * max(0.0, min(n, en) - max(s, es))
    return overlap / extent < SMALL_SHARE


def bbox_clause(box: BBox, res: int, hints: Optional[Mapping] = None) -> str:
    """ROI centre inside ``box``; a box small against the space's extent is narrowed by H3 ranges first."""
    exact = (f"lon >= {_num(box.minlon)} AND lon <= {_num(box.maxlon)} AND "
             f"lat >= {_num(box.minlat)} AND lat <= {_num(box.maxlat)}")
    if not _small_area(box.bounds(), hints):
        return exact
    coarse = _coarse_area(_key([geo.bbox_polygon(*box.bounds())]), res)
    return f"{ranges_sql(coarse)} AND {exact}" if coarse else exact


# ---------------------------------------------------------------- polygons


def _polygons(area: Mapping) -> List[geo.Polygon]:
    polys = geo.geojson_polygons(area, "within", _ACCEPTED)
    if not polys:
        raise SpecError(f"within={_short(area)} holds no polygon; {_ACCEPTED}")
    return polys


def _key(polys: Sequence[geo.Polygon]) -> str:
    """Polygons as canonical text: the key of the per-polygon caches below."""
    return json.dumps([[[list(pt) for pt in r] for r in p] for p in polys])


def _from_key(text: str) -> List[geo.Polygon]:
    return [[[tuple(pt) for pt in r] for r in p] for p in json.loads(text)]


def polygon_clause(area: Mapping, res: int, hints: Optional[Mapping] = None) -> str:
    """ROI centre inside a GeoJSON polygon, exactly (edges straight in lon/lat, as GeoJSON means them).

    Rows outside the polygon's bounding box are out at once. The polygon is
    covered with H3 cells (up to :data:`MAX_COVER_CELLS`): rows in cells well
    inside it pass; rows in cells along its border get the exact ``ST_Within``
    test (evaluated only for them); all other rows are out. A polygon small
    against the space's extent is narrowed by the ``h3`` index first.
    """
    polys = _polygons(area)
    text = _key(polys)
    exact = f"ST_Within(ST_Point(lon, lat), ST_GeomFromText('{geo.to_wkt(polys)}'))"
    interior, border = _polygon_cells(text, res)
    test = f"{prefix_sql(border, res)} AND {exact}"
    if interior:
        test = f"({prefix_sql(interior, res)} OR ({test}))"
    w, s, e, n = geo.bounds(polys)
    # the polygon's box first: a cheap test that spares most rows the cell look-ups
    box = f"lon >= {_num(w)} AND lon <= {_num(e)} AND lat >= {_num(s)} AND lat <= {_num(n)}"
    test = f"{box} AND {test}"
    if _small_area((w, s, e, n), hints):
        coarse = _coarse_area(text, res)
        if coarse:
            return f"{ranges_sql(coarse)} AND {test}"
    return test


def _overlap_cells(shape, r: int) -> set:
    """Cells at resolution ``r`` that overlap the shape (approximated where h3 lacks the mode)."""
    try:
        return set(h3.h3shape_to_cells_experimental(shape, r, "overlap"))
    except AttributeError:  # an h3 without the experimental containment modes: centres plus a ring
        centre = set(h3.h3shape_to_cells(shape, r))
        for poly in getattr(shape, "polys", None) or [shape]:
            centre.update(h3.latlng_to_cell(lat, lon, r) for lat, lon in poly.outer)
        return {n for c in centre for n in h3.grid_disk(c, 1)}


def _full_cells(shape, r: int) -> set:
    """Cells at resolution ``r`` lying wholly inside the shape (conservative where h3 lacks the mode)."""
    try:
        return set(h3.h3shape_to_cells_experimental(shape, r, "full"))
    except AttributeError:
        centre = set(h3.h3shape_to_cells(shape, r))
        return {c for c in centre if all(n in centre for n in h3.grid_disk(c, 1))}


def _shape_and_area(text: str):
    """The h3 shape (antimeridian-safe, see :func:`rsembed_store.geo.h3_shape`) and spherical km² of a key."""
    polys = _from_key(text)
    try:
        shape = geo.h3_shape(polys)
    except SpecError:
        raise
    except Exception as exc:
        raise SpecError(f"within: the GeoJSON polygon is not valid for H3: {exc}") from None
    return shape, geo.area_m2(polys) / 1e6


@functools.lru_cache(maxsize=64)
def _polygon_cells(text: str, res: int) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """(interior, border) cells of an area, compacted, at the finest resolution giving at most
    about :data:`MAX_COVER_CELLS` cells (the finer, the fewer rows need the exact test).

    Band: the cells that overlap the area without lying wholly inside it.
    Border: the band and its neighbours; rows whose ``h3`` descends from a
    border cell get the exact test. Interior: the other cells wholly inside.
    H3 children stick out of their parent a little (into its neighbours), so a
    row of an interior cell -- all of whose neighbours are inside too -- has
    its centre inside, and a row whose centre is inside descends from an
    interior or a border cell.
    """
    shape, area = _shape_and_area(text)
    r = _res_for(area, MAX_COVER_CELLS, res)
    over = _overlap_cells(shape, r)
    full = _full_cells(shape, r) & over
    band = over - full
    border = {n for c in band for n in h3.grid_disk(c, 1)}
    interior = full - border

    def packed(cells):
        return tuple(sorted(h3.str_to_int(c) for c in h3.compact_cells(list(cells)))) if cells else ()

    return packed(interior), packed(border)


def _res_for(area: float, cells: float, res: int) -> int:
    """The finest resolution <= ``res`` at which ``area`` (km²) holds at most about ``cells`` cells."""
    best = 0
    for r in range(0, res + 1):
        if area / h3.average_hexagon_area(r, "km^2") <= cells:
            best = r
    return best


@functools.lru_cache(maxsize=256)
def _coarse_area(text: str, res: int) -> Optional[Tuple[Tuple[int, int], ...]]:
    """At most MAX_COARSE_RANGES ``h3`` ranges holding every row whose centre lies in the area.

    A centre inside the area lies in an overlapping cell; its ``h3`` cell's
    ancestor is that cell or one of its neighbours (H3 children stick out of
    their parent a little), so the cover is the overlapping cells plus one ring.
    """
    shape, area = _shape_and_area(text)
    start = _res_for(area, 4 * MAX_COARSE_RANGES, res)
    for r in range(start, -1, -1):
        over = _overlap_cells(shape, r)
        ring = {h3.str_to_int(n) for c in over for n in h3.grid_disk(c, 1)}
        if not ring:
            continue
        ranges = cell_ranges(ring, res)
        if len(ranges) <= MAX_COARSE_RANGES:
            return tuple(ranges)
    return None


__all__ = [
    "MAX_COVER_CELLS",
    "MAX_DIRECT_RANGES",
    "SMALL_SHARE",
    "bbox_clause",
    "cells_clause",
    "polygon_clause",
    "within_area",
    "within_clause",
]
