"""Which ANN library the serving tier uses: FAISS, usearch and hnswlib on the benchmark's vectors.

``python -m scripts.bench_ann_libraries [--rows 200000] [--dim 64] [--threads 2]``

Same seeded clustered vectors as ``python -m scripts.bench`` (unit length, so
inner product is cosine), same held-out queries, each library's HNSW at the
same settings (M / connectivity 32, construction beam 40, as the serving tier
builds FAISS's). For each: build seconds, bytes of the index, recall@10 and p50
of one query at a time at several search beams, queries/s of 8 threads
sharing one index (and how many answers went wrong under threads: a library
whose per-thread scratch space is shared returns garbage there), and whether
it filters inside the graph. usearch and hnswlib are not dependencies of the
project: ``pip install usearch hnswlib`` first (a missing one is skipped).
Prints one JSON line per library and configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Callable, List, Optional

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from scripts.bench.data import VectorData  # noqa: E402
from scripts.bench.engines import exact_topk  # noqa: E402

BEAMS = (32, 64, 128, 256)


def recall(found: List[List[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[:10]) & set(t[:10])) / 10 for f, t in zip(found, truth)]))


def one_at_a_time(search: Callable, Q: np.ndarray):
    secs, found = [], []
    for q in Q:
        t = time.perf_counter()
        ids = search(q)
        secs.append(time.perf_counter() - t)
        found.append([int(i) for i in ids])
    return found, float(np.median(secs) * 1e3)


def threaded(search: Callable, Q: np.ndarray, truth: np.ndarray, threads: int = 8, per_thread: int = 300) -> dict:
    wrong = [0]
    lock = threading.Lock()

    def work(t):
        bad = 0
        for i in range(per_thread):
            j = (i + 37 * t) % len(Q)
            if len(set(int(x) for x in search(Q[j])[:10]) & set(truth[j][:10])) < 5:
                bad += 1
        with lock:
            wrong[0] += bad

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    t0 = time.perf_counter()
    for p in pool:
        p.start()
    for p in pool:
        p.join()
    return {"threads": threads, "qps": round(threads * per_thread / (time.perf_counter() - t0), 1),
            "answers_below_half_recall": wrong[0]}


def faiss_rows(X, Q, truth, threads) -> List[dict]:
    import faiss

    faiss.omp_set_num_threads(threads)
    t = time.perf_counter()
    index = faiss.IndexHNSWFlat(X.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 40
    index.add(X)
    build = time.perf_counter() - t
    faiss.omp_set_num_threads(1)
    out = []
    for ef in BEAMS:
        params = faiss.SearchParametersHNSW(efSearch=ef)

        def search(q, params=params):
            return index.search(q[None, :], 10, params=params)[1][0]

        found, p50 = one_at_a_time(search, Q)
        out.append({"library": f"faiss {faiss.__version__}", "index": "IndexHNSWFlat M32 efConstruction 40",
                    "build_s": round(build, 1), "ef": ef, "recall_at_10": round(recall(found, truth), 4),
                    "p50_ms": round(p50, 3), **({"threaded": threaded(search, Q, truth)} if ef == 64 else {}),
                    "filter_inside_graph": "yes (IDSelector per call)", "saves_to_file": "yes"})
    return out


def usearch_rows(X, Q, truth, threads) -> List[dict]:
    from usearch import __version__ as version
    from usearch.index import Index

    t = time.perf_counter()
    index = Index(ndim=X.shape[1], metric="ip", dtype="f32", connectivity=32, expansion_add=40)
    index.add(np.arange(len(X), dtype=np.uint64), X, threads=threads)
    build = time.perf_counter() - t
    out = []
    for ef in BEAMS:
        index.expansion_search = ef  # a property of the index: one setting for every thread

        def search(q):
            return index.search(q, 10, threads=1).keys

        found, p50 = one_at_a_time(search, Q)
        out.append({"library": f"usearch {version}", "index": "connectivity 32 expansion_add 40",
                    "build_s": round(build, 1), "ef": ef, "recall_at_10": round(recall(found, truth), 4),
                    "p50_ms": round(p50, 3), **({"threaded": threaded(search, Q, truth)} if ef == 64 else {}),
                    "filter_inside_graph": "C++ predicate; no vectorised filter from Python",
                    "saves_to_file": "yes (can memory-map)"})
    return out


def hnswlib_rows(X, Q, truth, threads) -> List[dict]:
    import hnswlib

    t = time.perf_counter()
    index = hnswlib.Index(space="ip", dim=X.shape[1])
    index.init_index(max_elements=len(X), M=32, ef_construction=40)
    index.set_num_threads(threads)
    index.add_items(X, np.arange(len(X)))
    build = time.perf_counter() - t
    index.set_num_threads(1)
    out = []
    for ef in BEAMS:
        index.set_ef(ef)  # a property of the index: one setting for every thread

        def search(q):
            return index.knn_query(q, k=10)[0][0]

        found, p50 = one_at_a_time(search, Q)
        out.append({"library": "hnswlib", "index": "M32 ef_construction 40",
                    "build_s": round(build, 1), "ef": ef, "recall_at_10": round(recall(found, truth), 4),
                    "p50_ms": round(p50, 3), **({"threaded": threaded(search, Q, truth)} if ef == 64 else {}),
                    "filter_inside_graph": "Python callable per candidate (slow)", "saves_to_file": "yes"})
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scripts.bench_ann_libraries", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="build threads")
    args = ap.parse_args(argv)
    data = VectorData(args.rows, args.dim, args.queries, seed=0)
    X, Q = data.matrix(), data.queries
    truth = np.stack([exact_topk(X, q)[:10] for q in Q])
    print(json.dumps({"rows": args.rows, "dim": args.dim, "queries": len(Q), "loadavg": os.getloadavg()}))
    for rows in (faiss_rows, usearch_rows, hnswlib_rows):
        try:
            for row in rows(X, Q, truth, args.threads):
                print(json.dumps(row), flush=True)
        except ImportError as exc:
            print(json.dumps({"library": rows.__name__.split("_")[0], "skipped": str(exc)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
