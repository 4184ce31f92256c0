"""Time series: frame plans, per-frame composites and back-fill, in both providers.

The local provider reads a real multi-date synthetic scene (six COGs of 2023,
dated Jan 30, Apr 1, Jun 1, Aug 1, Oct 1 and Dec 1); the request grid lies on the
scene's own 10 m lattice, so each frame's median can be recomputed with numpy from
the same files. The Earth Engine provider runs against the fake client in
tests/fake_ee.py.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from datetime import date, timedelta

import numpy as np
import pytest
import rasterio

from fake_ee import FakeEE, Scene
from rsembed_store import Request, resolve
from rsembed_store.errors import NoImageryError, SpecError
from rsembed_store.ingest.providers import gee
from rsembed_store.ingest.providers.base import nearest_filled
from rsembed_store.ingest.providers.gee import EarthEngineProvider
from rsembed_store.ingest.providers.local import LocalProvider
from rsembed_store.testing.scenes import BANDS, SceneSpec, generate_scene
from rsembed_store.keys import ResolvedRequest
from rsembed_store.model import FramePlan, Model, ModelInfo
from rsembed_store.registry import register_model
from rsembed_store.specs import OutputSpec, PointBuffer, SensorSpec, TemporalSpec

SPEC = SceneSpec(size_px=128, n_dates=6, n_patches=8, seed=5)
HERE = PointBuffer(SPEC.center_lon, SPEC.center_lat, 400)  # 80 x 80 px of 10 m inside the scene
SENSOR = SensorSpec("s2-l2a", BANDS, scale_m=10, cloudy_pct=100)


# ------------------------------------------------------------------ frame plans


def test_a_plan_splits_the_days_of_the_window_evenly():
    plan = FramePlan.split(TemporalSpec.range("2023-01-01", "2023-04-01"), 4)  # 90 days
    # floor(k * 90 / 4) = 0, 22, 45, 67, 90 days after Jan 1
    assert plan.edges == ("2023-01-01", "2023-01-23", "2023-02-15", "2023-03-09", "2023-04-01")
    assert plan.windows()[1] == (date(2023, 1, 23), date(2023, 2, 15))


@pytest.mark.parametrize("days,count", [(365, 4), (92, 3), (7, 7), (1000, 12), (31, 2)])
def test_frames_tile_the_window_and_differ_by_at_most_a_day(days, count):
    start = date(2021, 3, 5)
    plan = FramePlan.split(TemporalSpec.range(start.isoformat(), (start + timedelta(days=days)).isoformat()), count)
    windows = plan.windows()
    assert windows[0][0] == start and windows[-1][1] == start + timedelta(days=days)
    assert all(a[1] == b[0] for a, b in zip(windows, windows[1:]))  # no gap, no overlap
    lengths = [(e - s).days for s, e in windows]
    assert sum(lengths) == days and max(lengths) - min(lengths) <= 1 and min(lengths) >= 1


def test_bad_plans_are_refused():
    with pytest.raises(SpecError, match="2 day.*3 frames"):
        FramePlan.split(TemporalSpec.range("2023-01-01", "2023-01-03"), 3)
    with pytest.raises(SpecError, match="increasing"):
        FramePlan(2, ("2023-01-01", "2023-01-01", "2023-02-01"))
    with pytest.raises(SpecError, match="3 dates; 3 frames need 4"):
        FramePlan(3, ("2023-01-01", "2023-01-05", "2023-02-01"))


def test_the_nearest_filled_frame_prefers_the_earlier_on_a_tie():
    parts = [None, "a", None, "b", None, None]
    assert [nearest_filled(parts, k) for k in range(6)] == [1, 1, 1, 3, 3, 3]


# ------------------------------------------------------------------ keys


class SeriesModel(Model):
    info = ModelInfo(id="tsmodel", revision="ts-v1", kind="on_the_fly", dim=4,
                     default_sensor=SensorSpec("s2-l2a", ("B04", "B08")), input_size=16, frames=3)


register_model("tsmodel", SeriesModel)


def test_keys_differ_by_frame_plan_and_not_by_spelling(monkeypatch):
    req = Request("tsmodel", HERE, TemporalSpec.year(2023))
    three = resolve(req)
    assert three.frames.count == 3
    assert resolve(replace(req, temporal=TemporalSpec.range("2023-01-01", "2024-01-01"))).key == three.key
    assert resolve(replace(req, temporal=TemporalSpec.range("2023-01-01", "2023-12-31"))).key != three.key
    monkeypatch.setattr(SeriesModel, "info", replace(SeriesModel.info, frames=4))
    four = resolve(req)
    assert four.frames.count == 4 and four.key != three.key


def test_a_model_declaring_frames_must_composite_on_the_fly():
    with pytest.raises(ValueError, match="frames"):
        ModelInfo(id="x", revision="1", kind="precomputed", dim=2, temporal="year", frames=2)
    with pytest.raises(ValueError, match="frames=0"):
        ModelInfo(id="x", revision="1", kind="on_the_fly", dim=2, frames=0)


# ------------------------------------------------------------------ the local provider


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    out = tmp_path_factory.mktemp("ts")
    manifest = generate_scene(out, SPEC)
    assert manifest["dates"] == ["2023-01-30", "2023-04-01", "2023-06-01", "2023-08-01", "2023-10-01",
                                 "2023-12-01"]
    return out, manifest


def local(scene):
    return LocalProvider({"sources": {"s2-l2a": str(scene[0] / "scenes")}})


def framed(window, count, *, sensor=SENSOR, provider="local", spatial=HERE):
    temporal = TemporalSpec.range(*window)
    return ResolvedRequest(model="x", revision="1", provider=provider, spatial=spatial, temporal=temporal,
                           sensor=sensor, output=OutputSpec.pooled(), input_prep=None,
                           frames=FramePlan.split(temporal, count))


def numpy_median(scene, dates, transform, shape):
    """The per-band NaN-median of the scenes of ``dates`` read straight from their files."""
    out_dir, manifest = scene
    stack = []
    for entry in manifest["scenes"]:
        if entry["date"] not in dates:
            continue
        with rasterio.open(out_dir / entry["path"]) as ds:
            col = (transform[0] - ds.transform.c) / ds.transform.a
            row = (transform[3] - ds.transform.f) / ds.transform.e
            assert col == int(col) and row == int(row), "the request grid must lie on the scene lattice"
            window = rasterio.windows.Window(int(col), int(row), shape[1], shape[0])
            dn = ds.read(window=window).astype(np.float64)
        data = dn * 1e-4
        data[:, (dn == 0).any(axis=0)] = np.nan
        stack.append(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: no data on any date
        return np.nanmedian(np.stack(stack), axis=0)


def test_each_frame_is_the_median_of_its_own_sub_window(scene):
    # 365 days in 4 frames: [Jan 1, Apr 2) [Apr 2, Jul 2) [Jul 2, Oct 1) [Oct 1, Jan 1)
    px = local(scene).fetch(framed(("2023-01-01", "2024-01-01"), 4))
    assert px.frames == 4 and px.array.shape == (4, len(BANDS), 80, 80) and px.valid.shape == (4, 80, 80)
    assert px.meta["frame_windows"] == [["2023-01-01", "2023-04-02"], ["2023-04-02", "2023-07-02"],
                                        ["2023-07-02", "2023-10-01"], ["2023-10-01", "2024-01-01"]]
    assert px.meta["backfilled"] == []
    groups = [("2023-01-30", "2023-04-01"), ("2023-06-01",), ("2023-08-01",), ("2023-10-01", "2023-12-01")]
    for k, dates in enumerate(groups):
        assert px.meta["frames"][k]["dates"] == list(dates)
        expected = numpy_median(scene, dates, px.transform, px.array.shape[-2:])
        ok = ~np.isnan(expected).any(axis=0)
        np.testing.assert_array_equal(px.valid[k], ok)
        np.testing.assert_allclose(px.array[k][:, ok], expected[:, ok], rtol=1e-6, atol=1e-7)
    assert not np.allclose(px.array[0], px.array[2])  # winter and summer differ


def test_an_empty_frame_is_back_filled_from_its_nearest_neighbour_and_recorded(scene):
    # 151 days in 5 frames of 30-31 days; scenes only on Jan 30 (frame 0), Apr 1 (2), Jun 1 (4)
    px = local(scene).fetch(framed(("2023-01-15", "2023-06-15"), 5))
    assert px.meta["frame_windows"][1] == ["2023-02-14", "2023-03-16"]
    assert [(b["frame"], b["from_frame"]) for b in px.meta["backfilled"]] == [(1, 0), (3, 2)]  # ties: earlier
    assert px.meta["backfilled"][0]["window"] == ["2023-02-14", "2023-03-16"]
    np.testing.assert_array_equal(px.array[1], px.array[0])
    np.testing.assert_array_equal(px.valid[3], px.valid[2])
    assert [f["backfilled_from"] for f in px.meta["frames"]] == [None, 0, None, 2, None]
    assert px.meta["frames"][4]["dates"] == ["2023-06-01"]


def test_only_a_wholly_empty_window_raises(scene):
    with pytest.raises(NoImageryError, match="every one of the 3 frames"):
        local(scene).fetch(framed(("2022-01-01", "2023-01-01"), 3))


def test_a_one_composite_request_is_unchanged(scene):
    temporal = TemporalSpec.range("2023-01-01", "2023-07-01")
    req = ResolvedRequest(model="x", revision="1", provider="local", spatial=HERE, temporal=temporal,
                          sensor=SENSOR, output=OutputSpec.pooled(), input_prep=None)
    px = local(scene).fetch(req)
    assert px.frames is None and px.array.shape == (len(BANDS), 80, 80) and "frame_windows" not in px.meta
    expected = numpy_median(scene, ("2023-01-30", "2023-04-01", "2023-06-01"), px.transform, (80, 80))
    ok = ~np.isnan(expected).any(axis=0)
    np.testing.assert_allclose(px.array[:, ok], expected[:, ok], rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ the Earth Engine provider

S2 = "COPERNICUS/S2_SR_HARMONIZED"
EE_BANDS = ("B2", "B3", "B4", "B8", "B11", "B12")


def s2_scene(sid, day, level):
    return Scene(sid, day, {b: level + 10.0 * i for i, b in enumerate(EE_BANDS)}, {"CLOUDY_PIXEL_PERCENTAGE": 5.0})


@pytest.fixture
def ee_provider(monkeypatch):
    for name in ("EE_PROJECT", "GOOGLE_CLOUD_PROJECT", "EE_SERVICE_ACCOUNT_KEY", "EE_SERVICE_ACCOUNT"):
        monkeypatch.delenv(name, raising=False)
    gee.reset_initialization()
    fake = FakeEE({S2: [s2_scene("a", "2022-01-10", 1000.0), s2_scene("b", "2022-01-20", 3000.0),
                        s2_scene("c", "2022-03-05", 5000.0)]})
    yield fake, EarthEngineProvider({"project": "p"}, ee_module=fake)
    gee.reset_initialization()


def test_gee_composites_each_frame_in_its_own_request_and_back_fills(ee_provider):
    fake, provider = ee_provider
    sensor = SensorSpec("s2-l2a", ("B02", "B04"), cloudy_pct=30)
    px = provider.fetch(framed(("2022-01-01", "2022-04-01"), 3, sensor=sensor, provider="gee",
                               spatial=PointBuffer(11.0, 46.0, 100)))
    # 90 days in 3 frames of 30 days: [Jan 1, Jan 31) [Jan 31, Mar 2) [Mar 2, Apr 1)
    assert fake.windows() == [("2022-01-01", "2022-01-31"), ("2022-01-31", "2022-03-02"), ("2022-03-02", "2022-04-01")]
    assert px.array.shape == (3, 2, 20, 20)
    np.testing.assert_allclose(px.array[0, 0], (1000.0 + 3000.0) / 2 * 1e-4, rtol=1e-6)  # median of a, b
    np.testing.assert_allclose(px.array[2, 1], (5000.0 + 20.0) * 1e-4, rtol=1e-6)  # c alone, B4
    assert px.meta["backfilled"] == [{"frame": 1, "from_frame": 0, "window": ["2022-01-31", "2022-03-02"]}]
    np.testing.assert_array_equal(px.array[1], px.array[0])
    assert [f["n_images"] for f in px.meta["frames"]] == [2, 2, 1]
    assert provider.stats()["gee.fetches"] == 1 and provider.stats()["gee.calls"] == 3


def test_gee_raises_no_imagery_only_when_every_frame_is_empty(ee_provider):
    _, provider = ee_provider
    with pytest.raises(NoImageryError, match="every one of the 2 frames"):
        provider.fetch(framed(("2021-01-01", "2021-03-01"), 2, sensor=SensorSpec("s2-l2a", ("B02",)),
                              provider="gee", spatial=PointBuffer(11.0, 46.0, 100)))
    assert provider.stats()["gee.no_imagery"] == 1
