"""Ingest throughput: first run vs fully cached re-run, per built-in featuriser.

Generates the synthetic Sentinel-2-like scene (seeded), covers it with H3 cells,
and for each model ingests the plan into a fresh store (first run: fetch +
compute + write), then ingests the same plan again (every request a cache hit).
Each figure is the median of ``--runs`` runs.

    python scripts/bench_ingest.py                 # 1024 px scene, res 9, 3 runs
    python scripts/bench_ingest.py --size-px 256 --runs 1   # quick smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

from benchlib import machine
from rsembed_store import Store, TemporalSpec
from rsembed_store.ingest.engine import ingest
from rsembed_store.ingest.plan import plan
from rsembed_store.ingest.synthetic import SceneSpec, ensure_scene
from rsembed_store.specs import BBox


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-px", type=int, default=1024)
    ap.add_argument("--h3-res", type=int, default=9)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cached-runs", type=int, default=5)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--models", default="spectral,mosaiks")
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args(argv)

    work = tempfile.mkdtemp(prefix="rsembed-bench-ingest-")
    manifest = ensure_scene(os.path.join(work, "source"), SceneSpec(size_px=args.size_px, seed=0))
    w, s, e, n = manifest["bounds_lonlat"]
    region = BBox(w + 0.004, s + 0.004, e - 0.004, n - 0.004)
    config = {"sources": {"s2-l2a": os.path.join(work, "source", "scenes")}}
    report = {"machine": machine(), "args": vars(args), "models": {}}
    for model in args.models.split(","):
        p = plan(region, args.h3_res, TemporalSpec.year(2023), model)
        n_req = len(p.requests)
        first, cached = [], []
        for run in range(args.runs):
            store = Store.open(os.path.join(work, f"db-{model}-{run}"))
            summary = ingest(store, p.requests, config, progress=False, fetch_workers=args.workers)
            assert summary.failed == 0, summary.failures[:3]
            first.append(summary.seconds)
        for _ in range(args.cached_runs):
            summary = ingest(store, p.requests, config, progress=False)
            assert summary.cached == n_req
            cached.append(summary.seconds)
        f, c = statistics.median(first), statistics.median(cached)
        report["models"][model] = {
            "requests": n_req,
            "first_s": round(f, 3),
            "first_rps": round(n_req / f, 1),
            "cached_s": round(c, 4),
            "cached_rps": round(n_req / c, 1),
            "cached_fraction_of_first": round(c / f, 5),
        }
    print(f"machine: {report['machine']['cpus']} cores, {report['machine']['mem_total_gib']} GiB, "
          f"Python {report['machine']['python']}, lancedb {report['machine']['lancedb']}")
    print(f"scene {args.size_px} px, H3 res {args.h3_res}, medians of {args.runs} first / {args.cached_runs} cached runs\n")
    print("| model | requests | first run (req/s) | cached re-run (req/s) | re-run / first |")
    print("|---|---|---|---|---|")
    for model, m in report["models"].items():
        print(f"| {model} | {m['requests']} | {m['first_rps']:.0f} ({m['first_s']:.1f} s) | "
              f"{m['cached_rps']:.0f} ({m['cached_s'] * 1000:.0f} ms) | {100 * m['cached_fraction_of_first']:.2f}% |")
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(report, fh, indent=2)
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
