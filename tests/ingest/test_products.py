"""Precomputed products (gse, tessera, copernicus) on small synthetic files in the real layouts.

Expected values are computed by hand here: de-quantisation formulas written out,
the source pixel under a coordinate found with the file's own geotransform, the
hexagon's pixels found with h3 itself.
"""

from __future__ import annotations

import sys
import types

import h3
import numpy as np
import pytest
from rasterio.warp import transform as warp

from rsembed_store import BBox, H3Cell, OutputSpec, PointBuffer, Request, TemporalSpec, resolve
from rsembed_store.embedding import GRID_CODECS
from rsembed_store.errors import MissingExtraError, NoImageryError, ProviderError, SpecError
from rsembed_store.testing import products as syn
from rsembed_store.ingest.engine import Engine
from rsembed_store.ingest.models import gse as gse_mod
from rsembed_store.ingest.models import products
from rsembed_store.ingest.models.copernicus import CopernicusModel
from rsembed_store.ingest.models.gse import GseModel, GseUnitModel
from rsembed_store.ingest.models.tessera import TesseraModel
from rsembed_store.ingest.plan import plan
from rsembed_store.ingest.grid import target_grid

Y = TemporalSpec.year


def lonlat(crs, x, y):
    lon, lat = warp(crs, "EPSG:4326", np.atleast_1d(x).astype(float), np.atleast_1d(y).astype(float))
    return np.asarray(lon), np.asarray(lat)


def xy(crs, lon, lat):
    x, y = warp("EPSG:4326", crs, np.atleast_1d(lon).astype(float), np.atleast_1d(lat).astype(float))
    return np.asarray(x), np.asarray(y)


def at(t, cols, rows):
    """The map coordinates of (fractional) pixel positions under the affine ``t``."""
    cols, rows = np.asarray(cols, float), np.asarray(rows, float)
    return t.a * cols + t.b * rows + t.c, t.d * cols + t.e * rows + t.f


def hand_dequantise(q):
    v = np.asarray(q, np.float64)
    return np.where(v == -128, np.nan, np.sign(v) * (v / 127.5) ** 2)


def req(model, spatial, year=2022, output=None, **kw):
    return resolve(Request(model, spatial, Y(year) if isinstance(year, int) else year, output=output, **kw))


# ====================================================================== gse


@pytest.fixture(scope="module")
def gse(tmp_path_factory):
    root = tmp_path_factory.mktemp("gse")
    a = syn.make_gse_file(root, 2022, "32N", 500000, 5100000, (256, 256), seed=1, nodata_boxes=[(200, 210, 20, 40)])
    b = syn.make_gse_file(root, 2022, "32N", 502560, 5100000, (256, 256), seed=2, bottom_up=True)
    # two zones meeting at 6 E (lat 45): each file reaches ~0.01 degree past the boundary
    x32, _ = xy("EPSG:32632", 5.99, 45.0)
    _, y32 = xy("EPSG:32632", 6.0, 45.008)
    x31, _ = xy("EPSG:32631", 5.994, 45.0)
    _, y31 = xy("EPSG:32631", 6.0, 45.008)
    snap = lambda v, up=False: (np.ceil if up else np.floor)(v[0] / 20) * 20  # noqa: E731
    z32 = syn.make_gse_file(root, 2022, "32N", snap(x32), snap(y32, True), (128, 128), seed=3)
    z31 = syn.make_gse_file(root, 2022, "31N", snap(x31), snap(y31, True), (128, 128), seed=4, bottom_up=True)
    return {"root": root, "a": a, "b": b, "z32": z32, "z31": z31,
            "config": {"products": {"gse": {"root": str(root)}}}}


def test_gse_dequantisation_of_known_values_and_codec():
    q = np.array([[-128, -127, -64, -1, 0, 1, 64, 127]], np.int8)
    expected = [np.nan, -(127 / 127.5) ** 2, -(64 / 127.5) ** 2, -(1 / 127.5) ** 2, 0.0, (1 / 127.5) ** 2,
                (64 / 127.5) ** 2, (127 / 127.5) ** 2]
    np.testing.assert_allclose(gse_mod.dequantise(q)[0], expected, rtol=1e-6)
    np.testing.assert_allclose(GRID_CODECS["gse_int8"](q)[0], expected, rtol=1e-6)
    x = np.array([-0.99, -0.25, 0.0, 0.003, 0.5, np.nan])
    np.testing.assert_array_equal(gse_mod.quantise(x), syn.gse_encode(x))
    assert gse_mod.quantise(np.array([0.25]))[0] == round(0.5 * 127.5)  # sqrt(0.25) * 127.5 = 63.75 -> 64


@pytest.mark.parametrize("which", ["a", "b"])  # a: top-down COG, b: bottom-up file
def test_gse_returns_the_pixel_under_a_known_coordinate(gse, which):
    path, q, t = gse[which]
    r, c = 100, 37
    lon, lat = lonlat("EPSG:32632", *at(t, c + 0.5, r + 0.5))
    emb = GseModel(gse["config"]).read(req("gse", PointBuffer(lon[0], lat[0], 4)))
    np.testing.assert_allclose(emb.vector, hand_dequantise(q[:, r, c]), rtol=1e-6)
    assert emb.meta["files"] == [path.relative_to(gse["root"]).as_posix()] and emb.meta["pooled_px"] == 1


def test_gse_bottom_up_file_is_really_stored_bottom_up_with_overviews(gse):
    import rasterio

    with rasterio.open(gse["b"][0]) as ds:
        assert ds.transform.e > 0 and ds.overviews(1)[:2] == [2, 4] and ds.nodata == -128
        np.testing.assert_array_equal(ds.read(1, window=((0, 1), (0, 5)))[0], gse["b"][1][0, -1, :5])
    assert gse["b"][0].with_suffix(".vrt").is_file()  # the mirror's sidecar, ignored by the catalogue


def test_gse_h3_pooling_uses_exactly_the_pixels_inside_the_hexagon(gse):
    path, q, t = gse["a"]
    lon, lat = lonlat("EPSG:32632", 501200, 5098800)
    cell = h3.latlng_to_cell(lat[0], lon[0], 9)
    rows, cols = np.mgrid[60:190, 60:190]
    plon, plat = lonlat("EPSG:32632", *at(t, cols.ravel() + 0.5, rows.ravel() + 0.5))
    inside = np.array([h3.latlng_to_cell(b, a, 9) == cell for a, b in zip(plon, plat)])
    vals = hand_dequantise(q[:, rows.ravel()[inside], cols.ravel()[inside]])
    model = GseModel(gse["config"])
    emb = model.read(req("gse", H3Cell(cell)))
    assert emb.meta["pooled_px"] == inside.sum() == emb.meta["roi_px"]
    np.testing.assert_allclose(emb.vector, vals.mean(axis=1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(model.read(req("gse", H3Cell(cell), output=OutputSpec.pooled("max"))).vector,
                               vals.max(axis=1), rtol=1e-6)
    square = model.read(req("gse", BBox(*H3Cell(cell).bounds())))
    assert not np.allclose(square.vector, emb.vector)  # the corners outside the hexagon do count there
    grid = model.read(req("gse", H3Cell(cell), output=OutputSpec.grid()))
    assert grid.grid.dtype == np.int8 and grid.grid_codec == "gse_int8"
    assert (grid.grid[0] != -128).sum() == inside.sum()  # outside the hexagon: no data
    np.testing.assert_allclose(grid.vector, emb.vector, rtol=1e-5, atol=1e-7)


def test_gse_nodata_pixels_are_left_out_and_all_nodata_is_an_error(gse):
    path, q, t = gse["a"]
    lon, lat = lonlat("EPSG:32632", *at(t, 40, 205))  # the corner of pixel (205, 40): a 20 x 20 px square
    emb = GseModel(gse["config"]).read(req("gse", PointBuffer(lon[0], lat[0], 100)))
    window = hand_dequantise(q[:, 195:215, 30:50].reshape(64, -1))
    ok = np.isfinite(window).all(axis=0)
    assert 0 < (~ok).sum() < ok.size and emb.meta["pooled_px"] == ok.sum()
    np.testing.assert_allclose(emb.vector, window[:, ok].mean(axis=1), rtol=1e-5, atol=1e-7)
    assert emb.meta["nodata_fraction"] == pytest.approx((~ok).sum() / ok.size)
    lon, lat = lonlat("EPSG:32632", *at(t, 30, 205))
    with pytest.raises(NoImageryError, match="no data"):
        GseModel(gse["config"]).read(req("gse", PointBuffer(lon[0], lat[0], 20)))


def test_gse_grid_across_two_files_is_the_north_up_mosaic(gse, store):
    (_, qa, _), (_, qb, _) = gse["a"][:3], gse["b"][:3]
    truth = np.concatenate([qa, qb], axis=2)  # both north-up, side by side
    w, s = lonlat("EPSG:32632", 502300, 5099000)
    e, n = lonlat("EPSG:32632", 502800, 5099400)
    r = req("gse", BBox(w[0], s[0], e[0], n[0]), output=OutputSpec.grid())
    emb = GseModel(gse["config"]).read(r)
    g = target_grid(r.spatial, 10)
    r0, c0 = int(round((5100000 - g.transform.f) / 10)), int(round((g.transform.c - 500000) / 10))
    np.testing.assert_array_equal(emb.grid, truth[:, r0:r0 + g.height, c0:c0 + g.width])
    assert len(emb.meta["files"]) == 2 and emb.grid.shape == (64, g.height, g.width)
    store.put_many([emb])  # stored losslessly as int8 and decoded through the codec
    back = store.lookup([r])[0]
    assert back.grid.dtype == np.int8 and back.grid_codec == "gse_int8"
    np.testing.assert_array_equal(back.grid, emb.grid)
    np.testing.assert_allclose(back.grid_f32(), hand_dequantise(emb.grid), rtol=1e-6)


@pytest.mark.parametrize("scale, levels", [(20, 1), (40, 2)])
def test_gse_coarse_grids_read_the_overview_levels(gse, scale, levels):
    _, q, t = gse["a"]
    ovr = q
    for _ in range(levels):
        ovr = syn.gse_overview(ovr)
    lon, lat = lonlat("EPSG:32632", 501000, 5099000)
    r = req("gse", PointBuffer(lon[0], lat[0], 3 * scale), output=OutputSpec.grid(scale))
    emb = GseModel(gse["config"]).read(r)
    g = target_grid(r.spatial, scale)
    r0, c0 = int(round((5100000 - g.transform.f) / scale)), int(round((g.transform.c - 500000) / scale))
    np.testing.assert_array_equal(emb.grid, ovr[:, r0:r0 + g.height, c0:c0 + g.width])
    assert emb.meta["overview_level"] == levels and emb.meta["res_m"] == scale


def test_gse_large_pooled_requests_use_an_overview(gse, monkeypatch):
    monkeypatch.setattr(gse_mod, "MAX_POOL_PIXELS", 400)
    lon, lat = lonlat("EPSG:32632", 501000, 5099000)
    emb = GseModel(gse["config"]).read(req("gse", PointBuffer(lon[0], lat[0], 300)))  # 60 x 60 px at 10 m
    assert emb.meta["res_m"] == 40.0 and emb.meta["overview_level"] == 2 and emb.meta["pooled_px"] <= 400


def test_gse_mosaic_across_two_utm_zones_has_no_seam(gse):
    (_, q32, t32), (_, q31, t31) = gse["z32"][:3], gse["z31"][:3]
    r = req("gse", BBox(5.996, 45.0, 6.004, 45.004), output=OutputSpec.grid())
    emb = GseModel(gse["config"]).read(r)
    g = target_grid(r.spatial, 10)
    assert g.crs == "EPSG:32632" and sorted(f.split("/")[1] for f in emb.meta["files"]) == ["31N", "32N"]
    cols, rows = np.meshgrid(np.arange(g.width) + 0.5, np.arange(g.height) + 0.5)
    gx, gy = at(g.transform, cols.ravel(), rows.ravel())
    lon, _ = lonlat(g.crs, gx, gy)
    expected = np.empty((64, gx.size), np.int8)
    for crs, q, t, sel in (("EPSG:32631", q31, t31, lon < 6.0), ("EPSG:32632", q32, t32, lon >= 6.0)):
        x, y = warp(g.crs, crs, gx[sel], gy[sel]) if crs != g.crs else (gx[sel], gy[sel])
        c, rr = at(~t, x, y)
        expected[:, sel] = q[:, np.floor(rr).astype(int), np.floor(c).astype(int)]
    assert (lon < 6.0).any() and (lon >= 6.0).any()
    np.testing.assert_array_equal(emb.grid.reshape(64, -1), expected)


def test_gse_keys_years_variants_and_configuration(gse, monkeypatch):
    pb = PointBuffer(9.0, 46.0, 50)
    assert req("gse", pb, TemporalSpec.range("2022-03-01", "2022-07-01")).key == req("gse", pb, 2022).key
    with pytest.raises(SpecError, match="2016"):
        req("gse", pb, 2016)
    assert req("gse", pb, provider="gee").key != req("gse", pb).key
    native = req("gse", pb, output=OutputSpec.grid(grid_orientation="native"))
    assert native.key == req("gse", pb, output=OutputSpec.grid()).key  # product grids are north-up anyway
    with pytest.raises(SpecError, match="grid"):
        req("gse-unit", pb, output=OutputSpec.grid())
    with pytest.raises(ProviderError, match="never"):
        GseModel({"products": {"gse": {"root": str(gse["root"]), "version": "v2"}}})
    monkeypatch.delenv("RSEMBED_GSE_ROOT", raising=False)
    with pytest.raises(ProviderError, match="RSEMBED_GSE_ROOT"):
        GseModel({}).read(req("gse", pb))
    with pytest.raises(ProviderError, match="index"):
        GseModel({"products": {"gse": {"root": "s3://bucket/satellite_embedding/v1/annual"}}}).read(req("gse", pb))
    with pytest.raises(NoImageryError, match="2019"):
        GseModel(gse["config"]).read(req("gse", pb, 2019))
    huge = PointBuffer(9.0, 46.0, 400_000)  # refused before a 80,000 px square grid is allocated
    with pytest.raises(SpecError, match="coarser scale_m"):
        GseModel(gse["config"]).read(req("gse", huge, output=OutputSpec.grid()))
    with pytest.raises(SpecError, match="coarser scale_m"):
        TesseraModel({}).read(req("tessera", huge, 2023))
    path, q, t = gse["a"]
    lon, lat = lonlat("EPSG:32632", 501000, 5099000)
    monkeypatch.setenv("RSEMBED_GSE_ROOT", str(gse["root"]))
    unit = GseUnitModel({}).read(req("gse-unit", PointBuffer(lon[0], lat[0], 200)))
    plain = GseModel({}).read(req("gse", PointBuffer(lon[0], lat[0], 200)))
    assert unit.request.space != plain.request.space and np.linalg.norm(unit.vector) == pytest.approx(1, abs=1e-6)
    np.testing.assert_allclose(unit.vector, plain.vector / np.linalg.norm(plain.vector), rtol=1e-5)


def test_gse_catalogue_from_an_index(gse, tmp_path):
    import pyarrow as pa
    import pyarrow.csv as pcsv

    path, q, t = gse["a"]
    rel = path.relative_to(gse["root"]).as_posix()
    pcsv.write_csv(pa.table({"path": [rel], "year": [2022]}), tmp_path / "index.csv")
    model = GseModel({"products": {"gse": {"root": str(gse["root"]), "index": str(tmp_path / "index.csv")}}})
    lon, lat = lonlat("EPSG:32632", *at(t, 10.5, 10.5))
    np.testing.assert_allclose(model.read(req("gse", PointBuffer(lon[0], lat[0], 4))).vector,
                               hand_dequantise(q[:, 10, 10]), rtol=1e-6)


def test_gse_ingest_through_the_engine_opens_each_file_once_per_batch(gse, store):
    path, q, t = gse["a"]
    w, s = lonlat("EPSG:32632", 500300, 5097800)
    e, n = lonlat("EPSG:32632", 502300, 5099700)
    p = plan("gse", BBox(w[0], s[0], e[0], n[0]), 9, Y(2022))
    assert len(p.requests) > 10
    before = dict(products.OPEN_COUNTS)
    summary = Engine(store, gse["config"], batch_size=1000).run(p.requests, progress=False)
    assert summary.failed == 0 and summary.computed == len(p.requests)
    opened = {k: v - before.get(k, 0) for k, v in products.OPEN_COUNTS.items() if v != before.get(k, 0)}
    # at most twice: a first small chunk measures the cost per request (the engine sizes its
    # chunks to write every flush_seconds), then the rest of the batch is read in one go
    assert opened and max(opened.values()) <= 2 and len(opened) <= 2
    assert store.count(p.requests[0].space) == len(p.requests)
    again = Engine(store, gse["config"]).run(p.requests, progress=False)
    assert again.cached == len(p.requests)


def test_gse_earth_engine_source(gse, monkeypatch):
    calls = []
    fake = types.ModuleType("rsembed_store.ingest.providers.gee")

    class Provider:
        def __init__(self, cfg):
            self.cfg = cfg

    def fetch_image_array(image, grid, bands, *, year, composite, resampling, provider):
        calls.append((image, tuple(bands), year, grid.crs, provider.cfg))
        arr = np.full((64, grid.height, grid.width), 0.125, np.float32)
        valid = np.ones((grid.height, grid.width), bool)
        valid[0, 0] = False
        return arr, {"valid": valid, "ee_calls": 1, "tiles": 1, "n_images": 1}

    fake.EarthEngineProvider, fake.fetch_image_array = Provider, fetch_image_array
    monkeypatch.setitem(sys.modules, "rsembed_store.ingest.providers.gee", fake)
    model = GseModel({**gse["config"], "providers": {"gee": {"project": "p"}}})
    r = req("gse", PointBuffer(9.0, 46.0, 50), 2021, provider="gee")
    emb = model.read(r)
    assert calls == [("GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL", gse_mod.BANDS, 2021, "EPSG:32632", {"project": "p"})]
    np.testing.assert_allclose(emb.vector, 0.125)
    assert emb.meta["source"] == "gee" and emb.meta["ee_calls"] == 1
    grid = model.read(req("gse", PointBuffer(9.0, 46.0, 50), 2021, provider="gee", output=OutputSpec.grid()))
    assert grid.grid.dtype == np.int8 and grid.grid[0, 0, 0] == -128
    np.testing.assert_allclose(grid.grid_f32()[:, 1, 1], hand_dequantise(gse_mod.quantise(np.array([0.125])))[0])
    monkeypatch.setitem(sys.modules, "rsembed_store.ingest.providers.gee", None)  # the gated path
    with pytest.raises(MissingExtraError, match="gee"):
        GseModel(gse["config"]).read(r)


def test_gse_earth_engine_source_through_the_real_provider(monkeypatch, store):
    """The gee source end to end: the real gee provider, a fake ``ee`` client (tests/fake_ee.py)."""
    from fake_ee import FakeEE, Scene, find

    from rsembed_store.ingest.providers import gee

    for name in ("EE_PROJECT", "GOOGLE_CLOUD_PROJECT", "EE_SERVICE_ACCOUNT_KEY", "EE_SERVICE_ACCOUNT"):
        monkeypatch.delenv(name, raising=False)
    gee.reset_initialization()
    values = {b: (0.1 if i % 2 else -0.2) for i, b in enumerate(gse_mod.BANDS)}
    fake = FakeEE({gse_mod.COLLECTION: [Scene("y2022", "2022-01-01", values,
                                              valid=lambda x, y: np.mod(x, 100.0) > 20)]})
    monkeypatch.setattr(gee, "EE_MODULE", fake)
    try:
        config = {"providers": {"gee": {"project": "my-project"}}}
        r = req("gse", PointBuffer(11.0, 46.0, 100), 2022, provider="gee")
        summary = Engine(store, config).run([r], progress=False)
        assert summary.computed == 1, summary.failures
        got = store.lookup([r])[0]
        np.testing.assert_allclose(got.vector, [values[b] for b in gse_mod.BANDS], rtol=1e-6)
        assert got.meta["source"] == "gee"
        assert find(fake.last["tree"], "filterDate")[0][2:] == ("2022-01-01", "2023-01-01")
    finally:
        gee.reset_initialization()


# ====================================================================== tessera


@pytest.fixture(scope="module")
def tessera(tmp_path_factory):
    root = tmp_path_factory.mktemp("tessera")
    a = syn.make_tessera_tile(root, 2023, 5.95, 45.05, seed=1)  # UTM 31N
    b = syn.make_tessera_tile(root, 2023, 6.05, 45.05, seed=2, per_band_scales=True, nested=False)  # 32N
    qa, sa = a[0], a[1].copy()
    sa[400:404, 200:210] = 0.0  # no data
    np.save(root / syn.EMBEDDINGS_DIR / "2023" / "grid_5.95_45.05" / "grid_5.95_45.05_scales.npy", sa)
    return {"root": root, "a": (qa, sa) + a[2:], "b": b, "config": {"products": {"tessera": {"root": str(root)}}}}


def test_tessera_dequantises_as_values_times_scales():
    from rsembed_store.ingest.models.tessera import dequantise

    q = np.array([[[10, -20, 127]]], np.int8)
    np.testing.assert_allclose(dequantise(q, np.array([[0.5]], np.float32))[:, 0, 0], [5.0, -10.0, 63.5])
    np.testing.assert_allclose(dequantise(q, np.array([[[0.5, 1.0, 2.0]]], np.float32))[:, 0, 0], [5, -20, 254])
    assert np.isnan(dequantise(q, np.array([[0.0]], np.float32))).all()


@pytest.mark.parametrize("which", ["a", "b"])
def test_tessera_returns_the_pixel_under_a_known_coordinate(tessera, which):
    q, scales, crs, t = tessera[which]
    r, c = 500, 411
    lon, lat = lonlat(crs, *at(t, c + 0.5, r + 0.5))
    emb = TesseraModel(tessera["config"]).read(req("tessera", PointBuffer(lon[0], lat[0], 4), 2023))
    s = scales[r, c] if scales.ndim == 3 else scales[r, c, None]
    np.testing.assert_allclose(emb.vector, q[r, c].astype(np.float64) * s, rtol=1e-6)


def test_tessera_mosaic_across_utm_zones_has_no_seam(tessera):
    (qa, sa, ca, ta), (qb, sb, cb, tb) = tessera["a"], tessera["b"]
    r = req("tessera", BBox(5.995, 45.04, 6.005, 45.046), 2023, output=OutputSpec.grid())
    emb = TesseraModel(tessera["config"]).read(r)
    g = target_grid(r.spatial, 10)
    assert not np.isnan(emb.grid).any() and sorted(emb.meta["tiles"]) == ["grid_5.95_45.05", "grid_6.05_45.05"]
    cols, rows = np.meshgrid(np.arange(g.width) + 0.5, np.arange(g.height) + 0.5)
    gx, gy = at(g.transform, cols.ravel(), rows.ravel())
    lon, _ = lonlat(g.crs, gx, gy)
    expected = np.empty((128, gx.size))
    for q, s, crs, t, sel in ((qa, sa, ca, ta, lon < 6.0), (qb, sb, cb, tb, lon >= 6.0)):
        x, y = warp(g.crs, crs, gx[sel], gy[sel]) if crs != g.crs else (gx[sel], gy[sel])
        c, rr = at(~t, x, y)
        rr, c = np.floor(rr).astype(int), np.floor(c).astype(int)
        scale = s[rr, c] if s.ndim == 3 else s[rr, c][:, None]
        expected[:, sel] = (q[rr, c].astype(np.float64) * scale).T
    np.testing.assert_allclose(emb.grid.reshape(128, -1), expected, rtol=1e-6)
    coarse = TesseraModel(tessera["config"]).read(req("tessera", r.spatial, 2023, output=OutputSpec.grid(30)))
    g30 = target_grid(r.spatial, 30)
    assert coarse.grid.shape == (128, g30.height, g30.width) and not np.isnan(coarse.grid).any()


def test_tessera_nodata_versions_and_the_library_path(tessera, monkeypatch):
    qa, sa, ca, ta = tessera["a"]
    lon, lat = lonlat(ca, *at(ta, 205, 402))
    emb = TesseraModel(tessera["config"]).read(req("tessera", PointBuffer(lon[0], lat[0], 40), 2023))
    win = qa[398:406, 201:209].astype(np.float64) * sa[398:406, 201:209, None]
    ok = sa[398:406, 201:209] != 0
    assert emb.meta["pooled_px"] == ok.sum() < ok.size
    np.testing.assert_allclose(emb.vector, win[ok].mean(axis=0), rtol=1e-5, atol=1e-6)
    with pytest.raises(ProviderError, match="never"):
        TesseraModel({"products": {"tessera": {"root": str(tessera["root"]), "version": "v2"}}})
    with pytest.raises(SpecError, match="2016"):
        req("tessera", PointBuffer(6.0, 45.0, 50), 2016)
    far = req("tessera", PointBuffer(20.05, 50.05, 50), 2023)
    monkeypatch.setitem(sys.modules, "geotessera", None)
    with pytest.raises(MissingExtraError, match="pip install geotessera"):
        TesseraModel(tessera["config"]).read(far)
    with pytest.raises(NoImageryError):
        TesseraModel({"products": {"tessera": {"root": str(tessera["root"]), "access": "local"}}}).read(far)

    crs, t, w, h = syn.tessera_tile_grid(20.05, 50.05)
    arr = np.full((h, w, 128), 0.25, np.float32)
    lib = types.ModuleType("geotessera")

    class GeoTessera:
        def __init__(self, dataset_version, **kw):
            assert dataset_version == "v1"
            self.registry = types.SimpleNamespace(load_blocks_for_region=lambda bounds, year: [(year, 20.05, 50.05)])

        def fetch_embedding(self, lon, lat, year):
            assert (lon, lat, year) == (20.05, 50.05, 2023)
            return arr, crs, t

    lib.GeoTessera = GeoTessera
    monkeypatch.setitem(sys.modules, "geotessera", lib)
    np.testing.assert_allclose(TesseraModel(tessera["config"]).read(far).vector, 0.25)


# ====================================================================== copernicus


@pytest.fixture(scope="module")
def copernicus(tmp_path_factory):
    root = tmp_path_factory.mktemp("copernicus")
    rng = np.random.default_rng(5)
    patch = rng.normal(size=(768, 4, 4)).astype(np.float32)
    patch[:, 3, 3] = 0.0  # an empty (ocean) cell
    wrap = rng.normal(size=(768, 2, 4)).astype(np.float32)
    path = syn.write_copernicus(root / "embed_map_310k.tif", [(160, 760, patch)])
    # the 0..360 longitude convention, data on both sides of Greenwich (cols 1438, 1439, 0, 1)
    alt = syn.write_copernicus(root / "alt.tif", [(160, 1438, wrap[:, :, :2]), (160, 0, wrap[:, :, 2:])], left=-0.125)
    return {"path": path, "patch": patch, "alt": alt, "wrap": wrap}


def test_copernicus_pixels_subpixel_pooling_and_years(copernicus):
    model = CopernicusModel({"products": {"copernicus": {"path": str(copernicus["path"])}}})
    patch = copernicus["patch"]
    # pixel (row 160, col 760) is centred on lon -180 + 760 * 0.25 = 10.0, lat 90 - 160 * 0.25 = 50.0
    small = model.read(req("copernicus", PointBuffer(10.05, 50.05, 100), 2021))
    assert small.meta["subpixel"] is True and "contains" in small.meta["note"]
    np.testing.assert_array_equal(small.vector, patch[:, 0, 0])
    box = model.read(req("copernicus", BBox(9.9, 49.3, 10.8, 50.1), 2021))  # centres lat 50, 49.75, 49.5
    assert box.meta["subpixel"] is False and box.meta["pixels"] == 12
    np.testing.assert_allclose(box.vector, patch[:, :3, :].reshape(768, -1).mean(axis=1), rtol=1e-5, atol=1e-6)
    grid = model.read(req("copernicus", BBox(9.9, 49.2, 10.8, 50.1), 2021, output=OutputSpec.grid(10)))
    assert grid.grid.shape == (768, 4, 4) and grid.request.output.scale_m == pytest.approx(27798.77, abs=0.01)
    assert np.isnan(grid.grid[:, 3, 3]).all() and grid.meta["valid_px"] == 15  # the empty cell is no data
    np.testing.assert_array_equal(grid.grid[:, 0, 1], patch[:, 0, 1])
    with pytest.raises(SpecError, match="2020"):
        req("copernicus", PointBuffer(10.0, 50.0, 100), 2020)
    with pytest.raises(NoImageryError, match="no data"):
        model.read(req("copernicus", PointBuffer(-30.0, 0.0, 1000), 2021))
    h3_cell = h3.latlng_to_cell(49.6, 10.4, 3)
    hexagon = model.read(req("copernicus", H3Cell(h3_cell), 2021))
    assert not hexagon.meta["subpixel"] and 0 < hexagon.meta["valid_pixels"] <= 15


def test_copernicus_reads_across_greenwich_in_a_0_360_file(copernicus):
    model = CopernicusModel({"products": {"copernicus": {"path": str(copernicus["alt"])}}})
    wrap = copernicus["wrap"]
    emb = model.read(req("copernicus", BBox(-0.6, 49.6, 0.4, 50.1), 2021))  # lon centres -0.5, -0.25, 0, 0.25
    assert emb.meta["pixels"] == 8
    np.testing.assert_allclose(emb.vector, wrap.reshape(768, -1).mean(axis=1), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def cop_edges(tmp_path_factory):
    """Data where the edge cases are: both pole rows, every other cell of row 319 (lat 10.25,
    "land" and "ocean" alternating), a res-2 hexagon over Ireland whose lon/lat outline and
    h3's own test disagree, and a res-2 hexagon across the antimeridian (lat -20)."""
    rng = np.random.default_rng(17)
    north, south = rng.normal(size=(768, 2, 1440)), rng.normal(size=(768, 1, 1440))
    band = rng.normal(size=(768, 1, 1440))
    band[:, :, 1::2] = 0.0  # odd columns empty
    east, west = rng.normal(size=(768, 18, 6)), rng.normal(size=(768, 18, 14))
    path = syn.write_copernicus(tmp_path_factory.mktemp("cop_edges") / "edges.tif", [
        (0, 0, north), (720, 0, south), (319, 0, band), (140, 676, rng.normal(size=(768, 24, 32))),
        (436, 0, east), (436, 1426, west)], blocksize=32)  # fewer, larger tiles: quicker whole-row reads
    model = CopernicusModel({"products": {"copernicus": {"path": str(path)}}})
    as32 = lambda v: v.astype(np.float32)  # noqa: E731 - what the file holds
    return {"path": path, "model": model, "north": as32(north), "south": as32(south), "band": as32(band)}


def stored(path, rows, cols):
    """``(768, n)``: the values of pixels ``(rows[i], cols[i])``, read straight from the file."""
    import rasterio
    from rasterio.windows import Window

    rows, cols = np.asarray(rows), np.asarray(cols)
    with rasterio.open(path) as ds:
        block = ds.read(window=Window(0, int(rows.min()), ds.width, int(rows.max() - rows.min()) + 1))
    return block[:, rows - rows.min(), cols]


def close(vector, values):
    """``vector`` is the mean of the ``(768, n)`` ``values`` with data (not all zero)."""
    expected = values[:, (values != 0).any(axis=0)].astype(np.float64).mean(axis=1)
    np.testing.assert_allclose(vector, expected, rtol=1e-5, atol=1e-6)


def test_copernicus_bbox_spanning_360_degrees_reads_every_column(cop_edges, copernicus):
    band, north = cop_edges["band"][:, 0, :], cop_edges["north"]
    ring, grid, cap = cop_edges["model"].read_batch([
        req("copernicus", BBox(-180, 10.1, 180, 10.4), 2021),  # centres at lat 10.25: row 319
        req("copernicus", BBox(-180, 10.1, 180, 10.4), 2021, output=OutputSpec.grid()),
        req("copernicus", BBox(-180, 89.6, 180, 90), 2021)])  # n = 90 takes the pole row: rows 0 and 1
    assert (ring.meta["pixels"], ring.meta["valid_pixels"], ring.meta["rows"]) == (1440, 720, [319, 320])
    close(ring.vector, band)
    assert grid.grid.shape == (768, 1, 1440) and np.isnan(grid.grid[:, 0, 1::2]).all()
    np.testing.assert_array_equal(grid.grid[:, 0, ::2], band[:, ::2])  # west to east from -180
    assert (cap.meta["pixels"], cap.meta["rows"]) == (2880, [0, 2])
    close(cap.vector, north.reshape(768, -1))
    # a 0..360 file: the grid still starts at -180 (its column 720), so lon -0.5 is grid column 718
    alt = CopernicusModel({"products": {"copernicus": {"path": str(copernicus["alt"])}}})
    wide = alt.read(req("copernicus", BBox(-180, 49.9, 180, 50.1), 2021, output=OutputSpec.grid()))
    assert wide.grid.shape == (768, 1, 1440) and wide.meta["valid_px"] == 4
    np.testing.assert_array_equal(wide.grid[:, 0, 718:722], copernicus["wrap"][:, 0, :])


def test_copernicus_point_on_a_pole_pools_the_whole_pole_row(cop_edges):
    # every pixel of a pole row is centred on the pole, one per slice of longitude, and a
    # square around the pole reaches into every slice: the answer is that row, whatever lon says
    lons = [-120.0, 0.0, 75.5, 180.0]
    at_pole = [req("copernicus", PointBuffer(lon, lat, 500), 2021) for lat in (-90.0, 90.0) for lon in lons]
    # 1.1 km from the pole the square holds no pixel centre: the pixel under its centre
    near = [req("copernicus", PointBuffer(lon, -89.99, 500), 2021) for lon in lons]
    answers = cop_edges["model"].read_batch(at_pole + near)
    for k, emb in enumerate(answers[:8]):
        row, values = (720, cop_edges["south"]) if k < 4 else (0, cop_edges["north"][:, :1])
        assert (emb.meta["subpixel"], emb.meta["pixels"], emb.meta["rows"]) == (False, 1440, [row, row + 1])
        close(emb.vector, values[:, 0, :])
    for lon, emb in zip(lons, answers[8:]):
        col = int(np.floor((lon + 180.125) / 0.25)) % 1440
        assert emb.meta["subpixel"] and emb.meta["cols"] == [col, col + 1]
        np.testing.assert_array_equal(emb.vector, cop_edges["south"][:, 0, col])


@pytest.mark.parametrize("cell", [
    "82182ffffffffff",  # res 2 over Ireland: its lon/lat outline holds 173 pixel centres, h3 says 177
    h3.latlng_to_cell(90.0, 0.0, 2),  # holds the north pole
    h3.latlng_to_cell(-20.0, 180.0, 2),  # across the antimeridian
    h3.latlng_to_cell(52.3, -7.0, 3),
])
def test_copernicus_hexagon_pixels_are_the_ones_h3_puts_in_the_cell(cop_edges, cell):
    res, (lat0, _) = h3.get_resolution(cell), h3.cell_to_latlng(cell)
    rows = np.flatnonzero(np.abs(90.0 - 0.25 * np.arange(721) - lat0) < 6.0)
    lons = -180.0 + 0.25 * np.arange(1440)  # column centres
    truth = np.array([[h3.latlng_to_cell(90.0 - 0.25 * r, lon, res) == cell for lon in lons] for r in rows])
    r, c = np.nonzero(truth)
    emb = cop_edges["model"].read(req("copernicus", H3Cell(cell), 2021))
    assert not emb.meta["subpixel"] and emb.meta["pixels"] == truth.sum()
    close(emb.vector, stored(cop_edges["path"], rows[r], c))


def test_products_are_registered_with_their_contracts():
    from rsembed_store.registry import model_info

    g, t, c = model_info("gse"), model_info("tessera"), model_info("copernicus")
    assert (g.kind, g.dim, g.temporal, g.providers, g.grid_dtype) == ("precomputed", 64, "year", ("cog", "gee"), "int8")
    assert (t.dim, t.revision, c.dim, c.years) == (128, "tessera-v1", 768, (2021, 2021))
    assert model_info("gse-unit").params["unit_pooled"] is True


def test_stored_gse_grid_decodes_in_a_fresh_process(tmp_path):
    """The gse_int8 codec is registered by the gse module; a key-only look-up must still decode."""
    import subprocess
    import sys

    code = r'''
import sys, numpy as np
from rsembed_store import Store, Embedding, Request, H3Cell, OutputSpec, TemporalSpec
from rsembed_store.keys import resolve
store = Store.open(sys.argv[1])
r = resolve(Request("gse", H3Cell("8928308280fffff"), TemporalSpec.year(2022), output=OutputSpec.grid()))
q = np.full((64, 2, 2), 64, np.int8)
store.put_many([Embedding.from_grid(r, q, grid_codec="gse_int8")])
print(r.key)
'''
    key = subprocess.run([sys.executable, "-c", code, str(tmp_path / "db")], capture_output=True, text=True,
                         timeout=120, check=True).stdout.strip()
    read = r'''
import sys
from rsembed_store import Store
e = Store.open(sys.argv[1]).lookup([sys.argv[2]])[0]
g = e.grid_f32()
print(g.dtype, round(float(g[0, 0, 0]), 6))
'''
    out = subprocess.run([sys.executable, "-c", read, str(tmp_path / "db"), key], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    dtype, value = out.stdout.split()
    assert dtype == "float32" and abs(float(value) - (64 / 127.5) ** 2) < 1e-6
