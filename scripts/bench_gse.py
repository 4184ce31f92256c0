"""Benchmark: gse requests for res-9 H3 cells read from local Satellite Embedding COGs.

Builds (once, cached in --workdir) a synthetic COG in the published layout
(64 int8 bands, nodata -128, 256 px blocks, ZSTD, renormalised-mean overviews),
plans every res-9 H3 cell whose centre lies in the file, and reads them with
``GseModel.read_batch`` in batches of 256 (the engine's batch), after one warm-up
pass so the file is in the OS page cache ("warm local file").

Reports, as the median of --runs runs:

* pooled and grid requests/s on one thread and on two threads (each with its own
  model, reading alternate batches), and the CPU time per request (less sensitive
  to other work on a shared machine); the process is pinned to 2 CPUs;
* bytes read from the file per request (``rchar`` of /proc/self/io: bytes the
  process read through read()/pread(), page-cache hits included), and the
  payload of a request (64 bytes per pixel of its covering square);
* optionally (--engine) the end-to-end ingest rate through the engine into a
  LanceDB store (cache misses only: a fresh store per run).

    python scripts/bench_gse.py --size 2048 --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rsembed_store import BBox, OutputSpec, TemporalSpec  # noqa: E402
from rsembed_store.testing import products as syn  # noqa: E402
from rsembed_store.ingest.models.gse import GseModel  # noqa: E402
from rsembed_store.ingest.plan import plan  # noqa: E402

LEFT, TOP, ZONE, YEAR = 500000.0, 5100000.0, "32N", 2022
BATCH = 256


def rchar() -> int:
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def build(workdir: Path, size: int, patch: int) -> Path:
    root = workdir / f"gse-{size}-p{patch}"
    if not (root / str(YEAR) / ZONE).is_dir():
        t0 = time.perf_counter()
        syn.make_gse_file(root, YEAR, ZONE, LEFT, TOP, (size, size), seed=7, patch=patch)
        print(f"built a {size} x {size} x 64 COG in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return root


def requests(size: int, output: OutputSpec):
    from rasterio.warp import transform

    margin = 400.0  # keep whole hexagons inside the file
    xs = [LEFT + margin, LEFT + size * 10 - margin]
    ys = [TOP - size * 10 + margin, TOP - margin]
    lon, lat = transform(f"EPSG:326{ZONE[:-1]}", "EPSG:4326", xs, ys)
    return plan("gse", BBox(min(lon), min(lat), max(lon), max(lat)), 9, TemporalSpec.year(YEAR), output=output).requests


def run_once(config, reqs, threads: int) -> float:
    batches = [reqs[i:i + BATCH] for i in range(0, len(reqs), BATCH)]
    models = [GseModel(config) for _ in range(threads)]
    failures = []

    def work(k):
        for b in batches[k::threads]:
            out = models[k].read_batch(b, return_exceptions=True)
            failures.extend(o for o in out if isinstance(o, BaseException))

    t0 = time.perf_counter()
    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    secs = time.perf_counter() - t0
    if failures:
        raise RuntimeError(f"{len(failures)} request(s) failed, first: {failures[0]}")
    return secs


def engine_rate(config, reqs) -> float:
    from rsembed_store import Store
    from rsembed_store.ingest.engine import ingest

    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "db")
        summary = ingest(store, reqs, config, progress=False)
        assert summary.failed == 0, summary.failures[:2]
        return summary.rate


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048, help="file side in pixels (the real files are 8192)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--patch", type=int, default=1,
                    help="pixels per side of constant-vector patches: 1 = every pixel differs (compresses like "
                         "noise, the pessimistic case), 8 = blocky (compresses very well)")
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "rsembed-bench-gse"))
    ap.add_argument("--engine", action="store_true", help="also time ingest through the engine into LanceDB")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 2:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    root = build(Path(args.workdir), args.size, args.patch)
    file_bytes = sum(f.stat().st_size for f in root.rglob("*.tiff"))
    config = {"products": {"gse": {"root": str(root)}}}
    results = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "cores": cores,
               "file_px": args.size, "file_bytes": file_bytes, "patch": args.patch, "runs": args.runs,
               "batch": BATCH}
    for mode, output in (("pooled", OutputSpec.pooled()), ("grid", OutputSpec.grid())):
        reqs = requests(args.size, output)
        sample = GseModel(config).read_batch(reqs[::max(1, len(reqs) // 50)])
        run_once(config, reqs, 1)  # warm-up: file in the OS page cache
        for threads in (1, 2):
            rates, per_req, cpu = [], [], []
            for _ in range(args.runs):
                before, cpu0 = rchar(), time.process_time()
                secs = run_once(config, reqs, threads)
                cpu.append((time.process_time() - cpu0) / len(reqs) * 1e3)
                per_req.append((rchar() - before) / len(reqs))
                rates.append(len(reqs) / secs)
            results[f"{mode}_{threads}t_rps"] = round(statistics.median(rates), 1)
            results[f"{mode}_{threads}t_cpu_ms_per_request"] = round(statistics.median(cpu), 3)
            results[f"{mode}_{threads}t_bytes_per_request"] = int(statistics.median(per_req))
        results[f"{mode}_requests"] = len(reqs)
        key = "grid_shape" if mode == "grid" else "roi_px"
        px = [np.prod(e.meta[key]) for e in sample]
        results[f"{mode}_px_per_request"] = int(np.mean(px))  # grid: covering square; pooled: hexagon
        if args.engine:
            results[f"{mode}_engine_rps"] = round(engine_rate(config, reqs), 1)
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for k, v in results.items():
            print(f"{k:32s} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
