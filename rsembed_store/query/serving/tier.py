"""A space's serving tier: its rows at one Lance version in memory, with a key index and an ANN graph.

A tier is built from one Lance snapshot (version ``V``) and never changes
afterwards, so any number of threads may read it without a lock. It holds:

- :class:`~.rows.Rows`: the rows' columns (keys, vectors, filter columns, the
  compressed request JSON);
- a key index: the 32-byte keys sorted, with their row positions and their
  first 8 bytes as integers, so a look-up is one binary search over integers;
- its rows sorted by window, longitude strip and latitude (:mod:`.order`), so
  the rows a filter keeps lie in a few contiguous runs;
- for spaces of more than :data:`FLAT_MAX_ROWS` rows, an HNSW graph from FAISS
  (``IndexHNSWFlat``, M = 32) whose search depth ``efSearch`` is tuned at build
  time to reach recall@10 >= :data:`RECALL_GOAL` for places the graph does not
  hold yet (see :func:`_tuning_places`);
  smaller spaces are scanned exactly (faster than a graph at that size).
- the fragment layout of version ``V`` (data files and deletion files), from
  which :mod:`.delta` finds what changed in later versions.

FAISS was chosen over usearch and hnswlib by measuring them on the benchmark's
vectors (docs/search.md: build time, recall/latency, threads, filtered search).
A tier is saved beside the space (``<store>/_serving/<space>/``) or, for object
stores, in a local cache directory, and refused on load unless its format,
dimension, row count, file sizes and key checksum all agree.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from typing import Dict, List, Optional, Tuple

import numpy as np

from ...errors import CorruptTierError
from .hugepages import advise_graph
from .order import Selection, SpaceOrder
from .rows import ARRAYS, COLUMNS, Rows, distances, find_keys, key_prefixes

FORMAT = "rsembed-serving/2"  # /2: rows sorted by .order (a /1 tier is rebuilt)
FLAT_MAX_ROWS = 20_000
HNSW_M = 32
EF_CONSTRUCTION = 80  # 40 built in half the time but needed twice the search beam for 0.95 at 1M rows
EF_STEPS = (16, 24, 32, 48, 64, 80, 96, 112, 128, 160, 192, 256, 384, 512)  # finer near the usual 100-200
RECALL_GOAL = 0.96  # measured on places left out of the graph: a margin above the promised 0.95
TUNE_QUERIES = 200
UNIT_TOLERANCE = 1e-5  # vectors this close to unit length are searched as they are (cosine = 1 - dot)


_FAISS = []


def _faiss():
    if not _FAISS:  # imported once (a search costs ~3 us less than asking each time)
        from ...errors import require

        _FAISS.append(require("faiss", "core", "the serving tier's ANN graph (faiss-cpu)"))
    return _FAISS[0]


def fragment_layout(ds) -> Dict[int, list]:
    """Fragment id -> [data file paths, deletion file (id, read version) or None] of a Lance version."""
    out = {}
    for f in ds.get_fragments():
        m = f.metadata
        deletion = m.deletion_file
        out[int(f.fragment_id)] = [sorted(d.path for d in m.files),
                                   None if deletion is None else [int(deletion.id), int(deletion.read_version)]]
    return out


class Tier:
    """One space's rows at Lance version ``version``, searchable and keyed in memory (immutable)."""

    def __init__(self, rows: Rows, *, space: str, version: int, metric: str, layout: Dict[int, list],
                 order: SpaceOrder, index=None, ef: Optional[int] = None,
                 search_vectors: Optional[np.ndarray] = None, measured: Optional[dict] = None):
        self.rows = rows
        self.space, self.version, self.metric = space, int(version), metric
        self.layout = layout
        self.index = index
        self.ef = ef
        self.search_vectors = rows.vectors if search_vectors is None else search_vectors
        self.measured = measured or {}
        self.order = np.argsort(rows.keys, kind="stable")
        self.sorted_keys = rows.keys[self.order]
        self.key_prefixes = key_prefixes(self.sorted_keys)  # what positions() searches (8 bytes a row)
        self.space_order = order  # how the rows are sorted: filters find their rows as runs (filters.select)
        advise_graph(index)  # huge pages for the graph walk's random reads (best effort, in a thread)

    @property
    def n(self) -> int:
        return self.rows.n

    @property
    def kind(self) -> str:
        return "hnsw" if self.index is not None else "flat"

    def nbytes(self) -> int:
        """Resident bytes: the rows, the key index and the graph (vectors counted once when shared)."""
        total = (self.rows.nbytes() + self.order.nbytes + self.sorted_keys.nbytes + self.key_prefixes.nbytes
                 + self.space_order.nbytes())
        if self.search_vectors is not self.rows.vectors:
            total += self.search_vectors.nbytes
        if self.index is not None:
            links = self.index.hnsw.neighbors.size() * 4 + self.index.hnsw.offsets.size() * 8
            total += links + self.index.hnsw.levels.size() * 4
        return int(total)

    # ------------------------------------------------------------ reading

    def positions(self, keys: np.ndarray) -> np.ndarray:
        """Row positions of 32-byte ``keys`` (``S32`` array), -1 where not held."""
        return find_keys(self.sorted_keys, self.key_prefixes, self.order, keys)

    def query(self, q: np.ndarray) -> np.ndarray:
        """A query as the graph compares it (unit length for cosine)."""
        q = np.asarray(q, dtype=np.float32)
        if self.metric == "cosine":
            norm = float(np.linalg.norm(q))
            return q / norm if norm > 0 else q
        return q

    def exact(self, q: np.ndarray, positions: Optional[np.ndarray] = None) -> np.ndarray:
        """Distances of ``q`` to the rows at ascending ``positions`` (all rows when None), by the space's
        metric: a :meth:`scan` of the runs they make (read in place where long, gathered where short)."""
        sel = Selection(np.zeros(1, np.int64), np.full(1, self.n, np.int64)) if positions is None else \
            Selection.of_positions(positions)
        return self.scan(q, sel)

    def scan(self, q: np.ndarray, selection) -> np.ndarray:
        """Distances of ``q`` to the rows of ``selection`` (an :class:`~.order.Selection`), laid end to end,
        inf for dropped rows; its runs are read in place."""
        q = self.query(q)
        if self.metric == "l2":
            return selection.scan(lambda block: _graph_distances(block, q, self.metric), self.search_vectors)
        dist = selection.products(self.search_vectors, q)
        np.subtract(1.0, dist, out=dist)  # cosine (unit vectors) and dot: 1 - a.b; dropped rows become inf
        return dist

    def graph(self, Q: np.ndarray, count: int, *, allowed: Optional[np.ndarray] = None,
              ef: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Approximate nearest ``count`` rows for each query row of ``Q``: (distances, positions; -1 = none).

        ``allowed`` (a bool mask over rows) restricts the search inside the graph.
        Safe from many threads: the search depth travels with the call, not the index.
        """
        faiss = _faiss()
        Q = np.ascontiguousarray(np.atleast_2d(Q), dtype=np.float32)
        if self.metric == "cosine":
            Q = Q / np.maximum(np.linalg.norm(Q, axis=1, keepdims=True), 1e-30)
        params = faiss.SearchParametersHNSW()
        params.efSearch = int(max(ef or self.ef or 64, count))
        if allowed is not None:
            bits = np.packbits(allowed, bitorder="little")
            params.sel = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits))
        D, I = self.index.search(Q, int(count), params=params)
        if self.metric in ("cosine", "dot"):
            D = 1.0 - D
        return D, I

    # ------------------------------------------------------------ building

    @classmethod
    def build(cls, ds, *, space: str, metric: str, dim: int, model: str, revision: str,
              threads: int = 0, graph_min_rows: int = FLAT_MAX_ROWS) -> "Tier":
        """Read every row of the Lance dataset ``ds`` (one version) and index it."""
        table = ds.to_table(columns=COLUMNS, with_row_address=True)
        layout = fragment_layout(ds)
        rows = Rows.from_arrow(table, dim=dim, model=model, revision=revision)
        del table
        perm, order = SpaceOrder.build(rows.lon, rows.lat, rows.start, rows.end)
        rows = rows.take(perm)
        if rows.n <= graph_min_rows:
            return cls(rows, space=space, version=ds.version, metric=metric, layout=layout, order=order,
                       search_vectors=_search_vectors(rows.vectors, metric))
        # the places the beam is tuned on go into the graph last, so it can be built first without them;
        # the graph is then renumbered to the rows' order (FAISS permutes its vectors and links)
        picks, held = _tuning_places(rows.h3)
        # inserted in the order Lance held the rows, not the sorted one: an HNSW graph built from rows
        # arriving a region at a time (neighbours in space are often neighbours in the vectors) was
        # worse (the tuned beam went from 128 to 192 at 1M x 64)
        arrival = np.argsort(perm)
        inserted = np.concatenate([arrival[~held[arrival]], arrival[held[arrival]]])
        built = rows.n - int(held.sum())
        search_vectors = _search_vectors(rows.vectors, metric)
        faiss = _faiss()
        if threads:
            faiss.omp_set_num_threads(int(threads))
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = EF_CONSTRUCTION
        _add(index, search_vectors, inserted[:built])
        queries = np.ascontiguousarray(search_vectors[picks])
        ef, measured = _tune(index, search_vectors[inserted[:built]], queries, metric)
        _add(index, search_vectors, inserted[built:])
        index.permute_entries(np.argsort(inserted).astype(np.int64))
        stored = _storage_view(faiss, index, rows.n, dim)
        if search_vectors is rows.vectors:  # the graph's copy is the stored vectors: hold them once
            rows.vectors = stored
        return cls(rows, space=space, version=ds.version, metric=metric, layout=layout, order=order, index=index,
                   ef=ef, search_vectors=stored, measured=measured)

    # ------------------------------------------------------------ saving

    def save(self, root: str) -> str:
        """Write the tier under ``root/v<version>`` (atomically: a temporary folder renamed); returns the path."""
        os.makedirs(root, exist_ok=True)
        tmp = os.path.join(root, f".tmp-{uuid.uuid4().hex}")
        os.makedirs(tmp)
        try:
            files = {}
            shared = self.index is not None and self.search_vectors is self.rows.vectors
            for name, arr in self.rows.arrays().items():
                if name == "vectors" and shared:
                    continue  # the graph file holds them
                path = os.path.join(tmp, f"{name}.npy")
                np.save(path, np.ascontiguousarray(arr), allow_pickle=False)
                files[f"{name}.npy"] = os.path.getsize(path)
            for name, arr in self.space_order.arrays().items():
                path = os.path.join(tmp, f"order_{name}.npy")
                np.save(path, np.ascontiguousarray(arr), allow_pickle=False)
                files[f"order_{name}.npy"] = os.path.getsize(path)
            if self.index is not None:
                path = os.path.join(tmp, "graph.faiss")
                _faiss().write_index(self.index, path)
                files["graph.faiss"] = os.path.getsize(path)
            meta = {
                "format": FORMAT, "space": self.space, "version": self.version, "metric": self.metric,
                "n": self.n, "dim": self.rows.dim, "model": self.rows.model, "revision": self.rows.revision,
                "kind": self.kind, "ef": self.ef, "measured": self.measured, "shared_vectors": shared,
                "zdict": self.rows.zdict.decode("utf-8"), "layout": {str(k): v for k, v in self.layout.items()},
                "files": files, "keys_sha256": hashlib.sha256(self.rows.keys.tobytes()).hexdigest(),
            }
            with open(os.path.join(tmp, "tier.json"), "w", encoding="utf-8") as f:
                json.dump(meta, f)
            final = os.path.join(root, f"v{self.version}")
            if os.path.exists(final):
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for entry in os.listdir(root):  # older versions and abandoned temporaries
            if entry != f"v{self.version}":
                shutil.rmtree(os.path.join(root, entry), ignore_errors=True)
        return final

    @classmethod
    def load(cls, path: str, *, space: str, dim: int, metric: str) -> "Tier":
        """A saved tier, checked against what it claims; :class:`CorruptTierError` when it does not hold."""
        try:
            with open(os.path.join(path, "tier.json"), encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, ValueError) as exc:
            raise CorruptTierError(f"{path}: unreadable tier.json ({exc})") from None
        want = {"format": FORMAT, "space": space, "dim": dim, "metric": metric}
        for name, value in want.items():
            if meta.get(name) != value:
                raise CorruptTierError(f"{path}: {name} is {meta.get(name)!r}, expected {value!r}")
        for name, size in meta["files"].items():
            p = os.path.join(path, name)
            if not os.path.isfile(p) or os.path.getsize(p) != size:
                raise CorruptTierError(f"{path}: {name} is missing or has the wrong size")
        try:
            # memory-mapped (a restart pages in what reads touch), as plain arrays: indexing a np.memmap
            # goes through Python-level __getitem__ (a third of a search's time)
            arrays = {name: np.load(os.path.join(path, f"{name}.npy"), mmap_mode="r", allow_pickle=False).view(
                np.ndarray) for name in ARRAYS if not (name == "vectors" and meta["shared_vectors"])}
            order = SpaceOrder({name: np.load(os.path.join(path, f"order_{name}.npy"), allow_pickle=False)
                                for name in ("group_starts", "group_min_end", "group_max_end", "edges", "lats",
                                             "okey")})
            index = _faiss().read_index(os.path.join(path, "graph.faiss")) if meta["kind"] == "hnsw" else None
        except Exception as exc:  # numpy and faiss raise various errors on damaged files
            raise CorruptTierError(f"{path}: unreadable arrays ({exc})") from None
        n = int(meta["n"])
        if meta["shared_vectors"]:
            if index is None or index.ntotal != n:
                raise CorruptTierError(f"{path}: the graph does not hold {n} vectors")
            arrays["vectors"] = _storage_view(_faiss(), index, n, dim)
        if any(len(arrays[name]) != n for name in ("keys", "vectors", "lon", "addr")) or len(order.okey) != n or (
                index is not None and index.ntotal != n):
            raise CorruptTierError(f"{path}: its arrays do not all hold {n} rows")
        if hashlib.sha256(np.ascontiguousarray(arrays["keys"]).tobytes()).hexdigest() != meta["keys_sha256"]:
            raise CorruptTierError(f"{path}: the keys do not match their checksum")
        rows = Rows(arrays, zdict=meta["zdict"].encode("utf-8"), model=meta["model"], revision=meta["revision"])
        search_vectors = arrays["vectors"] if meta["shared_vectors"] else _search_vectors(rows.vectors, metric)
        if index is not None and not meta["shared_vectors"]:
            search_vectors = _storage_view(_faiss(), index, n, dim)
        layout = {int(k): v for k, v in meta["layout"].items()}
        return cls(rows, space=space, version=meta["version"], metric=metric, layout=layout, order=order,
                   index=index, ef=meta["ef"], search_vectors=search_vectors, measured=meta["measured"])


def _tuning_places(cells: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Up to 200 rows to tune on (seeded), and the mask of every row at their places (their H3 cells).

    A stored row searched for in a graph that holds it finds itself and, through its own links, its
    neighbours: far easier than a query for a new place, and a beam tuned that way fell short (0.91
    recall@10 on held-out queries at 1M rows for 0.97 measured). So the places tuned on (every row in
    their cells: the same place in other years is a near-duplicate, as easy) are left out of the graph
    until the beam is chosen; on the benchmark's vectors this estimate is within 0.01 of held-out recall.
    """
    rng = np.random.default_rng(0)
    n = len(cells)
    picks = np.sort(rng.choice(n, size=min(TUNE_QUERIES, max(1, n // 10)), replace=False))
    held = np.isin(cells, cells[picks])
    if held.sum() > n // 2:  # a space of few places (many rows a cell): leave out the picked rows alone
        held = np.zeros(n, dtype=bool)
        held[picks] = True
    return picks, held


def _tune(index, graph_vectors: np.ndarray, Q: np.ndarray, metric: str) -> Tuple[int, dict]:
    """The smallest efSearch whose recall@10, for the rows ``Q`` (not in the graph yet) against their exact
    neighbours among ``graph_vectors`` (the graph's rows, in its numbering), reaches :data:`RECALL_GOAL`."""
    faiss = _faiss()
    truth = _exact_top(graph_vectors, Q, 10, metric)
    best = None
    for ef in EF_STEPS:
        params = faiss.SearchParametersHNSW()
        params.efSearch = ef
        _, I = index.search(Q, 10, params=params)
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I.tolist(), truth)]))
        best = (ef, recall)
        if recall >= RECALL_GOAL:
            break
    return best[0], {"recall_at_10": round(best[1], 4), "queries": len(Q), "ef": best[0],
                     "method": "places left out of the graph while tuning"}


def _add(index, vectors: np.ndarray, positions: np.ndarray) -> None:
    """Add the rows of ``vectors`` at ``positions`` to the graph in one call: FAISS inserts a call's rows
    level by level, and the same rows added 65,536 at a time made a worse graph (recall@10 at efSearch
    64 on 200,000 x 64: 0.947 against 0.963)."""
    index.add(np.ascontiguousarray(vectors[positions]))


def _search_vectors(vectors: np.ndarray, metric: str) -> np.ndarray:
    """The vectors as the graph compares them: unit length for cosine (the stored ones when they already are)."""
    if metric != "cosine" or len(vectors) == 0:
        return vectors
    norms = np.linalg.norm(vectors, axis=1)
    if np.all(np.abs(norms - 1.0) <= UNIT_TOLERANCE):
        return vectors
    return (vectors / np.maximum(norms, 1e-30)[:, None]).astype(np.float32)


def _storage_view(faiss, index, n: int, dim: int) -> np.ndarray:
    """The vectors an ``IndexHNSWFlat`` holds, as a read-only numpy view (no copy; lives with the index)."""
    storage = faiss.downcast_index(index.storage)
    view = faiss.rev_swig_ptr(storage.get_xb(), n * dim).reshape(n, dim)
    view.flags.writeable = False
    return view


def _graph_distances(vecs: np.ndarray, q: np.ndarray, metric: str) -> np.ndarray:
    """Distances between prepared vectors and a prepared query (cosine: both unit length)."""
    if metric == "l2":
        return distances(vecs, q, "l2")
    return (1.0 - vecs @ q).astype(np.float32)


def _exact_top(X: np.ndarray, Q: np.ndarray, k: int, metric: str, chunk: int = 131_072) -> List[List[int]]:
    """Exact top-``k`` positions of each query (for tuning), scanning ``X`` in chunks."""
    best_d = np.full((len(Q), 0), np.inf, dtype=np.float32)
    best_i = np.empty((len(Q), 0), dtype=np.int64)
    for start in range(0, len(X), chunk):
        part = X[start:start + chunk]
        if metric == "l2":
            d = (np.einsum("ij,ij->i", part, part)[None, :] - 2 * Q @ part.T
                 + np.einsum("ij,ij->i", Q, Q)[:, None])
        else:
            d = 1.0 - Q @ part.T
        d_all = np.concatenate([best_d, d], axis=1)
        i_all = np.concatenate([best_i, np.arange(start, start + len(part))[None, :].repeat(len(Q), 0)], axis=1)
        keep = np.argpartition(d_all, min(k, d_all.shape[1]) - 1, axis=1)[:, :k]
        best_d = np.take_along_axis(d_all, keep, axis=1)
        best_i = np.take_along_axis(i_all, keep, axis=1)
    order = np.argsort(best_d, axis=1, kind="stable")
    return np.take_along_axis(best_i, order, axis=1).tolist()
