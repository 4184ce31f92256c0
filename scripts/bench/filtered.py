"""Section ``filtered``: search inside a time window and a region that keep about 5 % of the rows.

The filter is one year (2022) and a lon/lat box around the region's centre,
its size bisected so that year and box together keep ``filter_share`` of the
rows; a second variant uses a GeoJSON polygon (a diamond inside the box) for
the exact point-in-polygon path. The exact answer is brute force over just the
rows the filter keeps. Engines: the store (filters run inside Lance before the
vector search), exact numpy (the filter mask computed per query, then brute
force over the kept rows), DuckDB brute force with the same ``WHERE``, and FAISS
HNSW with an ID selector of the kept rows (FAISS has no metadata: the caller
must turn the filter into row ids; that step is timed too).
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from rsembed_store import BBox, TemporalSpec

from . import engines
from .data import REGION
from .search import brief, measure, split_queries
from .workspace import Workspace, log

FILTER_YEAR = 2022
FILTERED_EF_SEARCH = 128  # one fixed setting: HNSW with a selector needs a wide beam when few rows pass


def box_for_share(lon: np.ndarray, lat: np.ndarray, in_year: np.ndarray, share: float) -> BBox:
    """A square box around REGION's centre whose rows of FILTER_YEAR are ``share`` of all rows."""
    cx, cy = (REGION[0] + REGION[2]) / 2, (REGION[1] + REGION[3]) / 2
    lo, hi = 0.01, 5.0
    for _ in range(40):
        mid = (lo + hi) / 2
        kept = np.mean(in_year & (np.abs(lon - cx) <= mid) & (np.abs(lat - cy) <= mid))
        lo, hi = (mid, hi) if kept < share else (lo, mid)
    half = round(hi, 4)
    return BBox(cx - half, cy - half, cx + half, cy + half)


def diamond(box: BBox) -> Tuple[dict, float]:
    """A GeoJSON diamond with the box's centre, and its half-diagonal in degrees."""
    cx, cy = (box.minlon + box.maxlon) / 2, (box.minlat + box.maxlat) / 2
    r = 1.3 * (box.maxlon - box.minlon) / 2
    ring = [[cx - r, cy], [cx, cy - r], [cx + r, cy], [cx, cy + r], [cx - r, cy]]
    return {"type": "Polygon", "coordinates": [ring]}, r


def run(ws: Workspace) -> dict:
    cfg = ws.config
    sp = ws.space(*cfg.big_space)
    Q, _ = split_queries(sp, cfg)
    slow_q = Q[: cfg.slow_queries]
    lon, lat, year = sp.data.row_meta()
    in_year = year == FILTER_YEAR
    box = box_for_share(lon, lat, in_year, cfg.filter_share)
    in_box = (lon >= box.minlon) & (lon <= box.maxlon) & (lat >= box.minlat) & (lat <= box.maxlat)
    kept = np.nonzero(in_year & in_box)[0]
    poly, r = diamond(box)
    cx, cy = (box.minlon + box.maxlon) / 2, (box.minlat + box.maxlat) / 2
    kept_poly = np.nonzero(in_year & ((np.abs(lon - cx) + np.abs(lat - cy)) < r))[0]
    log(f"filtered {sp.rows:,} x {sp.dim}: year {FILTER_YEAR} + box keeps {len(kept):,}; polygon {len(kept_poly):,}")
    tr = engines.truth(sp.X, Q, kept)
    tr_poly = engines.truth(sp.X, Q, kept_poly)
    window = TemporalSpec.year(FILTER_YEAR)
    out = {"rows": sp.rows, "dim": sp.dim, "queries": len(Q), "slow_queries": len(slow_q), "year": FILTER_YEAR,
           "bbox": list(box.bounds()), "rows_kept": int(len(kept)), "share": round(len(kept) / sp.rows, 4),
           "polygon_rows_kept": int(len(kept_poly)), "polygon_share": round(len(kept_poly) / sp.rows, 4)}
    out["store_bbox"] = measure(engines.store_search(sp, temporal=window, within=box), Q, tr, cfg.runs)
    log(f"  store year + bbox (serving tier): {brief(out['store_bbox'])}")
    out["store_lance_bbox"] = measure(engines.store_search(sp, lance=True, temporal=window, within=box), Q, tr,
                                      cfg.runs)
    log(f"  store year + bbox (Lance path): {brief(out['store_lance_bbox'])}")
    out["store_polygon"] = measure(engines.store_search(sp, temporal=window, within=poly), Q, tr_poly, cfg.runs)
    log(f"  store year + polygon: {brief(out['store_polygon'])}")

    def numpy_filtered(q):
        mask = (year == FILTER_YEAR) & (lon >= box.minlon) & (lon <= box.maxlon) & (lat >= box.minlat) & (
            lat <= box.maxlat)
        return engines.exact_topk(sp.X, q, np.nonzero(mask)[0])

    out["numpy_exact"] = measure(numpy_filtered, Q, tr, cfg.runs)
    log(f"  numpy (mask + brute force): {brief(out['numpy_exact'])}")
    from rsembed_store.query.sql import SqlSession

    where = (f"year = {FILTER_YEAR} AND lon >= {box.minlon!r} AND lon <= {box.maxlon!r} "
             f"AND lat >= {box.minlat!r} AND lat <= {box.maxlat!r}")
    with SqlSession(sp.store) as session:
        out["duckdb_brute"] = measure(engines.duckdb_search(session, sp, where), slow_q, tr, cfg.runs)
    log(f"  duckdb: {brief(out['duckdb_brute'])}")
    out["faiss_hnsw"] = faiss_filtered(ws, sp, Q, tr, year, lon, lat, box)
    out["by_share"] = [at_share(ws, sp, Q, year, lon, lat, in_year, share) for share in cfg.filter_shares]
    return out


def at_share(ws, sp, Q, year, lon, lat, in_year, share: float) -> dict:
    """Year + box filters keeping ``share`` of the rows: the serving tier and FAISS with an ID selector."""
    cfg = ws.config
    box = box_for_share(lon, lat, in_year, share)
    kept = np.nonzero(in_year & (lon >= box.minlon) & (lon <= box.maxlon) & (lat >= box.minlat)
                      & (lat <= box.maxlat))[0]
    tr = engines.truth(sp.X, Q, kept)
    fig = {"share_asked": share, "rows_kept": int(len(kept)), "share": round(len(kept) / sp.rows, 5)}
    fig["store"] = measure(engines.store_search(sp, temporal=TemporalSpec.year(FILTER_YEAR), within=box), Q, tr,
                           cfg.runs)
    fig["faiss_hnsw"] = faiss_filtered(ws, sp, Q, tr, year, lon, lat, box)
    log(f"  {100 * fig['share']:.2f} % kept: store {brief(fig['store'])}; faiss {brief(fig['faiss_hnsw'])}")
    return fig


def faiss_filtered(ws, sp, Q, tr, year, lon, lat, box) -> dict:
    """FAISS HNSW searching only the kept ids (IDSelectorBatch); the filter -> ids step is in the timing."""
    faiss = engines.faiss_module()
    if faiss is None:
        return {"skipped": "faiss is not installed (pip install -e '.[bench]')"}
    index, build_s = ws.hnsw(sp)
    faiss.omp_set_num_threads(1)  # one query at a time on one thread, as in the search section
    ef = FILTERED_EF_SEARCH

    def run(q):
        mask = (year == FILTER_YEAR) & (lon >= box.minlon) & (lon <= box.maxlon) & (lat >= box.minlat) & (
            lat <= box.maxlat)
        sel = faiss.IDSelectorBatch(np.nonzero(mask)[0].astype("int64"))
        _, ids = index.search(q[None, :], engines.K, params=faiss.SearchParametersHNSW(efSearch=ef, sel=sel))
        return [int(i) for i in ids[0] if i >= 0]

    fig = measure(run, Q, tr, ws.config.runs)
    log(f"  faiss hnsw + id selector: {brief(fig)}")
    return {**fig, "build_s": round(build_s, 3), "setting": f"efSearch {ef}, IDSelectorBatch of the kept rows"}
