"""The rs-embed bridge with rs-embed installed: embedders registered through rs-embed's own
``register`` decorator (no weights) are computed, cached and searched by ``rsembed:<name>``
on the synthetic scene, read by the real local provider."""

import numpy as np
import pytest

rs = pytest.importorskip("rs_embed")

from rs_embed.core.embedding import Embedding as RsEmbedding  # noqa: E402
from rs_embed.core.registry import register  # noqa: E402
from rs_embed.core.types import EmbedderCapabilities  # noqa: E402
from rs_embed.embedders.base import EmbedderBase  # noqa: E402

from rsembed_store import BBox, PointBuffer, Request, SensorSpec, Store, TemporalSpec, resolve  # noqa: E402
from rsembed_store.errors import MissingExtraError, SpecError, UnknownModelError  # noqa: E402
from rsembed_store.ingest.plan import plan  # noqa: E402
from rsembed_store.ingest.providers.local import LocalProvider  # noqa: E402
from rsembed_store.registry import describe_models, model_class, model_info, model_names  # noqa: E402
from rsembed_store.specs import OutputSpec  # noqa: E402

S2 = "COPERNICUS/S2_SR_HARMONIZED"
RS_BANDS = ("B2", "B3", "B4", "B8")  # rs-embed's (Earth Engine) band names
OUR_BANDS = ("B02", "B03", "B04", "B08")
D = 6
BLOCK = 8
PROJECTION = np.random.default_rng(7).normal(size=(D, len(RS_BANDS))).astype(np.float32)
WHEN = TemporalSpec.year(2023)
ROI = PointBuffer(11.0, 46.0, 320)
CALLS = {"bandmean": 0}


class _ProjectedBandMeans(EmbedderBase):
    """A fixed random projection of reflectance (DN * 1e-4): no weights to download.
    pooled = mean (or max) over pixels; grid = projection of 8x8 px block means."""

    capabilities = EmbedderCapabilities(input_chw=True)
    extra_describe: dict = {}

    def describe(self):
        return {
            "type": "on_the_fly",
            "backend": ["provider"],
            "inputs": {"collection": S2, "bands": list(RS_BANDS)},
            "temporal": {"mode": "range"},
            "output": ["pooled", "grid"],
            "defaults": {"scale_m": 10, "cloudy_pct": 30, "composite": "median"},
            **self.extra_describe,
        }

    def get_embedding(self, *, spatial, temporal, sensor, output, backend, device="auto", input_chw=None,
                      model_config=None):
        CALLS["bandmean"] += 1
        z = np.einsum("dc,chw->dhw", PROJECTION, np.asarray(input_chw, np.float32) * 1e-4)
        if output.mode == "pooled":
            flat = z.reshape(D, -1)
            return RsEmbedding(data=flat.max(1) if output.pooling == "max" else flat.mean(1), meta={"toy": True})
        h, w = z.shape[1] // BLOCK, z.shape[2] // BLOCK
        blocks = z[:, : h * BLOCK, : w * BLOCK].reshape(D, h, BLOCK, w, BLOCK).mean(axis=(2, 4))
        return RsEmbedding(data=blocks, meta={"toy": True})


@register("storetest_bandmean")
class BandMean(_ProjectedBandMeans):
    extra_describe = {"dim": D, "weights": None}


@register("storetest_nodim")
class BandMeanNoDim(_ProjectedBandMeans):
    extra_describe = {"defaults": {"scale_m": 20, "cloudy_pct": 30, "composite": "median", "ckpt": "org/toy-v2"}}


NAME = "rsembed:storetest_bandmean"


@pytest.fixture
def db(tmp_path, scene_config):
    return Store.open(tmp_path / "db", config=scene_config)


def dn_of(pixels):
    """What rs-embed's own fetch would hand the model: S2 DN (reflectance / 1e-4), no data -> 0."""
    x = pixels.array[[pixels.bands.index(b) for b in OUR_BANDS]] / 1e-4
    return np.where(pixels.valid, x, 0.0).astype(np.float32)


def direct(request, scene_config, output):
    """rs-embed called directly on the same pixels, ROI and window."""
    pixels = LocalProvider(scene_config).fetch(request)
    start, end = (d.isoformat() for d in request.temporal.window())
    data = rs.UserData(data=dn_of(pixels), collection=S2, bands=RS_BANDS,
                       spatial=rs.PointBuffer(lon=ROI.lon, lat=ROI.lat, buffer_m=ROI.buffer_m),
                       temporal=rs.TemporalSpec.range(start, end))
    return pixels, rs.get_embedding_from_data("storetest_bandmean", data, output=output, input_prep="resize")


def test_the_store_computes_it_by_name_and_the_second_get_is_a_hit(db):
    before = CALLS["bandmean"]
    first = db.get(NAME, ROI, WHEN)
    assert not first.cached and first.vector.shape == (D,)
    assert CALLS["bandmean"] == before + 1
    again = db.get(NAME, ROI, WHEN)
    assert again.cached and CALLS["bandmean"] == before + 1  # served from the store, not recomputed
    np.testing.assert_array_equal(again.vector, first.vector)
    assert again.request.provider == "local" and again.request.model == NAME


def test_the_stored_vector_is_what_rs_embed_returns_for_the_same_pixels(db, scene_config):
    stored = db.get(NAME, ROI, WHEN)
    pixels, theirs = direct(stored.request, scene_config, rs.OutputSpec.pooled())
    np.testing.assert_allclose(stored.vector, np.asarray(theirs.data), rtol=1e-5, atol=1e-6)
    # and independently of rs-embed's plumbing: the projection of the mean reflectance
    mean_reflectance = dn_of(pixels).reshape(len(RS_BANDS), -1).mean(axis=1) * 1e-4
    np.testing.assert_allclose(stored.vector, PROJECTION @ mean_reflectance, rtol=1e-4, atol=1e-5)


def test_grid_output_matches_rs_embed_too(db, scene_config):
    stored = db.get(NAME, ROI, WHEN, output=OutputSpec.grid())
    _, theirs = direct(stored.request, scene_config, rs.OutputSpec.grid())
    grid = stored.grid_f32()
    assert grid.shape == np.asarray(theirs.data).shape and grid.shape[0] == D and grid.shape[1] >= 2
    np.testing.assert_allclose(grid, np.asarray(theirs.data), rtol=1e-5, atol=1e-6)


def test_rs_embed_spec_objects_give_the_same_key_as_ours():
    ours = resolve(Request(NAME, ROI, WHEN, output=OutputSpec.pooled("max")))
    theirs = resolve(Request(
        NAME,
        rs.PointBuffer(lon=11.0, lat=46.0, buffer_m=320),
        rs.TemporalSpec.range("2023-01-01", "2024-01-01"),
        sensor=rs.SensorSpec(collection=S2, bands=("B8", "B4", "B3", "B2")),  # rs-embed's names, any order
        output=rs.OutputSpec.pooled("max"),
    ))
    assert theirs.key == ours.key
    assert ours.sensor.collection == "s2-l2a" and ours.sensor.bands == OUR_BANDS
    other = resolve(Request(NAME, ROI, WHEN, sensor=rs.SensorSpec(collection=S2, bands=RS_BANDS, scale_m=20)))
    assert other.key != ours.key
    # rs-embed sets a grid's cell size itself: OutputSpec.scale_m changes nothing computed
    grids = {resolve(Request(NAME, ROI, WHEN, output=out)).key for out in (OutputSpec.grid(), OutputSpec.grid(30))}
    assert len(grids) == 1 and ours.key not in grids


def test_revision_holds_rs_embed_version_and_the_weights():
    info = model_info(NAME)
    assert info.revision.startswith(f"rs-embed-{rs.__version__}+no-weights+")
    assert info.kind == "on_the_fly" and info.dim == D and info.outputs == ("pooled", "grid")
    assert info.default_sensor == SensorSpec("s2-l2a", OUR_BANDS, scale_m=10, cloudy_pct=30)
    other = model_info("rsembed:storetest_nodim")
    assert f"rs-embed-{rs.__version__}+org/toy-v2+" in other.revision
    assert other.default_sensor.scale_m == 20


def test_an_undeclared_dimension_is_measured_by_one_call_and_listing_runs_nothing():
    listed = {d["id"]: d for d in describe_models()}
    assert NAME in model_names() and "rsembed:storetest_nodim" in model_names()
    assert listed["rsembed:storetest_nodim"]["dim"] is None
    assert listed[NAME]["dim"] == D and listed[NAME]["revision"] == model_info(NAME).revision
    assert model_info("rsembed:storetest_nodim").dim == D


def test_ingest_then_search(db, small_scene):
    w, s, e, n = small_scene[1]["bounds_lonlat"]
    region = BBox(w + 0.004, s + 0.004, e - 0.004, n - 0.004)
    requests = plan(NAME, region, 9, WHEN).requests
    assert len(requests) >= 5
    first = db.ingest(requests, progress=False)
    assert first.failed == 0, first.failures[:2]
    assert first.computed == len(requests)
    again = db.ingest(requests, progress=False)
    assert again.cached == len(requests) and again.computed == 0
    found = db.search(NAME, requests[0].key, k=3)
    assert len(found.rows) == 3
    assert requests[0].key not in [row["key"] for row in found.rows]  # the query itself is left out
    assert [r["distance"] for r in found.rows] == sorted(r["distance"] for r in found.rows)


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: model_class("rsembed:no-such-model"), ["rsembed:no-such-model", "rsembed:storetest_bandmean"]),
        (lambda: model_class("rsembed:gse"), ["precomputed", "gse"]),
        (lambda: resolve(Request(NAME, ROI, WHEN, sensor=SensorSpec("s1-grd", ("VV",)))), ["s1-grd", "s2-l2a"]),
        (lambda: resolve(Request(NAME, ROI, WHEN, sensor=SensorSpec("s2-l2a", ("B02", "B03", "B04")))),
         ["B08", "lacks"]),
        (lambda: resolve(Request(NAME, ROI, WHEN, sensor=rs.SensorSpec(collection=S2, bands=RS_BANDS,
                                                                      orbit="ASCENDING"))),
         ["orbit", "ASCENDING"]),
        (lambda: resolve(Request(NAME, ROI, WHEN, sensor=SensorSpec("my-own-s2", OUR_BANDS))), ["my-own-s2"]),
    ],
)
def test_bad_names_and_specs_are_named(make, words):
    with pytest.raises((UnknownModelError, SpecError)) as info:
        make()
    for word in words:
        assert word in str(info.value), f"{word!r} missing from {info.value}"


def test_a_refused_request_writes_nothing(db):
    with pytest.raises(SpecError):
        db.get(NAME, ROI, WHEN, sensor=SensorSpec("s2-l2a", ("B02",)))
    assert db.spaces() == []


def test_without_rs_embed_the_error_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "rs_embed", None)
    assert not [n for n in model_names() if n.startswith("rsembed:")]
    with pytest.raises(MissingExtraError, match=r"rsembed-store\[rsembed\]"):
        model_class("rsembed:satmae")  # never built in this process, so not cached
