"""Benchmark: bulk import from GeoParquet and export to GeoParquet through the public API.

Writes (once per size, cached in --workdir) a GeoParquet file of N rows in the
common layout of embedding collections: a WKB point geometry, a ``year`` and a
D-dimensional ``embedding`` (fixed-size list of float32), then measures

* import: ``Store.import_table(path, model=..., buffer_m=...)`` into a fresh
  store, end to end (check pass, vectorised keys, rows, merge-insert);
* re-import of the same file (every key held: nothing new is written);
* export: ``Store.export(space, out)`` of the whole space to GeoParquet;

as rows/s, with peak RSS (ru_maxrss) and the machine's load average before and
after. The process is pinned to 2 CPUs when the machine has more.

    python scripts/bench_io.py --rows 1000000 --dim 64
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--batch-rows", type=int, default=65_536)
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "rsembed-bench-io"))
    p.add_argument("--keep", action="store_true", help="Keep the stores and files written.")
    args = p.parse_args()
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 2:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])
    os.makedirs(args.workdir, exist_ok=True)
    src = os.path.join(args.workdir, f"points-{args.rows}x{args.dim}.parquet")
    if not os.path.exists(src):
        make_file(src, args.rows, args.dim)
    db, out = os.path.join(args.workdir, "db"), os.path.join(args.workdir, "export.parquet")
    shutil.rmtree(db, ignore_errors=True)
    load0 = os.getloadavg()
    store = Store.open(db)
    t0, c0 = time.perf_counter(), cpu()
    res = store.import_table(src, model="bench-io", revision="1", buffer_m=160, batch_rows=args.batch_rows)
    t_import, c_import = time.perf_counter() - t0, cpu() - c0
    t0 = time.perf_counter()
    again = store.import_table(src, model="bench-io", revision="1", buffer_m=160, batch_rows=args.batch_rows)
    t_again = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), cpu()
    exp = store.export(res.space, out, batch_rows=args.batch_rows)
    t_export, c_export = time.perf_counter() - t0, cpu() - c0
    report = {
        "rows": args.rows, "dim": args.dim, "batch_rows": args.batch_rows, "cpus": len(os.sched_getaffinity(0)),
        "import_rows_per_s": round(res.inserted / t_import), "import_s": round(t_import, 2),
        "import_cpu_s": round(c_import, 2),
        "reimport_rows_per_s": round(again.rows / t_again), "reimport_new_rows": again.inserted,
        "export_rows_per_s": round(exp.rows / t_export), "export_s": round(t_export, 2),
        "export_cpu_s": round(c_export, 2),
        "export_mib": round(exp.bytes / 2**20, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "load_before": [round(x, 2) for x in load0], "load_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(report, indent=2))
    if not args.keep:
        shutil.rmtree(db, ignore_errors=True)
        os.remove(out)


if __name__ == "__main__":
    main()
