"""Local vs Ray executor on one machine: the same plan, requests per second, the overhead.

Generates the seeded synthetic Sentinel-2-like scene, plans every res-9 H3 cell
whose centre lies inside it (a few hundred with the default 512 px scene), and
ingests that plan into a fresh store per run, first with the local executor
(threads in one process), then with the Ray executor on a local Ray of
``--num-cpus`` cores (one session for all its runs; its start-up and a warm-up
run that starts the worker processes are timed apart and not counted). Each
figure is the median of ``--runs`` runs. Ray needs the ``ray`` extra.

    python scripts/bench_executor.py                     # 512 px scene, 3 runs each
    python scripts/bench_executor.py --num-cpus 1,2      # Ray scaling over cores
    python scripts/bench_executor.py --size-px 256 --runs 1   # quick smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

from rsembed_store import Store, TemporalSpec
from rsembed_store.ingest.engine import ingest
from rsembed_store.ingest.plan import plan
from rsembed_store.testing.scenes import SceneSpec, ensure_scene
from rsembed_store.specs import BBox


def timed_runs(requests, config, work: str, label: str, runs: int, executor=None, workers: int = 4) -> list:
    """Seconds of each of ``runs`` first ingests of ``requests``, each into a fresh store."""
    seconds = []
    for run in range(runs):
        store = Store.open(os.path.join(work, f"db-{label}-{run}"))
        summary = ingest(store, requests, config, progress=False, fetch_workers=workers, executor=executor)
        if summary.failed or summary.computed != len(requests):
            raise SystemExit(f"{label}: run {run} did not compute the plan: {summary.line()}")
        seconds.append(summary.seconds)
    return seconds


def ray_figures(requests, config, work: str, args, cpus: int) -> dict:
    """Start a local Ray of ``cpus`` cores, warm its workers up, then time ``args.runs`` runs."""
    from rsembed_store.ingest.ray_executor import RayExecutor

    executor = RayExecutor(num_cpus=cpus, partition_size=args.partition_size)
    t0 = time.perf_counter()
    executor.connect()
    start_s = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        timed_runs(requests[: 4 * cpus], config, work, f"ray{cpus}-warm", 1, executor, args.workers)
        warm_s = time.perf_counter() - t0
        seconds = timed_runs(requests, config, work, f"ray{cpus}", args.runs, executor, args.workers)
    finally:
        executor.close()
    return {"cpus": cpus, "start_s": round(start_s, 2), "warm_up_s": round(warm_s, 2),
            "runs_s": [round(s, 3) for s in seconds], **rate(len(requests), seconds)}


def loadavg() -> list:
    return [round(x, 2) for x in os.getloadavg()]


def rate(n: int, seconds: list) -> dict:
    median = statistics.median(seconds)
    return {"median_s": round(median, 3), "requests_per_s": round(n / median, 1)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-px", type=int, default=512)
    ap.add_argument("--h3-res", type=int, default=9)
    ap.add_argument("--model", default="spectral")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=4, help="fetch threads per process (both executors)")
    ap.add_argument("--num-cpus", default=str(os.cpu_count()), help="cores of the local Ray; a list runs each")
    ap.add_argument("--partition-size", type=int, default=None, help="default: the executor's own choice")
    ap.add_argument("--json", dest="json_out", help="also write the report here")
    args = ap.parse_args(argv)

    work = tempfile.mkdtemp(prefix="rsembed-bench-executor-")
    manifest = ensure_scene(os.path.join(work, "source"), SceneSpec(size_px=args.size_px, seed=0))
    w, s, e, n = manifest["bounds_lonlat"]
    requests = plan(args.model, BBox(w + 0.004, s + 0.004, e - 0.004, n - 0.004), args.h3_res,
                    TemporalSpec.year(2023)).requests
    config = {"sources": {"s2-l2a": os.path.join(work, "source", "scenes")}}
    import ray

    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "ray": ray.__version__,
                    "loadavg_start": loadavg()},
        "args": vars(args),
        "requests": len(requests),
    }
    local = timed_runs(requests, config, work, "local", args.runs, None, args.workers)
    report["local"] = {"runs_s": [round(x, 3) for x in local], **rate(len(requests), local)}
    report["ray"] = [ray_figures(requests, config, work, args, int(c)) for c in args.num_cpus.split(",")]
    report["machine"]["loadavg_end"] = loadavg()

    print(f"{len(requests)} requests ({args.model}, res {args.h3_res}, {args.size_px} px scene), "
          f"median of {args.runs} runs; {report['machine']['cpus']} cores, load "
          f"{report['machine']['loadavg_start']} -> {report['machine']['loadavg_end']}\n")
    print("| executor | cores | median | requests/s | vs local | Ray start-up | warm-up |")
    print("|---|---|---|---|---|---|---|")
    loc = report["local"]
    print(f"| local | {os.cpu_count()} (threads) | {loc['median_s']:.2f} s | {loc['requests_per_s']:.1f} | 1.00x | | |")
    for r in report["ray"]:
        print(f"| ray | {r['cpus']} | {r['median_s']:.2f} s | {r['requests_per_s']:.1f} | "
              f"{loc['median_s'] / r['median_s']:.2f}x | {r['start_s']:.1f} s | {r['warm_up_s']:.1f} s |")
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(report, fh, indent=2)
    return report


if __name__ == "__main__":
    main()
