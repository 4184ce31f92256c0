"""Section ``retrieval``: what a cache hit saves, and what look-ups cost on a big space.

Two parts:

1. **Hit vs recompute**, per built-in featuriser: a few requests over the
   synthetic scene are ingested into a fresh store; then ``store.get(Request)``
   on a hit (resolve, key, look up, decode: what a notebook pays) is timed
   against recomputing the same request from the imagery (the local provider's
   windowed COG reads and composite, then the featuriser: exactly what the
   engine runs on a miss, with the OS page cache already warm). The speed-up
   is the ratio of the two p50s. Each recomputed vector is checked against the
   stored one.
2. **Look-ups on the big space** (1M rows in the full run): ``store.get`` on a
   hit, ``lookup_many([key])``, and a batch ``lookup_many`` of 10,000 keys, half
   stored and half real requests that were never computed, in random order.
"""

from __future__ import annotations

import numpy as np

from rsembed_store import Store, TemporalSpec, resolve
from rsembed_store.ingest.engine import Engine, IngestSummary
from rsembed_store.ingest.plan import plan
from rsembed_store.specs import BBox

from .timing import latency, median, median_latency, time_calls, timed
from .workspace import Workspace, log


def scene_region(manifest: dict, margin: float = 0.004) -> BBox:
    """The scene's lon/lat bounds less a margin, so every planned cell lies inside the imagery."""
    w, s, e, n = manifest["bounds_lonlat"]
    return BBox(w + margin, s + margin, e - margin, n - margin)


def hit_vs_recompute(ws: Workspace, model: str) -> dict:
    cfg = ws.config
    scene = ws.scene()
    reqs = plan(model, scene_region(scene["manifest"]), cfg.h3_res, TemporalSpec.year(2023)).requests
    step = max(1, len(reqs) // cfg.recompute_requests)
    reqs = reqs[::step][: cfg.recompute_requests]
    store = Store.open(f"{ws.root}/retrieval-{model}")
    summary = store.ingest(reqs, config=scene["config"], progress=False)
    if summary.computed != len(reqs):
        raise RuntimeError(f"{model}: ingest of {len(reqs)} requests computed {summary.computed}: {summary.line()}")
    users = [r.to_request() for r in reqs]
    stored = {r.key: store.get(u) for r, u in zip(reqs, users)}
    samples = [users[i % len(users)] for i in range(cfg.get_samples)]
    hits = []
    for _ in range(cfg.runs):
        secs, got = time_calls(store.get, samples)
        if not all(e is not None and e.cached for e in got):
            raise RuntimeError(f"{model}: store.get missed a stored request")
        hits.append(latency(secs))
    engine = Engine(store, scene["config"], fetch_workers=1)

    def recompute(r):
        out = engine.compute([r], IngestSummary(requested=1))
        if len(out) != 1:
            raise RuntimeError(f"{model}: recomputing {r.key[:12]} failed")
        if not np.allclose(out[0].vector, stored[r.key].vector, atol=1e-5):
            raise RuntimeError(f"{model}: the recomputed vector of {r.key[:12]} differs from the stored one")
        return out[0]

    recomputes = [latency(time_calls(recompute, reqs)[0]) for _ in range(cfg.runs)]
    get_fig, re_fig = median_latency(hits), median_latency(recomputes)
    return {"requests": len(reqs), "store_get_hit": get_fig, "recompute": re_fig,
            "speedup_p50": round(re_fig["p50_ms"] / get_fig["p50_ms"], 1)}


def big_space_lookups(ws: Workspace) -> dict:
    """Look-ups on the big space: through the serving tier, and with it off (the Lance path)."""
    cfg = ws.config
    sp = ws.space(*cfg.big_space)
    out = {"rows": sp.rows, "dim": sp.dim}
    for name, store in (("serving", sp.store), ("lance", sp.lance)):
        out[name] = _lookups(ws, sp, store)
        log(f"retrieval on {sp.rows:,} rows ({name}): get p50 {out[name]['store_get_hit']['p50_ms']} ms, "
            f"lookup_many([key]) p50 {out[name]['lookup_many_1']['p50_ms']} ms, "
            f"batch of {out[name]['lookup_many_batch']['keys']:,} {out[name]['lookup_many_batch']['median_ms']} ms")
    return out


def _lookups(ws: Workspace, sp, store) -> dict:
    cfg = ws.config
    rng = np.random.default_rng(cfg.seed + 11)
    rows = rng.integers(0, sp.rows, size=cfg.get_samples)
    requests = [sp.data.request(int(i), sp.model) for i in rows]
    keys = [sp.keys[int(i)] for i in rows]
    out = {}
    gets, singles = [], []
    for _ in range(cfg.runs):
        secs, got = time_calls(store.get, requests)
        if [e.key if e else None for e in got] != keys:
            raise RuntimeError("store.get on the big space returned other rows than the ones asked for")
        gets.append(latency(secs))
        secs, _ = time_calls(lambda k: store.lookup_many([k], space=sp.space), keys)
        singles.append(latency(secs))
    out["store_get_hit"] = median_latency(gets)
    out["lookup_many_1"] = median_latency(singles)
    half = cfg.batch_keys // 2
    batch_s = []
    for run in range(cfg.runs):
        hit_rows = rng.choice(sp.rows, size=half, replace=False)
        misses = [resolve(sp.data.missing_request(int(i), sp.model)).key for i in rng.choice(sp.rows, half, False)]
        batch = [sp.keys[int(i)] for i in hit_rows] + misses
        batch = [batch[i] for i in rng.permutation(len(batch))]
        secs, got = timed(lambda: store.lookup_many(batch, space=sp.space))
        if sum(g is not None for g in got) != half:
            raise RuntimeError(f"batch look-up found {sum(g is not None for g in got)} of {half} stored keys")
        batch_s.append(secs)
    out["lookup_many_batch"] = {"keys": 2 * half, "hits": half, "median_ms": round(median(batch_s) * 1e3, 3),
                                "runs_ms": [round(s * 1e3, 3) for s in batch_s]}
    return out


def run(ws: Workspace) -> dict:
    out = {"featurisers": {}}
    for model in ws.config.featurisers:
        out["featurisers"][model] = fig = hit_vs_recompute(ws, model)
        log(f"retrieval {model}: get p50 {fig['store_get_hit']['p50_ms']} ms vs recompute p50 "
            f"{fig['recompute']['p50_ms']} ms ({fig['speedup_p50']}x)")
    out["big_space"] = big_space_lookups(ws)
    return out
