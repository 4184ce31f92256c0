"""Planning: a region and time windows -> the resolved, keyed requests to compute.

:func:`region_cells` covers a region with H3 cells at one resolution;
:func:`plan` crosses those cells with time windows, resolves every
``Request(model, H3Cell(cell), window, ...)`` exactly as
:func:`rsembed_store.keys.resolve` would, keys it and drops duplicates. The
resulting :class:`Plan` can count what the store already holds
(:meth:`Plan.check_cache`), list what is left to compute (:meth:`Plan.missing`),
summarise itself as JSON and round-trip through a file.

Coverage rule
-------------
Polygons and boxes are covered with the H3 cells whose CENTRES lie inside
them (H3's ``polygon_to_cells`` rule). A cell that overlaps the region but
whose centre is outside is not included, and a region smaller than one cell
may hold no centre at all (that is refused: use a finer resolution, or pass
the region as points). Edges are straight lines in lon/lat degrees, as in
GeoJSON.

Speed
-----
Calling :func:`~rsembed_store.keys.resolve` per request costs ~130 us (spec
validation, JSON, SHA-256), too slow for 10^5..10^6 cells. :func:`plan`
resolves ONE template request per window through ``resolve`` itself, then
builds each cell's request from it: the cells come from h3 (already valid),
so the ``H3Cell`` is made without re-validation, and the canonical JSON is the
template's canonical JSON with the cell id substituted. That substitution is
exact: the cell id is the only value that differs, it is a plain hex string
that JSON writes verbatim, and the template string is produced by
``canonical_json`` itself (checked against the template request on every
call; tests compare the fast path with ``resolve`` on random cells).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import h3

from ..errors import LimitError, SpecError, UnknownSpaceError
from ..keys import Request, ResolvedRequest, canonical_json, hash_json, resolve
from ..limits import DEFAULT_MAX_PLAN_CELLS, Limits, how_to_raise
from ..model import Model
from ..registry import model_class
from ..specs import (
    EARTH_RADIUS_M,
    BBox,
    H3Cell,
    OutputSpec,
    PointBuffer,
    TemporalSpec,
    h3_cell_id,
    parse_time,
)

DEFAULT_MAX_CELLS = DEFAULT_MAX_PLAN_CELLS  # the default of the max_plan_cells limit (rsembed_store.limits)
PLAN_FORMAT = "rsembed-plan/1"

_SECONDS_FALLBACK = 2.0  # per request, for a model the registry does not know

_REGION_HELP = (
    "accepted regions: a BBox; a GeoJSON Polygon/MultiPolygon (geometry, Feature or "
    "FeatureCollection dict, or a path to a .geojson/.json file); a list of H3 cell ids "
    "(str or int); a list of points ((lon, lat) tuples or PointBuffer specs)"
)


# ---------------------------------------------------------------- small helpers


def _check_res(h3_res: Any) -> int:
    if isinstance(h3_res, bool) or not isinstance(h3_res, int) or not 0 <= h3_res <= 15:
        raise SpecError(f"h3_res={h3_res!r} is not accepted; use an integer H3 resolution in [0, 15]")
    return h3_res


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return isinstance(value, (np.integer, np.floating))
    except ImportError:  # pragma: no cover
        pass
    return isinstance(value, (int, float))


def _lonlat(where: str, lon: Any, lat: Any) -> Tuple[float, float]:
    """Validate one coordinate pair; the error names ``where`` and the value."""
    if not (_is_number(lon) and _is_number(lat)):
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


# ---------------------------------------------------------------- polygons


Ring = List[Tuple[float, float]]  # (lon, lat), not closed
Polygon = List[Ring]  # outer ring, then holes


def _ring(where: str, coords: Any) -> Ring:
    if not isinstance(coords, (list, tuple)):
        raise SpecError(f"{where}={coords!r} is not a ring; use a list of [lon, lat] positions")
    ring: Ring = []
    for i, pos in enumerate(coords):
        if not isinstance(pos, (list, tuple)) or len(pos) < 2:
            raise SpecError(f"{where}[{i}]={pos!r} is not a position; use [lon, lat]")
        ring.append(_lonlat(f"{where}[{i}]", pos[0], pos[1]))
    if len(ring) > 1 and ring[0] == ring[-1]:
        ring.pop()  # GeoJSON rings repeat their first position
    if len(set(ring)) < 3:
        raise SpecError(f"{where} has fewer than 3 distinct positions; a polygon ring needs at least 3")
    return ring


def _polygon(where: str, coords: Any) -> Polygon:
    if not isinstance(coords, (list, tuple)) or not coords:
        raise SpecError(f"{where}={coords!r} is not a polygon; use a list of rings (outer ring first)")
    return [_ring(f"{where}[{i}]", r) for i, r in enumerate(coords)]


def _geojson_polygons(obj: Any, where: str = "region") -> List[Polygon]:
    """Every polygon of a GeoJSON geometry/Feature/FeatureCollection, validated."""
    if hasattr(obj, "__geo_interface__") and not isinstance(obj, Mapping):
        obj = obj.__geo_interface__
    if not isinstance(obj, Mapping):
        raise SpecError(f"{where}={obj!r} is not a GeoJSON object; {_REGION_HELP}")
    kind = obj.get("type")
    if kind == "Polygon":
        return [_polygon(f"{where}.coordinates", obj.get("coordinates"))]
    if kind == "MultiPolygon":
        coords = obj.get("coordinates")
        if not isinstance(coords, (list, tuple)):
            raise SpecError(f"{where}.coordinates={coords!r} is not a list of polygons")
        return [_polygon(f"{where}.coordinates[{i}]", c) for i, c in enumerate(coords)]
    if kind == "Feature":
        geom = obj.get("geometry")
        if geom is None:
            raise SpecError(f"{where} is a Feature without a geometry; it needs a Polygon or MultiPolygon")
        return _geojson_polygons(geom, f"{where}.geometry")
    if kind == "FeatureCollection":
        feats = obj.get("features")
        if not isinstance(feats, (list, tuple)):
            raise SpecError(f"{where}.features={feats!r} is not a list of Features")
        out: List[Polygon] = []
        for i, f in enumerate(feats):
            out.extend(_geojson_polygons(f, f"{where}.features[{i}]"))
        return out
    if kind == "GeometryCollection":
        geoms = obj.get("geometries")
        if not isinstance(geoms, (list, tuple)):
            raise SpecError(f"{where}.geometries={geoms!r} is not a list of geometries")
        out = []
        for i, g in enumerate(geoms):
            out.extend(_geojson_polygons(g, f"{where}.geometries[{i}]"))
        return out
    raise SpecError(
        f"{where} is GeoJSON of type {kind!r}, which has no area to cover; accepted: Polygon, MultiPolygon, "
        "or a Feature/FeatureCollection of them (pass points as a list of (lon, lat) instead)"
    )


def _read_geojson(path: Path) -> Any:
    if not path.is_file():
        raise SpecError(f"region file {str(path)!r} does not exist; {_REGION_HELP}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecError(f"region file {str(path)!r} is not readable GeoJSON: {exc}") from None


def _ring_area_m2(ring: Ring) -> float:
    """Spherical area of a lon/lat ring (Chamberlain & Duquette), in square metres."""
    n = len(ring)
    total = 0.0
    for i in range(n):
        lon_prev = ring[i - 1][0]
        lon_next = ring[(i + 1) % n][0]
        total += math.radians(lon_next - lon_prev) * math.sin(math.radians(ring[i][1]))
    return abs(total) * EARTH_RADIUS_M**2 / 2.0


def _polygon_area_m2(poly: Polygon) -> float:
    return max(_ring_area_m2(poly[0]) - sum(_ring_area_m2(h) for h in poly[1:]), 0.0)


def _clip(ring: Ring, lon: float, keep_east: bool) -> Ring:
    """Sutherland-Hodgman clip of a ring to the half-plane east (or west) of meridian ``lon``."""

    def inside(p):
        return p[0] >= lon if keep_east else p[0] <= lon

    out: Ring = []
    n = len(ring)
    for i in range(n):
        cur, prev = ring[i], ring[i - 1]
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


def _strips(poly: Polygon) -> List[Polygon]:
    """Split a polygon wider than 120 degrees of longitude into narrower strips.

    h3 reads a polygon spanning more than 180 degrees of longitude as one that
    crosses the antimeridian (it would cover the complement); GeoJSON polygons
    never cross it, so wide ones are cut into strips that h3 reads as meant.
    """
    lons = [p[0] for p in poly[0]]
    lo, hi = min(lons), max(lons)
    pieces = math.ceil((hi - lo) / 120.0)
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


def _polygon_cells(polys: List[Polygon], h3_res: int, max_cells: int, what: str, limit: str) -> set:
    area_km2 = sum(_polygon_area_m2(p) for p in polys) / 1e6
    estimate = area_km2 / h3.average_hexagon_area(h3_res, unit="km^2")
    if estimate > max_cells:
        raise _too_many(estimate, h3_res, max_cells, what, limit)
    cells: set = set()
    for poly in polys:
        for piece in _strips(poly):
            shape = h3.LatLngPoly(*[[(lat, lon) for lon, lat in ring] for ring in piece])
            cells.update(h3.h3shape_to_cells(shape, h3_res))
    return cells


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
        return h3_cell_id(value, where)
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
        return "point", _lonlat(where, seq[0], seq[1])
    raise SpecError(f"{where}={item!r} is neither an H3 cell id nor a (lon, lat) point; {_REGION_HELP}")


def _list_cells(items: Sequence[Any], h3_res: int, max_cells: int, limit: str) -> set:
    if len(items) == 2 and all(_is_number(v) and not _is_int(v) for v in items):
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
    h3_res = _check_res(h3_res)
    if max_cells is None:
        max_cells, limit = (limits or Limits.from_config(None)).max_plan_cells, "max_plan_cells"
    else:
        limit = "max_cells"
    if isinstance(max_cells, bool) or not isinstance(max_cells, int) or max_cells <= 0:
        raise SpecError(f"max_cells={max_cells!r} is not accepted; use a positive integer")

    if isinstance(region, BBox):
        w, s, e, n = region.bounds()
        what = f"the bbox {region.bounds()}"
        cells = _polygon_cells([[[(w, s), (e, s), (e, n), (w, n)]]], h3_res, max_cells, what, limit)
    elif isinstance(region, os.PathLike) or (
        isinstance(region, str) and region.strip().lower().endswith((".geojson", ".json"))
    ):
        path = Path(os.fspath(region)).expanduser()
        polys = _geojson_polygons(_read_geojson(path), f"region file {str(path)!r}")
        if not polys:
            raise SpecError(f"region file {str(path)!r} holds no polygon; {_REGION_HELP}")
        what = f"the polygons of {str(path)!r}"
        cells = _polygon_cells(polys, h3_res, max_cells, what, limit)
    elif isinstance(region, Mapping) or hasattr(region, "__geo_interface__"):
        polys = _geojson_polygons(region)
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


# ---------------------------------------------------------------- the plan


def _window(where: str, value: Any) -> Optional[TemporalSpec]:
    if value is None or isinstance(value, TemporalSpec):
        return value
    if isinstance(value, Mapping):
        return TemporalSpec.from_dict(value)
    if isinstance(value, str):
        return parse_time(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return TemporalSpec.year(value)
    raise SpecError(
        f"{where}={value!r} is not a time window; accepted: TemporalSpec.year(Y), "
        "TemporalSpec.range(START, END), its dict form, '2022' or 'START/END'"
    )


def _windows(windows: Any) -> List[Optional[TemporalSpec]]:
    if isinstance(windows, (list, tuple)):
        if not windows:
            raise SpecError("windows=[] is empty; give at least one TemporalSpec")
        return [_window(f"windows[{i}]", w) for i, w in enumerate(windows)]
    return [_window("windows", windows)]


_SENTINEL = "PLANCELLSENTINEL"


def _template(resolved: ResolvedRequest) -> Tuple[str, str]:
    """The canonical JSON of ``resolved`` split around its cell id: (before, after)."""
    d = resolved.key_dict()
    d["spatial"] = {"type": "H3Cell", "cell": _SENTINEL}
    text = canonical_json(d)
    if text.count(_SENTINEL) != 1:  # pragma: no cover - guards the recipe
        raise AssertionError("plan template: the cell placeholder is not unique")
    before, after = text.split(_SENTINEL)
    if before + resolved.spatial.cell + after != resolved.canonical:  # pragma: no cover - guards the recipe
        raise AssertionError("plan template does not reproduce the canonical JSON of resolve()")
    return before, after


def _fast_cell(cell: str) -> H3Cell:
    """An H3Cell for an id h3 itself produced (valid and normalised): no re-validation."""
    obj = object.__new__(H3Cell)
    object.__setattr__(obj, "cell", cell)
    return obj


@dataclass
class Plan:
    """The requests for a region x windows, unique by key, ordered by cell then window.

    ``windows`` are the windows as given; ``requests`` hold them as the model
    resolves them (so two windows that resolve alike give one request per cell,
    counted in ``duplicates_dropped``).
    """

    requests: List[ResolvedRequest]
    cells: List[str]
    windows: List[Optional[TemporalSpec]]
    model: str
    output: OutputSpec
    duplicates_dropped: int
    cached: Optional[int] = None
    h3_res: Optional[int] = None
    revision: Optional[str] = None
    is_cached: Optional[List[bool]] = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.requests)

    def keys(self) -> List[str]:
        return [r.key for r in self.requests]

    @property
    def space(self) -> str:
        from ..space import space_name

        return space_name(self.model, self.revision or "")

    def check_cache(self, store, batch_size: int = 50_000) -> "Plan":
        """Look every key up in ``store`` (key column only, in batches); sets ``is_cached``/``cached``.

        A store that holds no space for this model + revision has nothing cached.
        Returns ``self``.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise SpecError(f"batch_size={batch_size!r} is not accepted; use a positive integer")
        keys = self.keys()
        flags: List[bool] = []
        try:
            store.space_info(self.space)
        except UnknownSpaceError:
            flags = [False] * len(keys)
        else:
            for i in range(0, len(keys), batch_size):
                flags.extend(bool(f) for f in store.contains_many(keys[i : i + batch_size], space=self.space))
        self.is_cached = flags
        self.cached = sum(flags)
        return self

    def missing(self) -> List[ResolvedRequest]:
        """The requests not in the store, in plan order (call :meth:`check_cache` first)."""
        if self.is_cached is None:
            raise RuntimeError("Plan.missing() needs the cache state: call plan.check_cache(store) first")
        return [r for r, hit in zip(self.requests, self.is_cached) if not hit]

    def summary(self, seconds_per_request: Optional[float] = None) -> dict:
        """A JSON-ready summary of the plan.

        ``estimated_seconds`` is ``to_compute * seconds_per_request``, a rough
        figure: the per-request cost comes from the argument or from
        the model's declaration (``ModelInfo.cost_per_request``), and ignores
        parallelism, caching of imagery and network speed. Until
        :meth:`check_cache` runs, ``cached`` is ``None`` and every request
        counts as to compute.
        """
        if seconds_per_request is None:
            seconds_per_request = default_seconds_per_request(self.model)
        elif not _is_number(seconds_per_request) or not seconds_per_request >= 0:
            raise SpecError(f"seconds_per_request={seconds_per_request!r} must be a number >= 0")
        to_compute = len(self.requests) - (self.cached or 0)
        return {
            "model": self.model,
            "revision": self.revision,
            "h3_res": self.h3_res,
            "n_cells": len(self.cells),
            "n_windows": len(self.windows),
            "n_requests": len(self.requests),
            "duplicates_dropped": self.duplicates_dropped,
            "cached": self.cached,
            "to_compute": to_compute,
            "seconds_per_request": float(seconds_per_request),
            "estimated_seconds": round(to_compute * float(seconds_per_request), 3),
            "output": self.output.mode,
            "pooling": self.output.pooling if self.output.mode == "pooled" else None,
        }

    # ------------------------------------------------------------ files

    def save(self, path) -> Path:
        """Write the plan: a JSON document if ``path`` ends in ``.json``, else JSON lines.

        JSON lines: the first line is a header (format tag, summary, windows,
        output, cache flags); each further line is exactly the canonical JSON
        of one request, so ``sha256(line)`` is its key.
        """
        path = Path(os.fspath(path))
        header = {
            "format": PLAN_FORMAT,
            "summary": self.summary(),
            "windows": [w.to_dict() if w is not None else None for w in self.windows],
            "output": self.output.to_dict(),
            "is_cached": None if self.is_cached is None else "".join("1" if f else "0" for f in self.is_cached),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            if path.suffix.lower() == ".json":
                header["requests"] = [r.canonical for r in self.requests]
                json.dump(header, fh, ensure_ascii=False)
                fh.write("\n")
            else:
                fh.write(json.dumps(header, ensure_ascii=False))
                fh.write("\n")
                for r in self.requests:
                    fh.write(r.canonical)
                    fh.write("\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path) -> "Plan":
        """Read a plan written by :meth:`save` (either format); requests via ``ResolvedRequest.from_canonical``."""
        path = Path(os.fspath(path))
        if not path.is_file():
            raise SpecError(f"plan file {str(path)!r} does not exist")
        text = path.read_text(encoding="utf-8")
        try:
            try:
                doc = json.loads(text)
                lines = None
            except json.JSONDecodeError:
                doc = None
                lines = [ln for ln in text.splitlines() if ln.strip()]
                header = json.loads(lines[0])
            if doc is not None:
                header = doc
                texts = doc.get("requests")
            else:
                texts = lines[1:]
            if not isinstance(header, Mapping) or header.get("format") != PLAN_FORMAT or not isinstance(texts, list):
                raise ValueError(f"not a {PLAN_FORMAT} file")
            summary = header["summary"]
            requests = [ResolvedRequest.from_canonical(t) for t in texts]
            windows = [TemporalSpec.from_dict(w) if w is not None else None for w in header["windows"]]
            output = OutputSpec.from_dict(header["output"])
        except SpecError:
            raise
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise SpecError(f"plan file {str(path)!r} is not a plan written by Plan.save: {exc}") from None
        if len(requests) != summary.get("n_requests"):
            raise SpecError(
                f"plan file {str(path)!r} holds {len(requests)} requests but its header says {summary.get('n_requests')}"
            )
        cells = list(dict.fromkeys(r.spatial.cell for r in requests if isinstance(r.spatial, H3Cell)))
        flags = header.get("is_cached")
        is_cached = None if flags is None else [c == "1" for c in flags]
        if is_cached is not None and len(is_cached) != len(requests):
            raise SpecError(f"plan file {str(path)!r} has {len(is_cached)} cache flags for {len(requests)} requests")
        return cls(
            requests=requests,
            cells=cells,
            windows=windows,
            model=summary["model"],
            output=output,
            duplicates_dropped=int(summary.get("duplicates_dropped") or 0),
            cached=None if is_cached is None else sum(is_cached),
            h3_res=summary.get("h3_res"),
            revision=summary.get("revision"),
            is_cached=is_cached,
        )


def default_seconds_per_request(model: str) -> float:
    """The rough cost of one request of ``model``, as its registry entry declares it
    (``ModelInfo.cost_per_request``)."""
    try:
        info = model_class(model).info
    except SpecError:
        return _SECONDS_FALLBACK
    return info.cost_per_request()


def plan(
    region: Any,
    h3_res: int,
    windows: Any,
    model: str,
    output: Optional[OutputSpec] = None,
    sensor=None,
    input_prep=None,
    provider: Optional[str] = None,
    *,
    modalities=None,
    max_cells: Optional[int] = None,
    limits: Optional[Limits] = None,
) -> Plan:
    """Plan ``model`` over the cells of ``region`` (see :func:`region_cells`) x ``windows``.

    ``windows`` is one time window or a list (TemporalSpec, its dict, ``2022``
    or ``'START/END'``). Each ``Request(model, H3Cell(cell), window, sensor,
    output, input_prep, provider, modalities)`` is resolved with the semantics of
    :func:`rsembed_store.keys.resolve` and keyed; windows that resolve to the
    same computation (a year and the same year as a range, for a composite
    model) are kept once, the dropped requests counted in
    ``duplicates_dropped``. Requests are ordered by cell, then by window in
    the order given.

    ``limits`` (default: the environment's, see :mod:`rsembed_store.limits`) caps
    the cells (``max_plan_cells``, unless ``max_cells`` is given) and, checked on
    one cell per window, the pixels and bytes of each request: a plan whose
    requests could not be computed is refused with a LimitError.
    """
    h3_res = _check_res(h3_res)
    wins = _windows(windows)
    cls = model_class(model)  # UnknownModelError names the registered models
    limits = limits or Limits.from_config(None)
    cells = region_cells(region, h3_res, max_cells=max_cells, limits=limits)

    # one template per window, resolved by resolve() itself on the first cell
    templates: List[Tuple[str, str]] = []
    first_cell = _fast_cell(cells[0])
    resolved_output = None
    revision = None
    model_id = None
    proto: Dict[Tuple[str, str], ResolvedRequest] = {}
    for w in wins:
        rr = resolve(Request(model, first_cell, w, sensor, output, input_prep, provider, modalities))
        t = _template(rr)
        resolved_output, revision, model_id = rr.output, rr.revision, rr.model
        if t not in proto:
            limits.check_request(rr)  # cells of one resolution are about the same size
            proto[t] = rr
            templates.append(t)

    per_cell_check = getattr(cls.check_spatial, "__func__", None) is not Model.check_spatial.__func__
    requests: List[ResolvedRequest] = []
    append = requests.append
    sha = hash_json
    protos = [(before, after, proto[(before, after)]) for before, after in templates]
    for cell in cells:
        spatial = _fast_cell(cell)
        if per_cell_check:
            cls.check_spatial(spatial)
        for before, after, p in protos:
            text = before + cell + after
            append(
                ResolvedRequest(
                    p.model, p.revision, p.provider, spatial, p.temporal, p.sensor, p.output, p.input_prep,
                    text, sha(text), frames=p.frames, modalities=p.modalities,
                )
            )

    return Plan(
        requests=requests,
        cells=cells,
        windows=wins,
        model=model_id,
        output=resolved_output,
        duplicates_dropped=len(cells) * (len(wins) - len(templates)),
        h3_res=h3_res,
        revision=revision,
    )


__all__ = [
    "DEFAULT_MAX_CELLS",
    "PLAN_FORMAT",
    "Plan",
    "default_seconds_per_request",
    "plan",
    "region_cells",
]
