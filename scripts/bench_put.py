"""Benchmark: ``Store.put_many`` of NEW rows into a large space, merge-insert path vs append path.

Builds (once per --workdir and size) a space of --rows rows x --dim dims in the store's own
row layout (the benchmark model of ``scripts/bench``: real keys, written with ``table.add``)
and its key index, then times ``put_many`` of --new new rows (places of the space in an
earlier year, as ``scripts/bench/serving.py`` ``bulk()`` makes them) in batches of --batch,
on each write path in turn (alternating, so a busy machine hurts all alike):

* ``merge``: every batch one Lance merge-insert on the key (the path of object stores);
* ``append_cold``: a local store's path (``Storage.write_rows``: under the space's write
  lock, only the keys the space lacks are appended, the rest merge-inserted) from a fresh
  store handle, as a process's first writes: which keys are held is asked of Lance;
* ``append_warm``: the same from a handle that has written the space more than
  ``writes.PREFIXES_AFTER`` times (untimed, before the runs), so it keeps the space's key
  prefixes and asks Lance only about their hits.

The time includes building the Arrow rows from the embeddings (part of ``put_many``).
Prints one JSON line per run and a summary (median rows/s of --runs runs per path, by wall
time and per CPU second of the process, the latter less sensitive to a shared machine), and
checks after every run that no key is stored twice and every new row is there. The space
grows by every run (and by the warm handle's untimed writes), so figures of one invocation
are comparable with each other, less so across invocations on one --workdir.

    python -m scripts.bench_put --rows 1000000 --dim 64 --new 10000 --batch 2000 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rsembed_store import Embedding, Request, TemporalSpec, resolve, writes  # noqa: E402
from rsembed_store.store import Store  # noqa: E402
from scripts.bench.data import BLOCK, REVISION, RowWriter, VectorData, model_id  # noqa: E402

PATHS = ("merge", "append_cold", "append_warm")


def build(path: str, rows: int, dim: int, seed: int):
    """The store at ``path`` with a space of ``rows`` rows (built when absent) and its data."""
    data = VectorData(rows, dim, 0, seed)
    model = model_id(dim)
    store = Store.open(path, config={"serving": {"enabled": False}})  # no tier built in the background
    writer = RowWriter(model, dim, store.h3_res)
    store.ensure_space(model, REVISION, dim, metric="cosine", kind="on_the_fly")
    table = store.table(writer.space)
    held = table.count_rows()
    if held == 0:
        t = time.perf_counter()
        X = data.matrix()
        for start in range(0, rows, BLOCK):
            table.add(writer.table(data, X, start, min(rows, start + BLOCK)))
        store._ensure_key_index(writer.space)  # the key index every real space has
        print(f"# built {rows:,} x {dim} in {time.perf_counter() - t:.1f} s at {path}", file=sys.stderr)
    elif held < rows:
        raise SystemExit(f"{path!r} holds {held:,} rows of {writer.space!r}, fewer than --rows {rows:,}; "
                         "give another --workdir")
    return store, data, model, writer.space


def new_embeddings(data: VectorData, model: str, dim: int, count: int, year: int, seed: int):
    """``count`` embeddings whose keys the space lacks: stored places in ``year``, a year no
    earlier run wrote (before every stored one)."""
    rng = np.random.default_rng([seed, 5, year])
    picks = rng.choice(data.n_rows, size=min(data.n_rows, count * 2), replace=False)
    out = {}
    for i in picks:
        req = data.request(int(i), model)  # a stored place, in a year before every stored one
        req = Request(req.model, req.spatial, TemporalSpec.year(year))
        e = Embedding(request=resolve(req), vector=rng.standard_normal(dim).astype(np.float32))
        out.setdefault(e.key, e)
        if len(out) == count:
            break
    return list(out.values())


def cpu() -> float:
    """CPU seconds of this process, every thread (less sensitive than wall time to a busy machine)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def time_put(store: Store, space: str, embs, batch: int) -> tuple:
    """(wall seconds, CPU seconds) of putting ``embs`` in batches of ``batch``."""
    t, c = time.perf_counter(), cpu()
    for start in range(0, len(embs), batch):
        store.put_many(embs[start:start + batch])
    return time.perf_counter() - t, cpu() - c


def check(store: Store, space: str, embs) -> int:
    keys = store.to_arrow(space, columns=["key"]).column("key")
    if len(keys) != len(pc.unique(keys)):
        raise RuntimeError("a key is stored twice")
    written = pa.array([e.key for e in embs], pa.string())
    found = store.dataset(space).to_table(columns=["key"], filter=pc.field("key").isin(written)).num_rows
    if found != len(written):
        raise RuntimeError(f"{len(written) - found} written rows are missing")
    return len(keys)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of the base space (default 1,000,000)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--new", type=int, default=10_000, help="new rows put per run")
    ap.add_argument("--batch", type=int, default=2_000, help="rows per put_many call")
    ap.add_argument("--runs", type=int, default=3, help="runs per path (the median is reported)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None,
                    help="keep the base store here for the next run (default: a temporary folder, removed)")
    args = ap.parse_args(argv)
    for name in ("rows", "dim", "new", "batch", "runs"):
        if getattr(args, name) <= 0:
            ap.error(f"--{name} must be positive, got {getattr(args, name)}")

    root = args.workdir or tempfile.mkdtemp(prefix="bench-put-")
    try:
        path = os.path.join(root, f"space-{args.rows}-{args.dim}")
        store, data, model, space = build(path, args.rows, args.dim, args.seed)
        # every run writes new keys: stored places in a year no earlier run (of any invocation) used
        used = set(store.to_arrow(space, columns=["year"], filter="year < 2021").column("year").to_pylist())
        years = iter(y for y in range(2020, 0, -1) if y not in used)
        warm = Store.open(path, config={"serving": {"enabled": False}})
        for _ in range(writes.PREFIXES_AFTER + 1):  # untimed: this handle now keeps the key prefixes
            warm.put_many(new_embeddings(data, model, args.dim, args.batch, next(years), args.seed))
        results = {p: [] for p in PATHS}
        for r in range(args.runs):
            for p in PATHS:
                embs = new_embeddings(data, model, args.dim, args.new, next(years), args.seed)
                if p == "merge":
                    handle = store
                    store._append_new_keys = False
                elif p == "append_cold":  # a fresh handle, as a process's first writes
                    handle = Store.open(path, config={"serving": {"enabled": False}})
                else:
                    handle = warm
                secs, cpu_s = time_put(handle, space, embs, args.batch)
                rows = check(store, space, embs)
                rate = len(embs) / secs
                results[p].append((rate, len(embs) / max(cpu_s, 1e-9)))
                print(json.dumps({"path": p, "run": r, "rows": len(embs), "batch": args.batch,
                                  "seconds": round(secs, 3), "cpu_s": round(cpu_s, 3), "rows_per_s": round(rate, 1),
                                  "space_rows": rows}))
        summary = {}
        for p, v in results.items():
            summary[p] = round(statistics.median(r for r, _ in v), 1)
            summary[f"{p}_per_cpu_s"] = round(statistics.median(c for _, c in v), 1)
        print(json.dumps({"summary": "median rows/s", "base_rows": args.rows, "dim": args.dim, "new": args.new,
                          "batch": args.batch, "runs": args.runs, **summary,
                          "load_avg": [round(x, 2) for x in os.getloadavg()]}))
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
