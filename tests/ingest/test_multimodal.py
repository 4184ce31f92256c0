"""Several sensors in one request: Sentinel-2 plus Sentinel-1 on one grid.

The local provider reads the synthetic optical scene and its Sentinel-1 companion
(:func:`generate_s1`, float32 dB COGs on the same lattice and dates), so the S1
values on the request grid can be checked against the files themselves. The Earth
Engine provider runs against the fake client.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import rasterio

from fake_ee import FakeEE, Scene, find
from rsembed_store.errors import NoImageryError
from rsembed_store.ingest.providers import gee
from rsembed_store.ingest.providers.gee import EarthEngineProvider
from rsembed_store.ingest.providers.local import LocalProvider
from rsembed_store.testing.scenes import BANDS, S1_BANDS, SceneSpec, generate_s1, generate_scene
from rsembed_store.keys import ResolvedRequest
from rsembed_store.model import FramePlan
from rsembed_store.specs import OutputSpec, PointBuffer, SensorSpec, TemporalSpec

SPEC = SceneSpec(size_px=128, n_dates=4, n_patches=8, seed=7)
HERE = PointBuffer(SPEC.center_lon, SPEC.center_lat, 300)  # 60 x 60 px of 10 m
S2_SENSOR = SensorSpec("s2-l2a", BANDS, scale_m=10, cloudy_pct=100)
S1_SENSOR = SensorSpec("s1-grd", S1_BANDS, scale_m=10)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    out = tmp_path_factory.mktemp("mm")
    optical = generate_scene(out, SPEC)
    before = {p: hashlib.sha256((out / p).read_bytes()).hexdigest() for p in optical["files"]["scenes"]}
    radar = generate_s1(out, SPEC)
    after = {p: hashlib.sha256((out / p).read_bytes()).hexdigest() for p in optical["files"]["scenes"]}
    assert before == after  # the companion never touches the optical files
    return out, optical, radar


def provider(scene):
    out = scene[0]
    return LocalProvider({"sources": {"s2-l2a": str(out / "scenes"), "s1-grd": str(out / "s1")}})


def request(window=("2023-01-01", "2024-01-01"), frames=None, *, modalities=(("s1", S1_SENSOR),), p="local",
            sensor=S2_SENSOR, spatial=HERE):
    temporal = TemporalSpec.range(*window)
    return ResolvedRequest(model="x", revision="1", provider=p, spatial=spatial, temporal=temporal, sensor=sensor,
                           output=OutputSpec.pooled(), input_prep=None,
                           frames=FramePlan.split(temporal, frames) if frames else None, modalities=modalities)


def s1_on_grid(scene, date_text, transform, shape):
    out, _, radar = scene
    path = radar["paths"][radar["dates"].index(date_text)]
    with rasterio.open(out / path) as ds:
        col = (transform[0] - ds.transform.c) / ds.transform.a
        row = (transform[3] - ds.transform.f) / ds.transform.e
        assert col == int(col) and row == int(row)
        return ds.read(window=rasterio.windows.Window(int(col), int(row), shape[1], shape[0]))


def test_s1_companion_is_backscatter_in_db_with_water_darkest(scene):
    out, optical, radar = scene
    assert radar["dates"] == optical["dates"] and radar["bands"] == ["VV", "VH"]
    with rasterio.open(out / radar["paths"][0]) as ds, rasterio.open(out / "truth/labels.tif") as lab:
        vv, vh = ds.read()
        labels = lab.read(1)
        assert ds.descriptions == ("VV", "VH") and ds.tags()["INSTRUMENT_MODE"] == "IW"
    water, urban = labels == 1, labels == 4
    assert urban.any() and water.any()  # 8 patches: every class appears
    assert vv[water].mean() < -18 and vv[urban].mean() > -8
    assert (vh < vv).mean() > 0.95  # cross-polarised returns are weaker


def test_s2_and_s1_come_back_on_one_grid(scene):
    px = provider(scene).fetch(request())
    s1 = px.modalities["s1"]
    assert px.bands == BANDS and s1.bands == S1_BANDS
    assert (s1.crs, s1.transform, s1.array.shape[1:]) == (px.crs, px.transform, px.array.shape[1:])
    assert s1.meta["modality"] == "s1" and s1.meta["n_scenes"] == 4
    # the one-composite S1 is the median of the four dates, straight from the files
    stack = np.stack([s1_on_grid(scene, d, px.transform, (60, 60)) for d in scene[2]["dates"]])
    np.testing.assert_allclose(s1.array, np.median(stack, axis=0), rtol=1e-6)
    assert s1.valid.all()


def test_frames_apply_to_every_modality(scene):
    px = provider(scene).fetch(request(frames=4))
    s1 = px.modalities["s1"]
    assert px.array.shape == (4, len(BANDS), 60, 60) and s1.array.shape == (4, 2, 60, 60)
    assert s1.meta["frame_windows"] == px.meta["frame_windows"]
    for k, d in enumerate(scene[2]["dates"]):  # one date per frame (Feb 15, May 17, Aug 16, Nov 15)
        np.testing.assert_allclose(s1.array[k], s1_on_grid(scene, d, px.transform, (60, 60)), rtol=1e-6)


def test_a_missing_modality_is_an_error_not_a_silent_drop(scene):
    only_2022 = request(window=("2022-01-01", "2023-01-01"), sensor=S2_SENSOR)
    with pytest.raises(NoImageryError):
        provider(scene).fetch(only_2022)
    no_source = LocalProvider({"sources": {"s2-l2a": str(scene[0] / "scenes")}})
    with pytest.raises(Exception, match="no source for collection 's1-grd'"):
        no_source.fetch(request())


def test_gee_fetches_s2_and_s1_on_one_grid(monkeypatch):
    for name in ("EE_PROJECT", "GOOGLE_CLOUD_PROJECT", "EE_SERVICE_ACCOUNT_KEY", "EE_SERVICE_ACCOUNT"):
        monkeypatch.delenv(name, raising=False)
    gee.reset_initialization()
    s1_props = {"instrumentMode": "IW", "transmitterReceiverPolarisation": ["VV", "VH"]}
    fake = FakeEE({
        "COPERNICUS/S2_SR_HARMONIZED": [Scene("s2", "2022-06-10", {"B4": 1200.0, "B8": 3000.0},
                                              {"CLOUDY_PIXEL_PERCENTAGE": 1.0})],
        "COPERNICUS/S1_GRD": [Scene("s1a", "2022-06-11", {"VV": -9.0, "VH": -15.0}, s1_props),
                              Scene("s1b", "2022-06-23", {"VV": -11.0, "VH": -17.0}, s1_props)],
    })
    try:
        p = EarthEngineProvider({"project": "p"}, ee_module=fake)
        req = request(window=("2022-06-01", "2022-07-01"), p="gee", sensor=SensorSpec("s2-l2a", ("B04", "B08")),
                      modalities=(("s1", SensorSpec("s1-grd", ("VV", "VH"))),), spatial=PointBuffer(11.0, 46.0, 100))
        px = p.fetch(req)
    finally:
        gee.reset_initialization()
    assert [find(r["tree"], "load")[0][1] for r in fake.requests] == ["COPERNICUS/S2_SR_HARMONIZED",
                                                                      "COPERNICUS/S1_GRD"]
    assert [r["params"]["grid"] for r in fake.requests][0] == fake.requests[1]["params"]["grid"]
    np.testing.assert_allclose(px.array[0], 0.12, rtol=1e-6)
    np.testing.assert_allclose(px.modalities["s1"].array, [[[-10.0]], [[-16.0]]] * np.ones((2, 20, 20)))
