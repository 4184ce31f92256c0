"""Section ``ingest``: requests/s through the cache-first engine, first run and fully cached re-run.

Per model kind, on synthetic inputs in the real on-disk layouts:

- on-the-fly featurisers (``spectral``, ``mosaiks``): every res-9 H3 cell
  whose centre lies in the synthetic Sentinel-2-like scene, one window (2023),
  the local provider with ``fetch_workers`` threads. A first run fetches
  (windowed COG reads of every date, median composite), featurises and writes;
- a precomputed product (``gse``): every res-9 cell inside one synthetic
  Satellite Embedding COG (64 int8 bands, noise-like content: the pessimistic
  case for compression), pooled per hexagon.

Each first run writes into a fresh store; the cached re-run asks the same store
for the same plan and computes nothing (one batched key check per 256
requests). Figures are medians over ``runs``.
"""

from __future__ import annotations

from rasterio.warp import transform

from rsembed_store import Store, TemporalSpec
from rsembed_store.ingest.plan import plan
from rsembed_store.specs import BBox

from .retrieval import scene_region
from .timing import median
from .workspace import Workspace, log

GSE_LEFT, GSE_TOP, GSE_ZONE, GSE_YEAR = 500000.0, 5100000.0, "32N", 2022


def gse_region(px: int, margin_m: float = 400.0) -> BBox:
    """Lon/lat box of the gse file less a margin, so that whole hexagons lie inside it."""
    xs = [GSE_LEFT + margin_m, GSE_LEFT + px * 10 - margin_m]
    ys = [GSE_TOP - px * 10 + margin_m, GSE_TOP - margin_m]
    lon, lat = transform(f"EPSG:326{GSE_ZONE[:-1]}", "EPSG:4326", xs, ys)
    return BBox(min(lon), min(lat), max(lon), max(lat))


def inputs(ws: Workspace, model: str):
    """(requests, engine config) of ``model``'s plan."""
    cfg = ws.config
    if model == "gse":
        config = {"products": {"gse": {"root": ws.gse_root()}}}
        return plan("gse", gse_region(cfg.gse_px), cfg.h3_res, TemporalSpec.year(GSE_YEAR)).requests, config
    scene = ws.scene()
    reqs = plan(model, scene_region(scene["manifest"]), cfg.h3_res, TemporalSpec.year(2023)).requests
    return reqs, scene["config"]


def one_model(ws: Workspace, model: str) -> dict:
    cfg = ws.config
    reqs, config = inputs(ws, model)
    first, cached = [], []
    for run in range(cfg.runs):
        store = Store.open(f"{ws.root}/ingest-{model}-{run}")
        s = store.ingest(reqs, config=config, progress=False, fetch_workers=cfg.fetch_workers)
        if s.computed != len(reqs):
            raise RuntimeError(f"{model}: first run computed {s.computed} of {len(reqs)}: {s.line()}")
        first.append(s.seconds)
        again = store.ingest(reqs, config=config, progress=False)
        if again.cached != len(reqs):
            raise RuntimeError(f"{model}: cached re-run found {again.cached} of {len(reqs)} stored")
        cached.append(again.seconds)
    f, c = median(first), median(cached)
    return {"requests": len(reqs), "first_s": round(f, 3), "first_rps": round(len(reqs) / f, 1),
            "cached_s": round(c, 4), "cached_rps": round(len(reqs) / c, 1), "cached_share": round(c / f, 5),
            "runs": cfg.runs}


def run(ws: Workspace) -> dict:
    cfg = ws.config
    out = {"h3_res": cfg.h3_res, "scene_px": cfg.scene_px, "gse_px": cfg.gse_px,
           "fetch_workers": cfg.fetch_workers, "models": {}}
    for model in (*cfg.featurisers, "gse"):
        out["models"][model] = fig = one_model(ws, model)
        log(f"ingest {model}: {fig['requests']} requests, first {fig['first_rps']} req/s, "
            f"cached {fig['cached_rps']} req/s")
    return out
