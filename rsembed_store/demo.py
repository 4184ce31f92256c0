"""The demo: the whole loop on one machine, no network.

1. generate a synthetic Sentinel-2-like source (seeded COGs with a land-cover
   label raster) unless present;
2. cover the scene with H3 cells and ingest them with each built-in featuriser;
3. ingest again: every answer now comes from the cache;
4. "find places like this": for query cells of each land-cover class, search the
   k most similar cells and score precision@k against the true class;
5. one SQL roll-up by parent cell;
6. a PNG map (scene RGB, the query cell, hits shaded by rank, with title,
   legend, scale bar and coordinate ticks; see demo_map.py), and the ``serve``
   command that opens the same store in the viewer.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Dict, List, Sequence

import h3
import numpy as np

from .demo_map import write_map  # noqa: F401  (the map drawing lives in demo_map.py)
from .specs import BBox, H3Cell, TemporalSpec

DEMO_MODELS = ("spectral", "mosaiks")


def cell_classes(labels_cache, cells: Sequence[str]) -> Dict[str, tuple]:
    """Majority true class and its fraction for each cell (from the label raster)."""
    from .testing.labels import class_fractions

    out = {}
    for cell in cells:
        ring = [(lon, lat) for lat, lon in h3.cell_to_boundary(cell)]
        fractions = class_fractions(labels_cache, ring + [ring[0]])
        name = max(fractions, key=fractions.get)
        out[cell] = (name, fractions[name])
    return out


def pick_queries(classes: Dict[str, tuple], per_class: int = 3, min_purity: float = 0.9, seed: int = 0) -> List[str]:
    """Up to ``per_class`` query cells per land-cover class, each almost pure."""
    rng = np.random.default_rng(seed)
    by_class: Dict[str, List[str]] = {}
    for cell, (name, frac) in sorted(classes.items()):
        if frac >= min_purity:
            by_class.setdefault(name, []).append(cell)
    picked = []
    for name in sorted(by_class):
        cells = by_class[name]
        picked.extend(rng.choice(cells, size=min(per_class, len(cells)), replace=False).tolist())
    return picked


def precision_at_k(store, model: str, queries: Sequence[str], classes: Dict[str, tuple], window: TemporalSpec,
                   k: int = 10) -> dict:
    """Mean fraction of the k nearest cells that share the query cell's true class."""
    from .keys import Request, resolve

    per_class: Dict[str, List[float]] = {}
    examples = []
    for cell in queries:
        key = resolve(Request(model, H3Cell(cell), window)).key
        hits = store.search(model, key, k=k, temporal=window).to_dicts()
        truth = classes[cell][0]
        same = [classes.get(h["cell"], ("?", 0))[0] == truth for h in hits]
        per_class.setdefault(truth, []).append(float(np.mean(same)) if same else 0.0)
        examples.append({"query": cell, "class": truth, "hits": [(h["cell"], h["distance"]) for h in hits]})
    means = {c: round(float(np.mean(v)), 3) for c, v in sorted(per_class.items())}
    overall = round(float(np.mean([x for v in per_class.values() for x in v])), 3) if per_class else 0.0
    return {"model": model, "k": k, "queries": len(queries), "precision_at_k": overall, "by_class": means,
            "examples": examples}


ROLLUP_SQL = """
SELECT h3_to_string(h3_parent(cell, 7)) AS parent_r7,
       count(*) AS cells,
       round(sum(compute_s), 2) AS compute_seconds
FROM embeddings
WHERE model = 'spectral'
GROUP BY 1
ORDER BY cells DESC, parent_r7
LIMIT 5
"""


def run_demo(store, workdir: str, *, h3_res: int = 9, size_px: int = 1024, seed: int = 0,
             models: Sequence[str] = DEMO_MODELS, k: int = 10, progress=None,
             log: Callable[[str], None] = print) -> dict:
    """Run the demo against ``store`` with its source under ``workdir``; returns a JSON-ready report."""
    from .ingest.engine import ingest
    from .ingest.plan import plan
    from .testing.labels import read_labels
    from .testing.scenes import SceneSpec, ensure_scene

    t0 = time.perf_counter()
    source = os.path.join(workdir, "source")
    # patches keep their ground size (~1.3 km) whatever the scene size
    spec = SceneSpec(size_px=size_px, seed=seed, n_patches=max(8, round(60 * (size_px / 1024) ** 2)))
    manifest = ensure_scene(source, spec)
    west, south, east, north = manifest["bounds_lonlat"]
    margin = 0.004  # keep cells away from the scene edge so each has imagery all around
    region = BBox(west + margin, south + margin, east - margin, north - margin)
    window = TemporalSpec.year(spec.year)
    config = {"sources": {"s2-l2a": os.path.join(source, "scenes")}}
    log(f"source  {source}: {size_px} px, {len(manifest['dates'])} dates, seed {seed} "
        f"(ready after {time.perf_counter() - t0:.1f} s)")
    report: dict = {"source": source, "store": store.uri, "h3_res": h3_res, "window": window.to_dict(),
                    "runs": [], "search": [], "sql": None, "map": None}
    plans = {}
    for model in models:
        plans[model] = plan(model, region, h3_res, window)
        for attempt in ("first", "again"):
            summary = ingest(store, plans[model].requests, config, progress=progress)
            log(f"ingest  {model:<9} {attempt:<6} {summary.line()}")
            report["runs"].append({"model": model, "run": attempt, **summary.to_dict(max_failures=5)})

    cells = plans[models[0]].cells
    classes = cell_classes(read_labels(source), cells)
    queries = pick_queries(classes, seed=seed)
    log(f"search  {len(queries)} query cells ({len(set(classes[c][0] for c in queries))} land-cover classes), "
        f"k={k}, precision@{k} = share of hits with the query's true class:")
    for model in models:
        result = precision_at_k(store, model, queries, classes, window, k=k)
        report["search"].append(result)
        by_class = ", ".join(f"{c} {p:.2f}" for c, p in result["by_class"].items())
        log(f"        {model:<9} precision@{k} {result['precision_at_k']:.2f}  ({by_class})")
    if report["search"]:
        first = report["search"][0]["examples"][0]
        log(f"example {models[0]}: query {first['query']} ({first['class']}) -> "
            + ", ".join(f"{classes.get(c, ('?',))[0]}" for c, _ in first["hits"][:k]))
        path = os.path.join(workdir, "demo-map.png")
        report["map"] = write_map(source, manifest, first["query"], first["hits"], path, model=models[0],
                                  window=str(spec.year))
        log(f"map     {report['map']} (red: query cell; yellow to orange: its {k} nearest by rank)")
        report["serve"] = f"rsembed-store --db {store.uri} serve"
        log(f"view    {report['serve']}  (then open http://127.0.0.1:8765/ and click cell {first['query']})")

    table = store.sql(ROLLUP_SQL)
    report["sql"] = {"query": " ".join(ROLLUP_SQL.split()), "rows": table.to_pylist()}
    log("sql     cells and compute seconds per res-7 parent (spectral):")
    for row in report["sql"]["rows"]:
        log(f"        {row['parent_r7']}  {row['cells']:>4} cells  {row['compute_seconds']:>7.2f} s")
    report["seconds"] = round(time.perf_counter() - t0, 2)
    log(f"done in {report['seconds']:.1f} s; the store is at {store.uri} "
        f"(try `rsembed-store --db {store.uri} stats`)")
    return report
