"""Export a space (or the rows a filter or a SQL query selects) to GeoParquet or Parquet (or its
grid rows to GeoTIFFs, ``io.geotiff``).

Rows are read from Lance in batches and written as they come (memory bounded by
the batch size) to a temporary name beside the output, renamed into place only
when the file is complete: a reader never sees half a file, and a failed export
leaves nothing behind.

GeoParquet follows the 1.1 specification: a ``geo`` key in the file metadata with
``version``, ``primary_column`` and, for the ``geometry`` column, ``encoding:
"WKB"``, ``geometry_types``, ``crs`` (PROJJSON of OGC:CRS84, longitude first),
the data's ``bbox`` and a ``covering`` that points at a per-row ``bbox`` struct
column (so DuckDB and GDAL can skip row groups). The geometry is the ROI: the
box of a point buffer or of a BBox, the hexagon of an H3 cell.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import h3.api.basic_int as h3i
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import SpecError
from . import wkb

FORMATS = ("geoparquet", "parquet", "npz", "netcdf", "geotiff", "cog", "zarr")
# rows read and written at a time: peak RSS grows with it (measured at 600k x 64: 611 MiB at 16,384,
# 937 MiB at 65,536, about the same speed), so exports use smaller batches than imports
BATCH_ROWS = 16_384
# the stored columns read (buffer_m is taken from the request, cell printed as H3 hex)
READ = ["key", "model", "revision", "spatial_type", "lon", "lat", "minlon", "minlat", "maxlon", "maxlat", "cell",
        "start_date", "end_date", "year", "request", "vector"]
CRS84 = {
    "$schema": "https://proj.org/schemas/v0.7/projjson.schema.json",
    "type": "GeographicCRS",
    "name": "WGS 84 (CRS84)",
    "datum": {"type": "GeodeticReferenceFrame", "name": "World Geodetic System 1984",
              "ellipsoid": {"name": "WGS 84", "semi_major_axis": 6378137, "inverse_flattening": 298.257223563}},
    "coordinate_system": {"subtype": "ellipsoidal", "axis": [
        {"name": "Geodetic longitude", "abbreviation": "Lon", "direction": "east", "unit": "degree"},
        {"name": "Geodetic latitude", "abbreviation": "Lat", "direction": "north", "unit": "degree"}]},
    "id": {"authority": "OGC", "code": "CRS84"},
}


@dataclass
class ExportResult:
    space: str
    path: str
    format: str
    rows: int
    bytes: int
    skipped: int = 0  # geotiff: grid rows without georeferencing metadata

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def selection(store, space: str, *, temporal=None, within=None, where: Optional[str] = None,
              sql: Optional[str] = None) -> Optional[str]:
    """The Lance filter of the rows to export: search's filters, ANDed; ``sql`` selects the keys
    a read-only query returns (its ``key`` column)."""
    from ..query.search import check_where, filter_columns, temporal_clause
    from ..query.within import within_clause

    parts = []
    if temporal is not None:
        parts.append(temporal_clause(temporal))
    if within is not None:
        parts.append(within_clause(within, store.space_info(space).h3_res))
    if where is not None:
        parts.append(f"({check_where(where, filter_columns(store.dataset(space)))})")
    if sql is not None:
        result = store.sql(sql, limit=None)
        table = result.table if hasattr(result, "table") else result
        if "key" not in table.column_names:
            raise SpecError(f"the export query must return a 'key' column; it returned {table.column_names}")
        keys = [k for k in table.column("key").to_pylist() if isinstance(k, str) and len(k) == 64
                and all(c in "0123456789abcdef" for c in k)]
        parts.append("key IN (" + ",".join(f"'{k}'" for k in keys) + ")" if keys else "false")
    return " AND ".join(parts) if parts else None


# Lance's scan reads ahead up to io_buffer_size bytes (2 GiB by default) and several batches and
# fragments at once; an export writes batch by batch, so a short read-ahead bounds its memory.
SCAN_LIMITS = {"batch_readahead": 2, "fragment_readahead": 1, "io_buffer_size": 64 << 20}


def batches(store, space: str, filter: Optional[str], batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """The selected rows' :data:`READ` columns, ``batch_rows`` at a time, with a bounded read-ahead."""
    ds = store.dataset(space)
    yield from ds.to_batches(columns=READ, filter=filter, batch_size=batch_rows, **SCAN_LIMITS)


def _buffer_m(request: pa.Array) -> pa.Array:
    m = pc.extract_regex(request, r'"buffer_m":(?P<b>[-0-9.eE+]+)')
    return pc.struct_field(m, [0]).cast(pa.float64())


def geometry(batch: pa.RecordBatch) -> pa.Array:
    """The ROI of every row as WKB polygons: boxes for point buffers and boxes, hexagons for H3 cells."""
    n = batch.num_rows
    kind = batch.column("spatial_type").to_numpy(zero_copy_only=False)
    groups = []
    box = np.flatnonzero(kind != "H3Cell")
    if len(box):
        w, s, e, nn = (batch.column(c).to_numpy()[box] for c in ("minlon", "minlat", "maxlon", "maxlat"))
        ring = np.stack([np.stack([w, s], 1), np.stack([e, s], 1), np.stack([e, nn], 1), np.stack([w, nn], 1),
                         np.stack([w, s], 1)], axis=1)
        groups.append((box, ring))
    hexes = np.flatnonzero(kind == "H3Cell")
    if len(hexes):
        cells = batch.column("cell").fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)[hexes]
        rings = {}
        for i, c in zip(hexes.tolist(), cells.tolist()):
            pts = [(lo, la) for la, lo in h3i.cell_to_boundary(int(c))]
            rings.setdefault(len(pts), []).append((i, pts + pts[:1]))
        for items in rings.values():
            groups.append((np.array([i for i, _ in items]), np.array([p for _, p in items], dtype=np.float64)))
    return wkb.polygons_from(groups, n)


def to_output(batch: pa.RecordBatch, geo: bool) -> pa.Table:
    """A batch as written: the stored columns, ``buffer_m``, ``cell`` as an H3 string, and for
    GeoParquet the ``bbox`` covering and the ``geometry``."""
    cols = {name: batch.column(name) for name in READ}
    cell = batch.column("cell")
    if cell.null_count < batch.num_rows:  # H3 ids as their hex strings (int64 -> exact, never via float)
        ints = cell.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64).tolist()
        cols["cell"] = pa.array([format(c, "x") if c else None for c in ints], pa.string())
    else:
        cols["cell"] = pa.nulls(batch.num_rows, pa.string())
    cols["buffer_m"] = _buffer_m(batch.column("request"))
    out = pa.table(cols)
    order = ["key", "model", "revision", "spatial_type", "lon", "lat", "buffer_m", "minlon", "minlat", "maxlon",
             "maxlat", "cell", "start_date", "end_date", "year", "request", "vector"]
    out = out.select(order)
    if geo:
        g = geometry(batch)
        minx, miny, maxx, maxy = (batch.column(c) for c in ("minlon", "minlat", "maxlon", "maxlat"))
        if (pc.equal(batch.column("spatial_type"), "H3Cell")).to_numpy(zero_copy_only=False).any():
            b = wkb.polygon_bounds(g)  # hexagon vertices: the exact bounds of what is written
            minx, miny, maxx, maxy = (pa.array(b[:, i]) for i in range(4))
        out = out.append_column("bbox", pa.StructArray.from_arrays([minx, miny, maxx, maxy],
                                                                  ["xmin", "ymin", "xmax", "ymax"]))
        out = out.append_column("geometry", g.cast(pa.binary()))
    return out


def geo_metadata(bbox: Optional[Sequence[float]]) -> dict:
    """The ``geo`` file metadata; ``bbox`` (optional in the spec) is left out for a file without rows."""
    column = {"encoding": "WKB", "geometry_types": ["Polygon"], "crs": CRS84, "edges": "planar",
              "covering": {"bbox": {"xmin": ["bbox", "xmin"], "ymin": ["bbox", "ymin"],
                                    "xmax": ["bbox", "xmax"], "ymax": ["bbox", "ymax"]}}}
    if bbox is not None:
        column["bbox"] = [float(v) for v in bbox]
    return {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}}


def _tmp(path: str) -> str:
    head, tail = os.path.split(os.path.abspath(path))
    return os.path.join(head, f".{tail}.tmp-{os.getpid()}")


def export(store, space: str, out, *, format: str = "geoparquet", temporal=None, within=None,
           where: Optional[str] = None, sql: Optional[str] = None, batch_rows: int = BATCH_ROWS,
           progress: Optional[Callable[[int], None]] = None) -> ExportResult:
    """Write the rows of ``space`` that the filters select to ``out`` (atomically)."""
    if format not in FORMATS:
        raise SpecError(f"format={format!r} is not accepted; use one of {list(FORMATS)}")
    dim = store.space_info(space).dim  # UnknownSpaceError names the spaces held
    path = os.fspath(out)
    if format in ("geotiff", "cog"):  # one file per grid row in the directory ``out``
        from .geotiff import write_grid_tifs

        flt = selection(store, space, temporal=temporal, within=within, where=where, sql=sql)
        counts = write_grid_tifs(store, space, path, filter=flt, progress=progress, cog=format == "cog")
        size = sum(e.stat().st_size for e in os.scandir(path) if e.name.endswith(".tif"))
        return ExportResult(space=space, path=path, format=format, rows=counts["written"] + counts["kept"],
                            bytes=size, skipped=counts["skipped"])
    if format == "zarr":  # one store, one group per grid row
        from .zarr_grids import write_grid_zarr

        flt = selection(store, space, temporal=temporal, within=within, where=where, sql=sql)
        counts = write_grid_zarr(store, space, path, filter=flt, progress=progress)
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
        return ExportResult(space=space, path=path, format=format, rows=counts["written"] + counts["kept"],
                            bytes=size, skipped=counts["skipped"])
    if os.path.isdir(path):
        raise SpecError(f"--out {path!r} is a directory; give a file name such as {path.rstrip('/')}/{space}.parquet")
    flt = selection(store, space, temporal=temporal, within=within, where=where, sql=sql)
    tmp = _tmp(path)
    if format in ("npz", "netcdf"):  # rs-embed's combined layout: X.npz (X.nc) beside its manifest X.json
        from .npz import manifest_path, write_npz

        info = store.space_info(space)
        count = store.dataset(space).count_rows(filter=flt)
        try:
            rows = write_npz(batches(store, space, flt, batch_rows), tmp, rows=count, dim=dim, model=info.model,
                             progress=progress, fmt=format)
            os.replace(tmp, path)
            os.replace(manifest_path(tmp), manifest_path(path))  # the manifest last: the pair is complete
        finally:
            for p in (tmp, manifest_path(tmp)):
                if os.path.exists(p):
                    os.remove(p)
        return ExportResult(space=space, path=path, format=format, rows=rows, bytes=os.path.getsize(path))
    try:
        rows = _write_parquet(batches(store, space, flt, batch_rows), tmp, geo=format == "geoparquet", dim=dim,
                              progress=progress)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return ExportResult(space=space, path=path, format=format, rows=rows, bytes=os.path.getsize(path))


def _write_parquet(source: Iterator[pa.RecordBatch], path: str, *, geo: bool, dim: int,
                   progress: Optional[Callable[[int], None]] = None) -> int:
    writer = None
    rows = 0
    bbox = [np.inf, np.inf, -np.inf, -np.inf]
    try:
        for batch in source:
            if not batch.num_rows:
                continue
            t = to_output(batch, geo)
            if writer is None:
                writer = _parquet_writer(path, t.schema)
            writer.write_table(t)
            rows += t.num_rows
            if geo:
                b = t.column("bbox")
                bbox = [min(bbox[0], pc.min(pc.struct_field(b, [0])).as_py()),
                        min(bbox[1], pc.min(pc.struct_field(b, [1])).as_py()),
                        max(bbox[2], pc.max(pc.struct_field(b, [2])).as_py()),
                        max(bbox[3], pc.max(pc.struct_field(b, [3])).as_py())]
            if progress:
                progress(t.num_rows)
        if writer is None:  # no rows: an empty file with the full schema
            empty = pa.RecordBatch.from_pylist([], schema=_empty_schema(dim))
            t = to_output(empty, geo)
            writer = _parquet_writer(path, t.schema)
            writer.write_table(t)
        if geo:
            finite = all(np.isfinite(bbox))
            writer.add_key_value_metadata({"geo": json.dumps(geo_metadata(bbox if finite else None))})
    finally:
        if writer is not None:
            writer.close()
    return rows


# Dictionary pages only where values repeat, statistics only where a reader filters: trying a
# dictionary on unique keys and requests cost half the write time and made the file 15 % larger
# (200k x 64: 0.33 vs 0.70 CPU s, 75 vs 86 MiB)
DICTIONARY = ["model", "revision", "spatial_type"]
STATISTICS = ["lon", "lat", "buffer_m", "minlon", "minlat", "maxlon", "maxlat", "cell", "start_date", "end_date",
              "year", "bbox.xmin", "bbox.ymin", "bbox.xmax", "bbox.ymax"]


def _parquet_writer(path: str, schema: pa.Schema):
    import pyarrow.parquet as pq

    stats = [c for c in STATISTICS if c.split(".")[0] in schema.names]
    return pq.ParquetWriter(path, schema, compression="zstd", use_dictionary=DICTIONARY, write_statistics=stats)


def _empty_schema(dim: int) -> pa.Schema:
    from ..space import row_schema

    s = row_schema(dim)
    return pa.schema([s.field(n) for n in READ])
