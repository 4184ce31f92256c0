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
from datetime import date, datetime, timedelta, timezone
from typing import Dict, List, Optional, Sequence, Tuple

import h3
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

try:  # about twice as fast as json on a request (a search parses one per result row)
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - orjson is a core dependency; kept for partial installs
    _loads = json.loads

from ...embedding import Embedding
from ...keys import _LAZY_FIELDS, ResolvedRequest, StoredRequest, _has_series_fields

# the columns a tier reads from Lance (plus the row address)
COLUMNS = ["key", "request", "vector", "lon", "lat", "h3", "cell", "start_date", "end_date", "year", "meta",
           "compute_s", "created_at", "output"]
GRID_COLUMNS = ["grid", "grid_shape", "grid_dtype", "grid_codec"]
# a missing start date never passes "start_date < x" (as in SQL, where NULL compares false)
NO_START = np.iinfo(np.int32).max
NO_END = np.iinfo(np.int32).min
_EPOCH = date(1970, 1, 1)
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=timezone.utc)

ARRAYS = ("keys", "vectors", "lon", "lat", "h3", "cell", "start", "end", "year", "compute_s", "created_us",
          "has_grid", "addr", "req_offsets", "req_blob", "meta_offsets", "meta_blob")


def days(d: date) -> int:
    return (d - _EPOCH).days


def key_bytes(keys: Sequence[str]) -> np.ndarray:
    """64-hex-digit keys as an array of their 32 raw bytes (``S32``), in order."""
    return np.frombuffer(bytes.fromhex("".join(keys)), dtype="S32") if keys else np.empty(0, "S32")


def key_prefixes(sorted_keys: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each ``S32`` key as a big-endian unsigned integer (native ``uint64``).

    Sorted keys have sorted prefixes, and a binary search over integers is about four times faster
    than over 32-byte strings (numpy compares ``S32`` values one call at a time)."""
    raw = np.ascontiguousarray(sorted_keys).view(np.uint8).reshape(-1, 32)
    return raw[:, :8].copy().view(">u8").ravel().astype(np.uint64)


def find_keys(sorted_keys: np.ndarray, prefixes: np.ndarray, order: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Row positions of the ``S32`` ``keys`` in a key index, -1 where absent.

    The index is ``sorted_keys`` (the keys sorted), their :func:`key_prefixes`, and ``order`` (the row
    of each sorted key). The search runs on the prefixes; a query whose prefix is shared by several
    stored keys falls back to a search over the full keys (among 1M SHA-256 keys, the chance that
    any two share their first 8 bytes is about 3e-8, but the answer must not depend on luck).
    """
    n = len(sorted_keys)
    if n == 0 or len(keys) == 0:
        return np.full(len(keys), -1, dtype=np.int64)
    keys = np.ascontiguousarray(keys, dtype="S32")
    wanted = key_prefixes(keys)
    i = np.minimum(np.searchsorted(prefixes, wanted), n - 1)
    found = sorted_keys[i] == keys
    shared = ~found & (prefixes[i] == wanted)  # the prefix is held, the key not at its first place
    if shared.any():
        j = np.flatnonzero(shared)
        k = np.minimum(np.searchsorted(sorted_keys, keys[j]), n - 1)
        i[j] = k
        found[j] = sorted_keys[k] == keys[j]
    return np.where(found, order[i], -1).astype(np.int64)


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

    def take(self, order: np.ndarray) -> "Rows":
        """These rows in another order (``new[i] = self[order[i]]``)."""
        arrays = {}
        for name in ARRAYS:
            if name.endswith("_blob"):
                continue
            if name.endswith("_offsets"):
                blob_name = name.replace("offsets", "blob")
                offsets, blob = getattr(self, name), getattr(self, blob_name)
                lengths = offsets[1:][order] - offsets[:-1][order]
                new = np.zeros(len(order) + 1, dtype=np.int64)
                np.cumsum(lengths, out=new[1:])
                at = np.repeat(offsets[:-1][order] - new[:-1], lengths) + np.arange(int(new[-1]), dtype=np.int64)
                arrays[name], arrays[blob_name] = new, blob[at]
            else:
                arrays[name] = getattr(self, name)[order]
        return Rows(arrays, zdict=self.zdict, model=self.model, revision=self.revision)

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
        return {} if text in (b"", b"{}") else json.loads(text.decode("utf-8"))

    def embeddings(self, positions: Sequence[int], grids: Optional[Dict[int, dict]] = None) -> List[Embedding]:
        """Rows at ``positions`` as Embeddings, converting the array columns in one go (a batch look-up).

        ``grids``: the grid columns of grid rows, by row address. Each Embedding's vector is its own
        row of one fresh (writable) gather, never a view of the tier.
        """
        idx = np.asarray(positions, dtype=np.int64)
        at = idx.tolist()
        vectors = list(self.vectors[idx])  # one gather, split into row views (no per-row indexing)
        # (pyarrow's tz-aware to_pylist costs ~3 us a row; adding a timedelta to the epoch ~0.3 us, and
        # the rows of one write share their stamp, so each distinct stamp is made once; datetimes are
        # immutable, so sharing one is safe)
        us = self.created_us[idx].tolist()
        stamps = {u: _EPOCH_UTC + timedelta(microseconds=u) for u in set(us)}
        hexes = self.keys[idx].tobytes().hex()  # all keys in one call (a bytes scalar would lose trailing zeros)
        metas = [{} if n <= 2 else self.meta(i)  # "{}" (or nothing): no parse
                 for i, n in zip(at, (self.meta_offsets[idx + 1] - self.meta_offsets[idx]).tolist())]
        # positional arguments: the dataclass __init__ (which validates nothing) runs about twice as fast
        # as with keywords; tests/query/test_lookups.py checks every field against a keyword-built one
        out = [Embedding(request, vector, None, "raw", meta, compute_s, stamps[u], True)
               for request, vector, meta, compute_s, u in zip(PackedRequest.many(self, at, hexes), vectors, metas,
                                                               self.compute_s[idx].tolist(), us)]
        if grids:
            for j in np.flatnonzero(self.has_grid[idx]).tolist():
                grid_row = grids.get(int(self.addr[at[j]]))
                if grid_row is not None and grid_row.get("grid") is not None:
                    out[j].grid = np.frombuffer(grid_row["grid"], dtype=np.dtype(grid_row["grid_dtype"])).reshape(
                        grid_row["grid_shape"])
                    out[j].grid_codec = grid_row.get("grid_codec") or "raw"
        return out

    def embedding(self, i: int, grid_row: Optional[dict] = None) -> Embedding:
        """Row ``i`` as the Embedding a Lance read gives (``grid_row``: its grid columns, for grid rows)."""
        grids = {int(self.addr[i]): grid_row} if grid_row is not None else None
        return self.embeddings([i], grids)[0]

    def results(self, positions: Sequence[int], dists: Sequence[float]) -> Tuple[List[dict], List[str]]:
        """Rows at ``positions`` as search result rows (the shape :class:`SearchResult` holds), and their
        request JSON; the columns are read once for all of them (scalar indexing costs ~1 us a value)."""
        idx = np.asarray(positions, dtype=np.int64)
        hexes = self.keys[idx].tobytes().hex()
        cols = zip(self.lon[idx].tolist(), self.lat[idx].tolist(), self.h3[idx].tolist(), self.cell[idx].tolist(),
                   self.start[idx].tolist(), self.end[idx].tolist(), self.year[idx].tolist())
        rows, texts = [], []
        for j, (i, distance, (lon, lat, cell_h3, cell, start, end, year)) in enumerate(zip(idx.tolist(), dists,
                                                                                        cols)):
            text = self.request(i)
            texts.append(text)
            rows.append({
                "key": hexes[64 * j:64 * j + 64],
                "distance": float(distance),
                "lon": lon,
                "lat": lat,
                "h3": h3.int_to_str(cell_h3),
                "cell": h3.int_to_str(cell) if cell else None,
                "start_date": _EPOCH_DATES[start] if start != NO_START else None,
                "end_date": _EPOCH_DATES[end] if end != NO_END else None,
                "year": year if year != _NO_YEAR else None,
                "request": _loads(text),
            })
        return rows, texts


class _Dates(dict):
    """Day number -> date, made once per day number seen."""

    def __missing__(self, day: int) -> date:
        value = self[day] = date.fromordinal(_EPOCH.toordinal() + day)
        return value


_EPOCH_DATES = _Dates()
_NO_YEAR = int(np.iinfo(np.int32).min)


class PackedRequest(StoredRequest):
    """A stored request whose canonical JSON stays compressed in its tier until something reads it.

    A batch look-up of thousands of keys mostly wants vectors; decompressing
    every request (and checking it for frames) cost a third of its time. The
    JSON, and the frames and modalities parsed from it, are made on first
    access; pickling (e.g. to a Ray worker) sends a plain StoredRequest.
    """

    def __init__(self, rows: "Rows", i: int, key: str):  # noqa: D107 - no super(): nothing to parse yet
        object.__setattr__(self, "__dict__", {"key": key, "model": rows.model, "revision": rows.revision,
                                              "_rows": rows, "_i": i})

    @classmethod
    def many(cls, rows: "Rows", positions: List[int], hexes: str) -> List["PackedRequest"]:
        """The requests of ``rows`` at ``positions`` (``hexes``: their keys, 64 hex digits each, joined),
        as :meth:`__init__` makes them but without a call per row (a batch look-up makes thousands)."""
        new, set_dict = object.__new__, object.__setattr__
        model, revision = rows.model, rows.revision
        out = []
        for j, i in enumerate(positions):
            request = new(cls)
            set_dict(request, "__dict__", {"key": hexes[64 * j:64 * j + 64], "model": model, "revision": revision,
                                           "_rows": rows, "_i": i})
            out.append(request)
        return out

    @property
    def canonical(self) -> str:
        text = self.__dict__.get("_canonical")
        if text is None:
            text = self._rows.request(self._i)
            object.__setattr__(self, "_canonical", text)
        return text

    @property
    def frames(self):
        return self._series()[0]

    @property
    def modalities(self):
        return self._series()[1]

    def _series(self) -> tuple:
        got = self.__dict__.get("_series_fields")
        if got is None:
            text = self.canonical
            full = ResolvedRequest.from_canonical(text) if _has_series_fields(text) else None
            got = (full.frames, full.modalities) if full else (None, None)
            object.__setattr__(self, "_series_fields", got)
        return got

    def __getattr__(self, name):
        if name not in _LAZY_FIELDS:
            raise AttributeError(name)
        full = ResolvedRequest.from_canonical(self.canonical)
        for f in _LAZY_FIELDS:
            if f not in ("frames", "modalities"):  # properties of this class
                object.__setattr__(self, f, getattr(full, f))
        return getattr(self, name)

    def __reduce__(self):
        return StoredRequest, (self.canonical, self.key, self.model, self.revision)


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


def top_k(dist: np.ndarray, keys: np.ndarray, k: int, at: Optional[np.ndarray] = None) -> np.ndarray:
    """Positions (in ``dist``) of the ``k`` nearest rows, nearest first, ties broken by key (as the Lance path
    does). ``keys[at[i]]`` (or ``keys[at(i)]``, ``at`` a function of an index array) is the key of ``dist[i]``
    when ``at`` is given (only the candidates' keys are read), else ``keys[i]``."""
    if len(dist) > k:
        cand = _below_sampled(dist, k)
        if cand is None:
            kth = np.partition(dist, k - 1)[k - 1]
            cand = np.flatnonzero(dist <= kth)  # every row tied with the k-th competes for the last places
        else:
            kth = np.partition(dist[cand], k - 1)[k - 1]
            cand = cand[dist[cand] <= kth]
    else:
        cand = np.arange(len(dist))
    if at is None:
        cand_keys = keys[cand]
    else:
        cand_keys = keys[at(cand) if callable(at) else at[cand]]
    order = np.lexsort((cand_keys, dist[cand]))
    return cand[order[:k]]


_SAMPLE_STEP = 64


def _below_sampled(dist: np.ndarray, k: int) -> Optional[np.ndarray]:
    """Positions of the rows at or below a threshold that leaves at least ``k`` of them (None: not worth it).

    A partition of 50,000 distances costs about 0.5 ms; one comparison pass about 0.02 ms. The threshold is
    a small order statistic of every 64th distance, so some hundreds of rows pass it; when fewer than ``k``
    do (or some distance is NaN) the caller partitions everything, so the answer is always exact.
    """
    if len(dist) < 64 * _SAMPLE_STEP:
        return None
    sample = dist[::_SAMPLE_STEP]
    j = min(len(sample) - 1, k // _SAMPLE_STEP + 2)
    cut = np.partition(sample, j)[j]
    if not np.isfinite(cut):
        return None
    cand = np.flatnonzero(dist <= cut)
    return cand if len(cand) >= k else None
