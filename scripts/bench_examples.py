"""Which way of combining several examples finds more places of the same kind?

On the synthetic scene (seeded COGs with a land-cover label raster, as the demo
builds it), every H3 cell gets its true class from the label raster. For each
land-cover class, seed, number of positives (1, 3, 5) and of negatives (0, 3),
positives are drawn from almost pure cells of the class and negatives from
almost pure cells of other classes; each combination method
(``rsembed_store.query.examples.COMBINES``) searches the k nearest cells, and
precision@k is the share of hits whose true class is the positives' class.
Prints a Markdown table (mean precision@k over classes and seeds, per model)
and, with ``--json``, the figures as JSON.

    python scripts/bench_examples.py                      # spectral and mosaiks, seeds 0-4, k=20
    python scripts/bench_examples.py --models spectral --seeds 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

import numpy as np  # noqa: E402

from rsembed_store import H3Cell, Request, Store, TemporalSpec, resolve  # noqa: E402
from rsembed_store.demo import cell_classes  # noqa: E402
from rsembed_store.ingest.engine import ingest  # noqa: E402
from rsembed_store.ingest.plan import plan  # noqa: E402
from rsembed_store.query.examples import COMBINES  # noqa: E402
from rsembed_store.specs import BBox  # noqa: E402

from rsembed_store.testing.labels import read_labels  # noqa: E402
from rsembed_store.testing.scenes import SceneSpec, ensure_scene  # noqa: E402

POSITIVES = (1, 3, 5)
NEGATIVES = (0, 3)


def build(workdir: Path, models, size_px: int, h3_res: int, scene_seed: int):
    """Scene, store and per-cell classes (the demo's recipe)."""
    source = workdir / "source"
    spec = SceneSpec(size_px=size_px, seed=scene_seed, n_patches=max(8, round(60 * (size_px / 1024) ** 2)))
    manifest = ensure_scene(source, spec)
    west, south, east, north = manifest["bounds_lonlat"]
    margin = 0.004
    region = BBox(west + margin, south + margin, east - margin, north - margin)
    window = TemporalSpec.year(spec.year)
    store = Store.open(workdir / "db")
    config = {"sources": {"s2-l2a": str(source / "scenes")}}
    cells = None
    for model in models:
        p = plan(model, region, h3_res, window)
        summary = ingest(store, p.requests, config)
        print(f"# ingest {model}: {summary.line()}", file=sys.stderr)
        cells = p.cells
    classes = cell_classes(read_labels(str(source)), cells)
    return store, window, classes


def run(store, window, classes, models, seeds, k: int, min_purity: float = 0.9):
    by_class = {}
    for cell, (name, frac) in sorted(classes.items()):
        if frac >= min_purity:
            by_class.setdefault(name, []).append(cell)
    names = [n for n in sorted(by_class) if len(by_class[n]) >= max(POSITIVES) + 1]
    results = []
    for model in models:
        key = {cell: resolve(Request(model, H3Cell(cell), window)).key for cell in classes}
        for n_pos in POSITIVES:
            for n_neg in NEGATIVES:
                scores = {c: [] for c in COMBINES}
                seconds = {c: [] for c in COMBINES}
                for seed in range(seeds):
                    for name in names:
                        rng = np.random.default_rng([seed, n_pos, n_neg, names.index(name)])
                        pos = rng.choice(by_class[name], size=n_pos, replace=False).tolist()
                        others = [c for n in names if n != name for c in by_class[n]]
                        neg = rng.choice(others, size=n_neg, replace=False).tolist() if n_neg else None
                        for combine in COMBINES:
                            t0 = time.perf_counter()
                            hits = store.search(model, [key[c] for c in pos], k=k, temporal=window,
                                                negatives=[key[c] for c in neg] if neg else None,
                                                combine=combine)
                            seconds[combine].append(time.perf_counter() - t0)
                            same = [classes.get(h["cell"], ("?", 0))[0] == name for h in hits.rows]
                            scores[combine].append(float(np.mean(same)) if same else 0.0)
                for combine in COMBINES:
                    results.append({"model": model, "positives": n_pos, "negatives": n_neg, "combine": combine,
                                    "precision_at_k": round(float(np.mean(scores[combine])), 3),
                                    "searches": len(scores[combine]),
                                    "median_ms": round(1000 * float(np.median(seconds[combine])), 1)})
    return {"k": k, "seeds": seeds, "classes": names, "cells": len(classes), "results": results}


def table(report) -> str:
    lines = [f"precision@{report['k']} (mean over {len(report['classes'])} classes x {report['seeds']} seeds, "
             f"{report['cells']} cells)", "",
             "| model | positives | negatives | " + " | ".join(COMBINES) + " |",
             "|---|---|---|" + "---|" * len(COMBINES)]
    rows = {}
    for r in report["results"]:
        rows.setdefault((r["model"], r["positives"], r["negatives"]), {})[r["combine"]] = r
    for (model, p, n), by in rows.items():
        best = max(by[c]["precision_at_k"] for c in COMBINES)
        cells = [(f"**{by[c]['precision_at_k']:.3f}**" if by[c]["precision_at_k"] == best else
                  f"{by[c]['precision_at_k']:.3f}") for c in COMBINES]
        lines.append(f"| {model} | {p} | {n} | " + " | ".join(cells) + " |")
    means = {c: np.mean([r["precision_at_k"] for r in report["results"] if r["combine"] == c]) for c in COMBINES}
    lines += ["", "mean over all rows: " + ", ".join(f"{c} {m:.3f}" for c, m in means.items())]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="spectral,mosaiks")
    ap.add_argument("--seeds", type=int, default=5, help="example draws per class and setting")
    ap.add_argument("--scene-seed", type=int, default=0)
    ap.add_argument("--size-px", type=int, default=1024)
    ap.add_argument("--h3-res", type=int, default=9)
    ap.add_argument("-k", type=int, default=20)
    ap.add_argument("--workdir", help="keep the scene and store here (default: a temporary directory)")
    ap.add_argument("--json", dest="json_path", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        store, window, classes = build(workdir, models, args.size_px, args.h3_res, args.scene_seed)
        report = run(store, window, classes, models, args.seeds, args.k)
    report.update({"scene_seed": args.scene_seed, "size_px": args.size_px, "h3_res": args.h3_res})
    print(table(report))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
