"""Bulk import: an Arrow table, a record-batch stream, a (Geo)Parquet file or an rs-embed npz/netcdf
export -> one imported space.

Two passes over the input, batch by batch (memory bounded by the batch size):

1. check every batch (columns found, vectors, places, windows; the first bad row
   is named) -- nothing is written unless the whole input passes;
2. key every batch column-wise (``io.keys``), build the rows in the store's
   layout and write them through :meth:`Store.write_rows` (merge-insert on the
   key, safe with concurrent writers), or append them when the space was empty
   (``io.append``). Keys already in the space are left as they are unless
   ``update=True``, so importing a file twice writes nothing new.

A record-batch stream can be read only once, and decoding a Parquet file again
costs more than writing its used columns uncompressed: both are spooled to a
temporary Arrow IPC file (in ``TMPDIR``; about 300 bytes a row for 64-d vectors)
during the check, and the write pass reads it back batch by batch.
"""

from __future__ import annotations

import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from datetime import datetime, timezone
from typing import Callable, Dict, Mapping, Optional, Sequence, Union

import h3.api.basic_int as h3i
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from ..errors import SpecError
from ..space import DEFAULT_H3_RES, row_schema, space_name
from ..specs import metres_to_degrees
from . import columns as C
from . import extras
from .keys import KeyTemplate, keys_for
from .model import declare_imported

BATCH_ROWS = 65_536
Source = Union[pa.Table, pa.RecordBatchReader, str, os.PathLike]


@dataclass
class ImportResult:
    """What an import did (or, with ``dry_run``, would do)."""

    space: str
    model: str
    revision: str
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    existing: int = 0  # rows whose key the space already held (left as they were unless update)
    duplicates: int = 0  # rows repeating a key earlier in the same batch (the first is kept)
    kinds: Dict[str, int] = field(default_factory=dict)
    columns: dict = field(default_factory=dict)
    dry_run: bool = False

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _geo_metadata(schema: pa.Schema) -> dict:
    import json

    raw = (schema.metadata or {}).get(b"geo")
    return json.loads(raw) if raw else {}


FORMATS = ("parquet", "geoparquet", "npz", "netcdf")


def file_format(path: str, format: Optional[str] = None) -> str:
    """The format of an input file: ``format`` if given, else by suffix (``.npz``, ``.nc``), else Parquet."""
    if format is not None:
        if format not in FORMATS:
            raise SpecError(f"format={format!r} is not accepted; use one of {list(FORMATS)}")
        return "parquet" if format == "geoparquet" else format
    low = path.lower()
    return "npz" if low.endswith(".npz") else "netcdf" if low.endswith((".nc", ".netcdf")) else "parquet"


def open_batches(source: Source, batch_rows: int = BATCH_ROWS, npz_model: Optional[str] = None,
                 format: Optional[str] = None):
    """(schema, a function returning a fresh batch iterator, a clean-up function) for ``source``."""
    if isinstance(source, pa.Table):
        return source.schema, lambda: iter(source.to_batches(max_chunksize=batch_rows)), lambda: None
    if isinstance(source, pa.RecordBatchReader):
        return source.schema, None, lambda: None
    import pyarrow.parquet as pq

    path = os.fspath(source)
    if not os.path.exists(path):
        raise SpecError(f"input file {path!r} does not exist")
    fmt = file_format(path, format)
    if fmt in ("npz", "netcdf"):  # rs-embed's combined export: data file + manifest
        from .npz import table_from_npz

        table = table_from_npz(path, npz_model, fmt)
        return table.schema, lambda: iter(table.to_batches(max_chunksize=batch_rows)), lambda: None
    try:
        schema = pq.read_schema(path)
    except Exception as exc:
        raise SpecError(f"input file {path!r} is not a Parquet file ({exc}); accepted: Parquet or GeoParquet "
                        "(see docs/io.md)") from None
    return schema, lambda: pq.ParquetFile(path).iter_batches(batch_size=batch_rows), lambda: None


def import_table(store, source: Source, *, model: str, revision: str, dim: Optional[int] = None,
                 metric: str = "cosine", temporal: str = "composite", columns: Optional[Mapping[str, str]] = None,
                 buffer_m: Optional[float] = None, year: Optional[int] = None, update: bool = False,
                 dry_run: bool = False, batch_rows: int = BATCH_ROWS, npz_model: Optional[str] = None,
                 format: Optional[str] = None, append: bool = True,
                 progress: Optional[Callable[[int], None]] = None) -> ImportResult:
    """Import precomputed vectors into the space of ``imported:<model>`` at ``revision``.

    ``dim`` defaults to the vector column's width; ``columns`` maps roles (``vector``,
    ``lon``, ``cell``, ``start``, ... see :data:`columns.ROLES`) to input columns where
    detection would not find them; ``buffer_m``/``year`` are constants for inputs without
    such a column; ``npz_model`` picks the model of an rs-embed npz/netcdf holding several;
    ``format`` (:data:`FORMATS`) overrides the guess from a file's suffix; ``append=False``
    writes through the merge-insert even into an empty space (``io.append`` says why appending
    is faster and what it means for a concurrent writer). Columns no role uses are kept in
    ``meta`` (``io.extras``). Bad input raises :class:`SpecError`/:class:`VectorError` naming
    the row, and nothing is written. ``dry_run`` checks and keys everything and reports what
    would be written.
    """
    if dry_run is False and store is None:
        raise SpecError("a store is needed to import into (store=None is only for dry_run=True)")
    schema, batches, cleanup = open_batches(source, batch_rows, npz_model, format)
    cm = C.detect(schema, columns, buffer_m=buffer_m, year=year, geo=_geo_metadata(schema))
    kept, dropped = extras.choose(schema, list(cm.columns.values()))
    vtype = schema.field(cm.columns["vector"]).type
    if dim is None and pa.types.is_fixed_size_list(vtype):
        dim = vtype.list_size
    # the columns the import reads: the roles found and the extras kept in meta
    used = list(dict.fromkeys([c for c in cm.columns.values() if c] + kept))
    first = source if batches is None else batches()
    parquet = batches is not None and not isinstance(source, pa.Table) and file_format(os.fspath(source), format) \
        == "parquet"
    if parquet:  # decode only the columns used
        import pyarrow.parquet as pq

        first = ahead(pq.ParquetFile(os.fspath(source)).iter_batches(batch_size=batch_rows, columns=used))
    spool = None
    try:
        if batches is None or parquet:
            # a stream can be read once; a Parquet file costs more CPU to decode again (about 1.9 us a
            # row for 64-d vectors) than an uncompressed Arrow file of its used columns to write and map
            fd, spool = tempfile.mkstemp(prefix="rsembed-import-", suffix=".arrow")
            os.close(fd)
        # ---- pass 1: check everything
        rows, kinds = 0, np.zeros(len(C.KINDS), np.int64)
        writer = ipc.new_file(spool, pa.schema([schema.field(c) for c in used])) if spool else None
        try:
            for batch in first:
                if dim is None:
                    dim = _width(batch, cm.columns["vector"])
                C.vectors(batch, cm.columns["vector"], dim, rows)
                kinds += np.bincount(C.places(batch, cm, rows)["kind"], minlength=len(C.KINDS))
                C.windows(batch, cm, rows)
                if writer:
                    writer.write_batch(batch.select(used))
                rows += batch.num_rows
        finally:
            if writer:
                writer.close()
        if spool:
            def batches():
                # read, not mapped: mapped pages stay resident (and counted) until the end
                reader = ipc.open_file(pa.OSFile(spool))
                return (reader.get_batch(i) for i in range(reader.num_record_batches))
        if dim is None:
            raise SpecError("the input has no rows and no fixed-size vector column: nothing to import")
        info = declare_imported(model, revision=revision, dim=dim, metric=metric, temporal=temporal)
        result = ImportResult(space=space_name(info.id, revision), model=info.id, revision=revision, rows=rows,
                              kinds={k: int(v) for k, v in zip(C.KINDS, kinds) if v},
                              columns={**cm.to_dict(), "extra": kept, "dropped": dropped},
                              dry_run=dry_run)
        if not dry_run:
            store.ensure_space(info.id, revision, dim, metric=metric, kind="precomputed", info=info.to_dict())
        exists = store is not None and _space_exists(store, result.space)
        h3_res = store.space_info(result.space).h3_res if exists else getattr(store, "h3_res", DEFAULT_H3_RES)
        # ---- pass 2: key and write
        row0 = 0
        templates: Dict[tuple, KeyTemplate] = {}
        pending = None  # the write of the previous batch, which Lance runs while this one is keyed

        def settle(job):
            table, future = job
            ins, upd = future.result()
            result.inserted += ins
            result.updated += upd
            result.existing += table.num_rows - ins
            if progress:
                progress(table.num_rows)

        # an empty space is filled by plain appends (io.append): no join against the key column
        appender = None
        if not dry_run and not update and append and store.count(result.space) == 0:
            from .append import Appender

            appender = Appender(store, result.space)
        write = appender.write if appender else None if dry_run else partial(
            store.write_rows, result.space, update=update, key_index=False)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rsembed-import") as pool:
            try:
                for batch in batches():
                    if not batch.num_rows:
                        continue
                    table = rows_table(batch, cm, info.id, dim, h3_res, row0, templates, kept)
                    row0 += batch.num_rows
                    table, dup = _unique_keys(table)
                    result.duplicates += dup
                    if dry_run:
                        if exists and table.num_rows:
                            held = store.contains_many(table.column("key").to_pylist(), space=result.space)
                            result.existing += int(sum(held))
                        continue
                    if pending is not None:
                        settle(pending)
                        pending = None
                    if table.num_rows:  # one write at a time, in input order
                        pending = (table, pool.submit(write, table))
                if pending is not None:
                    settle(pending)
                    pending = None
            finally:
                if pending is not None:  # an error while keying: let the write in flight finish
                    pending[1].exception()
        if appender is not None:
            removed = appender.finish()
            result.inserted -= removed
            result.existing += removed
        if not dry_run and result.inserted:
            store._ensure_key_index(result.space)  # once, not per batch
        return result
    finally:
        cleanup()
        if spool and os.path.exists(spool):
            os.remove(spool)


def ahead(batches, depth: int = 2):
    """``batches`` decoded on a thread of its own, ``depth`` batches ahead of the consumer.

    Parquet decoding runs in Arrow's C++ with the GIL released, so it overlaps the checks of the
    previous batch (Python and numpy) instead of waiting for them: about a fifth of an import's
    time at 64-d. The iterator is closed when the consumer stops early.
    """
    import queue
    import threading

    done = object()
    box: "queue.Queue" = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for batch in batches:
                if stop.is_set():
                    return
                box.put(batch)
            box.put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            box.put(exc)

    worker = threading.Thread(target=produce, name="rsembed-import-decode", daemon=True)
    worker.start()
    try:
        while True:
            item = box.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                box.get_nowait()
            except queue.Empty:
                worker.join(0.01)


def _space_exists(store, space: str) -> bool:
    try:
        store.space_info(space)
        return True
    except Exception:
        return False


def _width(batch: pa.RecordBatch, name: str) -> Optional[int]:
    col = batch.column(name)
    if not len(col):
        return None
    return int(pc.list_value_length(col)[0].as_py())


def _unique_keys(table: pa.Table):
    n = table.num_rows
    if not n or pc.count_distinct(table.column("key")).as_py() == n:
        return table, 0
    idx = pa.table({"key": table.column("key"), "i": pa.array(np.arange(n))}).group_by(
        "key", use_threads=False).aggregate([("i", "min")]).column("i_min")
    keep = np.sort(idx.to_numpy())
    return table.take(pa.array(keep)), n - len(keep)


def rows_table(batch: pa.RecordBatch, cm: C.ColumnMap, model: str, dim: int, h3_res: int, row0: int,
               templates: Dict[tuple, KeyTemplate], extra: Sequence[str] = ()) -> pa.Table:
    """One checked batch as rows of the space, keyed column-wise (row order kept); the ``extra``
    columns go into each row's ``meta`` (``io.extras``)."""
    n = batch.num_rows
    vec = C.vectors(batch, cm.columns["vector"], dim, row0)
    sp = C.places(batch, cm, row0)
    win = C.windows(batch, cm, row0)
    kind = sp["kind"]
    parts = []  # (rows, canonical JSON, key) per spatial kind, put back in row order below
    lon, lat = np.zeros(n), np.zeros(n)
    bounds = np.zeros((n, 4))
    cells = np.zeros(n, np.int64)
    has_cells = bool((kind == 2).any())
    cell_int: list = [None] * n if has_cells else []
    cell_res: list = [None] * n if has_cells else []
    for k in np.unique(kind):
        rows = np.flatnonzero(kind == k)
        name = C.KINDS[int(k)]
        tkey = (model, name, win["kind"])
        if tkey not in templates:
            templates[tkey] = KeyTemplate.for_model(model, name, win["kind"])
        t = templates[tkey]
        values = {f: (v[rows] if isinstance(v, np.ndarray) else v) for f, v in {**sp, **win}.items()
                  if f != "kind"}
        txt, keys = keys_for(t, values)
        parts.append((rows, txt, keys))
        if name == "PointBuffer":
            lo, la, b = values["lon"], values["lat"], values["buffer_m"]
            per_m = metres_to_degrees(0.0, 1.0, 1.0)[1]  # degrees of latitude per metre (PointBuffer.bounds)
            dlon = b / (1.0 / per_m * np.maximum(np.cos(np.radians(la)), 1e-6))
            dlat = b / (1.0 / per_m)
            lon[rows], lat[rows] = lo, la
            bounds[rows] = np.stack([np.maximum(lo - dlon, -180), np.maximum(la - dlat, -90),
                                     np.minimum(lo + dlon, 180), np.minimum(la + dlat, 90)], axis=1)
            cells[rows] = [h3i.latlng_to_cell(a, o, h3_res) for a, o in zip(la.tolist(), lo.tolist())]
        elif name == "BBox":
            b = np.stack([values[f] for f in ("minlon", "minlat", "maxlon", "maxlat")], axis=1)
            bounds[rows] = b
            lon[rows], lat[rows] = (b[:, 0] + b[:, 2]) / 2.0, (b[:, 1] + b[:, 3]) / 2.0
            cells[rows] = [h3i.latlng_to_cell(a, o, h3_res) for a, o in zip(lat[rows].tolist(), lon[rows].tolist())]
        else:
            for i, c in zip(rows.tolist(), values["cell"].tolist()):
                ci = h3i.str_to_int(c)
                res = h3i.get_resolution(ci)
                la, lo = h3i.cell_to_latlng(ci)
                ring = h3i.cell_to_boundary(ci)
                lats, lons = zip(*ring)
                lon[i], lat[i] = lo, la
                bounds[i] = (min(lons), min(lats), max(lons), max(lats))
                cells[i] = h3i.cell_to_center_child(ci, h3_res) if res <= h3_res else h3i.cell_to_parent(ci, h3_res)
                cell_int[i], cell_res[i] = ci, res
    year_model = win["kind"] == "year" or next(iter(templates.values())).temporal == "year"
    now = datetime.now(timezone.utc)
    if len(parts) == 1:
        text, key = parts[0][1], parts[0][2]
    else:
        back = pa.array(np.argsort(np.concatenate([p[0] for p in parts]), kind="stable"))
        text = pa.concat_arrays([p[1] for p in parts]).take(back)
        key = pa.concat_arrays([p[2] for p in parts]).take(back)
    cols = {
        "key": key, "request": text,
        "model": pa.repeat(model, n), "revision": pa.repeat(_rev(templates), n),
        "output": pa.repeat("pooled", n), "pooling": pa.repeat("mean", n),
        "provider": pa.nulls(n, pa.string()), "spatial_type": pa.array(C.KINDS).take(pa.array(kind)),
        "lon": lon, "lat": lat, "minlon": bounds[:, 0], "minlat": bounds[:, 1], "maxlon": bounds[:, 2],
        "maxlat": bounds[:, 3], "h3": cells,
        "cell": pa.array(cell_int, pa.int64()) if has_cells else pa.nulls(n, pa.int64()),
        "cell_res": pa.array(cell_res, pa.int8()) if has_cells else pa.nulls(n, pa.int8()),
    }
    start, end = win["start"], win["end"]
    if year_model:  # a year model keys (and stores) the calendar year the window starts in
        y = win["year"]
        start = (y - 1970).astype("datetime64[Y]").astype("datetime64[D]")
        end = (y - 1969).astype("datetime64[Y]").astype("datetime64[D]")
    cols.update({"start_date": pa.array(start, pa.date32()), "end_date": pa.array(end, pa.date32()),
                 "year": pa.array(win["year"].astype(np.int32)),
                 "vector": pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel(), pa.float32()), dim),
                 "grid": pa.nulls(n, pa.large_binary()), "grid_shape": pa.nulls(n, pa.list_(pa.int32())),
                 "grid_dtype": pa.nulls(n, pa.string()), "grid_codec": pa.nulls(n, pa.string()),
                 "meta": extras.meta_json(batch, list(extra)),
                 "created_at": pa.repeat(pa.scalar(now, pa.timestamp("us", tz="UTC")), n),
                 "compute_s": np.zeros(n)})
    schema = row_schema(dim)
    return pa.Table.from_arrays([pa.array(cols[f.name], f.type) if isinstance(cols[f.name], np.ndarray)
                                 else cols[f.name].cast(f.type) for f in schema], schema=schema)


def _rev(templates: Dict[tuple, KeyTemplate]) -> str:
    return next(iter(templates.values())).revision
