#!/usr/bin/env python
"""Re-runnable benchmark of ``rsembed_store.Store``: look-ups and upserts on a big space.

What it does, in order:

1. registers a 64-d benchmark model (``bench64``) and builds a space of ``--rows``
   pooled rows through the public path: ``Request`` -> ``resolve()`` ->
   ``Embedding`` -> ``Store.put_many`` in batches of ``--build-batch`` rows
   (insert-only; request-building time is kept apart from ``put_many`` time);
2. refreshes the key (BTREE) index so that it covers every row, and times it;
3. times single-key look-ups, p50 and p99 over ``--lookups`` calls each:
   ``lookup_many([key], space=...)`` and ``lookup`` (``lookup(key, space=...)``,
   or ``lookup([request])`` and ``lookup([key])`` where ``lookup`` takes a
   batch), plus where the time goes (the Lance query, the key-index probe);
4. times batch look-ups of 10,000 keys, half hits half misses, ``--runs`` times;
5. times upserts via ``put_many`` in batches of 10,000 rows (half new keys, half
   existing), ``--runs`` times; every batch is built before its clock starts;
6. (informational) times the bare merge-insert of a prebuilt Arrow batch with
   ``use_index(False)`` (what the Store does) and ``use_index(True)``.

Requests are ``Request("bench64", H3Cell(cell), TemporalSpec.year(y))`` over
distinct H3 resolution-9 cells (a ``grid_disk`` around a point) and a few
years; row ``i`` is (cell ``i // len(years)``, year ``i % len(years)``), so any
row's request can be rebuilt from its number. Vectors come from 200 seeded
gaussian cluster centres (unit-normalised) plus noise, renormalised.

    python scripts/bench_store.py                                   # 1,000,000 rows, 5-9 min on 2 cores
    python scripts/bench_store.py --rows 20000 --runs 3 --lookups 300   # smoke run, under a minute
    python scripts/bench_store.py --json bench.json --db /tmp/bench-db  # keep the data and every sample

Prints a markdown table (figure, value, target, pass/fail); ``--json`` writes
every figure, the raw samples (wall and process-CPU seconds), the load average
per phase and the machine and code description. Results and their reading:
``docs/benchmarks-store.md``.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import warnings
from typing import Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import h3  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

from benchlib import dir_bytes, loadavg, machine  # noqa: E402
from rsembed_store import Embedding, H3Cell, Request, Store, TemporalSpec, resolve  # noqa: E402
from rsembed_store.model import Model, ModelInfo  # noqa: E402
from rsembed_store.registry import register_model  # noqa: E402
from rsembed_store.space import embeddings_to_table, table_to_embeddings  # noqa: E402
from rsembed_store.specs import SensorSpec  # noqa: E402

YEARS = (2019, 2020, 2021, 2022)
CENTRE = (46.07, 11.12)  # lat, lon of the grid_disk centre (Trento)
H3_RES = 9
N_CLUSTERS = 200
NOISE = 0.35  # norm of the noise added to a unit cluster centre

try:  # newer stores project look-ups to the columns an Embedding is rebuilt from
    from rsembed_store.space import EMBEDDING_COLUMNS as STORE_READ_COLUMNS  # noqa: E402
except ImportError:  # older stores read every column
    STORE_READ_COLUMNS = None
# what an older table_to_embeddings reads (for the projected variant on stores that read every column)
NEEDED_COLUMNS = ("request", "vector", "grid", "grid_shape", "grid_dtype", "grid_codec", "meta", "compute_s",
                  "created_at")

TARGETS = {
    "lookup_many_1_p50_ms": 5.0,
    "lookup_1_p50_ms": 5.0,  # lookup(key, space=...), or lookup([request]) where lookup takes a batch
    "get_1_p50_ms": 10.0,  # store.get on a hit, from an unresolved Request
    "lookup_many_10k_ms": 200.0,
    "upsert_rows_per_s": 20_000.0,
}


# ---------------------------------------------------------------- model and data


def make_model(dim: int) -> str:
    """Register the benchmark model and return its id."""
    model_id = "bench64" if dim == 64 else f"bench{dim}"

    class BenchModel(Model):
        info = ModelInfo(
            id=model_id,
            revision="bench-v1",
            kind="on_the_fly",
            dim=dim,
            metric="cosine",
            default_sensor=SensorSpec("s2-l2a", ("B04", "B08")),
            input_size=32,
            description="benchmark model: seeded clustered vectors, never computed",
        )

    BenchModel.__qualname__ = BenchModel.__name__ = "BenchModel"
    register_model(model_id, BenchModel)
    return model_id


class Rows:
    """Row number -> request and vector, deterministically."""

    def __init__(self, model_id: str, dim: int, n_ids: int, seed: int):
        self.model_id = model_id
        self.dim = dim
        self.seed = seed
        n_cells = math.ceil(n_ids / len(YEARS))
        # a hexagonal disk of radius k holds 3k(k+1)+1 cells
        k = 0
        while 3 * k * (k + 1) + 1 < n_cells:
            k += 1
        centre = h3.latlng_to_cell(CENTRE[0], CENTRE[1], H3_RES)
        self.cells = sorted(h3.grid_disk(centre, k), key=h3.str_to_int)[:n_cells]
        self._memo: Dict[int, object] = {}
        rng = np.random.default_rng(seed)
        centres = rng.standard_normal((N_CLUSTERS, dim))
        self.centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)

    @property
    def capacity(self) -> int:
        return len(self.cells) * len(YEARS)

    def request(self, i: int):
        cell = self.cells[i // len(YEARS)]
        return resolve(Request(self.model_id, H3Cell(cell), TemporalSpec.year(YEARS[i % len(YEARS)])))

    def request_memo(self, i: int):
        """``request(i)``, remembered: the measured phases reuse requests instead of resolving twice."""
        r = self._memo.get(i)
        if r is None:
            r = self._memo[i] = self.request(i)
        return r

    def vectors(self, ids: np.ndarray, salt: int = 0) -> np.ndarray:
        """Clustered unit vectors for row numbers ``ids`` (``salt`` varies re-written rows)."""
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        for j, i in enumerate(ids):
            rng = np.random.default_rng((self.seed, int(i), salt))
            c = self.centres[rng.integers(N_CLUSTERS)]
            v = c + NOISE * rng.standard_normal(self.dim) / math.sqrt(self.dim)
            out[j] = v / np.linalg.norm(v)
        return out

    def vectors_fast(self, start: int, stop: int) -> np.ndarray:
        """Clustered unit vectors for a contiguous block of rows (one generator per block)."""
        rng = np.random.default_rng((self.seed, start, stop))
        labels = rng.integers(N_CLUSTERS, size=stop - start)
        v = self.centres[labels] + NOISE * rng.standard_normal((stop - start, self.dim)) / math.sqrt(self.dim)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return v.astype(np.float32)

    def embeddings(self, ids: Sequence[int], vectors: np.ndarray, memo: bool = False) -> List[Embedding]:
        get = self.request_memo if memo else self.request
        return [Embedding(request=get(int(i)), vector=vectors[j], compute_s=0.0) for j, i in enumerate(ids)]


# ---------------------------------------------------------------- machine


def code_version() -> dict:
    """The commit, and a hash of the store's own modules (the working tree may differ from the commit)."""
    import hashlib
    import subprocess

    out = {}
    try:
        out["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                       timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        out["commit"] = None
    for name in ("store.py", "space.py", "keys.py", "embedding.py"):
        try:
            with open(os.path.join(ROOT, "rsembed_store", name), "rb") as fh:
                out[name] = hashlib.sha256(fh.read()).hexdigest()[:12]
        except OSError:
            pass
    return out






# ---------------------------------------------------------------- helpers


def pct(samples: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples, dtype=np.float64), q))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def key_index_stats(store: Store, space: str) -> Optional[dict]:
    t = store.table(space)
    for idx in t.list_indices():
        if "key" in idx.columns:
            st = t.index_stats(idx.name)
            if st is None:
                return None
            return {"indexed": int(st.num_indexed_rows), "unindexed": int(st.num_unindexed_rows)}
    return None


# ---------------------------------------------------------------- phases


def build(store: Store, rows: Rows, n: int, batch: int, keys: np.ndarray) -> dict:
    """Insert rows 0..n-1 with put_many; request building is timed apart. Fills ``keys``."""
    prep_s = put_s = 0.0
    batches = []
    t_all = time.perf_counter()
    for start in range(0, n, batch):
        stop = min(n, start + batch)
        t0 = time.perf_counter()
        vecs = rows.vectors_fast(start, stop)
        items = rows.embeddings(range(start, stop), vecs)
        c1 = time.process_time()
        t1 = time.perf_counter()
        res = store.put_many(items)
        t2 = time.perf_counter()
        cpu = time.process_time() - c1
        assert res.inserted == stop - start, res
        keys[start:stop] = [e.key.encode() for e in items]
        prep_s += t1 - t0
        put_s += t2 - t1
        batches.append({"start": start, "rows": stop - start, "prep_s": t1 - t0, "put_s": t2 - t1,
                        "rows_per_s": (stop - start) / (t2 - t1), "put_cpu_s": cpu})
        log(f"build {stop:>9,}/{n:,} rows  prep {t1 - t0:6.1f}s  put_many {t2 - t1:6.2f}s "
            f"({(stop - start) / (t2 - t1):,.0f} rows/s)")
        del items
    return {"total_s": time.perf_counter() - t_all, "prep_s": prep_s, "put_s": put_s, "batches": batches}


def time_single(fn, keys: Sequence[str], check, cpu: Optional[List[float]] = None) -> List[float]:
    """Wall seconds of ``fn(k)`` for each key; this process's CPU seconds go to ``cpu`` if given."""
    out = []
    for k in keys:
        c0 = time.process_time()
        t0 = time.perf_counter()
        r = fn(k)
        out.append(time.perf_counter() - t0)
        if cpu is not None:
            cpu.append(time.process_time() - c0)
        check(r, k)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows in the benchmark space (default 1,000,000)")
    ap.add_argument("--dim", type=int, default=64, help="embedding dimension (default 64)")
    ap.add_argument("--runs", type=int, default=5, help="runs of each throughput figure (default 5, at least 3)")
    ap.add_argument("--lookups", type=int, default=500, help="single-key look-ups per latency figure (>= 300)")
    ap.add_argument("--batch-keys", type=int, default=10_000, help="keys per batch look-up (default 10,000)")
    ap.add_argument("--upsert-batch", type=int, default=10_000, help="rows per upsert batch (default 10,000)")
    ap.add_argument("--build-batch", type=int, default=100_000, help="rows per put_many while building")
    ap.add_argument("--db", help="database directory (default: a temp dir, deleted afterwards)")
    ap.add_argument("--json", dest="json_out", help="write every figure and sample here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-merge-compare", action="store_true",
                    help="skip the informational bare merge-insert comparison (use_index False vs True)")
    args = ap.parse_args(argv)
    if args.runs < 3:
        ap.error("--runs must be at least 3")
    if args.lookups < 300:
        ap.error("--lookups must be at least 300")
    if args.rows < max(args.batch_keys, args.upsert_batch):
        ap.error("--rows must be at least --batch-keys and --upsert-batch")

    info = machine(code=code_version())
    log(f"machine: {info['cpus']} cpus, {info['mem_total_gib']} GiB, lancedb {info['lancedb']}, "
        f"pylance {info['pylance']}, pyarrow {info['pyarrow']}, python {info['python']}, "
        f"load {info['loadavg_start']}")
    tmp = None
    db = args.db
    if db is None:
        tmp = tempfile.mkdtemp(prefix="rsembed-bench-")
        db = tmp
        # a SIGTERM unwinds like Ctrl-C, so the temp database is removed either way
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    n = args.rows
    half_b = args.batch_keys // 2
    half_u = args.upsert_batch // 2
    compare_runs = 3 if n >= 100_000 else 1  # informational; one run keeps the quick mode quick
    # row numbers >= n are not in the space after the build: the batch look-ups use them as misses,
    # and the upserts then insert them as their new keys (so each is resolved once)
    new_ids_needed = max(half_u * (args.runs + 2 * compare_runs), half_b * args.runs)
    model_id = make_model(args.dim)
    rows = Rows(model_id, args.dim, n + new_ids_needed, args.seed)
    new_base = miss_base = n
    space = rows.request(0).space
    rng = np.random.default_rng(args.seed + 1)
    figures: Dict[str, dict] = {}
    raw: Dict[str, object] = {}
    phase_load: Dict[str, List[float]] = {}
    try:
        store = Store.open(db)
        if any(s.space == space for s in store.spaces()) and store.count(space) > 0:
            raise SystemExit(f"{db!r} already holds space {space!r}; give an empty --db directory")

        # 1. build ------------------------------------------------------------
        phase_load["build"] = loadavg()
        build_batch = min(args.build_batch, max(1, math.ceil(n / 4)))
        log(f"building {n:,} rows of {args.dim}-d in {space!r} at {db} (batches of {build_batch:,})")
        all_keys = np.empty(n, dtype="S64")  # row number -> key, so hits need no second resolve()
        b = build(store, rows, n, build_batch, all_keys)
        raw["build"] = b
        assert store.count(space) == n
        rates = [x["rows_per_s"] for x in b["batches"]]
        cpu_rates = [x["rows"] / x["put_cpu_s"] for x in b["batches"]]
        figures["build_total_s"] = {"label": f"Build {n:,} rows: total wall time", "value": b["total_s"], "unit": "s"}
        figures["build_prep_s"] = {"label": "  of which resolve() + Embedding building (Python)", "value": b["prep_s"], "unit": "s"}
        figures["build_put_s"] = {"label": "  of which put_many (insert-only)", "value": b["put_s"], "unit": "s"}
        figures["insert_rows_per_s"] = {
            "label": f"Insert-only put_many throughput while building (median of {len(rates)} batches of {build_batch:,}; "
                     f"first {rates[0]:,.0f}, last {rates[-1]:,.0f}; rows per process-CPU second "
                     f"{float(np.median(cpu_rates)):,.0f})",
            "value": float(np.median(rates)), "unit": "rows/s"}

        # 2. key index --------------------------------------------------------
        phase_load["key_index"] = loadavg()
        before = key_index_stats(store, space)
        log(f"key index before refresh: {before}")
        pre_keys = [all_keys[i].decode() for i in rng.integers(0, n, size=20)]
        for k in pre_keys[:2]:
            store.lookup_many([k], space=space)  # warm
        pre = time_single(lambda k: store.lookup_many([k], space=space), pre_keys,
                          lambda r, k: None)
        figures["lookup_before_index_ms"] = {
            "label": f"lookup_many([key]) before the key index is refreshed (p50 of {len(pre)}; "
                     f"index covered {before['indexed'] if before else 0:,} of {n:,} rows)",
            "value": pct(pre, 50) * 1e3, "unit": "ms"}
        with warnings.catch_warnings():  # create_scalar_index is deprecated in lancedb 0.4x but still the spelling
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            store.table(space).create_scalar_index("key", index_type="BTREE", replace=True)
            idx_s = time.perf_counter() - t0
        after = key_index_stats(store, space)
        log(f"key index rebuilt in {idx_s:.2f}s: {after}")
        raw["key_index"] = {"before": before, "after": after, "build_s": idx_s}
        figures["key_index_s"] = {"label": f"Key BTREE index build over {n:,} rows", "value": idx_s, "unit": "s"}
        figures["db_bytes"] = {"label": "Space on disk after build + index", "value": dir_bytes(db) / 2**20, "unit": "MiB"}

        # 3. single-key look-ups ---------------------------------------------
        read_columns = list(STORE_READ_COLUMNS) if STORE_READ_COLUMNS else None  # what lookup_many projects to
        n_read = len(read_columns) if read_columns else len(store.dataset(space).schema.names)
        info["lookup_many_reads_columns"] = read_columns or "all"
        phase_load["single_lookups"] = loadavg()

        def hit(r, k):
            assert r is not None and r.key == k

        def sample_keys(count):
            return [all_keys[i].decode() for i in rng.integers(0, n, size=count)]

        for k in sample_keys(10):  # warm the index pages
            store.lookup_many([k], space=space)
        singles = []  # (figure name, label, function of a key, has a target)
        singles.append(("lookup_many_1", "lookup_many([key], space=...) cache hit",
                        lambda k: store.lookup_many([k], space=space)[0], True))
        if "space" in inspect.signature(Store.lookup).parameters:
            singles.append(("lookup_1", "lookup(key, space=...) cache hit",
                            lambda k: store.lookup(k, space=space), True))
        else:
            # lookup() takes a batch of keys or requests: a request names its space,
            # a bare key makes the store read the catalog and try every space
            by_key = {}

            def lookup_request(k):
                return store.lookup([by_key[k]])[0]

            singles.append(("lookup_1", "lookup([request]) cache hit (space from the request)", lookup_request, True))
            # what a notebook calls: resolve the Request, key it, look it up, decode the row
            singles.append(("get_1", "store.get(Request) cache hit, end to end (resolve, key, look up, decode)",
                            lambda k: store.get(by_key[k].to_request()), True))
            singles.append(("lookup_key_1", "lookup([key]) cache hit (no space: catalog read, every space tried)",
                            lambda k: store.lookup([k])[0], False))
        if STORE_READ_COLUMNS is None:  # newer stores already project; older ones read all columns
            singles.append(("lookup_many_cols_1", "lookup_many([key], columns=the 9 an Embedding needs) cache hit",
                            lambda k: store.lookup_many([k], space=space, columns=list(NEEDED_COLUMNS))[0], False))
        for name, label, fn, has_target in singles:
            if name in ("lookup_1", "get_1") and "space" not in inspect.signature(Store.lookup).parameters:
                ids = rng.integers(0, n, size=args.lookups)
                keys = []
                for i in ids:  # the requests are resolved before the clock starts
                    r = rows.request_memo(int(i))
                    by_key[r.key] = r
                    keys.append(r.key)
            else:  # the informational variants take the minimum of 300 samples
                keys = sample_keys(args.lookups if has_target else 300)
            gc.collect()
            cpu_: List[float] = []
            s_ = time_single(fn, keys, hit, cpu_)
            raw[f"{name}_s"], raw[f"{name}_cpu_s"] = s_, cpu_
            f50 = {"label": f"{label}, p50 of {len(s_)}", "value": pct(s_, 50) * 1e3, "unit": "ms"}
            if has_target:
                f50.update(target=TARGETS[f"{name}_p50_ms"], better="lower")
                f50["label"] += f" (process CPU p50 {pct(cpu_, 50) * 1e3:.2f} ms)"
            figures[f"{name}_p50_ms"] = f50
            figures[f"{name}_p99_ms"] = {"label": f"{label}, p99 of {len(s_)}", "value": pct(s_, 99) * 1e3, "unit": "ms"}
            log(f"{label}: p50 {pct(s_, 50) * 1e3:.2f} ms, p99 {pct(s_, 99) * 1e3:.2f} ms")
        # where a single look-up spends its time: the Lance query as lookup_many issues it,
        # and the key-index probe alone (row ids only, no column read)

        def raw_query(k):
            return store.dataset(space).to_table(filter=pc.field("key").isin(pa.array([k], pa.string())),
                                                 columns=read_columns)

        def probe(k):
            return store.dataset(space).to_table(filter=pc.field("key").isin(pa.array([k], pa.string())),
                                                 columns=[], with_row_id=True)

        for name, label, fn in (
            ("lance_query_1", f"  Lance query alone, as lookup_many issues it (key isin [k], {n_read} columns)",
             raw_query),
            ("index_probe_1", "  key-index probe alone (same filter, row id only)", probe),
        ):
            s_ = time_single(fn, sample_keys(300), lambda r, k: None)
            raw[f"{name}_s"] = s_
            figures[f"{name}_p50_ms"] = {"label": f"{label}, p50", "value": pct(s_, 50) * 1e3, "unit": "ms"}
            log(f"{label.strip()}: p50 {pct(s_, 50) * 1e3:.2f} ms")

        # 4. batch look-ups ---------------------------------------------------
        phase_load["batch_lookups"] = loadavg()
        batch_s, batch_cpu, query_s, convert_s = [], [], [], []
        for run in range(args.runs):
            hit_ids = rng.choice(n, size=half_b, replace=False)
            miss_ids = np.arange(miss_base + run * half_b, miss_base + (run + 1) * half_b)
            bkeys = [all_keys[i].decode() for i in hit_ids] + [rows.request_memo(int(i)).key for i in miss_ids]
            order = rng.permutation(len(bkeys))
            bkeys = [bkeys[i] for i in order]
            gc.collect()
            c0 = time.process_time()
            t0 = time.perf_counter()
            got = store.lookup_many(bkeys, space=space)
            batch_s.append(time.perf_counter() - t0)
            batch_cpu.append(time.process_time() - c0)
            found = sum(g is not None for g in got)
            assert found == half_b, (found, half_b)
            del got
            if run < 3:  # where the time goes, on three runs
                wanted = pa.array(sorted(set(bkeys)), pa.string())
                gc.collect()
                t0 = time.perf_counter()
                tbl = store.dataset(space).to_table(filter=pc.field("key").isin(wanted), columns=read_columns)
                query_s.append(time.perf_counter() - t0)
                assert tbl.num_rows == half_b
                gc.collect()
                t0 = time.perf_counter()
                table_to_embeddings(tbl)
                convert_s.append(time.perf_counter() - t0)
                log(f"batch look-up run {run + 1}: {batch_s[-1] * 1e3:.0f} ms (Lance query alone "
                    f"{query_s[-1] * 1e3:.0f} ms, table_to_embeddings alone {convert_s[-1] * 1e3:.0f} ms)")
            else:
                log(f"batch look-up run {run + 1}: {batch_s[-1] * 1e3:.0f} ms")
        raw["lookup_many_batch_s"], raw["lookup_many_batch_cpu_s"] = batch_s, batch_cpu
        raw["lance_query_batch_s"], raw["convert_batch_s"] = query_s, convert_s
        figures["lookup_many_10k_ms"] = {
            "label": f"lookup_many of {args.batch_keys:,} keys ({half_b:,} hits, {half_b:,} misses), median of {args.runs} "
                     f"(process CPU {float(np.median(batch_cpu)) * 1e3:,.0f} ms)",
            "value": float(np.median(batch_s)) * 1e3, "unit": "ms", "target": TARGETS["lookup_many_10k_ms"],
            "better": "lower"}
        figures["lance_query_10k_ms"] = {"label": f"  Lance query alone ({n_read} columns, no conversion), median of {len(query_s)}",
                                         "value": float(np.median(query_s)) * 1e3, "unit": "ms"}
        figures["convert_10k_ms"] = {"label": f"  table_to_embeddings of the {half_b:,} hit rows alone, median of {len(convert_s)}",
                                     "value": float(np.median(convert_s)) * 1e3, "unit": "ms"}

        # 5. upserts ----------------------------------------------------------
        phase_load["upserts"] = loadavg()
        up_s, up_cpu, conv_s, results = [], [], [], []
        # existing rows come from one pool resolved once (so later runs update rows again, as caches do)
        pool = rng.choice(n, size=min(n, 2 * half_u), replace=False)
        for run in range(args.runs):
            old = rng.choice(pool, size=half_u, replace=False)
            new = np.arange(new_base + run * half_u, new_base + (run + 1) * half_u)
            ids_u = np.concatenate([old, new])
            vecs = rows.vectors(old, salt=run + 1)
            vecs = np.concatenate([vecs, rows.vectors_fast(int(new[0]), int(new[-1]) + 1)])
            items = rows.embeddings(ids_u, vecs, memo=True)  # built before the clock starts
            gc.collect()
            c0 = time.process_time()
            t0 = time.perf_counter()
            res = store.put_many(items)
            up_s.append(time.perf_counter() - t0)
            up_cpu.append(time.process_time() - c0)
            assert res.inserted == half_u and res.updated == half_u, res
            results.append({"inserted": res.inserted, "updated": res.updated})
            gc.collect()
            t0 = time.perf_counter()  # the Python row building inside put_many, timed alone
            embeddings_to_table(items, args.dim, store.space_info(space).h3_res)
            conv_s.append(time.perf_counter() - t0)
            log(f"upsert run {run + 1}: {len(items) / up_s[-1]:,.0f} rows/s ({up_s[-1]:.2f}s; "
                f"embeddings_to_table {conv_s[-1]:.2f}s)")
        raw["upsert_s"], raw["upsert_cpu_s"] = up_s, up_cpu
        raw["upsert_to_table_s"], raw["upsert_results"] = conv_s, results
        rates = [args.upsert_batch / s for s in up_s]
        figures["upsert_rows_per_s"] = {
            "label": f"put_many upsert, batches of {args.upsert_batch:,} ({half_u:,} new + {half_u:,} existing) "
                     f"into {n:,} rows, median of {args.runs} "
                     f"(process CPU {float(np.median(up_cpu)):.2f} s a batch)",
            "value": float(np.median(rates)), "unit": "rows/s", "target": TARGETS["upsert_rows_per_s"],
            "better": "higher"}
        figures["upsert_batch_s"] = {"label": "  one upsert batch, median wall time", "value": float(np.median(up_s)),
                                     "unit": "s"}
        figures["upsert_to_table_s"] = {"label": "  embeddings_to_table (Python rows -> Arrow) of the same batch alone, median",
                                        "value": float(np.median(conv_s)), "unit": "s"}

        # 6. bare merge-insert, scanning join vs indexed join (informational) --
        if not args.no_merge_compare:
            phase_load["bare_merge"] = loadavg()
            t = store.table(space)
            h3_res = store.space_info(space).h3_res
            merge = {"use_index_false_s": [], "use_index_true_s": []}
            base = new_base + args.runs * half_u
            for run in range(compare_runs):
                for flag in ((False, True) if run % 2 == 0 else (True, False)):  # alternate who goes first
                    slot = 2 * run + (1 if flag else 0)
                    old = rng.choice(pool, size=half_u, replace=False)
                    new = np.arange(base + slot * half_u, base + (slot + 1) * half_u)
                    ids_u = np.concatenate([old, new])
                    vecs = rows.vectors(ids_u, salt=100 + slot)
                    arrow = embeddings_to_table(rows.embeddings(ids_u, vecs, memo=True), args.dim, h3_res)
                    gc.collect()
                    t0 = time.perf_counter()
                    res = (t.merge_insert("key").use_index(flag).when_matched_update_all()
                           .when_not_matched_insert_all().execute(arrow))
                    dt = time.perf_counter() - t0
                    assert res.num_inserted_rows == half_u and res.num_updated_rows == half_u, res
                    merge[f"use_index_{str(flag).lower()}_s"].append(dt)
                    log(f"bare merge_insert use_index({flag}): {dt:.2f}s")
            raw["bare_merge"] = merge
            figures["merge_noindex_s"] = {
                "label": f"Bare merge_insert of a prebuilt {args.upsert_batch:,}-row Arrow batch, use_index(False) "
                         f"(what put_many runs), median of {compare_runs}",
                "value": float(np.median(merge["use_index_false_s"])), "unit": "s"}
            figures["merge_index_s"] = {
                "label": f"Bare merge_insert, use_index(True) (NOT used: skips the concurrency check), "
                         f"median of {compare_runs}",
                "value": float(np.median(merge["use_index_true_s"])), "unit": "s"}
        rows_end = store.count(space)
        info["loadavg_end"] = loadavg()
        info["loadavg_phases"] = phase_load  # 1/5/15-minute load when each phase started
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    # ---------------------------------------------------------------- report
    lines = ["| Figure | Value | Target | Result |", "|---|---:|---:|---|"]
    for f in figures.values():
        v = f["value"]
        unit = f["unit"]
        val = f"{v:,.0f} {unit}" if unit == "rows/s" else f"{v:,.2f} {unit}"
        if "target" in f:
            ok = v <= f["target"] if f["better"] == "lower" else v >= f["target"]
            f["pass"] = bool(ok)
            op = "<=" if f["better"] == "lower" else ">="
            tgt = f"{op} {f['target']:,.0f} {unit}"
            res = "pass" if ok else "**FAIL**"
        else:
            tgt, res = "", ""
        lines.append(f"| {f['label']} | {val} | {tgt} | {res} |")
    table = "\n".join(lines)
    print(f"\nrsembed_store benchmark: {n:,} rows x {args.dim}-d, runs={args.runs}, "
          f"{info['cpus']} cpus, {info['mem_total_gib']} GiB, lancedb {info['lancedb']}, pylance {info['pylance']}, "
          f"pyarrow {info['pyarrow']}, python {info['python']}; load avg {info['loadavg_start']} -> "
          f"{info['loadavg_end']}\n")
    print(table)
    print("\n1-minute load average when each phase started: "
          + ", ".join(f"{k} {v[0]}" for k, v in info["loadavg_phases"].items())
          + f" (on {info['cpus']} cpus)")
    if args.json_out:
        out = {"args": vars(args), "machine": info, "rows_end": rows_end, "figures": figures, "raw": raw,
               "markdown": table}
        with open(args.json_out, "w") as fh:
            json.dump(out, fh, indent=1, default=float)
        log(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
