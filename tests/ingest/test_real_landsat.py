"""Real imagery end to end: the Landsat 7 (2001) and Landsat 8 (2013) scenes Debian ships.

The files come from Debian's ``r-cran-satellite`` package, fetched at test time with
``apt-get download`` + ``dpkg -x`` into ``~/.cache/rsembed-store/testdata`` (or
``$RSEMBED_TESTDATA``) by :func:`rsembed_store.realdata.debian_landsat`; they are never
committed. Where apt-get is absent these tests skip, saying so; anywhere else a failed
fetch fails them. Expected values are computed here straight from the files with
rasterio and the MTL coefficients, independently of the provider.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h3
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.warp import transform as warp_transform

from rsembed_store.ingest.providers.local import LocalProvider
from rsembed_store.ingest.providers.sensors import parse_mtl
from rsembed_store.keys import Request, ResolvedRequest, resolve
from rsembed_store.realdata import EXTDATA
from rsembed_store.demo_real import SENSOR
from rsembed_store.specs import H3Cell, OutputSpec, PointBuffer, SensorSpec, TemporalSpec

LE07 = "LE07_L1TP_195025_20010730_20170204_01_T1"
LC08 = "LC08_L1TP_195025_20130707_20170503_01_T1"
DATES = {2001: (LE07, {"red": 3, "nir": 4}), 2013: (LC08, {"red": 4, "nir": 5})}
CENTRE = (8.7715, 50.8027)  # lon, lat of the scenes' centre pixel


@pytest.fixture(scope="module")
def real_dir():
    if shutil.which("apt-get") is None:
        pytest.skip("the real Landsat scenes come from Debian's r-cran-satellite package: apt-get is absent here")
    from rsembed_store.realdata import debian_landsat

    return debian_landsat()


def direct(folder: Path, pid: str, band: int):
    """(TOA reflectance, transform, crs) of one band straight from the file and the MTL formula."""
    meta = parse_mtl((folder / f"{pid}_MTL.txt").read_text())
    sun = np.sin(np.radians(float(meta["SUN_ELEVATION"])))
    with rasterio.open(folder / f"{pid}_B{band}.TIF") as ds:
        dn = ds.read(1).astype(np.float64)
        toa = (dn * float(meta[f"REFLECTANCE_MULT_BAND_{band}"]) + float(meta[f"REFLECTANCE_ADD_BAND_{band}"])) / sun
        return toa, ds.transform, ds.crs


def fetch(folder, year, bands, *, scale_m, resampling, buffer_m=240):
    p = LocalProvider({"sources": {"landsat-l1": str(folder)}, "resampling": resampling})
    req = ResolvedRequest(model="x", revision="1", provider="local", spatial=PointBuffer(*CENTRE, buffer_m),
                          temporal=TemporalSpec.year(year),
                          sensor=SensorSpec("landsat-l1", tuple(bands), scale_m=scale_m),
                          output=OutputSpec.pooled(), input_prep=None)
    return p.fetch(req)


def test_catalogue_groups_the_shared_folder_by_product_id(real_dir):
    p = LocalProvider({"sources": {"landsat-l1": str(real_dir)}})
    scenes = p.scenes("landsat-l1")
    assert [(s.id, s.date.isoformat(), s.cloud_pct, s.sensor) for s in scenes] == [
        (LE07, "2001-07-30", 0.0, "Landsat 7 ETM+"), (LC08, "2013-07-07", 6.03, "Landsat 8/9 OLI/TIRS")]
    assert Path(scenes[0].bands["nir"].path).name == f"{LE07}_B4.TIF"
    assert Path(scenes[1].bands["nir"].path).name == f"{LC08}_B5.TIF"


@pytest.mark.parametrize("year", sorted(DATES))
def test_pixels_equal_a_direct_read_at_the_same_pixel_centres(real_dir, year):
    """Nearest at 15 m: each grid centre lies inside one file pixel, whose scaled DN it must carry.
    Bilinear at 30 m: the grid centres fall on file pixel corners, so each value is the mean of
    the four file pixels around it."""
    pid, numbers = DATES[year]
    px = fetch(real_dir, year, ["red", "nir"], scale_m=15, resampling="nearest")
    assert px.valid.all() and px.meta["scenes"] == [pid]
    t = Affine.from_gdal(*px.transform)
    h, w = px.array.shape[1:]
    gx, gy = t @ np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    for k, name in enumerate(["red", "nir"]):
        toa, ft, crs = direct(real_dir, pid, numbers[name])
        assert px.crs == crs.to_string()
        cols, rows = ~ft @ (gx, gy)
        expected = toa[np.floor(rows).astype(int), np.floor(cols).astype(int)]
        np.testing.assert_allclose(px.array[k], expected, rtol=1e-5)

    px = fetch(real_dir, year, ["red", "nir"], scale_m=30, resampling="bilinear")
    t = Affine.from_gdal(*px.transform)
    h, w = px.array.shape[1:]
    gx, gy = t @ np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    for k, name in enumerate(["red", "nir"]):
        toa, ft, _ = direct(real_dir, pid, numbers[name])
        cols, rows = ~ft @ (gx, gy)
        c, r = np.rint(cols).astype(int), np.rint(rows).astype(int)  # the corner shared by four pixels
        np.testing.assert_allclose(cols, c, atol=1e-6)
        four = (toa[r - 1, c - 1] + toa[r - 1, c] + toa[r, c - 1] + toa[r, c]) / 4.0
        np.testing.assert_allclose(px.array[k], four, rtol=1e-5)


@pytest.mark.parametrize("year", sorted(DATES))
def test_ndvi_from_provider_pixels_matches_the_files(real_dir, year):
    pid, numbers = DATES[year]
    px = fetch(real_dir, year, ["red", "nir"], scale_m=30, resampling="nearest", buffer_m=600)
    red, nir = px.array
    ndvi = (nir - red) / (nir + red)
    t = Affine.from_gdal(*px.transform)
    (gx, gy) = t @ (0.5 + np.arange(px.array.shape[2]), np.full(px.array.shape[2], 0.5))
    r_toa, ft, _ = direct(real_dir, pid, numbers["red"])
    n_toa, _, _ = direct(real_dir, pid, numbers["nir"])
    file_ndvi = (n_toa - r_toa) / (n_toa + r_toa)
    # the 30 m grid is offset by half a pixel from the files: nearest takes the pixel below-right
    col0, row0 = ~ft @ (t.c + 15.0, t.f - 15.0)
    window = file_ndvi[int(row0): int(row0) + ndvi.shape[0], int(col0): int(col0) + ndvi.shape[1]]
    assert window.shape == ndvi.shape
    np.testing.assert_allclose(ndvi, window, atol=1e-5)
    assert 0.3 < float(np.mean(ndvi)) < 0.7  # a summer scene of fields and woods


# ------------------------------------------------------------------ the store over both years


@pytest.fixture(scope="module")
def real_store(real_dir, tmp_path_factory):
    from rsembed_store import Store
    from rsembed_store.demo_real import run_real_demo

    store = Store.open(tmp_path_factory.mktemp("real") / "db")
    report = run_real_demo(store, real_dir, progress=False, log=lambda *_: None)
    return store, report


def file_ndvi_by_cell(folder: Path, year: int, res: int = 10):
    pid, numbers = DATES[year]
    red, t, crs = direct(folder, pid, numbers["red"])
    nir, _, _ = direct(folder, pid, numbers["nir"])
    ndvi = (nir - red) / (nir + red)
    rows, cols = np.mgrid[0:41, 0:41]
    xs, ys = t @ (cols.ravel() + 0.5, rows.ravel() + 0.5)
    lons, lats = warp_transform(crs, "EPSG:4326", list(xs), list(ys))
    out = {}
    for lon, lat, v in zip(lons, lats, ndvi.ravel()):
        out.setdefault(h3.latlng_to_cell(lat, lon, res), []).append(v)
    return {c: float(np.mean(v)) for c, v in out.items()}


def test_spectral_and_mosaiks_embed_both_dates(real_store):
    store, report = real_store
    for run in report["runs"]:
        assert run["failed"] == 0 and run["computed"] == 166, run
    for model, dim in (("spectral", 44), ("mosaiks", None)):
        rows = store.sql(f"SELECT year, count(*) AS n FROM {model} GROUP BY year ORDER BY year").to_pylist()
        assert rows == [{"year": 2001, "n": 83}, {"year": 2013, "n": 83}]
        vecs = store.sql(f"SELECT vector FROM {model}").column("vector").to_pylist()
        arr = np.asarray(vecs, dtype=np.float32)
        assert np.isfinite(arr).all() and (dim is None or arr.shape[1] == dim)


def test_search_from_a_vegetated_cell_returns_vegetated_cells(real_store, real_dir):
    store, report = real_store
    ndvi = file_ndvi_by_cell(real_dir, 2013)
    stored = set(store.sql("SELECT h3_to_string(cell) AS c FROM spectral").column("c").to_pylist())
    search = report["search"]
    assert search["query"] == max(stored, key=lambda c: ndvi[c])  # the most vegetated stored cell
    median = float(np.median([ndvi[c] for c in stored]))
    hits = [h["cell"] for h in search["hits"]]
    assert len(hits) == 5 and ndvi[search["query"]] > 0.7
    assert all(ndvi[c] > median + 0.1 for c in hits), ([ndvi[c] for c in hits], median)
    # the search ranks: every hit is nearer than the least vegetated cell
    far = min(stored, key=lambda c: ndvi[c])
    key = resolve(Request("spectral", H3Cell(search["query"]),
                          TemporalSpec.year(2013), sensor=SENSOR)).key
    everything = store.search("spectral", key, k=len(stored), temporal=TemporalSpec.year(2013)).to_dicts()
    rank = [h["cell"] for h in everything]
    assert max(rank.index(c) for c in hits) < rank.index(far)


def test_sql_over_both_years_finds_the_cells_that_changed_most(real_store, real_dir):
    store, report = real_store
    rows = report["change"]["rows"]
    # the SQL answer equals the same ranking computed here from the stored vectors
    table = store.sql("SELECT h3_to_string(cell) AS c, year, vector FROM spectral").to_pylist()
    by = {}
    for r in table:
        by.setdefault(r["c"], {})[r["year"]] = np.asarray(r["vector"], np.float64)
    dist = {c: float(np.linalg.norm(v[2001] - v[2013])) for c, v in by.items() if len(v) == 2}
    top = sorted(dist, key=lambda c: (-round(dist[c], 4), c))[:5]
    assert [r["cell"] for r in rows] == top
    np.testing.assert_allclose([r["change"] for r in rows], [dist[c] for c in top], atol=1e-3)
    # pinned: the cells of this place that changed most between the 2001 and 2013 scenes
    assert [r["cell"] for r in rows] == PINNED_CHANGE


def test_sql_reads_the_ndvi_change_out_of_the_embeddings_and_the_files_agree(real_store, real_dir):
    store, report = real_store
    rows = report["ndvi_change"]["rows"]
    before, after = file_ndvi_by_cell(real_dir, 2001), file_ndvi_by_cell(real_dir, 2013)
    stored = set(store.sql("SELECT h3_to_string(cell) AS c FROM spectral").column("c").to_pylist())
    delta = {c: after[c] - before[c] for c in stored}
    # the SQL over every cell ranks like the NDVI change computed straight from the files
    k = report["ndvi_change"]["query"].split("vector[")[1].split("]")[0]
    every = store.sql(f"SELECT h3_to_string(a.cell) AS c, b.vector[{k}] - a.vector[{k}] AS d FROM spectral a "
                      "JOIN spectral b ON a.cell = b.cell WHERE a.year = 2001 AND b.year = 2013").to_pylist()
    assert np.corrcoef([r["d"] for r in every], [delta[r["c"]] for r in every])[0, 1] > 0.8
    top_quartile = np.quantile([abs(v) for v in delta.values()], 0.75)
    assert all(abs(delta[r["cell"]]) >= top_quartile for r in rows), [(r["cell"], delta[r["cell"]]) for r in rows]
    assert all(r["ndvi_feature_change"] > 0 for r in rows)  # greener in 2013 (July, both years)
    # pinned: the cells whose NDVI rose most between the two scenes
    assert [r["cell"] for r in rows] == PINNED_NDVI_CHANGE


PINNED_NDVI_CHANGE = ["8a1fac18e70ffff", "8a1fac18e087fff", "8a1fac18e0d7fff", "8a1fac18e0effff", "8a1fac18e397fff"]
PINNED_CHANGE = ["8a1fac18e71ffff", "8a1fac18e70ffff", "8a1fac18e4c7fff", "8a1fac18e037fff", "8a1fac18e0dffff"]


def test_demo_real_cli_prints_what_it_found(real_dir, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]),
               RSEMBED_TESTDATA=str(Path(real_dir).parents[len(EXTDATA.parts)]))  # the same cache: no refetch
    out = subprocess.run([sys.executable, "-m", "rsembed_store", "--db", str(tmp_path / "db"), "demo", "--real",
                          "--json"], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["source"] == str(real_dir)
    assert report["search"]["query_ndvi"] > 0.7
    assert [r["cell"] for r in report["change"]["rows"]] == PINNED_CHANGE
    assert [r["cell"] for r in report["ndvi_change"]["rows"]] == PINNED_NDVI_CHANGE


# ------------------------------------------------------------------ the fetcher itself (no apt-get run)


def test_without_apt_the_fetcher_says_what_it_needs(tmp_path, monkeypatch):
    from rsembed_store import realdata

    monkeypatch.setattr(realdata.shutil, "which", lambda name: None)
    with pytest.raises(realdata.RealDataUnavailable, match="needs apt-get and dpkg"):
        realdata.debian_landsat(tmp_path)


def test_a_complete_cache_is_used_without_running_anything(tmp_path, monkeypatch):
    from rsembed_store import realdata

    folder = tmp_path / realdata.PACKAGE / realdata.EXTDATA
    folder.mkdir(parents=True)
    for pid in (LE07, LC08):
        for part in ("B4.TIF", "BQA.TIF", "MTL.txt"):
            (folder / f"{pid}_{part}").write_text("")
    monkeypatch.setattr(realdata, "_run", lambda *a, **k: pytest.fail("ran a command"))
    monkeypatch.setenv(realdata.ENV_CACHE, str(tmp_path))
    assert realdata.debian_landsat() == folder
