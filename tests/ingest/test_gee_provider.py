"""The ``gee`` provider against a fake Earth Engine client (tests/fake_ee.py).

The fake stands exactly where our code meets ``ee``: it records the expression tree
our code builds (collection, filters, band selection, composite, grid) and answers
``data.computePixels`` in the real NUMPY_NDARRAY format, or with the real error texts.
Scene bands encode their ground position (B4 DN = x mod 1000, B3 DN = y mod 1000 in
the grid's UTM metres), so placement, orientation and stitching are checked pixel by
pixel. One test builds the same request with the real ``ee`` client initialised
offline (its own test algorithm table), and one ``live`` test runs a real request
when EE_PROJECT is set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from fake_ee import (NO_PROJECT, TOO_MANY_AGGREGATIONS, TOO_MANY_REQUESTS, EEException, FakeEE, Scene, filters,
                     find, offline_real_ee)
from rsembed_store import Request, Store, resolve
from rsembed_store.errors import MissingExtraError, NoImageryError, ProviderError
from rsembed_store.ingest.engine import ingest
from rsembed_store.ingest.providers import gee
from rsembed_store.ingest.providers.gee import EarthEngineProvider, classify, fetch_image_array, plan_tiles
from rsembed_store.ingest.grid import target_grid
from rsembed_store.keys import ResolvedRequest
from rsembed_store.specs import H3Cell, OutputSpec, PointBuffer, SensorSpec, TemporalSpec

S2 = "COPERNICUS/S2_SR_HARMONIZED"
L8 = "LANDSAT/LC08/C02/T1_L2"
S1 = "COPERNICUS/S1_GRD"
MODEL_BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")
EE_BANDS = ("B2", "B3", "B4", "B8", "B11", "B12")
HERE = PointBuffer(11.0, 46.0, 1000)  # UTM 32N
SUMMER = ("2022-06-01", "2022-09-01")
LIVE_PROJECT = os.environ.get("EE_PROJECT")  # read before the fixtures clear the environment


def xpos(x, y):
    return np.mod(x, 1000.0)


def ypos(x, y):
    return np.mod(y, 1000.0)


def s2_scene(sid, day, *, cloud=5.0, level=1000.0, valid=None, footprint=None, **extra):
    bands = {b: level + 100.0 * i for i, b in enumerate(EE_BANDS)}
    bands.update({"B4": xpos, "B3": ypos}, **extra)
    return Scene(sid, day, bands, {"CLOUDY_PIXEL_PERCENTAGE": cloud}, footprint=footprint, valid=valid)


def request(spatial=HERE, window=SUMMER, *, collection="s2-l2a", bands=MODEL_BANDS, cloudy_pct=30,
            composite="median", scale_m=10, fill_value=0.0):
    return ResolvedRequest(
        model="x", revision="1", provider="gee", spatial=spatial, temporal=TemporalSpec.range(*window),
        sensor=SensorSpec(collection, bands, scale_m=scale_m, cloudy_pct=cloudy_pct, fill_value=fill_value,
                          composite=composite),
        output=OutputSpec.pooled(), input_prep=None,
    )


@pytest.fixture(autouse=True)
def clean_process(monkeypatch):
    for name in ("EE_PROJECT", "GOOGLE_CLOUD_PROJECT", "EE_SERVICE_ACCOUNT_KEY", "EE_SERVICE_ACCOUNT"):
        monkeypatch.delenv(name, raising=False)
    gee.reset_initialization()
    yield
    gee.reset_initialization()


@pytest.fixture
def fake():
    return FakeEE({S2: [s2_scene("s2a", "2022-06-10"), s2_scene("s2b", "2022-07-15", level=2000.0),
                        s2_scene("s2c", "2022-08-20", level=6000.0)]})


def provider(fake, **config):
    p = EarthEngineProvider({"project": "my-project", **config}, ee_module=fake)
    p.sleeps = []
    p._sleep = p.sleeps.append
    return p


def grid_xy(px):
    x0, xres, _, y0, _, yneg = px.transform
    h, w = px.array.shape[1:]
    return np.meshgrid(x0 + (np.arange(w) + 0.5) * xres, y0 + (np.arange(h) + 0.5) * yneg)


# ------------------------------------------------------------------ what is sent


def test_the_request_is_one_call_with_the_expected_expression(fake):
    px = provider(fake).fetch(request())
    assert len(fake.requests) == 1
    params, tree = fake.last["params"], fake.last["tree"]
    grid = target_grid(HERE, 10)
    # the collection, the ROI, the half-open window, the cloud filter
    assert find(tree, "load")[0] == ("load", S2)
    rect = find(tree, "filterBounds")[0][2]
    x0, y0, x1, y1 = grid.bounds[0], grid.bounds[1], grid.bounds[2], grid.bounds[3]
    assert rect == ("Rectangle", (x0, y0, x1, y1), grid.crs, False)
    assert find(tree, "filterDate")[0][2:] == ("2022-06-01", "2022-09-01")
    assert find(tree, "filter")[0][2] == ("Filter.lte", "CLOUDY_PIXEL_PERCENTAGE", 30.0)
    # per image: select with the Earth Engine names, renamed to the requested spelling, then resample
    body = find(tree, "map")[0][2]
    picked = ("resample", ("select", ("var",), EE_BANDS, MODEL_BANDS), "bilinear")
    assert body == ("updateMask", picked, ("reduce", ("mask", picked), ("Reducer.min",)))  # all bands or none
    assert find(tree, "median") and not find(tree, "mosaic")
    # the grid: the local provider's UTM grid, north-up, 2 km = 200 px of 10 m
    assert params["fileFormat"] == "NUMPY_NDARRAY"
    assert params["grid"] == {
        "dimensions": {"width": 200, "height": 200},
        "affineTransform": {"scaleX": 10.0, "shearX": 0.0, "translateX": grid.transform.c,
                            "shearY": 0.0, "scaleY": -10.0, "translateY": grid.transform.f},
        "crsCode": "EPSG:32632",
    }
    assert params["bandIds"] == list(MODEL_BANDS) + [gee.VALID_BAND, gee.COUNT_BAND, gee.WINDOW_BAND]
    assert px.meta["ee_calls"] == 1 and px.meta["n_images"] == 3 and px.meta["n_window"] == 3


@pytest.mark.parametrize("lat", [0.5, 46.0, 69.0])
def test_a_1000_m_point_buffer_is_2_km_across_at_any_latitude(lat):
    fake = FakeEE({S2: [s2_scene("a", "2022-06-10")]})
    px = provider(fake).fetch(request(PointBuffer(9.0, lat, 1000)))
    grid = fake.last["params"]["grid"]
    assert grid["dimensions"] == {"width": 200, "height": 200}
    assert grid["affineTransform"]["scaleX"] == 10.0 and grid["crsCode"] == "EPSG:32632"
    assert px.shape == (6, 200, 200)


def test_pixels_are_float32_reflectance_north_up_with_fill_where_masked():
    west_half = lambda x, y: np.mod(x, 1000.0) < 500  # noqa: E731
    fake = FakeEE({S2: [s2_scene("a", "2022-06-10", valid=west_half)]})
    px = provider(fake).fetch(request(fill_value=-1.0))
    assert px.array.dtype == np.float32 and px.shape == (6, 200, 200)
    assert px.bands == MODEL_BANDS and px.crs == "EPSG:32632"
    x, y = grid_xy(px)
    ok = np.mod(x, 1000.0) < 500
    assert np.array_equal(px.valid, ok) and px.roi_mask.all()
    b4, b3, b2 = px.array[2], px.array[1], px.array[0]
    assert np.allclose(b4[ok], np.mod(x, 1000.0)[ok] * 1e-4, atol=1e-6)  # DN * 1e-4 at the right column
    assert np.allclose(b3[ok], np.mod(y, 1000.0)[ok] * 1e-4, atol=1e-6)  # ... and the right row
    assert y[0, 0] > y[-1, 0]  # row 0 is north
    assert np.allclose(b2[ok], 0.1) and (px.array[:, ~ok] == -1.0).all()
    assert px.meta["nodata_fraction"] == pytest.approx(1 - ok.mean())


def test_the_window_is_half_open_like_earth_engine_filter_date():
    fake = FakeEE({S2: [s2_scene("start", "2022-06-01", level=1000.0),
                        s2_scene("inside", "2022-07-01", level=3000.0),
                        s2_scene("end", "2022-09-01", level=9000.0)]})
    px = provider(fake).fetch(request())
    assert px.meta["n_images"] == 2  # the scene on the end date is out, the one on the start date in
    assert np.allclose(px.array[0], 0.2)  # median of 1000 and 3000


def test_median_and_mosaic_latest_on_top(fake):
    med = provider(fake).fetch(request())
    assert np.allclose(med.array[0], 0.2)  # median of 1000, 2000, 6000 DN
    latest_masked_east = lambda x, y: np.mod(x, 1000.0) < 500  # noqa: E731
    fake.scenes[S2][2] = s2_scene("s2c", "2022-08-20", level=6000.0, valid=latest_masked_east)
    fake.scenes[S2].reverse()  # the catalogue order must not matter: the provider sorts by time
    mos = provider(fake).fetch(request(composite="mosaic"))
    tree = fake.last["tree"]
    sort = find(tree, "sort")[0]
    assert sort[2:] == ("system:time_start", True) and find(tree, "mosaic")[0][1] == sort
    x, _ = grid_xy(mos)
    west = np.mod(x, 1000.0) < 500
    assert np.allclose(mos.array[0][west], 0.6) and np.allclose(mos.array[0][~west], 0.2)
    assert mos.valid.all()


def test_cloud_filter_uses_each_collections_property():
    fake = FakeEE({
        S2: [s2_scene("clear", "2022-06-10", cloud=10), s2_scene("cloudy", "2022-07-10", cloud=80, level=5000.0)],
        L8: [Scene("l8", "2022-07-01", {"SR_B4": 10000.0, "SR_B5": 20000.0, "QA_PIXEL": 21824.0}, {"CLOUD_COVER": 12.0})],
    })
    p = provider(fake)
    s2 = p.fetch(request(cloudy_pct=20))
    assert find(fake.last["tree"], "filter")[0][2] == ("Filter.lte", "CLOUDY_PIXEL_PERCENTAGE", 20.0)
    assert s2.meta["n_images"] == 1 and s2.meta["n_window"] == 2 and np.allclose(s2.array[0], 0.1)
    l8 = p.fetch(request(collection="landsat8-l2", bands=("red", "nir"), cloudy_pct=20, scale_m=30))
    tree = fake.last["tree"]
    assert find(tree, "load")[0] == ("load", L8)
    assert find(tree, "filter")[0][2] == ("Filter.lte", "CLOUD_COVER", 20.0)
    picker = find(tree, "map")[0][2]
    assert ("select", ("var",), ("SR_B4", "SR_B5"), ("red", "nir")) in find(picker, "select")
    # landsat8-l2's keys predate pixel masking, so it stays unmasked (the newer collections mask: see
    # test_gee_landsat_hls.py)
    assert find(picker, "bitwiseAnd") == []
    assert np.allclose(l8.array[0], 10000 * 2.75e-5 - 0.2) and np.allclose(l8.array[1], 20000 * 2.75e-5 - 0.2)
    assert fake.last["params"]["grid"]["affineTransform"]["scaleX"] == 30.0


def test_band_aliases_and_refusals():
    coll = gee.lookup("s2-l2a")
    assert [coll.resolve_band(b).name for b in ("RED", "red", "B04", "b4", "B8A", "nir08", "swir22", "SCL")] == [
        "B4", "B4", "B4", "B4", "B8A", "B8A", "B12", "SCL"]
    assert gee.lookup(S2) is coll and gee.lookup("landsat9-l2").resolve_band("B4").name == "SR_B4"
    fake = FakeEE({S2: [s2_scene("a", "2022-06-10")]})
    with pytest.raises(ProviderError, match=r"no band 'B99'.*'B8A'"):
        provider(fake).fetch(request(bands=("B04", "B99")))
    with pytest.raises(ProviderError, match=r"does not know collection 'modis'.*s2-l2a"):
        provider(fake).fetch(request(collection="modis"))
    assert fake.requests == []  # refused before anything was sent


def test_categorical_bands_are_neither_interpolated_nor_scaled():
    fake = FakeEE({S2: [s2_scene("a", "2022-06-10", SCL=4.0)]})
    px = provider(fake).fetch(request(bands=("red", "SCL")))
    body = find(fake.last["tree"], "map")[0][2][1]
    assert body == ("addBands", ("resample", ("select", ("var",), ("B4",), ("red",)), "bilinear"),
                    ("select", ("var",), ("SCL",), ("SCL",)))
    assert np.allclose(px.array[1], 4.0)


def test_an_h3_cell_gets_the_local_grid_and_hexagon_mask():
    cell = H3Cell("881f8d4b2bfffff")
    fake = FakeEE({S2: [s2_scene("a", "2022-06-10")]})
    px = provider(fake).fetch(request(cell))
    grid = target_grid(cell, 10)
    assert px.crs == grid.crs and px.transform == grid.gdal()
    assert np.array_equal(px.roi_mask, grid.roi_mask) and 0.5 < px.roi_mask.mean() < 0.9


# ------------------------------------------------------------------ Sentinel-1


def test_sentinel1_grd_filters_iw_polarisations_and_orbit():
    def s1(sid, day, pols, orbit, vv):
        return Scene(sid, day, {"VV": vv, "VH": vv - 7.0},
                     {"instrumentMode": "IW", "transmitterReceiverPolarisation": list(pols), "orbitProperties_pass": orbit})
    fake = FakeEE({S1: [s1("asc", "2022-06-05", ("VV", "VH"), "ASCENDING", -5.0),
                        s1("desc", "2022-06-10", ("VV", "VH"), "DESCENDING", -11.0),
                        s1("single", "2022-06-12", ("VV",), "DESCENDING", -20.0),
                        Scene("ew", "2022-06-15", {"VV": -30.0, "VH": -30.0},
                              {"instrumentMode": "EW", "transmitterReceiverPolarisation": ["VV", "VH"],
                               "orbitProperties_pass": "DESCENDING"})]})
    px = provider(fake).fetch(request(collection="s1-grd-desc", bands=("VV", "VH"), cloudy_pct=30))
    assert filters(find(fake.last["tree"], "map")[0][1]) == [("Filter.eq", "instrumentMode", "IW"),
                       ("Filter.listContains", "transmitterReceiverPolarisation", "VV"),
                       ("Filter.listContains", "transmitterReceiverPolarisation", "VH"),
                       ("Filter.eq", "orbitProperties_pass", "DESCENDING")]
    assert px.meta["n_images"] == 1 and np.allclose(px.array[0], -11.0) and np.allclose(px.array[1], -18.0)
    both = provider(fake).fetch(request(collection="s1-grd", bands=("vv",)))  # both passes, VV only
    assert [f[0] for f in filters(find(fake.last["tree"], "map")[0][1])] == ["Filter.eq", "Filter.listContains"]
    assert both.meta["n_images"] == 3 and both.bands == ("vv",)


# ------------------------------------------------------------------ initialisation


def test_initialised_once_per_process_across_fetches_threads_and_providers():
    fake = FakeEE({S2: [s2_scene("a", "2022-06-10")]}, init_delay_s=0.05)
    providers = [provider(fake), provider(fake)]
    spots = [PointBuffer(11.0 + 0.01 * i, 46.0, 100) for i in range(12)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: providers[i % 2].fetch(request(spots[i])), range(12)))
    assert len(results) == 12 and len(fake.requests) == 12
    assert fake.init_calls == [{"credentials": "persistent", "url": None, "project": "my-project"}]
    with pytest.raises(ProviderError, match="already initialised in this process with project='my-project'"):
        EarthEngineProvider({"project": "other"}, ee_module=fake).fetch(request())


def test_a_missing_project_says_what_to_do():
    fake = FakeEE({S2: [s2_scene("a", "2022-06-10")]})
    p = EarthEngineProvider({}, ee_module=fake)
    with pytest.raises(ProviderError) as info:
        p.fetch(request())
    msg = str(info.value)
    assert NO_PROJECT in msg and "EE_PROJECT" in msg and "earthengine authenticate" in msg
    assert "'project': 'my-project'" in msg and "EE_SERVICE_ACCOUNT_KEY" in msg
    assert fake.requests == [] and p.stats()["gee.failures"] == 1


def test_missing_credentials_say_what_to_do():
    fake = FakeEE(credentials=False)
    with pytest.raises(ProviderError, match=r"(?s)earthengine authenticate.*EE_PROJECT"):
        EarthEngineProvider({"project": "p"}, ee_module=fake).ee()


@pytest.mark.parametrize("var", ["EE_PROJECT", "GOOGLE_CLOUD_PROJECT"])
def test_project_from_the_environment(monkeypatch, var):
    monkeypatch.setenv(var, "env-project")
    fake = FakeEE({S2: [s2_scene("a", "2022-06-10")]})
    EarthEngineProvider({}, ee_module=fake).fetch(request())
    assert fake.init_calls[0]["project"] == "env-project"


def test_a_service_account_key_file(tmp_path, monkeypatch):
    key = tmp_path / "sa.json"
    key.write_text(json.dumps({"type": "service_account", "project_id": "sa-proj"}))
    monkeypatch.setenv("EE_SERVICE_ACCOUNT_KEY", str(key))
    fake = FakeEE({S2: [s2_scene("a", "2022-06-10")]}, credentials=False)
    EarthEngineProvider({}, ee_module=fake).fetch(request())  # no project needed: the key's own
    assert fake.key_files == [(None, str(key))]
    assert fake.init_calls[0]["credentials"] == ("service-account", None, str(key))
    gee.reset_initialization()
    with pytest.raises(ProviderError, match=r"key '/nope/key.json' does not exist"):
        EarthEngineProvider({"service_account_key": "/nope/key.json"}, ee_module=FakeEE()).ee()


def test_an_existing_initialisation_is_used_as_is():
    fake = FakeEE({S2: [s2_scene("a", "2022-06-10")]})
    fake.initialized = True  # the user ran ee.Initialize(project=...) in their notebook
    EarthEngineProvider({}, ee_module=fake).fetch(request())
    assert fake.init_calls == [] and len(fake.requests) == 1


def test_without_the_extra_the_error_names_it(monkeypatch):
    monkeypatch.setattr(gee, "EE_MODULE", None)
    monkeypatch.setitem(sys.modules, "ee", None)  # makes `import ee` fail
    with pytest.raises(MissingExtraError, match=r"pip install 'rsembed-store\[gee\]'"):
        EarthEngineProvider({"project": "p"}).fetch(request())


def test_bad_configuration_is_refused():
    with pytest.raises(ProviderError, match="resampling='cubic'"):
        EarthEngineProvider({"resampling": "cubic"})
    with pytest.raises(ProviderError, match="max_retries=-1"):
        EarthEngineProvider({"max_retries": -1})
    with pytest.raises(ProviderError, match="declares no bands"):
        EarthEngineProvider({"collections": {"x": {"id": "A/B"}}})


def test_more_collections_can_be_declared():
    fake = FakeEE({"LANDSAT/LE07/C02/T1_L2": [Scene("l7", "2022-06-10", {"SR_B3": 10000.0}, {"CLOUD_COVER": 1})]})
    cfg = {"collections": {"landsat7-l2": {"id": "LANDSAT/LE07/C02/T1_L2", "cloud_property": "CLOUD_COVER",
                                           "bands": {"SR_B3": {"scale": 2.75e-05, "offset": -0.2}},
                                           "aliases": {"red": "SR_B3"}}}}
    px = provider(fake, **cfg).fetch(request(collection="landsat7-l2", bands=("red",), scale_m=30))
    assert np.allclose(px.array[0], 0.075) and find(fake.last["tree"], "filter")[0][2][1] == "CLOUD_COVER"


# ------------------------------------------------------------------ empty, quota, too large


def test_an_empty_collection_is_no_imagery_in_one_call():
    fake = FakeEE({S2: [s2_scene("cloudy", "2022-07-10", cloud=90), s2_scene("winter", "2022-01-10")]})
    p = provider(fake)
    with pytest.raises(NoImageryError) as info:
        p.fetch(request())
    msg = str(info.value)
    assert "1 image(s) over the ROI in the window" in msg and "CLOUDY_PIXEL_PERCENTAGE <= 30" in msg
    assert "[2022-06-01, 2022-09-01)" in msg and len(fake.requests) == 1
    assert find(fake.last["tree"], "If")  # the empty composite is guarded server-side
    assert p.stats()["gee.no_imagery"] == 1 and p.stats()["gee.failures"] == 0


def test_the_servers_empty_composite_error_is_no_imagery():
    fake = FakeEE({S2: [s2_scene("a", "2022-06-10")]})
    fake.fail_next(EEException("Image.select: Pattern 'B02' did not match any bands."))
    with pytest.raises(NoImageryError, match="did not match any bands"):
        provider(fake).fetch(request())


def test_data_outside_the_roi_only_is_no_imagery():
    fake = FakeEE({S2: [s2_scene("a", "2022-06-10", valid=lambda x, y: np.zeros(x.shape, bool))]})
    with pytest.raises(NoImageryError, match="1 Earth Engine image.*none has data inside the ROI"):
        provider(fake).fetch(request())


def test_429_then_success_is_retried_with_exponential_backoff_and_jitter(fake):
    fake.fail_next(EEException(TOO_MANY_REQUESTS), EEException(TOO_MANY_AGGREGATIONS), ConnectionError("reset"))
    p = provider(fake, backoff_s=2.0)
    px = p.fetch(request())
    assert len(p.sleeps) == 3
    for k, slept in enumerate(p.sleeps):
        d = 2.0 * 2 ** k
        assert d / 2 <= slept <= d
    assert px.meta["ee_calls"] == 4 and px.meta["ee_retries"] == 3
    assert p.stats() == {"gee.calls": 4, "gee.retries": 3, "gee.splits": 0, "gee.failures": 0,
                         "gee.no_imagery": 0, "gee.fetches": 1}


def test_retries_are_bounded_and_capped(fake):
    fake.fail_next(*[EEException(TOO_MANY_REQUESTS)] * 10)
    p = provider(fake, max_retries=4, backoff_s=1.0, backoff_max_s=3.0)
    with pytest.raises(ProviderError, match=r"after 5 attempt\(s\).*Too Many Requests"):
        p.fetch(request())
    assert len(p.sleeps) == 4 and max(p.sleeps) <= 3.0 and min(p.sleeps[2:]) >= 1.5
    assert p.stats()["gee.calls"] == 5 and p.stats()["gee.failures"] == 1


def test_other_errors_are_not_retried(fake):
    fake.fail_next(EEException("ImageCollection.load: ImageCollection asset 'X' not found."))
    p = provider(fake)
    with pytest.raises(ProviderError, match="asset 'X' not found"):
        p.fetch(request())
    assert p.sleeps == [] and p.stats()["gee.calls"] == 1


def test_a_pixel_limit_error_is_split_and_stitched():
    scenes = {S2: [s2_scene("a", "2022-06-10"), s2_scene("b", "2022-07-01", level=3000.0)]}
    whole = provider(FakeEE(scenes)).fetch(request())
    small = FakeEE(scenes, max_bytes=400_000)  # 200 x 200 px x 9 float32 bands = 1.44 MB
    p = provider(small)
    px = p.fetch(request())
    refused = [r for r in small.requests if r["params"]["grid"]["dimensions"]["width"] * r["params"]["grid"]["dimensions"]["height"] * 36 > 400_000]
    assert len(refused) >= 1 and px.meta["tiles"] >= 4
    assert np.array_equal(px.array, whole.array) and np.array_equal(px.valid, whole.valid)
    assert p.max_request_bytes == 400_000  # learned from the error text
    before = len(small.requests)
    again = p.fetch(request(PointBuffer(11.01, 46.0, 1000)))
    sizes = [r["params"]["grid"]["dimensions"] for r in small.requests[before:]]
    assert all(d["width"] * d["height"] * 36 <= 400_000 for d in sizes)  # planned within the limit: no refusals
    assert again.meta["ee_calls"] == again.meta["tiles"] == len(sizes)
    assert p.stats()["gee.splits"] >= 3


def test_a_grid_over_the_side_limit_is_planned_in_tiles():
    fake = FakeEE({S2: [s2_scene("a", "2022-06-10")]}, max_side=64)
    p = provider(fake, max_request_side=64)
    px = p.fetch(request(PointBuffer(11.0, 46.0, 500)))  # 100 x 100 px
    dims = [r["params"]["grid"]["dimensions"] for r in fake.requests]
    assert len(dims) == 4 and all(d["width"] <= 64 and d["height"] <= 64 for d in dims)
    x, y = grid_xy(px)
    assert np.allclose(px.array[2], np.mod(x, 1000.0) * 1e-4, atol=1e-6)
    assert np.allclose(px.array[1], np.mod(y, 1000.0) * 1e-4, atol=1e-6)


def test_a_request_that_cannot_fit_names_the_limit():
    fake = FakeEE({S2: [s2_scene("a", "2022-06-10")]}, max_bytes=20)
    with pytest.raises(ProviderError, match=r"(?s)even after splitting.*must be less than or equal to 20 bytes.*coarser scale_m"):
        provider(fake).fetch(request(PointBuffer(11.0, 46.0, 50)))
    with pytest.raises(ProviderError, match="exceeds max_request_bytes=8"):
        plan_tiles(10, 10, 9, 8, 32768)


def test_a_huge_grid_is_refused_before_any_call():
    fake = FakeEE({S2: [s2_scene("a", "2022-06-10")]})
    with pytest.raises(ProviderError, match=r"2000 x 2000 px, more than max_grid_px=1000000.*coarser scale_m"):
        provider(fake, max_grid_px=1_000_000).fetch(request(PointBuffer(11.0, 46.0, 10_000)))
    assert fake.requests == []


def test_plan_tiles_cover_the_grid_within_limits():
    tiles = plan_tiles(1000, 700, 9, 1_000_000, 300)
    cover = np.zeros((700, 1000), int)
    for c, r, w, h in tiles:
        assert w <= 300 and h <= 300 and w * h * 36 <= 1_000_000
        cover[r:r + h, c:c + w] += 1
    assert (cover == 1).all()
    assert plan_tiles(200, 200, 9, gee.MAX_REQUEST_BYTES, gee.MAX_REQUEST_SIDE) == [(0, 0, 200, 200)]


def test_error_classification_on_real_message_texts():
    assert classify(EEException(TOO_MANY_REQUESTS)) == "transient"
    assert classify(EEException(TOO_MANY_AGGREGATIONS)) == "transient"
    assert classify(EEException("Earth Engine capacity exceeded.")) == "transient"
    assert classify(EEException("<HttpError 503 ...>")) == "transient"
    assert classify(EEException("Total request size (55039924 bytes) must be less than or equal to 50331648 bytes.")) == "too_large"
    assert classify(EEException("Image.select: Pattern 'VV' did not match any bands.")) == "no_bands"
    assert classify(EEException("Image.load: Image asset 'B5000' not found.")) == "fatal"


# ------------------------------------------------------------------ the engine


def test_ingest_through_the_engine_stores_answers_and_never_a_failed_fetch(tmp_path, monkeypatch):
    near = (10.95, 45.95, 11.05, 46.05)
    fake = FakeEE({S2: [s2_scene("a", "2022-06-10", footprint=near), s2_scene("b", "2022-07-10", footprint=near)]})
    monkeypatch.setattr(gee, "EE_MODULE", fake)
    fake.fail_next(EEException(TOO_MANY_REQUESTS))
    t = TemporalSpec.range(*SUMMER)
    good = [resolve(Request("spectral", PointBuffer(11.0 + 0.01 * i, 46.0, 300), t, provider="gee")) for i in range(3)]
    far = resolve(Request("spectral", PointBuffer(12.5, 46.0, 300), t, provider="gee"))  # no footprint there
    store = Store.open(tmp_path / "db")
    config = {"providers": {"gee": {"project": "my-project", "backoff_s": 0.0}}}
    summary = ingest(store, good + [far], config, progress=False, fetch_workers=4)
    assert summary.computed == 3 and summary.failed == 1, summary.failures
    assert "no Earth Engine image passes the filters" in summary.failures[0].reason
    assert summary.calls["fetch"] == 4 and summary.calls["gee.calls"] == 5
    assert summary.calls["gee.retries"] == 1 and summary.calls["gee.no_imagery"] == 1
    assert "gee.failures" not in summary.calls
    space = good[0].space
    assert store.contains_many([r.key for r in good] + [far.key], space=space) == [True, True, True, False]
    row = store.lookup_many([good[0].key], space=space)[0]
    assert row.meta["n_images"] == 2 and row.meta["provider"] == "gee"
    assert len(fake.init_calls) == 1
    again = ingest(store, good, config, progress=False)
    assert again.cached == 3 and "gee.calls" not in again.calls  # cache hits cost no Earth Engine call


def test_gee_and_local_answers_are_different_keys():
    t = TemporalSpec.year(2022)
    a = resolve(Request("spectral", HERE, t, provider="gee"))
    b = resolve(Request("spectral", HERE, t))
    assert b.provider == "local" and a.key != b.key and a.sensor.collection == "s2-l2a"


# ------------------------------------------------------------------ fetch_image_array (for gse)


def test_fetch_image_array_reads_a_collection_year_on_a_declared_grid():
    gse_id = "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL"
    bands = [f"A{i:02d}" for i in range(4)]
    fake = FakeEE({gse_id: [
        Scene("y2021", "2021-01-01", {b: -0.5 for b in bands}),
        Scene("y2022", "2022-01-01", {b: 0.25 * (i + 1) for i, b in enumerate(bands)},
              valid=lambda x, y: np.mod(y, 1000.0) > 100),
    ]})
    p = provider(fake)
    grid = target_grid(PointBuffer(11.0, 46.0, 200), 10)
    arr, meta = fetch_image_array(gse_id, grid, bands, year=2022, provider=p)
    tree = fake.last["tree"]
    assert find(tree, "filterDate")[0][2:] == ("2022-01-01", "2023-01-01") and find(tree, "mosaic")
    assert find(tree, "map")[0][2][1] == ("select", ("var",), tuple(bands), tuple(bands))  # nearest: no resample
    assert arr.shape == (4, 40, 40) and arr.dtype == np.float32 and meta["n_images"] == 1
    assert np.allclose(arr[:, meta["valid"]].T, [0.25, 0.5, 0.75, 1.0])
    assert np.isnan(arr[:, ~meta["valid"]]).all() and (~meta["valid"]).any()
    assert meta["grid"]["crs"] == grid.crs and meta["ee_calls"] == 1
    assert p.stats()["gee.calls"] == 1 and p.stats()["gee.fetches"] == 1
    with pytest.raises(NoImageryError, match="no Earth Engine image"):
        fetch_image_array(gse_id, grid, bands, year=2019, provider=p)


def test_fetch_image_array_takes_an_image_or_a_function_of_ee():
    fake = FakeEE({S2: [s2_scene("a", "2022-06-10")]})
    p = provider(fake)
    grid = {"crs": "EPSG:32632", "transform": (653000.0, 20.0, 0.0, 5097000.0, 0.0, -20.0), "width": 8, "height": 5}
    arr, meta = fetch_image_array(lambda ee: ee.ImageCollection(S2).mosaic(), grid, ["B2"], provider=p)
    assert arr.shape == (1, 5, 8) and np.allclose(arr, 1000.0) and "n_images" not in meta
    params = fake.last["params"]
    assert params["grid"]["affineTransform"]["translateX"] == 653000.0 and params["grid"]["dimensions"]["height"] == 5
    image = fake.ImageCollection(S2).median()
    arr, _ = fetch_image_array(image, grid, ["B2", "B8"], provider=p, fill_value=0.0)
    assert np.allclose(arr[1], 1300.0)
    with pytest.raises(ProviderError, match="lacks a requested band"):
        fetch_image_array(image, grid, ["nope"], provider=p)
    with pytest.raises(ProviderError, match="not a north-up grid"):
        fetch_image_array(image, {"crs": "EPSG:32632", "transform": (0, 1, 0, 0, 0, 1), "width": 2, "height": 2},
                          ["B2"], provider=p)


# ------------------------------------------------------------------ the real client, offline


def test_the_real_client_accepts_the_expression_we_build(monkeypatch):
    """Build the request with the real ``ee`` library, initialised offline with its own test
    algorithm table; only ``ee.data.computePixels`` (the network) is replaced."""
    with offline_real_ee(monkeypatch, gee, 1234.0) as (ee, sent):
        px = EarthEngineProvider({}).fetch(request(composite="mosaic"))
        assert px.meta["n_images"] == 1 and np.allclose(px.array, 0.1234)
        s1 = EarthEngineProvider({}).fetch(request(collection="s1-grd-asc", bands=("VV", "VH")))
        assert np.allclose(s1.array, 1234.0)
        arr, _ = fetch_image_array("GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL", target_grid(HERE, 10), ["A00"],
                                   year=2022, provider=EarthEngineProvider({}))
        assert arr.shape == (1, 200, 200)
        encoded = [json.dumps(ee.serializer.encode(p["expression"], for_cloud_api=True)) for p in sent]
    s2, s1_text, gse_text = encoded
    for name in ("ImageCollection.load", "Filter.intersects", "GeometryConstructors.Rectangle",
                 "Filter.dateRangeContains", "Filter.greaterThan", "Collection.map", "Image.select",
                 "Image.resample", "Collection.limit", "ImageCollection.mosaic", "Collection.size", "If",
                 "Image.unmask", "Image.reduce", "Reducer.min", "Image.addBands", "Image.constant"):
        assert f'"{name}"' in s2, name
    for text in ('"COPERNICUS/S2_SR_HARMONIZED"', '"CLOUDY_PIXEL_PERCENTAGE"', '"2022-06-01"', '"2022-09-01"',
                 '"EPSG:32632"', '"system:time_start"'):
        assert text in s2, text
    for text in ('"COPERNICUS/S1_GRD"', '"instrumentMode"', '"IW"', '"transmitterReceiverPolarisation"',
                 '"orbitProperties_pass"', '"ASCENDING"', '"reduce.median"'):
        assert text in s1_text, text
    assert '"GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL"' in gse_text and '"2023-01-01"' in gse_text
    assert sent[0]["fileFormat"] == "NUMPY_NDARRAY" and sent[0]["grid"]["crsCode"] == "EPSG:32632"


# ------------------------------------------------------------------ live


LIVE_SCRIPT = """
import json, sys
from rsembed_store.ingest.providers.gee import EarthEngineProvider
from rsembed_store.keys import ResolvedRequest
from rsembed_store.specs import OutputSpec, PointBuffer, SensorSpec, TemporalSpec
r = ResolvedRequest(model="x", revision="1", provider="gee", spatial=PointBuffer(11.0, 46.0, 200),
                    temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
                    sensor=SensorSpec("s2-l2a", ("B02", "B04", "B08"), scale_m=10, cloudy_pct=30),
                    output=OutputSpec.pooled(), input_prep=None)
p = EarthEngineProvider({})
px = p.fetch(r)
print(json.dumps({"shape": list(px.shape), "n_images": px.meta["n_images"], "valid": float(px.valid.mean()),
                  "median_red": float(px.array[1][px.valid].mean()), "stats": p.stats()}))
"""


@pytest.mark.skipif(not LIVE_PROJECT, reason="live Earth Engine test: set EE_PROJECT (and credentials)")
def test_live_one_small_request():
    # a subprocess: the test session forbids network connections
    out = subprocess.run([sys.executable, "-c", LIVE_SCRIPT], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "EE_PROJECT": LIVE_PROJECT})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["shape"] == [3, 40, 40] and result["n_images"] >= 1 and result["valid"] > 0.5
    assert 0.0 < result["median_red"] < 0.5 and result["stats"]["gee.calls"] >= 1


def test_every_declared_collection_and_setting_is_documented():
    from pathlib import Path

    from rsembed_store.ingest.providers.gee_collections import COLLECTIONS

    text = (Path(__file__).parents[2] / "docs" / "providers" / "gee.md").read_text()
    for name, coll in COLLECTIONS.items():
        assert f"`{name}`" in text and f"`{coll.id}`" in text, name
    for key in ("project", "service_account_key", "service_account", "url", "max_concurrency", "max_retries",
                "backoff_s", "backoff_max_s", "max_request_bytes", "max_request_side", "max_grid_px", "resampling",
                "collections",
                "EE_PROJECT", "GOOGLE_CLOUD_PROJECT", "EE_SERVICE_ACCOUNT_KEY", "EE_SERVICE_ACCOUNT"):
        assert f"`{key}`" in text, key
    for key in ("gee.calls", "gee.retries", "gee.failures", "fetch_image_array"):
        assert key in text, key
