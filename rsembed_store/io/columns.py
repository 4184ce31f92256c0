"""Which columns of an input table hold the vector, the place and the window; checked column-wise.

Detection follows the names the field's files use (``docs/io.md`` lists them):
a ``vector``/``embedding`` list column; the place as ``spatial_type`` rows of our
own export, an H3 ``cell``, a ``minlon..maxlat`` box, a ``lon``/``lat`` centre
(a point buffer of ``buffer_m``), or a GeoParquet geometry (points -> point
buffers, polygons -> their bounding box); the window as ``start_date``/
``end_date``, one ``date`` (a one-day window), or a ``year``. Any can be named
explicitly. Every check names the row (counted from 0 over the whole input),
the value and what is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import SpecError, VectorError
from ..h3int import cell_ids
from . import wkb

ROLES = ("vector", "geometry", "spatial_type", "cell", "lon", "lat", "buffer_m", "minlon", "minlat", "maxlon",
         "maxlat", "start", "end", "date", "year")
CANDIDATES: Dict[str, tuple] = {
    "vector": ("vector", "embedding", "embeddings", "emb", "features"),
    "geometry": ("geometry", "geom", "wkb_geometry"),
    "spatial_type": ("spatial_type",),
    "cell": ("cell", "h3_cell", "h3_index", "h3cell"),
    "lon": ("lon", "longitude", "centre_lon", "center_lon", "lng"),
    "lat": ("lat", "latitude", "centre_lat", "center_lat"),
    "buffer_m": ("buffer_m",),
    "minlon": ("minlon", "xmin", "west"), "minlat": ("minlat", "ymin", "south"),
    "maxlon": ("maxlon", "xmax", "east"), "maxlat": ("maxlat", "ymax", "north"),
    "start": ("start_date", "start", "date_start", "time_start"),
    "end": ("end_date", "end", "date_end", "time_end"),
    "date": ("date", "datetime", "timestamp", "time", "acquisition_date"),
    "year": ("year",),
}
KINDS = ("PointBuffer", "BBox", "H3Cell")
MIN_DAY, MAX_DAY = np.datetime64("0001-01-01"), np.datetime64("9998-12-31")


@dataclass
class ColumnMap:
    """The input column chosen for each role (None: not present); ``buffer_m``/``year`` may be constants."""

    columns: Dict[str, Optional[str]]
    buffer_m: Optional[float] = None
    year: Optional[int] = None
    geo: Dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"columns": {k: v for k, v in self.columns.items() if v}, "buffer_m": self.buffer_m,
                "year": self.year}


def detect(schema: pa.Schema, given: Optional[Mapping[str, str]] = None, *, buffer_m: Optional[float] = None,
           year: Optional[int] = None, geo: Optional[dict] = None) -> ColumnMap:
    """Pick the column of each role: ``given`` (role -> column) first, then the common names."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(ROLES))
    if unknown:
        raise SpecError(f"column role(s) {unknown} are not accepted; roles: {list(ROLES)}")
    names = {n.lower(): n for n in schema.names}
    out: Dict[str, Optional[str]] = {}
    for role in ROLES:
        if role in given:
            if given[role] not in schema.names:
                raise SpecError(f"{role} column {given[role]!r} is not in the input; its columns: {schema.names}")
            out[role] = given[role]
            continue
        out[role] = next((names[c] for c in CANDIDATES[role] if c in names), None)
    geo = geo or {}
    if out["geometry"] is None and geo.get("primary_column") in schema.names:
        out["geometry"] = geo["primary_column"]
    if out["geometry"]:
        _check_geometry(schema, out["geometry"], geo)
    if out["vector"] is None:
        lists = [f.name for f in schema if _is_number_list(f.type)]
        if len(lists) == 1:
            out["vector"] = lists[0]
        else:
            raise VectorError(f"no vector column: looked for {list(CANDIDATES['vector'])} or a single list-of-"
                              f"numbers column, found columns {schema.names}; name it with --vector-column")
    elif not _is_number_list(schema.field(out["vector"]).type):
        raise VectorError(f"vector column {out['vector']!r} has type {schema.field(out['vector']).type}; "
                          "accepted: a (fixed-size) list of numbers")
    if not any(out[r] for r in ("spatial_type", "cell", "lon", "minlon", "geometry")):
        raise SpecError(f"no place columns: need an H3 'cell', 'minlon/minlat/maxlon/maxlat', 'lon/lat' or a "
                        f"geometry column; found {schema.names}")
    if not any(out[r] for r in ("start", "date", "year")) and year is None:
        raise SpecError(f"no window columns: need 'start_date'/'end_date', 'date' or 'year' (or --year); "
                        f"found {schema.names}")
    return ColumnMap(out, buffer_m, year, geo)


LONLAT_CRS = ({"authority": "OGC", "code": "CRS84"}, {"authority": "EPSG", "code": 4326},
              {"authority": "EPSG", "code": "4326"})


def _check_geometry(schema: pa.Schema, name: str, geo: dict) -> None:
    """Refuse a geometry column we cannot read: not WKB, or in a CRS other than lon/lat degrees."""
    meta = (geo.get("columns") or {}).get(name) or {}
    encoding = meta.get("encoding", "WKB")
    t = schema.field(name).type
    if str(encoding).upper() != "WKB" or not (pa.types.is_binary(t) or pa.types.is_large_binary(t)):
        raise SpecError(f"geometry column {name!r} is encoded as {encoding!r} ({t}); accepted: WKB (binary), "
                        "the GeoParquet default; convert it, or give lon/lat or box columns instead")
    crs = meta.get("crs", "absent")
    if crs == "absent":  # GeoParquet: no crs means OGC:CRS84
        return
    ident = crs.get("id") if isinstance(crs, dict) else None
    if ident not in LONLAT_CRS:
        shown = ident or (crs.get("name") if isinstance(crs, dict) else crs)
        raise SpecError(f"geometry column {name!r} is in CRS {shown!r}; accepted: OGC:CRS84 or EPSG:4326 "
                        "(lon/lat degrees): reproject the file first (e.g. geopandas to_crs(4326))")


def _is_number_list(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)) and (
        pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type))


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _numbers(batch: pa.RecordBatch, name: str, role: str, row0: int, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Column ``name`` as float64; a null is refused in the rows of ``mask`` (all rows by default)."""
    col = batch.column(name)
    if col.null_count:
        null = col.is_null().to_numpy(zero_copy_only=False)
        if mask is not None:
            null &= mask
        if null.any():
            raise SpecError(f"row {row0 + _first(null)}: column {name!r} ({role}) is null; every "
                            + ("row" if mask is None else "row of this kind") + " needs a value")
        col = col.fill_null(0)
    try:
        x = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise SpecError(f"column {name!r} ({role}) has type {col.type}; accepted: numbers") from None
    return x


def _check_range(x: np.ndarray, name: str, lo: float, hi: float, row0: int, lo_open: bool = False) -> None:
    bad = ~np.isfinite(x) | (x <= lo if lo_open else x < lo) | (x > hi)
    if bad.any():
        i = _first(bad)
        left = "(" if lo_open else "["
        raise SpecError(f"row {row0 + i}: {name}={float(x[i])!r} is out of range; accepted: {left}{lo}, {hi}]")


def vectors(batch: pa.RecordBatch, name: str, dim: Optional[int], row0: int) -> np.ndarray:
    """The vectors as float32 (rows, dim); ragged rows, nulls, NaN/inf and float32 overflow are refused."""
    col = batch.column(name)
    if col.null_count:
        raise VectorError(f"row {row0 + _first(col.is_null().to_numpy(zero_copy_only=False))}: vector is null")
    if pa.types.is_fixed_size_list(col.type):
        width = col.type.list_size
        flat = col.flatten()
        lengths = None
    else:
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        width = int(lengths[0]) if len(lengths) else (dim or 0)
        flat = col.flatten()
    want = dim if dim is not None else width
    if lengths is not None and (lengths != want).any():
        i = _first(lengths != want)
        raise VectorError(f"row {row0 + i}: vector has {int(lengths[i])} values; the space holds {want}-d vectors "
                          "(every row needs the same dimension)")
    if lengths is None and width != want:
        raise VectorError(f"row {row0}: vectors have {width} values; the space holds {want}-d vectors")
    if flat.null_count:
        i = _first(flat.is_null().to_numpy(zero_copy_only=False)) // max(want, 1)
        raise VectorError(f"row {row0 + i}: vector has a null value")
    x = flat.to_numpy(zero_copy_only=False).reshape(len(col), want)
    with np.errstate(over="ignore", invalid="ignore"):
        x32 = x.astype(np.float32, copy=False)
        ok = np.isfinite(x32).all(axis=1)
    if not ok.all():
        i = _first(~ok)
        raise VectorError(f"row {row0 + i}: vector has NaN/inf (or values beyond float32) at position(s) "
                          f"{np.flatnonzero(~np.isfinite(x32[i]))[:5].tolist()}; only finite vectors are stored")
    return x32


def places(batch: pa.RecordBatch, cm: ColumnMap, row0: int) -> Dict[str, np.ndarray]:
    """Per row: ``kind`` (index into KINDS) and the fields of its spatial spec, all checked."""
    n = batch.num_rows
    c = cm.columns
    out: Dict[str, np.ndarray] = {}
    if c["spatial_type"]:
        st = batch.column(c["spatial_type"]).cast(pa.string())
        found = pc.index_in(st, pa.array(KINDS))
        bad = found.is_null().to_numpy(zero_copy_only=False)
        if bad.any():
            i = _first(bad)
            raise SpecError(f"row {row0 + i}: spatial_type={st[i].as_py()!r} is not accepted; use one of {list(KINDS)}")
        kind = found.to_numpy(zero_copy_only=False).astype(np.int8)
    elif c["cell"]:
        kind = np.full(n, 2, np.int8)
    elif c["minlon"] and c["minlat"] and c["maxlon"] and c["maxlat"]:
        kind = np.full(n, 1, np.int8)
    elif c["lon"] and c["lat"]:
        kind = np.full(n, 0, np.int8)
    else:
        kind = None
    if kind is None:  # the geometry decides: points are point buffers, polygons their bounding box
        g = batch.column(c["geometry"])
        codes = wkb.geometry_kinds(g)
        if (codes == wkb.POINT).all():
            out["lon"], out["lat"] = wkb.points_xy(g)
            kind = np.zeros(n, np.int8)
        elif (codes == wkb.POLYGON).all():
            b = wkb.polygon_bounds(g)
            out["minlon"], out["minlat"], out["maxlon"], out["maxlat"] = b.T
            kind = np.ones(n, np.int8)
        else:
            i = _first((codes != wkb.POINT) & (codes != wkb.POLYGON)) if ((codes != 1) & (codes != 3)).any() \
                else _first(codes != codes[0])
            raise SpecError(f"row {row0 + i}: geometry type code {int(codes[i])}; accepted: all Points (point "
                            "buffers) or all Polygons (their bounding boxes) in one file")
    out["kind"] = kind
    wanted = {int(k) for k in np.unique(kind)}
    if 0 in wanted:
        m = kind == 0
        for role in ("lon", "lat"):
            if role not in out:
                if not c[role]:
                    raise SpecError(f"row {row0 + _first(m)}: a PointBuffer row needs a {role!r} column")
                out[role] = _numbers(batch, c[role], role, row0, m)
        if c["buffer_m"]:
            out["buffer_m"] = _numbers(batch, c["buffer_m"], "buffer_m", row0, m)
        elif cm.buffer_m is not None:
            out["buffer_m"] = np.full(n, float(cm.buffer_m))
        else:
            raise SpecError("point rows need a half side: a 'buffer_m' column or --buffer-m METRES")
        _check_range(np.where(m, out["lon"], 0), "lon", -180, 180, row0)
        _check_range(np.where(m, out["lat"], 0), "lat", -90, 90, row0)
        _check_range(np.where(m, out["buffer_m"], 1), "buffer_m", 0, 500_000, row0, lo_open=True)
    if 1 in wanted:
        m = kind == 1
        for role in ("minlon", "minlat", "maxlon", "maxlat"):
            if role not in out:
                if not c[role]:
                    raise SpecError(f"row {row0 + _first(m)}: a BBox row needs a {role!r} column")
                out[role] = _numbers(batch, c[role], role, row0, m)
        for role, hi in (("minlon", 180), ("maxlon", 180), ("minlat", 90), ("maxlat", 90)):
            _check_range(np.where(m, out[role], 0), role, -hi, hi, row0)
        for a, b in (("minlon", "maxlon"), ("minlat", "maxlat")):
            bad = m & ~(out[a] < out[b])
            if bad.any():
                i = _first(bad)
                raise SpecError(f"row {row0 + i}: BBox needs {a} < {b}, got {a}={float(out[a][i])!r}, {b}={float(out[b][i])!r}")
    if 2 in wanted:
        m = kind == 2
        if not c["cell"]:
            raise SpecError(f"row {row0 + _first(m)}: an H3Cell row needs a 'cell' column")
        col = batch.column(c["cell"])
        values = col.to_pylist() if pa.types.is_integer(col.type) else col.cast(pa.string()).to_pylist()
        ids = cell_ids(values)  # the parsing of rsembed_store.h3int: hex (any case, '0x') or int
        text = [t or "" for t in ids]
        valid = np.fromiter((t is not None for t in ids), bool, n)
        if (m & ~valid).any():
            i = _first(m & ~valid)
            raise SpecError(f"row {row0 + i}: cell={col[i].as_py()!r} is not a valid H3 cell id; accepted: a cell "
                            "index such as '8928308280fffff' (hex string or int64)")
        out["cell"] = np.array(text, dtype=object)
    return out


def _days(batch: pa.RecordBatch, name: str, role: str, row0: int) -> np.ndarray:
    col = batch.column(name)
    if col.null_count:
        raise SpecError(f"row {row0 + _first(col.is_null().to_numpy(zero_copy_only=False))}: column {name!r} "
                        f"({role}) is null; every row needs a date")
    try:
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            col = pc.strptime(pc.utf8_slice_codeunits(col, 0, 10), format="%Y-%m-%d", unit="s")
        d = col.cast(pa.date32())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SpecError(f"column {name!r} ({role}) cannot be read as dates ({exc}); accepted: dates, timestamps "
                        "or 'YYYY-MM-DD' strings") from None
    return d.to_numpy(zero_copy_only=False).astype("datetime64[D]")


def windows(batch: pa.RecordBatch, cm: ColumnMap, row0: int) -> Dict[str, np.ndarray]:
    """Per row: the half-open window ``start``/``end`` (datetime64[D]) and ``year`` (the year it starts in);
    ``kind`` "range" or "year" says how it was given."""
    c, n = cm.columns, batch.num_rows
    if c["start"] and c["end"]:
        start, end = _days(batch, c["start"], "start", row0), _days(batch, c["end"], "end", row0)
        kind = "range"
    elif c["date"]:
        start = _days(batch, c["date"], "date", row0)
        end = start + np.timedelta64(1, "D")
        kind = "range"
    else:
        if c["year"]:
            y = _numbers(batch, c["year"], "year", row0)
        else:
            y = np.full(n, float(cm.year))
        bad = (y != np.round(y)) | (y < 1) | (y > 9998)
        if bad.any():
            i = _first(bad)
            raise SpecError(f"row {row0 + i}: year={float(y[i])!r} is not accepted; accepted: an integer in [1, 9998]")
        years = y.astype(np.int64)
        start = (years - 1970).astype("datetime64[Y]").astype("datetime64[D]")
        end = (years - 1969).astype("datetime64[Y]").astype("datetime64[D]")
        return {"kind": "year", "start": start, "end": end, "year": years}
    for role, d in (("start", start), ("end", end)):
        bad = (d < MIN_DAY) | (d > MAX_DAY + np.timedelta64(1, "D"))
        if bad.any():
            i = _first(bad)
            raise SpecError(f"row {row0 + i}: {role} date {d[i]} is out of range; accepted: 0001-01-01 .. 9998-12-31")
    bad = ~(start < end)
    if bad.any():
        i = _first(bad)
        raise SpecError(f"row {row0 + i}: the window needs start < end (half-open [start, end)), got start={start[i]}, "
                        f"end={end[i]}")
    years = start.astype("datetime64[Y]").astype(np.int64) + 1970
    return {"kind": kind, "start": start, "end": end, "year": years}
