"""Section ``serving``: what the serving tier adds beyond one query at a time, on the big space.

- memory: the tier's resident bytes against the raw vectors;
- ``search_many``: queries/s of one batch of held-out queries, and its recall;
- restart: a fresh ``Store.open`` to its first search answer, the tier loaded from disk;
- threads: 1, 2, 4, 8 threads mixing ``get``, ``lookup_many`` and ``search`` on one Store for a few
  seconds each: queries/s and errors;
- HTTP: ``rsembed-store serve`` in its own process, ``POST /search`` by vector from 1, 4 and 8
  concurrent keep-alive clients (``scripts/load_service.py``);
- bulk writes: ``put_many`` of new rows into the big space, rows/s, and where the time goes;
- disk: the store's bytes before and after pruning superseded versions.

It runs last: it adds ``bulk_rows`` rows to the big space.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from datetime import timedelta

import numpy as np

from rsembed_store import Embedding, Store, resolve
from rsembed_store.store import dir_bytes
from scripts.load_service import run_together

from . import engines
from .search import split_queries
from .timing import median, recall
from .workspace import Workspace, log


def run(ws: Workspace) -> dict:
    cfg = ws.config
    sp = ws.space(*cfg.big_space)
    Q, _ = split_queries(sp, cfg)
    tr = engines.truth(sp.X, Q)
    info = sp.store.serving.describe(sp.space)
    out = {"rows": sp.rows, "dim": sp.dim, "memory": {
        "kind": info.get("kind"), "tier_bytes": info.get("bytes"), "raw_vector_bytes": info.get("raw_vector_bytes"),
        "ratio": round(info["bytes"] / info["raw_vector_bytes"], 2) if info.get("bytes") else None,
        "build_s": info.get("build_s"), "ef": info.get("ef")}}
    out["search_many"] = batch(sp, Q, tr, cfg)
    log(f"  search_many: {out['search_many']}")
    out["restart"] = restart(sp, Q, cfg)
    log(f"  restart: {out['restart']}")
    out["threads"] = [threads(sp, Q, n, cfg.thread_seconds) for n in cfg.thread_counts]
    for t in out["threads"]:
        log(f"  {t['threads']} threads: {t['calls_per_s']} calls/s, {t['errors']} errors")
    out["http"] = http(sp, Q, cfg)
    out["bulk_write"] = bulk(sp, cfg)
    log(f"  bulk write: {out['bulk_write']}")
    out["disk"] = disk(sp)
    log(f"  disk: {out['disk']}")
    return out


def batch(sp, Q, tr, cfg) -> dict:
    reps = int(np.ceil(cfg.batch_queries / len(Q)))
    QB = np.tile(Q, (reps, 1))[: cfg.batch_queries]
    secs, with_rows, found = [], [], None
    for _ in range(cfg.runs):
        t = time.perf_counter()
        res = sp.store.search_many(sp.model, QB, k=engines.K)
        secs.append(time.perf_counter() - t)
        found = [[sp.key_to_row[k] for k in r.keys] for r in res[: len(Q)]]
        t = time.perf_counter()  # and every result's row dicts (built on first read), timed apart
        built = sum(len(list(r.rows)) for r in res)
        with_rows.append(secs[-1] + time.perf_counter() - t)
    return {"queries": len(QB), "median_s": round(median(secs), 3), "queries_per_s": round(len(QB) / median(secs), 1),
            "queries_per_s_with_rows": round(len(QB) / median(with_rows), 1), "rows_built": built,
            "recall_at_10": recall(found, tr), "plan": res[0].plan}


def restart(sp, Q, cfg) -> dict:
    """Seconds from ``Store.open`` (a fresh object: nothing in memory) to the first search's answer."""
    secs = []
    for _ in range(cfg.runs):
        t = time.perf_counter()
        store = Store.open(sp.path)
        res = store.search(sp.model, Q[0], k=engines.K)
        secs.append(time.perf_counter() - t)
        source = store.serving.describe(sp.space).get("source")
        if res.plan.get("path") != "serving":
            raise RuntimeError(f"after a restart the first search took the {res.plan.get('path')} path")
        del store
    return {"median_s": round(median(secs), 3), "runs_s": [round(s, 3) for s in secs], "tier_source": source}


def threads(sp, Q, n: int, seconds: float) -> dict:
    """``n`` threads calling get / lookup_many / search in turn on one Store for ``seconds``."""
    store = sp.store
    rng = np.random.default_rng(n)
    rows = rng.integers(0, sp.rows, size=2000)
    requests = [sp.data.request(int(i), sp.model) for i in rows]
    keys = [sp.keys[int(i)] for i in rows]
    calls, errors = Counter(), Counter()
    stop = time.perf_counter() + seconds

    def work(t: int, start):
        start.wait()
        i = t * 997
        while time.perf_counter() < stop:
            j = i % len(keys)
            try:
                op = i % 3
                if op == 0:
                    assert store.get(requests[j]).key == keys[j]
                elif op == 1:
                    assert store.lookup_many([keys[j]], space=sp.space)[0].key == keys[j]
                else:
                    assert len(store.search(sp.model, Q[j % len(Q)], k=engines.K)) == engines.K
                calls[op] += 1
            except Exception as exc:  # counted: the figure is "0 errors"
                errors[f"{type(exc).__name__}: {exc}"[:100]] += 1
            i += 1

    wall = run_together(work, n)
    return {"threads": n, "seconds": round(wall, 2), "calls": int(sum(calls.values())),
            "calls_per_s": round(sum(calls.values()) / wall, 1), "errors": int(sum(errors.values())),
            "error_kinds": dict(errors)}


def http(sp, Q, cfg) -> dict:
    """1 uvicorn worker (one core serves), and one per core when there are several."""
    from scripts.load_service import hammer, served_in_process

    bodies = [{"model": sp.model, "like": {"vector": [float(x) for x in q]}, "k": engines.K} for q in Q]
    out = {}
    for workers in sorted({1, os.cpu_count() or 1}):
        figs = []
        with served_in_process(sp.path, workers) as base:
            hammer(base, "/search", bodies[:50], clients=max(1, workers), total=50)  # warm: workers load the tier
            for clients in cfg.http_clients:
                runs = sorted((hammer(base, "/search", bodies, clients=clients, total=cfg.http_requests)
                               for _ in range(cfg.runs)), key=lambda r: r["requests_per_s"])
                fig = {**runs[len(runs) // 2], "failed_all_runs": sum(r["failed"] for r in runs),
                       "runs_rps": [r["requests_per_s"] for r in runs]}
                figs.append(fig)
                log(f"  http {workers} worker(s), {clients} clients: {fig['requests_per_s']} req/s, "
                    f"p50 {fig['p50_ms']} ms, p99 {fig['p99_ms']} ms, {fig['failed_all_runs']} failed")
        out[str(workers)] = figs
    return {"workers": sorted(int(w) for w in out), "clients": out["1"], "by_workers": out}


def bulk(sp, cfg) -> dict:
    """``put_many`` of ``bulk_rows`` new rows (places of the space in an earlier year) in batches of 2,000."""
    rng = np.random.default_rng(cfg.seed + 5)
    picks = rng.choice(sp.rows, size=cfg.bulk_rows, replace=False)
    embs = [Embedding(request=resolve(sp.data.missing_request(int(i), sp.model)), vector=sp.X[int(i)])
            for i in picks]
    embs = list({e.key: e for e in embs}.values())
    t = time.perf_counter()
    for start in range(0, len(embs), 2000):
        sp.store.put_many(embs[start:start + 2000])
    secs = time.perf_counter() - t
    found = sp.store.lookup_many([e.key for e in embs[:100]], space=sp.space)
    if any(f is None for f in found):
        raise RuntimeError("rows written by put_many are not found by the next look-up")
    return {"rows": len(embs), "batch": 2000, "seconds": round(secs, 3), "rows_per_s": round(len(embs) / secs, 1)}


def disk(sp) -> dict:
    from rsembed_store.query.maintain import prune

    before = dir_bytes(sp.path)
    pruned = prune(sp.store, sp.space, timedelta(0))
    after = dir_bytes(sp.path)
    raw = sp.rows * sp.dim * 4
    return {"bytes_before": before, "bytes_after": after, "raw_vector_bytes": raw,
            "versions_removed": pruned["versions_removed"], "ratio_after": round(after / raw, 2),
            "serving_bytes": dir_bytes(os.path.join(sp.path, "_serving"))}
