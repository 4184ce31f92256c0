"""``rsembed-store demo``: the whole loop on one machine, no network.

1. generate a synthetic Sentinel-2-like source (seeded COGs) unless present;
2. cover the scene with H3 cells and ingest them with each built-in featuriser;
3. ingest again: every answer now comes from the cache.
"""

from __future__ import annotations

import os
import time

import click

from .common import emit_json, json_option

DEMO_MODELS = ("spectral", "mosaiks")


def run_demo(store, workdir: str, *, h3_res: int = 9, size_px: int = 1024, seed: int = 0,
             models=DEMO_MODELS, progress=None, log=print) -> dict:
    """Run the demo against ``store`` with its source under ``workdir``; returns a JSON-ready report."""
    from ..ingest.engine import ingest
    from ..ingest.plan import plan
    from ..ingest.synthetic import SceneSpec, ensure_scene
    from ..specs import BBox, TemporalSpec

    t0 = time.perf_counter()
    source = os.path.join(workdir, "source")
    spec = SceneSpec(size_px=size_px, seed=seed)
    manifest = ensure_scene(source, spec)
    west, south, east, north = manifest["bounds_lonlat"]
    # stay one cell away from the edges so every cell has imagery all around
    margin = 0.004
    region = BBox(west + margin, south + margin, east - margin, north - margin)
    window = TemporalSpec.year(spec.year)
    config = {"sources": {"s2-l2a": os.path.join(source, "scenes")}}
    log(f"source: {source} ({size_px} px, {len(manifest['dates'])} dates, seed {seed}), "
        f"{generated_note(manifest, t0)}")
    report = {"source": source, "store": store.uri, "h3_res": h3_res, "window": window.to_dict(), "runs": []}
    for model in models:
        the_plan = plan(region, h3_res, window, model)
        for attempt in ("first", "again"):
            summary = ingest(store, the_plan.requests, config, progress=progress)
            log(f"{model:<9} {attempt:<6} {summary.line()}")
            report["runs"].append({"model": model, "run": attempt, **summary.to_dict(max_failures=5)})
    report["seconds"] = round(time.perf_counter() - t0, 2)
    log(f"done in {report['seconds']:.1f} s; the store is at {store.uri} (try `rsembed-store --db {store.uri} stats`)")
    return report


def generated_note(manifest: dict, t0: float) -> str:
    return f"ready after {time.perf_counter() - t0:.1f} s"


@click.command()
@click.option("--workdir", default="./rsembed-demo", show_default=True,
              help="Where the synthetic source is generated (reused when present).")
@click.option("--h3-res", type=int, default=9, show_default=True, help="H3 resolution of the cells ingested.")
@click.option("--size-px", type=int, default=1024, show_default=True, help="Side of the synthetic scene in pixels.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic scene.")
@json_option
@click.pass_obj
def demo(obj, workdir, h3_res, size_px, seed, as_json):
    """Generate a synthetic scene, ingest it with the built-in featurisers, and show the cache at work."""
    log = (lambda *_: None) if as_json else click.echo
    report = run_demo(obj.store, workdir, h3_res=h3_res, size_px=size_px, seed=seed,
                      progress=False if as_json else None, log=log)
    if as_json:
        emit_json(report)
