"""Landsat and HLS collections of the ``gee`` provider, against the fake Earth Engine
(tests/fake_ee.py evaluates the expression the provider builds, bit operations and
collection merges included)."""

from __future__ import annotations

import numpy as np
import pytest

from fake_ee import FakeEE, Scene, offline_real_ee
from rsembed_store.errors import ProviderError
from rsembed_store.ingest.providers import gee
from rsembed_store.ingest.providers.gee import EarthEngineProvider
from rsembed_store.ingest.providers.gee_collections import COLLECTIONS
from rsembed_store.keys import ResolvedRequest
from rsembed_store.specs import OutputSpec, PointBuffer, SensorSpec, TemporalSpec

HERE = PointBuffer(11.0, 46.0, 300)
WINDOW = ("2022-06-01", "2022-09-01")


@pytest.fixture(autouse=True)
def clean_process(monkeypatch):
    for name in ("EE_PROJECT", "GOOGLE_CLOUD_PROJECT", "EE_SERVICE_ACCOUNT_KEY", "EE_SERVICE_ACCOUNT"):
        monkeypatch.delenv(name, raising=False)
    gee.reset_initialization()
    yield
    gee.reset_initialization()


def provider(fake):
    return EarthEngineProvider({"project": "p", "resampling": "nearest"}, ee_module=fake)


def request(collection, bands):
    return ResolvedRequest(model="x", revision="1", provider="gee", spatial=HERE,
                           temporal=TemporalSpec.range(*WINDOW),
                           sensor=SensorSpec(collection, tuple(bands), scale_m=30, cloudy_pct=50),
                           output=OutputSpec.pooled(), input_prep=None)


def west_cloud(qa_value):
    return lambda x, y: np.where(np.mod(x, 600.0) < 300.0, qa_value, 0.0)


def test_landsat7_l2_red_is_sr_b3_scaled_and_qa_pixel_masks_clouds():
    scene = Scene("l7", "2022-06-10", {"SR_B3": 10000.0, "SR_B4": 20000.0, "QA_PIXEL": west_cloud(0b1000)},
                  {"CLOUD_COVER": 10.0})
    px = provider(FakeEE({"LANDSAT/LE07/C02/T1_L2": [scene]})).fetch(request("landsat7-l2", ["red", "nir"]))
    x0, xres = px.transform[0], px.transform[1]
    x = x0 + (np.arange(px.array.shape[2]) + 0.5) * xres
    cloudy = np.mod(x, 600.0) < 300.0
    assert not px.valid[:, cloudy].any() and px.valid[:, ~cloudy].all()
    np.testing.assert_allclose(px.array[:, px.valid].mean(axis=1), [10000 * 2.75e-5 - 0.2, 20000 * 2.75e-5 - 0.2],
                               rtol=1e-5)
    assert px.meta["bands_ee"] == ["SR_B3", "SR_B4"]


def test_hls_merges_s30_and_l30_by_common_names_with_fmask():
    s30 = Scene("s", "2022-06-10", {"B4": 0.05, "B8A": 0.30, "B8": 0.9, "Fmask": west_cloud(0b10)},
                {"CLOUD_COVERAGE": 5.0})
    l30 = Scene("l", "2022-07-10", {"B4": 0.07, "B5": 0.34, "Fmask": west_cloud(255)}, {"CLOUD_COVERAGE": 5.0})
    fake = FakeEE({"NASA/HLS/HLSS30/v002": [s30], "NASA/HLS/HLSL30/v002": [l30]})
    px = provider(fake).fetch(request("hls", ["red", "nir"]))
    assert px.meta["n_images"] == 2
    np.testing.assert_allclose(px.array[:, px.valid].mean(axis=1), [0.06, 0.32], rtol=1e-5)  # median of the two
    assert not px.valid.all()  # Fmask cloud (S30) and fill (L30) both masked
    with pytest.raises(ProviderError, match="common name every member has"):
        provider(fake).fetch(request("hls", ["B5"]))


def test_landsat8_toa_and_every_new_collection_is_declared():
    for name in ("landsat7-l2", "landsat7-l1", "landsat8-l1", "landsat9-l1", "hls-s30", "hls-l30", "hls"):
        assert name in COLLECTIONS
    assert COLLECTIONS["landsat8-l1"].resolve_band("red").name == "B4"
    assert COLLECTIONS["landsat7-l1"].resolve_band("red").name == "B3"
    assert COLLECTIONS["hls-s30"].resolve_band("nir").name == "B8A"
    assert COLLECTIONS["hls-s30"].resolve_band("B04").name == "B4"
    assert COLLECTIONS["hls-l30"].resolve_band("nir").name == "B5"


def test_models_read_landsat_by_common_names_so_b04_is_never_etm_nir():
    from rsembed_store.keys import Request, resolve

    r = resolve(Request("spectral", HERE, TemporalSpec.year(2022), sensor=SensorSpec("landsat7-l2", ("B04",), scale_m=30),
                        provider="gee"))
    assert r.sensor.bands == ("blue", "green", "red", "nir", "swir16", "swir22")
    coll = COLLECTIONS["landsat7-l2"]
    assert [coll.resolve_band(b).name for b in r.sensor.bands] == ["SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B7"]


def test_the_real_client_accepts_the_hls_merge_and_qa_mask(monkeypatch):
    """The real ``ee`` library, initialised offline with its own test algorithm table, builds
    the merged HLS request with its Fmask masks; only computePixels (the network) is replaced."""
    import json

    with offline_real_ee(monkeypatch, gee, 0.25) as (ee, sent):
        px = EarthEngineProvider({}).fetch(request("hls", ["red", "nir"]))
        assert np.allclose(px.array, 0.25)
        text = json.dumps(ee.serializer.encode(sent[0]["expression"], for_cloud_api=True))
    for name in ('"ImageCollection.merge"', '"Image.bitwiseAnd"', '"Image.eq"', '"NASA/HLS/HLSS30/v002"',
                 '"NASA/HLS/HLSL30/v002"', '"Fmask"', '"B8A"', '"CLOUD_COVERAGE"'):
        assert name in text, name
