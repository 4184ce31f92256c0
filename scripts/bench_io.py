"""Benchmark: bulk import from GeoParquet and export to GeoParquet through the public API.

Writes a GeoParquet file of N rows (into --workdir, kept there for the next run of that size, or
else into a fresh temporary folder, removed after) in the common layout of embedding collections:
a WKB point geometry, a ``year`` and a D-dimensional ``embedding`` (fixed-size list of float32),
then measures, each
phase in a fresh subprocess (so its peak RSS is its own):

* import: ``Store.import_table(path, model=..., buffer_m=...)`` into a fresh
  store, end to end (check pass, vectorised keys, rows, write);
* re-import of the same file (every key held: nothing new is written);
* export: ``Store.export(space, out)`` of the whole space to GeoParquet;

as rows/s (the median of --runs runs), CPU seconds and peak RSS (the largest
over the runs), with the machine's load average before and after. Each
subprocess is pinned to 2 CPUs when the machine has more.

    python -m scripts.bench_io --rows 1000000 --dim 64 --runs 3
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
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rsembed_store.store import Store  # noqa: E402


def cpu() -> float:
    """CPU seconds of this process, every thread (less sensitive than wall time to a busy machine)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def make_file(path: str, rows: int, dim: int, seed: int = 0, block: int = 100_000) -> None:
    geo = {"version": "1.1.0", "primary_column": "geometry",
           "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Point"]}}}
    rng = np.random.default_rng(seed)
    writer = None
    for start in range(0, rows, block):
        n = min(block, rows - start)
        lon, lat = np.round(rng.uniform(5, 15, n), 6), np.round(rng.uniform(44, 54, n), 6)
        rec = np.empty(n, dtype=[("o", "u1"), ("t", "<u4"), ("x", "<f8"), ("y", "<f8")])
        rec["o"], rec["t"], rec["x"], rec["y"] = 1, 1, lon, lat
        offsets = np.arange(n + 1, dtype=np.int32) * 21
        g = pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(rec.tobytes())])
        v = rng.standard_normal((n, dim)).astype(np.float32)
        t = pa.table({"year": rng.integers(2017, 2025, n).astype(np.int32),
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), dim), "geometry": g})
        if writer is None:
            writer = pq.ParquetWriter(path, t.schema.with_metadata({"geo": json.dumps(geo)}), compression="zstd")
        writer.write_table(t)
    writer.close()


def phase(args) -> dict:
    """Run one phase in this process and return its figures (called in a subprocess by main)."""
    src, db, out = args.src, os.path.join(args.workdir, "db"), os.path.join(args.workdir, "export.parquet")
    if args.phase == "import":
        shutil.rmtree(db, ignore_errors=True)
    store = Store.open(db)
    t0, c0 = time.perf_counter(), cpu()
    if args.phase in ("import", "reimport"):
        res = store.import_table(src, model="bench-io", revision="1", buffer_m=160, batch_rows=args.batch_rows)
        rows = res.inserted if args.phase == "import" else res.rows
        extra = {"new_rows": res.inserted}
    else:
        res = store.export("imported-bench-io__1", out)  # the export's own batch size
        rows, extra = res.rows, {"mib": round(res.bytes / 2**20, 1)}
    wall, used = time.perf_counter() - t0, cpu() - c0
    return {"rows": rows, "s": round(wall, 3), "rows_per_s": round(rows / wall), "cpu_s": round(used, 2),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), **extra}


def _run_phase(args, name: str) -> dict:
    import subprocess

    cmd = [sys.executable, "-m", "scripts.bench_io", "--phase", name, "--src", args.src, "--workdir", args.workdir,
           "--batch-rows", str(args.batch_rows)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", "--size", type=int, default=1_000_000, help="Rows in the file (the size).")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--runs", type=int, default=3, help="Runs of each phase; the median rows/s is reported.")
    p.add_argument("--batch-rows", type=int, default=65_536, help="Rows per import batch (export uses its own).")
    p.add_argument("--workdir", help="Where the input file (kept there for the next run of the same size), the "
                                     "store and the export go; default: a new temporary folder, removed after")
    p.add_argument("--keep", action="store_true", help="Keep the stores and files written.")
    p.add_argument("--phase", choices=["import", "reimport", "export"], help=argparse.SUPPRESS)
    p.add_argument("--src", help=argparse.SUPPRESS)
    args = p.parse_args()
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 2:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])
    if args.phase:
        print(json.dumps(phase(args)))
        return
    fresh = args.workdir is None  # two runs at once must not share a folder (one's store is the other's)
    if fresh:
        args.workdir = tempfile.mkdtemp(prefix="rsembed-bench-io-")
    os.makedirs(args.workdir, exist_ok=True)
    args.src = os.path.join(args.workdir, f"points-{args.rows}x{args.dim}.parquet")
    if not os.path.exists(args.src):
        make_file(args.src, args.rows, args.dim)
    load0 = os.getloadavg()
    runs: dict = {"import": [], "reimport": [], "export": []}
    for _ in range(args.runs):
        for name in runs:  # import into a fresh store, then re-import and export that store
            runs[name].append(_run_phase(args, name))
    report = {"rows": args.rows, "dim": args.dim, "batch_rows": args.batch_rows, "runs": args.runs,
              "cpus": len(os.sched_getaffinity(0))}
    for name, got in runs.items():
        report[name] = {"rows_per_s_median": int(statistics.median(r["rows_per_s"] for r in got)),
                        "rows_per_s": [r["rows_per_s"] for r in got],
                        "cpu_s_median": round(statistics.median(r["cpu_s"] for r in got), 2),
                        "peak_rss_mib": max(r["peak_rss_mib"] for r in got)}
    report["reimport"]["new_rows"] = max(r["new_rows"] for r in runs["reimport"])
    report["export"]["mib"] = runs["export"][-1]["mib"]
    report["load_before"] = [round(x, 2) for x in load0]
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))
    if fresh and not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)
    elif not args.keep:
        shutil.rmtree(os.path.join(args.workdir, "db"), ignore_errors=True)
        out = os.path.join(args.workdir, "export.parquet")
        if os.path.exists(out):
            os.remove(out)


if __name__ == "__main__":
    main()
