"""Regions -> H3 cells: what :func:`~rsembed_store.ingest.plan.plan` covers.

:func:`region_cells` turns a region (a box, GeoJSON polygons or a file of
them, H3 cell ids, points) into the sorted H3 cells at one resolution that
cover it, refusing regions that would give too many cells before enumerating
any. The geometry (GeoJSON parsing, spherical areas, the antimeridian rule,
centre-inside coverage) is :mod:`rsembed_store.geo`'s, shared with search.

Coverage rule
-------------
Polygons and boxes are covered with the H3 cells whose CENTRES lie inside
them (H3's ``polygon_to_cells`` rule). A cell that overlaps the region but
whose centre is outside is not included, and a region smaller than one cell
may hold no centre at all (that is refused: use a finer resolution, or pass
the region as points). Edges are straight lines in lon/lat degrees, as in
GeoJSON, and polygons never cross the antimeridian (a region across it is a
MultiPolygon with a part on each side).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import h3

from .. import geo
from ..errors import LimitError, SpecError
from ..geo import Polygon
from ..h3int import cell_id
from ..limits import Limits, how_to_raise
from ..specs import BBox, H3Cell, PointBuffer


_REGION_HELP = (
    "accepted regions: a BBox; a GeoJSON Polygon/MultiPolygon (geometry, Feature or "
    "FeatureCollection dict, or a path to a .geojson/.json file); a list of H3 cell ids "
    "(str or int); a list of points ((lon, lat) tuples or PointBuffer specs)"
)
_GEOJSON_HELP = ("accepted: Polygon, MultiPolygon, or a Feature/FeatureCollection of them (pass points as a "
                 "list of (lon, lat) instead)")


# ---------------------------------------------------------------- small helpers


def check_res(h3_res: Any) -> int:
    """``h3_res`` if it is an int H3 resolution in [0, 15]; a SpecError naming it otherwise."""
    if isinstance(h3_res, bool) or not isinstance(h3_res, int) or not 0 <= h3_res <= 15:
        raise SpecError(f"h3_res={h3_res!r} is not accepted; use an integer H3 resolution in [0, 15]")
    return h3_res


def _too_many(count: float, h3_res: int, max_cells: int, what: str, limit: str = "max_cells") -> LimitError:
    """The refusal of ``count`` cells over ``max_cells``: ``limit`` is ``"max_cells"`` for a cap the
    caller passed, ``"max_plan_cells"`` for the configured limit (the message says how to raise it)."""
    # each coarser resolution has ~7x fewer cells
    coarser = h3_res
    while coarser > 0 and count / 7 ** (h3_res - coarser) > max_cells:
        coarser -= 1
    if coarser < h3_res:
        hint = f"use a coarser resolution (h3_res={coarser} gives about {int(count / 7 ** (h3_res - coarser)):,})"
    else:
        hint = "split the region"
    if limit == "max_cells":
        message = (f"{what} gives about {int(count):,} cells at h3_res={h3_res}, more than max_cells={max_cells:,}; "
                   f"{hint}, or raise max_cells")
    else:
        message = (f"{what} gives about {int(count):,} cells at h3_res={h3_res}, more than the limit "
                   f"{limit}={max_cells:,}; {hint}, or raise the limit with {how_to_raise(limit)}")
    return LimitError(message, limit=limit, size=count, maximum=max_cells)


def _polygon_cells(polys: List[Polygon], h3_res: int, max_cells: int, what: str, limit: str) -> set:
    """The cells of ``polys`` (centre rule), refused before enumeration when about ``max_cells`` is passed."""
    estimate = geo.estimated_cells(polys, h3_res)
    if estimate > max_cells:
        raise _too_many(estimate, h3_res, max_cells, what, limit)
    return geo.polygon_cells(polys, h3_res)


# ---------------------------------------------------------------- cells and points


def _is_int(value: Any) -> bool:
    """An int or numpy integer (not a bool, not a float)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    try:
        import numpy as np

        return isinstance(value, np.integer)
    except ImportError:  # pragma: no cover
        return False


def _cell_id(where: str, value: Any) -> str:
    """Normalise an H3 cell id (str or int) to h3's lower-case hex string."""
    try:
        return cell_id(value, where)
    except SpecError as exc:
        raise SpecError(f"{exc} ({_REGION_HELP})") from None


def _item(where: str, item: Any) -> Tuple[str, Any]:
    """Classify one element of a list region: ('cell', id) or ('point', (lon, lat))."""
    if isinstance(item, H3Cell):
        return "cell", item.cell
    if isinstance(item, PointBuffer):
        return "point", (item.lon, item.lat)
    if isinstance(item, str) or _is_int(item):
        return "cell", _cell_id(where, item)
    seq = item
    if hasattr(seq, "tolist") and not isinstance(seq, (list, tuple)):
        seq = seq.tolist()
    if isinstance(seq, (list, tuple)):
        if len(seq) != 2:
            raise SpecError(f"{where}={item!r} is not a point; use a (lon, lat) pair")
        return "point", geo.lonlat(where, seq[0], seq[1])
    raise SpecError(f"{where}={item!r} is neither an H3 cell id nor a (lon, lat) point; {_REGION_HELP}")


def _list_cells(items: Sequence[Any], h3_res: int, max_cells: int, limit: str) -> set:
    if len(items) == 2 and all(geo.is_number(v) and not _is_int(v) for v in items):
        raise SpecError(
            f"region={tuple(items)!r} looks like a single (lon, lat) point; pass a list of points "
            f"such as [{tuple(items)!r}]"
        )
    cells: set = set()
    coarse: List[str] = []
    for i, raw in enumerate(items):
        kind, value = _item(f"region[{i}]", raw)
        if kind == "point":
            lon, lat = value
            cells.add(h3.latlng_to_cell(lat, lon, h3_res))
            continue
        res = h3.get_resolution(value)
        if res == h3_res:
            cells.add(value)
        elif res > h3_res:
            cells.add(h3.cell_to_parent(value, h3_res))
        else:
            coarse.append(value)
    if coarse:
        coarse = sorted(set(coarse))
        total = len(cells) + sum(h3.cell_to_children_size(c, h3_res) for c in coarse)
        if total > max_cells:
            raise _too_many(total, h3_res, max_cells, f"the cell list ({len(coarse)} coarser cells)", limit)
        for c in coarse:
            cells.update(h3.cell_to_children(c, h3_res))
    return cells


# ---------------------------------------------------------------- region_cells


def region_cells(region: Any, h3_res: int, *, max_cells: Optional[int] = None,
                 limits: Optional[Limits] = None) -> List[str]:
    """The H3 cells (hex ids at ``h3_res``) that cover ``region``, sorted and unique.

    ``region`` is one of:

    - a :class:`~rsembed_store.specs.BBox`, or a GeoJSON ``Polygon`` /
      ``MultiPolygon`` (a geometry dict, a ``Feature`` or ``FeatureCollection``
      of polygons, an object with ``__geo_interface__``, or the path of a
      ``.geojson`` / ``.json`` file): covered by the cells whose **centres lie
      inside** it (holes excluded). A cell that only overlaps the edge is left
      out, so an area smaller than a cell may hold none (refused);
    - a list/tuple of H3 cell ids (hex str or int, or ``H3Cell`` specs); a cell
      at a coarser resolution becomes all its children at ``h3_res``, a finer
      one its parent at ``h3_res``;
    - a list of points, ``(lon, lat)`` pairs or ``PointBuffer`` specs (only the
      centre is used): the cell containing each point;
    - a single H3 cell id, ``H3Cell`` or ``PointBuffer``: as a list of one.

    A region estimated (area / average hexagon area, or exact children count)
    to give more than ``max_cells`` cells is refused before any cell is
    enumerated (:class:`~rsembed_store.errors.LimitError`); without ``max_cells``
    the cap is the ``max_plan_cells`` limit of ``limits`` (default: the
    environment's, see :mod:`rsembed_store.limits`). Bad input raises
    :class:`~rsembed_store.errors.SpecError` naming the value and what is accepted.
    """
    h3_res = check_res(h3_res)
    if max_cells is None:
        max_cells, limit = (limits or Limits.from_config(None)).max_plan_cells, "max_plan_cells"
    else:
        limit = "max_cells"
    if isinstance(max_cells, bool) or not isinstance(max_cells, int) or max_cells <= 0:
        raise SpecError(f"max_cells={max_cells!r} is not accepted; use a positive integer")

    if isinstance(region, BBox):
        w, s, e, n = region.bounds()
        what = f"the bbox {region.bounds()}"
        cells = _polygon_cells([geo.bbox_polygon(w, s, e, n)], h3_res, max_cells, what, limit)
    elif isinstance(region, os.PathLike) or (
        isinstance(region, str) and region.strip().lower().endswith((".geojson", ".json"))
    ):
        path = Path(os.fspath(region)).expanduser()
        polys = geo.geojson_polygons(geo.read_geojson(path, "region file"), f"region file {str(path)!r}", _GEOJSON_HELP)
        if not polys:
            raise SpecError(f"region file {str(path)!r} holds no polygon; {_REGION_HELP}")
        what = f"the polygons of {str(path)!r}"
        cells = _polygon_cells(polys, h3_res, max_cells, what, limit)
    elif isinstance(region, Mapping) or hasattr(region, "__geo_interface__"):
        polys = geo.geojson_polygons(region, "region", _GEOJSON_HELP)
        if not polys:
            raise SpecError(f"region {region!r} holds no polygon; {_REGION_HELP}")
        what = "the GeoJSON region"
        cells = _polygon_cells(polys, h3_res, max_cells, what, limit)
    elif isinstance(region, (str, H3Cell, PointBuffer)) or _is_int(region):
        cells = _list_cells([region], h3_res, max_cells, limit)
        what = None
    elif isinstance(region, (list, tuple)) or (hasattr(region, "tolist") and hasattr(region, "ndim")):
        items = region.tolist() if hasattr(region, "tolist") and not isinstance(region, (list, tuple)) else region
        if len(items) == 0:
            raise SpecError(f"region={region!r} is empty; {_REGION_HELP}")
        cells = _list_cells(items, h3_res, max_cells, limit)
        what = None
    elif region is None:
        raise SpecError(f"region is required; {_REGION_HELP}")
    else:
        raise SpecError(f"region={region!r} of type {type(region).__name__} is not accepted; {_REGION_HELP}")

    if not cells:
        raise SpecError(
            f"{what} contains no H3 cell centre at h3_res={h3_res} (cells are kept when their centre is "
            "inside); use a finer resolution or pass the place as a list of (lon, lat) points"
        )
    if len(cells) > max_cells:
        raise _too_many(len(cells), h3_res, max_cells, what or "the region", limit)
    return sorted(cells)


__all__ = ["check_res", "region_cells"]
