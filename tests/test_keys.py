"""Content keys: golden values that must never drift, and properties (hypothesis).

If a golden key changes, the key recipe changed: bump rsembed_store.keys.SCHEMA
and re-pin these values in the same commit, deliberately.
"""

import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rsembed_store import (
    BBox,
    H3Cell,
    InputPrepSpec,
    OutputSpec,
    PointBuffer,
    Request,
    SensorSpec,
    SpecError,
    TemporalSpec,
    UnknownModelError,
)
from rsembed_store.keys import SCHEMA, ResolvedRequest, canonical_json, resolve
from rsembed_store.model import Model, ModelInfo
from rsembed_store.registry import register_model


class ToySeriesModel(Model):
    """Reads 4 frames of Sentinel-2 and, when asked, Sentinel-1 too (for the keys of such requests)."""

    info = ModelInfo(
        id="toyseries",
        revision="toyseries-v1",
        kind="on_the_fly",
        dim=8,
        default_sensor=SensorSpec("s2-l2a", ("B04", "B08")),
        input_size=32,
        frames=4,
        modalities={"s1": SensorSpec("s1-grd", ("VV", "VH"))},
    )


register_model("toyseries", ToySeriesModel)

REQS = {
 "point_year": Request("toy", PointBuffer(11.0, 46.0, 500), TemporalSpec.year(2022)),
 "point_range": Request("toy", PointBuffer(11.0, 46.0, 500), TemporalSpec.range("2022-06-01", "2022-09-01")),
 "point_max": Request("toy", PointBuffer(11.0, 46.0, 500), TemporalSpec.year(2022), output=OutputSpec.pooled("max")),
 "bbox": Request("toy", BBox(10.9, 45.9, 11.1, 46.1), TemporalSpec.year(2022)),
 "h3": Request("toy", H3Cell("8928308280fffff"), TemporalSpec.year(2021)),
 "h3_grid": Request("toy", H3Cell("8928308280fffff"), TemporalSpec.year(2021), output=OutputSpec.grid()),
 "grid_native": Request("toy", PointBuffer(-122.4, 37.8, 1000), TemporalSpec.year(2021), output=OutputSpec.grid(20, grid_orientation="native")),
 "sensor": Request("toy", PointBuffer(11.0, 46.0, 500), TemporalSpec.year(2022), sensor=SensorSpec("s2-l2a", ("B04", "B08"), scale_m=20, cloudy_pct=10)),
 "mosaic": Request("toy", PointBuffer(11.0, 46.0, 500), TemporalSpec.year(2022), sensor=SensorSpec("s2-l2a", ("B04", "B08"), composite="mosaic")),
 "tile": Request("toy", PointBuffer(11.0, 46.0, 5000), TemporalSpec.year(2022), input_prep=InputPrepSpec.tile()),
 "south": Request("toy", PointBuffer(151.2, -33.9, 250.5), TemporalSpec.range("2020-01-01", "2020-02-01")),
 "year_model": Request("toyyear", PointBuffer(11.0, 46.0, 500), TemporalSpec.range("2022-03-01", "2022-04-01"), provider="product"),
 "frames": Request("toyseries", PointBuffer(11.0, 46.0, 500), TemporalSpec.year(2022)),
 "multimodal": Request("toyseries", PointBuffer(11.0, 46.0, 500), TemporalSpec.year(2022), modalities=("s1",)),
}

GOLDEN = {
    "point_year": "8a55f97381736a83d4569d51221ebe65ca6b2cbab59893f0792550d8b2909ee5",
    "point_range": "e569a5cf41637ef3d865afcf88104e0f0f7d78208f777ea2b904103b6fe3c083",
    "point_max": "5ff28205e6c1708605067e0e7c083c79a76eb1b518f891edf021aeeb2aa4e729",
    "bbox": "1043e6c79c6e7f82695bade26786453e5d9359b1ac4930233f3a24af8e29ce96",
    "h3": "e36202bd732fee0b25fd960d538ef960d06bebd5a4031901a5995335c2c68dec",
    "h3_grid": "dd74d1c2bd8b37e430c8f8d7cbb8deaae3fd6327a79e1f3c102143dc2102910e",
    "grid_native": "ee78335ab5be91a80e08dc98bf33b3aef3914fc07d001b527b6dbd0c23e05829",
    "sensor": "18e31d6b4b00816e90adb04cb16afe63ff44f2eb1563f572d8b0b9953480780d",
    "mosaic": "1e5f62d1c883c1bd26909e282767b2eb4bf0aa1ed45503e60e18a1e2363562d3",
    "tile": "a01497ba4db63bd2379bf362c05d1d730616fd9e794b64fb9983284883cce5c1",
    "south": "3c09849fed6073d5713bc624d0c57a68e5f6b021a30f17b72df84bd1960cdbb9",
    "year_model": "134ecc0639a9d6b90d347a0848a49c399fc8e419c975b74714652bcc5b2147ed",
    "frames": "acccf90df8d6bdd8039bc273b9a2d219f7e259e9244aafc602ba75a801c79db6",
    "multimodal": "93f7d61f38e8adb4a2ace7766d7848d86570de18a0f444554b3bd192793ac0ac",
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_keys(name):
    assert resolve(REQS[name]).key == GOLDEN[name]


def test_canonical_json_is_stored_form():
    r = resolve(REQS["point_year"])
    assert r.canonical == canonical_json(r.key_dict())
    d = json.loads(r.canonical)
    assert d["schema"] == SCHEMA
    assert d["model"] == {"id": "toy", "revision": "toy-v1"}
    assert " " not in r.canonical
    assert list(d) == sorted(d)
    back = ResolvedRequest.from_canonical(r.canonical)
    assert back == r and back.key == r.key


def test_frames_and_modalities_enter_the_key_only_when_set():
    plain = json.loads(resolve(REQS["point_year"]).canonical)
    assert "frames" not in plain and "modalities" not in plain
    framed = json.loads(resolve(REQS["frames"]).canonical)
    # 365 days in 4 frames: edges at start + floor(k * 365 / 4) days = 0, 91, 182, 273, 365
    assert framed["frames"] == {"count": 4, "edges": ["2022-01-01", "2022-04-02", "2022-07-02", "2022-10-01",
                                                      "2023-01-01"]}
    assert "modalities" not in framed
    both = json.loads(resolve(REQS["multimodal"]).canonical)
    assert both["frames"] == framed["frames"]
    assert both["modalities"] == {"s1": SensorSpec("s1-grd", ("VV", "VH")).to_dict()}
    without = {k: v for k, v in both.items() if k != "modalities"}
    assert canonical_json(without) == resolve(REQS["frames"]).canonical


def test_frames_and_modalities_survive_the_canonical_round_trip():
    for name in ("frames", "multimodal"):
        r = resolve(REQS[name])
        back = ResolvedRequest.from_canonical(r.canonical)
        assert back == r and back.key == r.key and back.frames == r.frames and back.modalities == r.modalities
        assert resolve(back.to_request()).key == r.key


def test_a_stored_request_keeps_its_frames_and_modalities():
    from rsembed_store.keys import StoredRequest

    for name in ("point_year", "frames", "multimodal"):
        r = resolve(REQS[name])
        stored = StoredRequest(r.canonical, r.key, r.model, r.revision)
        assert (stored.frames, stored.modalities) == (r.frames, r.modalities)
        assert stored == r and hash(stored) == hash(ResolvedRequest.from_canonical(r.canonical))


def test_a_modality_is_read_on_the_primary_grid_and_named_ones_only():
    r = resolve(replace(REQS["multimodal"], sensor=SensorSpec("s2-l2a", ("B04", "B08"), scale_m=20),
                        modalities={"s1": SensorSpec("s1-grd", ("VV",), scale_m=10)}))
    assert dict(r.modalities)["s1"].scale_m == 20 and dict(r.modalities)["s1"].bands == ("VV",)
    with pytest.raises(SpecError, match="no modality 's2'.*'s1'"):
        resolve(replace(REQS["multimodal"], modalities=("s2",)))
    with pytest.raises(SpecError, match="no modality 's1'"):
        resolve(replace(REQS["point_year"], modalities=("s1",)))
    with pytest.raises(SpecError, match="modalities=5"):
        Request("toy", PointBuffer(1, 2, 3), modalities=5)


def test_a_window_shorter_than_the_frames_is_refused():
    with pytest.raises(SpecError, match="3 day.*4 frames"):
        resolve(Request("toyseries", PointBuffer(1, 2, 100), TemporalSpec.range("2022-01-01", "2022-01-04")))


def test_year_and_its_range_share_a_key_for_composite_models():
    a = resolve(Request("toy", PointBuffer(1, 2, 100), TemporalSpec.year(2022)))
    b = resolve(Request("toy", PointBuffer(1, 2, 100), TemporalSpec.range("2022-01-01", "2023-01-01")))
    assert a.key == b.key


def test_year_model_resolves_a_range_to_its_start_year():
    a = resolve(Request("toyyear", PointBuffer(1, 2, 100), TemporalSpec.year(2022)))
    b = resolve(Request("toyyear", PointBuffer(1, 2, 100), TemporalSpec.range("2022-05-01", "2022-06-01")))
    assert a.key == b.key and a.temporal == TemporalSpec.year(2022)
    with pytest.raises(SpecError, match="2030"):
        resolve(Request("toyyear", PointBuffer(1, 2, 100), TemporalSpec.year(2030)))


def test_defaults_are_filled_into_the_key():
    implicit = resolve(Request("toy", PointBuffer(1, 2, 100), TemporalSpec.year(2022)))
    explicit = resolve(
        Request(
            "toy",
            PointBuffer(1, 2, 100),
            TemporalSpec.year(2022),
            sensor=SensorSpec("s2-l2a", ("B04", "B08")),
            output=OutputSpec.pooled("mean"),
            input_prep=InputPrepSpec.resize(),
            provider="local",
        )
    )
    assert implicit.key == explicit.key


def test_inspection_switches_do_not_enter_the_key():
    base = Request("toy", PointBuffer(1, 2, 100), TemporalSpec.year(2022), sensor=SensorSpec("s2-l2a", ("B04",)))
    noisy = replace(base, sensor=replace(base.sensor, check_input=True, check_save_dir="/tmp/x"))
    assert resolve(base).key == resolve(noisy).key


def test_bad_requests_are_refused():
    with pytest.raises(UnknownModelError, match="'nope'.*toy"):
        resolve(Request("nope", PointBuffer(1, 2, 100), TemporalSpec.year(2022)))
    with pytest.raises(SpecError, match="time window"):
        resolve(Request("toy", PointBuffer(1, 2, 100)))
    with pytest.raises(SpecError, match="sensor"):
        resolve(Request("toyyear", PointBuffer(1, 2, 100), TemporalSpec.year(2022), sensor=SensorSpec("x", ("a",))))
    with pytest.raises(SpecError, match="provider 'gee'"):
        resolve(Request("toy", PointBuffer(1, 2, 100), TemporalSpec.year(2022), provider="gee"))
    with pytest.raises(SpecError, match="unknown field"):
        Request.from_dict({"model": "toy", "spatial": PointBuffer(1, 2, 3).to_dict(), "when": 2022})


def test_request_dict_round_trip():
    for req in REQS.values():
        again = Request.from_dict(json.loads(json.dumps(req.to_dict())))
        assert resolve(again).key == resolve(req).key


# ---------------------------------------------------------------- properties

lons = st.integers(-1_799_999_999, 1_799_999_999).map(lambda i: i / 1e7)
lats = st.integers(-899_999_999, 899_999_999).map(lambda i: i / 1e7)
buffers = st.integers(1_000, 50_000_000).map(lambda i: i / 1e3)
noise = st.floats(-2e-9, 2e-9)


@settings(max_examples=150, deadline=None)
@given(lon=lons, lat=lats, buf=buffers, dlon=noise, dlat=noise, dbuf=st.floats(-2e-5, 2e-5))
def test_float_noise_below_rounding_keeps_the_key(lon, lat, buf, dlon, dlat, dbuf):
    t = TemporalSpec.year(2022)
    a = resolve(Request("toy", PointBuffer(lon, lat, buf), t))
    lon2 = min(max(lon + dlon, -180), 180)
    lat2 = min(max(lat + dlat, -90), 90)
    b = resolve(Request("toy", PointBuffer(lon2, lat2, max(buf + dbuf, 1e-3)), t))
    assert a.key == b.key


@settings(max_examples=60, deadline=None)
@given(st.permutations(["model", "spatial", "temporal", "output", "sensor"]))
def test_field_order_does_not_matter(order):
    full = REQS["sensor"].to_dict()
    shuffled = {k: full[k] for k in order}
    shuffled.update({k: v for k, v in full.items() if k not in shuffled})
    inner = dict(reversed(list(shuffled["sensor"].items())))
    shuffled["sensor"] = inner
    assert resolve(Request.from_dict(shuffled)).key == resolve(REQS["sensor"]).key


BASE = Request(
    "toy",
    PointBuffer(11.0, 46.0, 500),
    TemporalSpec.range("2022-06-01", "2022-09-01"),
    sensor=SensorSpec("s2-l2a", ("B04", "B08")),
)

CHANGES = {
    "model": lambda r: replace(r, model="toyyear", sensor=None, provider="product"),
    "lon": lambda r: replace(r, spatial=PointBuffer(11.0000002, 46.0, 500)),
    "lat": lambda r: replace(r, spatial=PointBuffer(11.0, 45.9999998, 500)),
    "buffer": lambda r: replace(r, spatial=PointBuffer(11.0, 46.0, 500.002)),
    "spatial_kind": lambda r: replace(r, spatial=BBox(10.99, 45.99, 11.01, 46.01)),
    "h3": lambda r: replace(r, spatial=H3Cell("8928308280bffff")),
    "start": lambda r: replace(r, temporal=TemporalSpec.range("2022-06-02", "2022-09-01")),
    "end": lambda r: replace(r, temporal=TemporalSpec.range("2022-06-01", "2022-09-02")),
    "collection": lambda r: replace(r, sensor=replace(r.sensor, collection="s2-l1c")),
    "bands": lambda r: replace(r, sensor=replace(r.sensor, bands=("B08", "B04"))),
    "scale": lambda r: replace(r, sensor=replace(r.sensor, scale_m=20)),
    "cloud": lambda r: replace(r, sensor=replace(r.sensor, cloudy_pct=31)),
    "fill": lambda r: replace(r, sensor=replace(r.sensor, fill_value=-1)),
    "composite": lambda r: replace(r, sensor=replace(r.sensor, composite="mosaic")),
    "output_mode": lambda r: replace(r, output=OutputSpec.grid()),
    "pooling": lambda r: replace(r, output=OutputSpec.pooled("max")),
    "input_prep": lambda r: replace(r, input_prep=InputPrepSpec.tile()),
}


@pytest.mark.parametrize("what", sorted(CHANGES))
def test_any_change_of_what_is_computed_changes_the_key(what):
    assert resolve(CHANGES[what](BASE)).key != resolve(BASE).key


def test_revision_changes_the_key(monkeypatch):
    import toy

    before = resolve(BASE).key
    monkeypatch.setattr(toy.ToyModel, "info", replace(toy.ToyModel.info, revision="toy-v2"))
    assert resolve(BASE).key != before


@settings(max_examples=100, deadline=None)
@given(a=st.tuples(lons, lats), b=st.tuples(lons, lats))
def test_different_places_never_share_a_key(a, b):
    t = TemporalSpec.year(2022)
    ka = resolve(Request("toy", PointBuffer(a[0], a[1], 100), t)).key
    kb = resolve(Request("toy", PointBuffer(b[0], b[1], 100), t)).key
    assert (ka == kb) == (a == b)
