"""Section ``search``: k-nearest-neighbour search, the store against exact numpy, DuckDB and FAISS.

For each (rows, dim) point of the matrix, on the same vectors and the same
held-out queries: recall@10 against the exact answer, p50/p99 latency of one
query at a time, sequential queries/s, build time, memory and bytes on disk.

How memory is measured: ``index_bytes`` is what an engine keeps besides the
data everyone shares (FAISS: its serialised index; numpy: the float32 matrix
itself; the store: its index files on disk; DuckDB: nothing, it scans the
table). ``rss_delta_bytes`` is the growth of this process's resident memory
from just before an engine is built (or opened) to just after its measured
queries: it counts caches the engine fills, and can be noisy by a few MB.
``disk_bytes`` is what the store keeps on disk (table and indexes together).
"""

from __future__ import annotations

import gc
import os
import time
from typing import Callable

import numpy as np

from rsembed_store.query.serving.tier import EF_CONSTRUCTION

from . import engines
from .machine import rss_bytes
from .timing import latency, median_latency, recall, time_calls
from .workspace import Space, Workspace, log


def measure(fn: Callable, Q: np.ndarray, truth: np.ndarray, runs: int) -> dict:
    """Recall@10 and the median over ``runs`` of p50/p99/QPS for ``fn`` over queries ``Q``."""
    per_run, found = [], None
    for _ in range(runs):
        secs, found = time_calls(fn, list(Q))
        per_run.append(latency(secs))
    return {"recall_at_10": recall(found, truth[: len(Q)]), **median_latency(per_run)}


def with_memory(build: Callable, run: Callable) -> dict:
    """``run(build())`` with the resident-memory growth over both, and the build's seconds."""
    gc.collect()
    before = rss_bytes()
    t = time.perf_counter()
    built = build()
    build_s = time.perf_counter() - t
    out = run(built)
    out["build_s"] = round(out.pop("build_s", build_s), 3)
    gc.collect()
    out["rss_delta_bytes"] = rss_bytes() - before
    return out


def faiss_rows(ws: Workspace, sp: Space, Q: np.ndarray, truth: np.ndarray, tune_q: np.ndarray, tune_truth: np.ndarray,
               cfg) -> dict:
    faiss = engines.faiss_module()
    if faiss is None:
        skipped = {"skipped": "faiss is not installed (pip install -e '.[bench]')"}
        return {"faiss_hnsw": skipped, "faiss_ivfpq": skipped}
    threads = cfg.faiss_threads or os.cpu_count() or 1
    out = {}

    def hnsw_run(built):
        index, build_s = built
        at = engines.faiss_searcher(faiss, index, "hnsw")
        setting, tried = engines.tune(at, engines.hnsw_steps(), tune_q, tune_truth, cfg.target_recall)
        fig = measure(at(setting), Q, truth, cfg.runs)
        return {**fig, "build_s": build_s, "setting": f"efSearch {setting}", "params": "HNSW32, efConstruction 80",
                "index_bytes": engines.index_bytes(faiss, index), "tried": tried}

    out["faiss_hnsw"] = with_memory(lambda: ws.hnsw(sp), hnsw_run)
    log(f"  faiss hnsw: {brief(out['faiss_hnsw'])}")

    def ivfpq_run(built):
        index, build_s, params = built
        at = engines.faiss_searcher(faiss, index, "ivfpq")
        setting, tried = engines.tune(at, engines.ivfpq_steps(params["nlist"]), tune_q, tune_truth,
                                      cfg.target_recall)
        fig = measure(at(setting), Q, truth, cfg.runs)
        return {**fig, "build_s": build_s, "setting": f"nprobe {setting[0]}, k_factor {setting[1]}",
                "params": f"{params['spec']} (faiss index_factory)",
                "index_bytes": engines.index_bytes(faiss, index), "tried": tried}

    out["faiss_ivfpq"] = with_memory(lambda: engines.faiss_ivfpq(faiss, sp.X, threads, cfg.seed), ivfpq_run)
    log(f"  faiss ivf-pq: {brief(out['faiss_ivfpq'])}")
    out["faiss_build_threads"] = threads
    return out


def brief(fig: dict) -> str:
    return ", ".join(f"{k} {fig[k]}" for k in ("recall_at_10", "p50_ms", "p99_ms", "qps", "build_s") if k in fig)


def split_queries(sp: Space, cfg):
    """(measured queries, tuning queries): disjoint held-out sets, so no engine is tuned on what is measured."""
    return sp.data.queries[: cfg.queries], sp.data.queries[cfg.queries:]


def run_point(ws: Workspace, rows: int, dim: int) -> dict:
    cfg = ws.config
    sp = ws.space(rows, dim)
    Q, tune_q = split_queries(sp, cfg)
    slow_q = Q[: cfg.slow_queries]
    log(f"search {rows:,} x {dim}: exact answers ...")
    tr = engines.truth(sp.X, Q)
    tune_truth = engines.truth(sp.X, tune_q)
    vi = sp.maintain_report.get("vector_index") or {}
    out = {"rows": rows, "dim": dim, "queries": len(Q), "slow_queries": len(slow_q),
           "clusters": sp.data.clusters_used, "write_s": round(sp.write_s, 3)}

    tier = sp.maintain_report.get("serving") or {}

    def store_run(_):
        fig = measure(engines.store_search(sp), Q, tr, cfg.runs)
        info = sp.store.serving.describe(sp.space)
        return {**fig, "build_s": tier.get("build_s"), "index_bytes": info.get("bytes"),
                "raw_vector_bytes": info.get("raw_vector_bytes"), "path": info.get("path"),
                "params": f"{info.get('kind')} tier (FAISS HNSW32, efConstruction {EF_CONSTRUCTION})",
                "setting": f"efSearch {info.get('ef')}", "tuning_recall": (info.get("measured") or {}).get(
                    "recall_at_10")}

    out["store"] = with_memory(lambda: None, store_run)
    log(f"  store (serving tier): {brief(out['store'])}")

    def lance_run(_):
        fig = measure(engines.store_search(sp, lance=True), Q, tr, cfg.runs)
        disk = sp.disk_bytes()
        settings = ", ".join(f"{k} {v}" for k, v in (vi.get("query") or {}).items())
        return {**fig, "build_s": round(sp.maintain_s, 3), "disk_bytes": disk["table"], "index_bytes": disk["indexes"],
                "params": (f"{vi.get('type')}, {vi.get('num_partitions')} partitions" if vi else "no vector index"),
                "setting": settings or "exact scan", "tuning_recall": vi.get("recall_at_10")}

    out["store_lance"] = with_memory(lambda: None, lance_run)
    log(f"  store (Lance path): {brief(out['store_lance'])}")

    def exact_scan_run(_):
        # "dot" is not the index's metric, so Lance answers with an exact scan of the same table
        fig = measure(engines.store_search(sp, lance=True, metric="dot"), slow_q, tr, cfg.runs)
        return {**fig, "params": "Lance flat scan (metric without an index)", "build_s": 0.0}

    out["store_exact_scan"] = with_memory(lambda: None, exact_scan_run)
    log(f"  store exact scan: {brief(out['store_exact_scan'])}")

    def numpy_run(_):
        fig = measure(lambda q: engines.exact_topk(sp.X, q), Q, tr, cfg.runs)
        return {**fig, "index_bytes": int(sp.X.nbytes), "params": "float32 matrix @ query, argpartition"}

    out["numpy_exact"] = with_memory(lambda: None, numpy_run)
    log(f"  numpy: {brief(out['numpy_exact'])}")

    from rsembed_store.query.sql import SqlSession

    def duckdb_run(session):
        fig = measure(engines.duckdb_search(session, sp), slow_q, tr, cfg.runs)
        session.close()
        return {**fig, "index_bytes": 0, "params": "array_cosine_distance over the Lance table, ORDER BY LIMIT 10"}

    out["duckdb_brute"] = with_memory(lambda: SqlSession(sp.store), duckdb_run)
    log(f"  duckdb: {brief(out['duckdb_brute'])}")
    out.update(faiss_rows(ws, sp, Q, tr, tune_q, tune_truth, cfg))
    return out


def run(ws: Workspace) -> dict:
    points = []
    for rows, dim in ws.config.search_matrix:
        points.append(run_point(ws, rows, dim))
        if (rows, dim) != ws.config.big_space:
            ws.drop_space(rows, dim)
    return {"k": engines.K, "target_recall": ws.config.target_recall, "points": points}
