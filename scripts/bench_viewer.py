"""First paint of the web map over a space of many stored cells, in headless chromium.

``python -m scripts.bench_viewer [--cells 1000000] [--dim 32] [--runs 3] [--db DIR] [--shot docs/viewer-1m.png]``

Writes (once per ``--db``) one space of ``--cells`` distinct H3 res-9 cells in one window, with vectors
that vary smoothly over space (a sum of waves plus noise), serves the store with uvicorn on loopback and
opens the page ``--runs`` times in Debian's chromium (Playwright, SwiftShader WebGL). Prints one JSON line:
the time from navigation to the first frame with cells drawn, the first (cold: the server reads every
vector and fits the components) and the later ones (the picture cached), the cells and bytes the page
received and the resolution the server rolled up to, plus the server-side build and viewport times.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path

import h3
import numpy as np
import pyarrow as pa

MODEL, REVISION, RES = "viewbench", "v1", 9
CENTRE = (10.0, 50.0)


def register(dim: int) -> None:
    from rsembed_store.model import Model, ModelInfo
    from rsembed_store.registry import register_model
    from rsembed_store.specs import SensorSpec

    class ViewBench(Model):
        info = ModelInfo(id=MODEL, revision=REVISION, kind="on_the_fly", dim=dim,
                         default_sensor=SensorSpec("s2-l2a", ("B04", "B08")), input_size=32,
                         description="viewer benchmark: rows written directly, never computed")

    register_model(MODEL, ViewBench)


def write(store, n: int, dim: int) -> str:
    """``n`` distinct res-9 cells around CENTRE (a hexagonal disk), one row each in 2021."""
    from rsembed_store.space import row_schema

    space = store.ensure_space(MODEL, REVISION, dim).space
    if store.count(space) >= n:
        return space
    k = 0
    while 1 + 3 * k * (k + 1) < n:
        k += 1
    cells = np.array(sorted(h3.str_to_int(c) for c in h3.grid_disk(h3.latlng_to_cell(CENTRE[1], CENTRE[0], RES), k)))
    cells = cells[:n].astype(np.int64)
    ll = np.array([h3.cell_to_latlng(h3.int_to_str(int(c))) for c in cells])
    lat, lon = ll[:, 0], ll[:, 1]
    rng = np.random.default_rng(0)
    freq = rng.normal(0, 6, (dim, 2))
    phase = rng.uniform(0, 2 * np.pi, dim)
    # the store's res-12 `h3` of a res-9 cell: its centre child (digits 10-12 zero)
    h12 = (cells & np.int64(~(0xF << 52))) | np.int64(12 << 52)
    for r in range(10, 13):
        h12 &= np.int64(~(0x7 << (3 * (15 - r))))
    half = 0.003
    now = datetime.now(timezone.utc)
    t = store.table(space)
    for start in range(0, n, 200_000):
        s = slice(start, min(n, start + 200_000))
        m = s.stop - s.start
        X = np.sin(np.stack([lon[s] - CENTRE[0], lat[s] - CENTRE[1]], 1) @ freq.T + phase)
        X = (X + 0.2 * rng.standard_normal(X.shape)).astype(np.float32)
        none = [None] * m
        cols = {
            "key": [hashlib.sha256(f"viewbench-{i}".encode()).hexdigest() for i in range(s.start, s.stop)],
            "request": ["{}"] * m, "model": [MODEL] * m, "revision": [REVISION] * m, "output": ["pooled"] * m,
            "pooling": ["mean"] * m, "provider": ["local"] * m, "spatial_type": ["H3Cell"] * m,
            "lon": lon[s], "lat": lat[s], "minlon": lon[s] - half, "minlat": lat[s] - half, "maxlon": lon[s] + half,
            "maxlat": lat[s] + half, "h3": h12[s], "cell": cells[s], "cell_res": np.full(m, RES, np.int8),
            "start_date": [date(2021, 1, 1)] * m, "end_date": [date(2022, 1, 1)] * m,
            "year": np.full(m, 2021, np.int32), "grid": none, "grid_shape": none, "grid_dtype": none,
            "grid_codec": none, "meta": ["{}"] * m, "created_at": [now] * m, "compute_s": np.zeros(m),
        }
        arrays = [pa.FixedSizeListArray.from_arrays(pa.array(X.ravel(), pa.float32()), dim) if f.name == "vector"
                  else pa.array(cols[f.name], type=f.type) for f in row_schema(dim)]
        t.add(pa.Table.from_arrays(arrays, schema=row_schema(dim)))
    return space


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--db", default=None, help="store directory (kept, reused); default: a temporary one")
    ap.add_argument("--shot", default=None, help="save a screenshot of the last run here")
    args = ap.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from rsembed_store import Store
    from rsembed_store.query.service import create_app
    from scripts.load_service import served_in_thread

    register(args.dim)
    db = args.db or tempfile.mkdtemp(prefix="bench-viewer-")
    store = Store.open(db)
    t0 = time.perf_counter()
    space = write(store, args.cells, args.dim)
    written_s = time.perf_counter() - t0
    app = create_app(store)
    out = {"cells": store.count(space), "dim": args.dim, "write_s": round(written_s, 1), "paint_ms": [],
           "received": []}
    chromium = shutil.which("chromium")
    with served_in_thread(app) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium,
                                    args=["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"])
        for run in range(args.runs):
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            got = []
            page.on("response", lambda r: "/viewer/cells" in r.url and got.append(
                (r.headers.get("x-viewer-rows"), r.headers.get("x-viewer-res"), len(r.body()))))
            page.goto(base + "/")
            page.wait_for_selector("body[data-painted]", timeout=120_000)
            out["paint_ms"].append(round(page.evaluate("window.viewer.state.firstPaintMs")))
            out.setdefault("resources", []).append(page.evaluate("""performance.getEntriesByType('resource')
                .map(e => [e.name.split('/').pop().slice(0, 24), Math.round(e.startTime), Math.round(e.responseStart),
                           Math.round(e.responseEnd)])"""))
            out.setdefault("marks_ms", []).append({k: round(v) for k, v in page.evaluate("window.viewer.marks").items()})
            drawn = page.evaluate("({n: window.viewer.state.cells.n, res: window.viewer.state.cells.res})")
            # the answer drawn in the first frame (an earlier one, for a view since left, is not drawn)
            last = got[-1] if got else (None, None, None)
            out["received"].append({"rows": drawn["n"], "res": drawn["res"], "bytes": last[2],
                                    "answers": len(got)})
            if args.shot and run == args.runs - 1:
                page.wait_for_timeout(500)
                page.screenshot(path=args.shot)
            page.close()
        browser.close()
    from rsembed_store.query.viewer import Pictures

    t0 = time.perf_counter()
    pic = Pictures(store).get(space)  # a fresh cache: the server's cold build, timed alone
    out["build_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    _, table = pic.view(None, 15, 150_000)
    out["view_all_ms"] = round(1000 * (time.perf_counter() - t0), 1)
    out["view_all_rows"] = table.num_rows
    out["cold_paint_ms"], out["warm_paint_ms"] = out["paint_ms"][0], min(out["paint_ms"][1:] or out["paint_ms"])
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
