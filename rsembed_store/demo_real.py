"""``rsembed-store demo --real``: the whole loop on real Landsat scenes that Debian ships.

The scenes (see :mod:`rsembed_store.realdata`): one place near Marburg, Germany,
seen by Landsat 7 ETM+ on 2001-07-30 and by Landsat 8 OLI on 2013-07-07, 41 x 41 px
of 30 m. The demo

1. covers the scene with H3 cells (resolution 10, about 0.015 km2 each) and ingests
   both years with each built-in featuriser through the ``local`` provider's
   ``landsat-l1`` collection (bands named blue .. swir22 on both sensors, TOA
   reflectance from the MTL, BQA cloud mask);
2. searches from the most vegetated cell of 2013 (highest NDVI, computed straight
   from the files) and prints each hit's NDVI;
3. runs two SQL queries over both years: the cells whose ``spectral`` embedding
   changed most between 2001 and 2013, and the cells whose NDVI changed most, read
   from the embedding's ``NDVI_median`` feature; each beside the NDVI the files give.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Dict, Sequence

import h3
import numpy as np

from .specs import BBox, SensorSpec, TemporalSpec

COLLECTION = "landsat-l1"
YEARS = (2001, 2013)
H3_RES = 10
MODELS = ("spectral", "mosaiks")
SENSOR = SensorSpec(COLLECTION, ("blue", "green", "red", "nir", "swir16", "swir22"), scale_m=30, cloudy_pct=30)

CHANGE_SQL = """
SELECT h3_to_string(a.cell) AS cell,
       round(array_distance(a.vector, b.vector), 4) AS change
FROM spectral a JOIN spectral b ON a.cell = b.cell
WHERE a.year = 2001 AND b.year = 2013
ORDER BY change DESC, cell
LIMIT 5
"""



def ndvi_change_sql(limit: int = 5) -> str:
    """The cells whose NDVI changed most from 2001 to 2013, read from the ``spectral`` vectors:
    the ``NDVI_median`` feature (standardised, so its difference ranks like the NDVI change)."""
    from .ingest.models.spectral import feature_names

    k = feature_names().index("NDVI_median") + 1  # DuckDB arrays are 1-based
    return f"""
SELECT h3_to_string(a.cell) AS cell,
       round(b.vector[{k}] - a.vector[{k}], 4) AS ndvi_feature_change
FROM spectral a JOIN spectral b ON a.cell = b.cell
WHERE a.year = 2001 AND b.year = 2013
ORDER BY abs(b.vector[{k}] - a.vector[{k}]) DESC, cell
LIMIT {int(limit)}
"""


def scene_region(folder, margin_m: float = 90.0) -> BBox:
    """The scene's footprint in lon/lat, ``margin_m`` inside its edges."""
    import rasterio
    from rasterio.warp import transform_bounds

    from .realdata import LC08

    with rasterio.open(Path(folder) / f"{LC08}_B4.TIF") as ds:
        left, bottom, right, top = ds.bounds
        box = transform_bounds(ds.crs, "EPSG:4326", left + margin_m, bottom + margin_m, right - margin_m,
                               top - margin_m)
    return BBox(*box)


def toa_reflectance(folder, product_id: str, band: int) -> tuple:
    """``(array, transform, crs)``: TOA reflectance of one band, straight from the file and its MTL."""
    import rasterio

    from .ingest.providers.sensors import parse_mtl

    meta = parse_mtl((Path(folder) / f"{product_id}_MTL.txt").read_text())
    sun = np.sin(np.radians(float(meta["SUN_ELEVATION"])))
    with rasterio.open(Path(folder) / f"{product_id}_B{band}.TIF") as ds:
        dn = ds.read(1).astype(np.float64)
        out = (dn * float(meta[f"REFLECTANCE_MULT_BAND_{band}"]) + float(meta[f"REFLECTANCE_ADD_BAND_{band}"])) / sun
        return out, ds.transform, ds.crs


def cell_ndvi(folder, h3_res: int = H3_RES) -> Dict[int, Dict[str, float]]:
    """Year -> {cell: mean NDVI of the file pixels whose centres fall in the cell}."""
    from rasterio.warp import transform

    from .realdata import LC08, LE07

    out: Dict[int, Dict[str, float]] = {}
    for year, pid, red_b, nir_b in ((2001, LE07, 3, 4), (2013, LC08, 4, 5)):
        red, t, crs = toa_reflectance(folder, pid, red_b)
        nir, _, _ = toa_reflectance(folder, pid, nir_b)
        ndvi = (nir - red) / (nir + red)
        rows, cols = np.mgrid[0:ndvi.shape[0], 0:ndvi.shape[1]]
        xs, ys = t @ (cols.ravel() + 0.5, rows.ravel() + 0.5)
        lons, lats = transform(crs, "EPSG:4326", list(xs), list(ys))
        sums: Dict[str, list] = {}
        for lon, lat, v in zip(lons, lats, ndvi.ravel()):
            sums.setdefault(h3.latlng_to_cell(lat, lon, h3_res), []).append(v)
        out[year] = {c: float(np.mean(v)) for c, v in sums.items()}
    return out


def run_real_demo(store, folder=None, *, h3_res: int = H3_RES, models: Sequence[str] = MODELS, k: int = 5,
                  progress=None, log: Callable[[str], None] = print) -> dict:
    """Ingest, search and query the real scenes; returns a JSON-ready report."""
    from .ingest.engine import ingest
    from .ingest.plan import plan
    from .keys import Request, resolve
    from .realdata import debian_landsat
    from .specs import H3Cell

    t0 = time.perf_counter()
    folder = Path(folder) if folder is not None else debian_landsat()
    config = {"sources": {COLLECTION: str(folder)}}
    region = scene_region(folder)
    windows = [TemporalSpec.year(y) for y in YEARS]
    log(f"source  {folder}: Landsat 7 ETM+ 2001-07-30 and Landsat 8 OLI 2013-07-07 (Debian r-cran-satellite)")
    report: dict = {"source": str(folder), "store": store.uri, "h3_res": h3_res, "runs": [], "search": None,
                    "change": None}
    cells = []
    for model in models:
        p = plan(model, region, h3_res, windows, sensor=SENSOR)
        cells = p.cells
        summary = ingest(store, p.requests, config, progress=progress)
        log(f"ingest  {model:<9} {len(p.cells)} cells x {len(windows)} years: {summary.line()}")
        report["runs"].append({"model": model, **summary.to_dict(max_failures=5)})

    ndvi = cell_ndvi(folder, h3_res)
    latest = ndvi[YEARS[-1]]
    query = max((c for c in cells if c in latest), key=lambda c: latest[c])
    window = windows[-1]
    key = resolve(Request("spectral", H3Cell(query), window, sensor=SENSOR)).key
    hits = store.search("spectral", key, k=k + 1, temporal=window).to_dicts()
    hits = [h for h in hits if h["cell"] != query][:k]
    median = float(np.median([latest[c] for c in cells if c in latest]))
    log(f"search  from the most vegetated cell of {YEARS[-1]}, {query} (NDVI {latest[query]:.2f}; "
        f"median of all cells {median:.2f}); its {k} nearest by spectral:")
    for h in hits:
        log(f"        {h['cell']}  distance {h['distance']:.3f}  NDVI {latest.get(h['cell'], float('nan')):.2f}")
    report["search"] = {"query": query, "query_ndvi": latest[query], "median_ndvi": median,
                        "hits": [{"cell": h["cell"], "distance": h["distance"], "ndvi": latest.get(h["cell"])}
                                 for h in hits]}

    rows = store.sql(CHANGE_SQL).to_pylist()
    for row in rows:
        row["ndvi_2001"] = ndvi[2001].get(row["cell"])
        row["ndvi_2013"] = ndvi[2013].get(row["cell"])
    report["change"] = {"query": " ".join(CHANGE_SQL.split()), "rows": rows}
    log("sql     the cells whose spectral embedding changed most from 2001 to 2013:")
    for row in rows:
        log(f"        {row['cell']}  change {row['change']:.3f}  NDVI {row['ndvi_2001']:.2f} -> {row['ndvi_2013']:.2f}")
    query = ndvi_change_sql()
    rows = store.sql(query).to_pylist()
    for row in rows:
        row["ndvi_2001"] = ndvi[2001].get(row["cell"])
        row["ndvi_2013"] = ndvi[2013].get(row["cell"])
    report["ndvi_change"] = {"query": " ".join(query.split()), "rows": rows}
    log("sql     the cells whose NDVI changed most, from the spectral vectors' NDVI_median feature "
        "(NDVI from the files beside it):")
    for row in rows:
        log(f"        {row['cell']}  feature change {row['ndvi_feature_change']:+.3f}  "
            f"NDVI {row['ndvi_2001']:.2f} -> {row['ndvi_2013']:.2f}")
    report["seconds"] = round(time.perf_counter() - t0, 2)
    log(f"done in {report['seconds']:.1f} s; the store is at {store.uri}")
    return report


__all__ = ["CHANGE_SQL", "SENSOR", "cell_ndvi", "ndvi_change_sql", "run_real_demo", "scene_region", "toa_reflectance"]
