"""Embedding spaces: one LanceDB table per (model id, revision), and its row layout.

Vectors of different spaces have different meanings (and often dimensions) and
are never compared, so each space is its own table. This module owns the
table name, the Arrow schema of a row, and the conversion between rows and
:class:`~rsembed_store.embedding.Embedding` objects; it touches no storage.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from datetime import date, datetime, timezone
from typing import Dict, List, Sequence

import h3
import numpy as np
import pyarrow as pa

from .embedding import Embedding
from .errors import VectorError
from .keys import StoredRequest
from .specs import H3Cell

DEFAULT_H3_RES = 12  # ~10 m hexagon edge: the cell of each ROI centre
PRIMARY_KEY_META = {b"lance-schema:unenforced-primary-key:position": b"1"}

# heavy columns, left out of the SQL `embeddings` view and of search results
HEAVY_COLUMNS = ("vector", "grid")

_NAME_OK = re.compile(r"[^A-Za-z0-9_.-]+")


@functools.lru_cache(maxsize=1024)
def space_name(model: str, revision: str) -> str:
    """Table name of a space: ``<model>__<revision>``, made safe, hashed if long.

    >>> space_name("mosaiks", "k256-seed0-v1")
    'mosaiks__k256-seed0-v1'
    """
    rev = _NAME_OK.sub("-", revision).strip("-.") or "r"
    if len(rev) > 40:
        rev = rev[:24] + "-" + hashlib.sha256(revision.encode()).hexdigest()[:12]
    return f"{_NAME_OK.sub('-', model)}__{rev}"


def row_schema(dim: int) -> pa.Schema:
    """The Arrow schema of one space's table (``dim`` is the embedding dimension)."""
    return pa.schema(
        [
            pa.field("key", pa.string(), nullable=False, metadata=PRIMARY_KEY_META),
            pa.field("request", pa.string(), nullable=False),
            pa.field("model", pa.string(), nullable=False),
            pa.field("revision", pa.string(), nullable=False),
            pa.field("output", pa.string(), nullable=False),
            pa.field("pooling", pa.string()),
            pa.field("provider", pa.string()),
            pa.field("spatial_type", pa.string(), nullable=False),
            pa.field("lon", pa.float64(), nullable=False),
            pa.field("lat", pa.float64(), nullable=False),
            pa.field("minlon", pa.float64(), nullable=False),
            pa.field("minlat", pa.float64(), nullable=False),
            pa.field("maxlon", pa.float64(), nullable=False),
            pa.field("maxlat", pa.float64(), nullable=False),
            pa.field("h3", pa.int64(), nullable=False),
            pa.field("cell", pa.int64()),
            pa.field("cell_res", pa.int8()),
            pa.field("start_date", pa.date32()),
            pa.field("end_date", pa.date32()),
            pa.field("year", pa.int32()),
            pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),
            pa.field("grid", pa.large_binary()),
            pa.field("grid_shape", pa.list_(pa.int32())),
            pa.field("grid_dtype", pa.string()),
            pa.field("grid_codec", pa.string()),
            pa.field("meta", pa.string()),
            pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("compute_s", pa.float64(), nullable=False),
        ]
    )


def _json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return str(value)


def _spatial_summary(sp, h3_res: int) -> tuple:
    """(type, lon, lat, minlon, minlat, maxlon, maxlat, h3 at h3_res, own cell, own cell res)."""
    lon, lat = sp.center()
    minlon, minlat, maxlon, maxlat = sp.bounds()
    if isinstance(sp, H3Cell):
        res = sp.resolution
        centre = h3.cell_to_center_child(sp.cell, h3_res) if res <= h3_res else h3.cell_to_parent(sp.cell, h3_res)
        return ("H3Cell", lon, lat, minlon, minlat, maxlon, maxlat, h3.str_to_int(centre), sp.cell_int, res)
    centre = h3.str_to_int(h3.latlng_to_cell(lat, lon, h3_res))
    return (type(sp).__name__, lon, lat, minlon, minlat, maxlon, maxlat, centre, None, None)


def _temporal_summary(t) -> tuple:
    if t is None:
        return None, None, None
    start, end = t.window()
    return start, end, (t.year if t.mode == "year" else start.year)


def _grid_columns(e: Embedding) -> tuple:
    if e.grid is None:
        return None, None, None, None
    g = np.asarray(e.grid)
    little = g.dtype.newbyteorder("<")
    return np.ascontiguousarray(g, dtype=little).tobytes(), list(g.shape), little.str, e.grid_codec


_SPATIAL_COLUMNS = ("spatial_type", "lon", "lat", "minlon", "minlat", "maxlon", "maxlat", "h3", "cell", "cell_res")


def embeddings_to_table(embeddings: Sequence[Embedding], dim: int, h3_res: int) -> pa.Table:
    """Rows for a batch of embeddings of one space (validated by the caller), built column by column."""
    now = datetime.now(timezone.utc)
    reqs = [e.request for e in embeddings]
    spatial = list(zip(*[_spatial_summary(r.spatial, h3_res) for r in reqs]))
    times: Dict[object, tuple] = {}  # a batch has few distinct windows
    for r in reqs:
        if r.temporal not in times:
            times[r.temporal] = _temporal_summary(r.temporal)
    temporal = list(zip(*[times[r.temporal] for r in reqs]))
    grids = list(zip(*[_grid_columns(e) for e in embeddings]))
    outputs = [r.output for r in reqs]
    cols = {
        "key": [r.key for r in reqs],
        "request": [r.canonical for r in reqs],
        "model": [r.model for r in reqs],
        "revision": [r.revision for r in reqs],
        "output": [o.mode for o in outputs],
        "pooling": [o.pooling if o.mode == "pooled" else None for o in outputs],
        "provider": [r.provider for r in reqs],
        **dict(zip(_SPATIAL_COLUMNS, spatial)),
        **dict(zip(("start_date", "end_date", "year"), temporal)),
        **dict(zip(("grid", "grid_shape", "grid_dtype", "grid_codec"), grids)),
        "meta": [json.dumps(e.meta, sort_keys=True, default=_json_default) if e.meta else "{}" for e in embeddings],
        "created_at": [e.created_at or now for e in embeddings],
        "compute_s": [float(e.compute_s) for e in embeddings],
    }
    vectors = np.stack([np.asarray(e.vector, dtype=np.float32) for e in embeddings]) if embeddings else np.empty((0, dim), np.float32)
    schema = row_schema(dim)
    arrays = []
    for f in schema:
        if f.name == "vector":
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), dim))
        else:
            arrays.append(pa.array(list(cols[f.name]), type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


# the columns an Embedding is rebuilt from (reads project to these)
EMBEDDING_COLUMNS = ["key", "request", "model", "revision", "vector", "grid", "grid_shape", "grid_dtype",
                     "grid_codec", "meta", "compute_s", "created_at"]


def table_to_embeddings(table: pa.Table, *, cached: bool = True) -> List[Embedding]:
    """Embeddings from stored rows, converted column by column (no per-row dicts)."""
    n = table.num_rows
    if n == 0:
        return []
    vectors = table.column("vector").combine_chunks()
    dim = vectors.type.list_size
    flat = vectors.values.to_numpy(zero_copy_only=False).reshape(n, dim)
    col = {name: table.column(name).to_pylist() for name in EMBEDDING_COLUMNS if name != "vector"}
    out = []
    for i in range(n):
        grid = None
        if col["grid"][i] is not None:
            grid = np.frombuffer(col["grid"][i], dtype=np.dtype(col["grid_dtype"][i])).reshape(col["grid_shape"][i])
        meta = col["meta"][i]
        out.append(
            Embedding(
                request=StoredRequest(col["request"][i], col["key"][i], col["model"][i], col["revision"][i]),
                vector=flat[i],
                grid=grid,
                grid_codec=col["grid_codec"][i] or "raw",
                meta=json.loads(meta) if meta else {},
                compute_s=float(col["compute_s"][i] or 0.0),
                created_at=col["created_at"][i],
                cached=cached,
            )
        )
    return out


def check_dim(embeddings: Sequence[Embedding], dim: int, space: str) -> None:
    """Validate a batch for a space of dimension ``dim``; nothing is written unless all pass.

    Pooled batches are checked as one matrix (shape, finiteness, the float32
    range, compute seconds); anything else, and any batch that fails, goes row by
    row so the error names the row and what is wrong with it.
    """
    if _pooled_batch_ok(embeddings, dim):
        return
    for e in embeddings:
        try:
            e.validate(dim)
        except VectorError as exc:
            raise VectorError(f"space {space!r}: {exc}") from None


def _pooled_batch_ok(embeddings: Sequence[Embedding], dim: int) -> bool:
    """Whether every embedding is a valid pooled answer of dimension ``dim`` (checked as one matrix)."""
    import math

    vectors = []
    for e in embeddings:
        v = e.vector
        if e.grid is not None or not isinstance(v, np.ndarray) or v.shape != (dim,) or v.dtype.kind != "f":
            return False
        c = e.compute_s
        if not isinstance(c, (int, float)) or not (c >= 0 and math.isfinite(c)):
            return False
        vectors.append(v)
    if not vectors:
        return True
    if any(e.request.output.mode != "pooled" for e in embeddings):
        return False
    m = np.stack(vectors)
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(m.astype(np.float32, copy=False)).all())  # NaN, inf and float32 overflow


def catalog_schema() -> pa.Schema:
    return pa.schema(
        [
            pa.field("space", pa.string(), nullable=False, metadata=PRIMARY_KEY_META),
            pa.field("model", pa.string(), nullable=False),
            pa.field("revision", pa.string(), nullable=False),
            pa.field("dim", pa.int32(), nullable=False),
            pa.field("dtype", pa.string(), nullable=False),
            pa.field("metric", pa.string(), nullable=False),
            pa.field("kind", pa.string()),
            pa.field("h3_res", pa.int8(), nullable=False),
            pa.field("info", pa.string()),
            pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
        ]
    )
