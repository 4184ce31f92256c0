"""The nearest-neighbour engines compared, each behind one small function: k nearest row numbers of a query.

- the store: :func:`rsembed_store.query.search.search`, the public path with
  the index and query settings :func:`~rsembed_store.query.maintain.maintain`
  chose and tuned (Python in, rows out, as a caller sees it);
- exact numpy: brute-force inner product (cosine on unit vectors) in chunks;
- DuckDB brute force: ``array_cosine_distance`` over the very same Lance table,
  through the store's own read-only SQL session (the table is scanned, not copied);
- FAISS HNSW-Flat and IVF-PQ (with an exact re-ranking of the PQ candidates,
  as Lance's IVF_PQ does with its refine step), inner product on the unit vectors, each tuned on
  held-out tuning queries (not the measured ones) to the smallest setting that
  reaches the recall target.
"""

from __future__ import annotations

import math
import time
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from rsembed_store.query.search import search

from .timing import recall

K = 10


def faiss_module():
    """The faiss module, or ``None`` when faiss-cpu (the ``bench`` extra) is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


# ---------------------------------------------------------------- exact numpy


def exact_topk(X: np.ndarray, q: np.ndarray, rows: Optional[np.ndarray] = None, chunk: int = 262_144) -> np.ndarray:
    """The exact top-K row numbers of one query by inner product, optionally among ``rows`` only."""
    sub = X if rows is None else X[rows]
    ids = np.arange(len(X)) if rows is None else rows
    best_s, best_i = [], []
    for s in range(0, len(sub), chunk):
        scores = sub[s: s + chunk] @ q
        kk = min(K, len(scores))
        part = np.argpartition(-scores, kk - 1)[:kk]
        best_s.append(scores[part])
        best_i.append(ids[s + part])
    scores, found = np.concatenate(best_s), np.concatenate(best_i)
    return found[np.lexsort((found, -scores))[:K]]


def truth(X: np.ndarray, Q: np.ndarray, rows: Optional[np.ndarray] = None) -> np.ndarray:
    return np.stack([exact_topk(X, q, rows) for q in Q])


# ---------------------------------------------------------------- the store


def store_search(sp, *, lance: bool = False, **filters) -> Callable[[np.ndarray], List[int]]:
    """A function: query vector -> row numbers, through the store's public search (``lance``: with the
    serving tier off, i.e. the Lance path alone)."""
    store = sp.lance if lance else sp.store

    def run(q: np.ndarray) -> List[int]:
        res = search(store, sp.model, q, k=K, **filters)
        return [sp.key_to_row[r["key"]] for r in res.rows]

    return run


# ---------------------------------------------------------------- DuckDB


def duckdb_search(session, sp, where: Optional[str] = None) -> Callable[[np.ndarray], List[int]]:
    """Brute force in DuckDB over the space's Lance table: ORDER BY array_cosine_distance LIMIT K."""
    d = sp.dim
    table = '"' + sp.space.replace('"', '""') + '"'
    cond = f"WHERE {where} " if where else ""

    def run(q: np.ndarray) -> List[int]:
        literal = "[" + ",".join(f"{x:.9g}" for x in q.tolist()) + f"]::FLOAT[{d}]"
        sql = (f"SELECT key FROM {table} {cond}ORDER BY array_cosine_distance(vector::FLOAT[{d}], {literal}), key "
               f"LIMIT {K}")
        keys = session.run(sql, limit=None, timeout_s=None).table.column("key").to_pylist()
        return [sp.key_to_row[k] for k in keys]

    return run


# ---------------------------------------------------------------- FAISS


def tune(search_at: Callable[[object], Callable], steps: Sequence, tune_q: np.ndarray, tune_truth: np.ndarray,
          target: float) -> Tuple[object, List[dict]]:
    """The first step whose recall@K on the tuning queries reaches ``target`` (else the last)."""
    tried = []
    for step in steps:
        fn = search_at(step)
        r = recall([fn(q) for q in tune_q], tune_truth)
        tried.append({"setting": step, "tuning_recall": r})
        if r >= target:
            break
    return tried[-1]["setting"], tried


def faiss_hnsw(faiss, X: np.ndarray, threads: int) -> Tuple[object, float]:
    faiss.omp_set_num_threads(threads)
    t = time.perf_counter()
    index = faiss.IndexHNSWFlat(X.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    index.add(X)
    return index, time.perf_counter() - t


def faiss_ivfpq(faiss, X: np.ndarray, threads: int, seed: int) -> Tuple[object, float, dict]:
    """IVF with about sqrt(n) lists, 4-bit fast-scan PQ of 2 dims per code, and an exact (flat) re-ranking.

    Same code size as the common 8-bit PQ of 4 dims per code (16 bytes a 64-d vector), but its codebooks
    train in about a second where the 8-bit ones took 35-150 s at 20,000 x 64 on the shared 2 cores, and
    it scans faster. The re-ranking is what Lance's IVF_PQ refine step does too. Odd dimensions get one
    dimension per code.
    """
    faiss.omp_set_num_threads(threads)
    n, d = X.shape
    nlist = max(1, int(round(math.sqrt(n))))
    m = d // 2 if d % 2 == 0 else d
    spec = f"IVF{nlist},PQ{m}x4fs,RFlat"
    t = time.perf_counter()
    index = faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    index.train(X[rng.choice(n, size=min(n, max(256 * nlist, 10_000)), replace=False)])
    index.add(X)
    return index, time.perf_counter() - t, {"nlist": nlist, "spec": spec}


def faiss_searcher(faiss, index, kind: str) -> Callable[[object], Callable]:
    """``setting -> (query -> row numbers)`` for an HNSW (efSearch) or IVF-PQ+refine ((nprobe, k_factor)) index.

    Queries run on one OpenMP thread: one query at a time, like every other engine here; with more
    threads, FAISS splits a single query's work and pays for waking the threads on each call.
    """
    faiss.omp_set_num_threads(1)

    def at(setting):
        if kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=int(setting))
        else:
            nprobe, k_factor = setting
            params = faiss.IndexRefineSearchParameters(k_factor=float(k_factor),
                                                       base_index_params=faiss.SearchParametersIVF(nprobe=nprobe))

        def run(q: np.ndarray) -> List[int]:
            _, ids = index.search(q[None, :], K, params=params)
            return [int(i) for i in ids[0] if i >= 0]

        return run

    return at


def hnsw_steps() -> List[int]:
    return [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]


def ivfpq_steps(nlist: int) -> List[tuple]:
    probes = sorted({min(nlist, max(1, int(round(nlist * f)))) for f in
                     (0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.18, 0.25, 0.35, 0.5, 0.75, 1.0)})
    few = [p for p in probes if p <= max(1, nlist // 4)]
    return [(p, k) for k in (8, 32, 128, 512) for p in few] + [(nlist, 512)]


def index_bytes(faiss, index) -> int:
    """Size of the serialised index (what it takes on disk, and about what it holds in memory)."""
    return int(faiss.serialize_index(index).size)
