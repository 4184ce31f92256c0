"""Stored rows of one space as columns in memory: what answers a look-up or a search without Lance.

:class:`Rows` holds, per row, the key (its 32 raw bytes), the vector exactly
as stored, the filter columns as numpy arrays, and the rest of what an
:class:`~rsembed_store.embedding.Embedding` or a search result needs. The
canonical request JSON (about 640 bytes a row, the bulk of a row) is kept
compressed with zlib against a dictionary taken from the space's own first row:
requests of one space differ in a few numbers, so a row shrinks to about 45
bytes and decompresses in about 1 us. Grids are not held: a grid row's grid is
read from Lance by its row address when asked for.
"""

from __future__ import annotations

import json
import zlib
from datetime import date, datetime, timezone
from typing import Dict, List, Optional, Sequence, Tuple

import h3
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...embedding import Embedding
from ...keys import StoredRequest

# the columns a tier reads from Lance (plus the row address)
COLUMNS = ["key", "request", "vector", "lon", "lat", "h3", "cell", "start_date", "end_date", "year", "meta",
           "compute_s", "created_at", "output"]
GRID_COLUMNS = ["grid", "grid_shape", "grid_dtype", "grid_codec"]
# a missing start date never passes "start_date < x" (as in SQL, where NULL compares false)
NO_START = np.iinfo(np.int32).max
NO_END = np.iinfo(np.int32).min
_EPOCH = date(1970, 1, 1)

ARRAYS = ("keys", "vectors", "lon", "lat", "h3", "cell", "start", "end", "year", "compute_s", "created_us",
          "has_grid", "addr", "req_offsets", "req_blob", "meta_offsets", "meta_blob")


def days(d: date) -> int:
    return (d - _EPOCH).days


def key_bytes(keys: Sequence[str]) -> np.ndarray:
    """64-hex-digit keys as an array of their 32 raw bytes (``S32``), in order."""
    return np.frombuffer(bytes.fromhex("".join(keys)), dtype="S32") if keys else np.empty(0, "S32")


def _blob(values: Sequence[bytes]) -> Tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum([len(v) for v in values], out=offsets[1:])
    return offsets, np.frombuffer(b"".join(values), dtype=np.uint8)


class Rows:
    """Columns of stored rows (a tier's snapshot, or the delta newer than it). Immutable once made."""

    def __init__(self, arrays: Dict[str, np.ndarray], *, zdict: bytes, model: str, revision: str):
        for name in ARRAYS:
            setattr(self, name, arrays[name])
        self.zdict = zdict
        self.model, self.revision = model, revision
        self.n = len(self.keys)
        self.dim = self.vectors.shape[1] if self.vectors.ndim == 2 else 0

    # ------------------------------------------------------------ making

    @classmethod
    def from_arrow(cls, table: pa.Table, *, dim: int, model: str, revision: str,
                   zdict: Optional[bytes] = None) -> "Rows":
        """Rows from a Lance scan of :data:`COLUMNS` with ``_rowaddr``."""
        n = table.num_rows
        requests = table.column("request").to_pylist()
        if zdict is None:
            zdict = requests[0].encode("utf-8") if requests else b""
        packed = []
        for text in requests:
            c = zlib.compressobj(6, zdict=zdict) if zdict else zlib.compressobj(6)
            packed.append(c.compress(text.encode("utf-8")) + c.flush())
        req_offsets, req_blob = _blob(packed)
        metas = [(m or "").encode("utf-8") for m in table.column("meta").to_pylist()]
        meta_offsets, meta_blob = _blob(metas)
        vec = table.column("vector").combine_chunks()
        flat = vec.values.to_numpy(zero_copy_only=False) if n else np.empty(0, np.float32)
        start = table.column("start_date").cast(pa.int32()).fill_null(NO_START).to_numpy()
        end = table.column("end_date").cast(pa.int32()).fill_null(NO_END).to_numpy()
        arrays = {
            "keys": key_bytes(table.column("key").to_pylist()),
            "vectors": np.ascontiguousarray(flat, dtype=np.float32).reshape(n, dim),
            "lon": table.column("lon").to_numpy().astype(np.float64),
            "lat": table.column("lat").to_numpy().astype(np.float64),
            "h3": table.column("h3").to_numpy().astype(np.int64),
            "cell": table.column("cell").fill_null(0).to_numpy().astype(np.int64),
            "start": start.astype(np.int32),
            "end": end.astype(np.int32),
            "year": table.column("year").fill_null(np.iinfo(np.int32).min).to_numpy().astype(np.int32),
            "compute_s": table.column("compute_s").fill_null(0.0).to_numpy().astype(np.float64),
            "created_us": table.column("created_at").cast(pa.int64()).to_numpy().astype(np.int64),
            "has_grid": pc.equal(table.column("output"), "grid").fill_null(False).to_numpy(zero_copy_only=False),
            "addr": table.column("_rowaddr").to_numpy().astype(np.uint64),
            "req_offsets": req_offsets, "req_blob": req_blob,
            "meta_offsets": meta_offsets, "meta_blob": meta_blob,
        }
        return cls(arrays, zdict=zdict, model=model, revision=revision)

    def arrays(self) -> Dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in ARRAYS}

    def nbytes(self) -> int:
        return int(sum(getattr(self, name).nbytes for name in ARRAYS)) + len(self.zdict)

    # ------------------------------------------------------------ reading one row

    def key(self, i: int) -> str:
        # not self.keys[i].hex(): a numpy bytes scalar drops trailing zero bytes
        return self.keys[i:i + 1].tobytes().hex()

    def request(self, i: int) -> str:
        raw = self.req_blob[self.req_offsets[i]:self.req_offsets[i + 1]].tobytes()
        d = zlib.decompressobj(zdict=self.zdict) if self.zdict else zlib.decompressobj()
        return (d.decompress(raw) + d.flush()).decode("utf-8")

    def meta(self, i: int) -> dict:
        text = self.meta_blob[self.meta_offsets[i]:self.meta_offsets[i + 1]].tobytes()
        return json.loads(text) if text else {}

    def embedding(self, i: int, grid_row: Optional[dict] = None) -> Embedding:
        """Row ``i`` as the Embedding a Lance read gives (``grid_row``: its grid columns, for grid rows)."""
        grid, codec = None, "raw"
        if grid_row is not None and grid_row.get("grid") is not None:
            grid = np.frombuffer(grid_row["grid"], dtype=np.dtype(grid_row["grid_dtype"])).reshape(
                grid_row["grid_shape"])
            codec = grid_row.get("grid_codec") or "raw"
        created = datetime.fromtimestamp(int(self.created_us[i]) / 1e6, tz=timezone.utc)
        return Embedding(
            request=StoredRequest(self.request(i), self.key(i), self.model, self.revision),
            vector=self.vectors[i].copy(),
            grid=grid,
            grid_codec=codec,
            meta=self.meta(i),
            compute_s=float(self.compute_s[i]),
            created_at=created,
            cached=True,
        )

    def result(self, i: int, distance: float) -> Tuple[dict, str]:
        """Row ``i`` as a search result row (the shape :class:`SearchResult` holds) and its request JSON."""
        text = self.request(i)
        cell = int(self.cell[i])
        start, end, year = int(self.start[i]), int(self.end[i]), int(self.year[i])
        return ({
            "key": self.key(i),
            "distance": float(distance),
            "lon": float(self.lon[i]),
            "lat": float(self.lat[i]),
            "h3": h3.int_to_str(int(self.h3[i])),
            "cell": h3.int_to_str(cell) if cell else None,
            "start_date": date.fromordinal(_EPOCH.toordinal() + start) if start != NO_START else None,
            "end_date": date.fromordinal(_EPOCH.toordinal() + end) if end != NO_END else None,
            "year": year if year != np.iinfo(np.int32).min else None,
            "request": json.loads(text),
        }, text)


def empty_rows(dim: int, model: str, revision: str, zdict: bytes = b"") -> Rows:
    arrays = {name: np.empty(0, dtype=np.int64) for name in ARRAYS}
    arrays.update(keys=np.empty(0, "S32"), vectors=np.empty((0, dim), np.float32), has_grid=np.empty(0, bool),
                  req_offsets=np.zeros(1, np.int64), meta_offsets=np.zeros(1, np.int64),
                  req_blob=np.empty(0, np.uint8), meta_blob=np.empty(0, np.uint8))
    return Rows(arrays, zdict=zdict, model=model, revision=revision)


def distances(vectors: np.ndarray, q: np.ndarray, metric: str, norms: Optional[np.ndarray] = None) -> np.ndarray:
    """Lance's distance of each row of ``vectors`` to ``q``: cosine ``1 - cos``, l2 squared, dot ``1 - a.b``.

    ``norms`` (the rows' norms) saves recomputing them for cosine.
    """
    q = np.asarray(q, dtype=np.float32)
    if len(vectors) == 0:
        return np.empty(0, np.float32)
    if metric == "l2":
        diff = vectors - q
        return np.einsum("ij,ij->i", diff, diff)
    ip = vectors @ q
    if metric == "dot":
        return 1.0 - ip
    if norms is None:
        norms = np.linalg.norm(vectors, axis=1)
    qn = float(np.linalg.norm(q))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (1.0 - ip / (norms * qn)).astype(np.float32)


def top_k(dist: np.ndarray, keys: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` nearest rows, nearest first, ties broken by key (as the Lance path does)."""
    if len(dist) > k:
        kth = np.partition(dist, k - 1)[k - 1]
        cand = np.flatnonzero(dist <= kth)  # every row tied with the k-th competes for the last places
    else:
        cand = np.arange(len(dist))
    order = np.lexsort((keys[cand], dist[cand]))
    return cand[order[:k]]
