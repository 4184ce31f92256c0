"""Benchmark of planning: 100,000 H3 cells x 1 window for the test model "toy".

Prints the median of 3 runs of ``plan()`` with the region given as a list of
100,000 cell ids, and as a bbox of about that many cells, plus the time of the
slow path (``resolve()`` per request) on a sample, for comparison.

    python scripts/bench_plan.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import h3  # noqa: E402

import toy  # noqa: E402,F401  registers the "toy" model
from rsembed_store.ingest.plan import plan  # noqa: E402
from rsembed_store.ingest.regions import region_cells  # noqa: E402
from rsembed_store.keys import Request, resolve  # noqa: E402
from rsembed_store.specs import BBox, H3Cell, TemporalSpec  # noqa: E402

N = 100_000
RES = 9
WINDOW = TemporalSpec.year(2022)


def median_of_3(fn):
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    bbox = BBox(10.0, 45.0, 11.3, 46.0)  # ~107k cells at res 9
    cells = region_cells(bbox, RES)[:N]
    assert len(cells) == N, len(cells)

    t_list, p = median_of_3(lambda: plan("toy", cells, RES, WINDOW))
    print(f"plan(list of {N:,} cells, 1 window): median of 3 = {t_list:.2f} s ({len(p.requests):,} requests)")

    t_bbox, p = median_of_3(lambda: plan("toy", bbox, RES, WINDOW))
    print(f"plan(bbox -> {len(p.cells):,} cells, 1 window): median of 3 = {t_bbox:.2f} s")

    sample = cells[:5000]
    t0 = time.perf_counter()
    for c in sample:
        resolve(Request("toy", H3Cell(c), WINDOW))
    per = (time.perf_counter() - t0) / len(sample)
    print(f"slow path for comparison: resolve() per request {per * 1e6:.0f} us -> {per * N:.1f} s for {N:,}")
    print(f"h3 {h3.__version__}")


if __name__ == "__main__":
    main()
