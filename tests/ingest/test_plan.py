"""Tests of planning (rsembed_store.ingest.plan): regions -> H3 cells x windows -> keyed requests."""

from __future__ import annotations

import hashlib
import json
import random

import h3
import pytest

from rsembed_store import Store
from rsembed_store.errors import SpecError, UnknownModelError
from rsembed_store.ingest import plan as plan_mod
from rsembed_store import geo
from rsembed_store.ingest.plan import Plan, plan
from rsembed_store.ingest.regions import region_cells
from rsembed_store.keys import Request, ResolvedRequest, resolve
from rsembed_store.limits import Limits
from rsembed_store.specs import (
    BBox,
    H3Cell,
    InputPrepSpec,
    OutputSpec,
    PointBuffer,
    SensorSpec,
    TemporalSpec,
)
from toy import toy_embedding

Y2022 = TemporalSpec.year(2022)
Y2023 = TemporalSpec.year(2023)


def center(cell):
    lat, lon = h3.cell_to_latlng(cell)
    return lon, lat


def in_bbox(pt, box):
    lon, lat = pt
    return box.minlon <= lon <= box.maxlon and box.minlat <= lat <= box.maxlat


def in_ring(pt, ring):
    """Even-odd test of a (lon, lat) point against a ring of (lon, lat), planar in degrees."""
    x, y = pt
    inside = False
    n = len(ring)
    for i in range(n):
        x1, y1 = ring[i]
        x2, y2 = ring[(i + 1) % n]
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def in_polygon(pt, rings):
    return in_ring(pt, rings[0]) and not any(in_ring(pt, h) for h in rings[1:])


def neighbours_outside(cells):
    """Cells adjacent to ``cells`` but not in them."""
    held = set(cells)
    out = set()
    for c in cells:
        out.update(h3.grid_disk(c, 1))
    return out - held


def square(w, s, e, n):
    return [[w, s], [e, s], [e, n], [w, n], [w, s]]


OUTER = square(10.0, 45.0, 10.2, 45.2)
HOLE = square(10.05, 45.05, 10.15, 45.15)
POLY_WITH_HOLE = {"type": "Polygon", "coordinates": [OUTER, HOLE]}
OTHER = {"type": "Polygon", "coordinates": [square(11.0, 46.0, 11.1, 46.1)]}


# ---------------------------------------------------------------- region_cells: areas


def test_bbox_coverage_is_by_cell_centres():
    box = BBox(10.0, 45.0, 10.3, 45.2)
    cells = region_cells(box, 7)
    assert cells == sorted(set(cells)) and len(cells) > 20
    assert all(h3.get_resolution(c) == 7 for c in cells)
    assert all(in_bbox(center(c), box) for c in cells)
    # every neighbour left out has its centre outside: the rule is exactly "centre inside"
    outside = neighbours_outside(cells)
    assert outside and not any(in_bbox(center(c), box) for c in outside)
    # and some of those left out do overlap the box (they are not returned anyway)
    overlapping = [c for c in outside if any(in_bbox((lon, lat), box) for lat, lon in h3.cell_to_boundary(c))]
    assert overlapping


def test_bbox_cell_just_outside_is_not_returned():
    box = BBox(10.0, 45.0, 10.3, 45.2)
    cells = set(region_cells(box, 8))
    inside = h3.latlng_to_cell(45.1, 10.15, 8)
    assert inside in cells
    # a cell whose centre lies just east of the box
    lon, lat = 10.3 + 0.004, 45.1
    just_out = h3.latlng_to_cell(lat, lon, 8)
    if in_bbox(center(just_out), box):  # pragma: no cover - pick the next one east
        just_out = h3.latlng_to_cell(lat, lon + 0.006, 8)
    assert not in_bbox(center(just_out), box)
    assert just_out not in cells


def test_wide_bbox_is_not_read_as_crossing_the_antimeridian():
    assert len(region_cells(BBox(-180, -90, 180, 90), 1)) == h3.get_num_cells(1)
    box = BBox(-100, -10, 100, 10)
    cells = region_cells(box, 2)
    assert all(in_bbox(center(c), box) for c in cells)
    assert not any(in_bbox(center(c), box) for c in neighbours_outside(cells))


def test_geojson_polygon_with_hole():
    cells = region_cells(POLY_WITH_HOLE, 8)
    ring = [tuple(p) for p in OUTER[:-1]]
    hole = [tuple(p) for p in HOLE[:-1]]
    assert cells
    assert all(in_polygon(center(c), [ring, hole]) for c in cells)
    assert not any(in_ring(center(c), hole) for c in cells)
    # the hole does hold cell centres at this resolution; they are all left out
    hole_cells = region_cells({"type": "Polygon", "coordinates": [HOLE]}, 8)
    assert hole_cells and not set(hole_cells) & set(cells)
    assert not any(in_polygon(center(c), [ring, hole]) for c in neighbours_outside(cells))


def test_geojson_multipolygon_feature_and_collection():
    a = region_cells(POLY_WITH_HOLE, 8)
    b = region_cells(OTHER, 8)
    multi = {"type": "MultiPolygon", "coordinates": [POLY_WITH_HOLE["coordinates"], OTHER["coordinates"]]}
    assert region_cells(multi, 8) == sorted(set(a) | set(b))
    feature = {"type": "Feature", "properties": {}, "geometry": POLY_WITH_HOLE}
    assert region_cells(feature, 8) == a
    fc = {"type": "FeatureCollection", "features": [feature, {"type": "Feature", "properties": None, "geometry": OTHER}]}
    assert region_cells(fc, 8) == sorted(set(a) | set(b))


def test_geojson_file_input(tmp_path):
    fc = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": POLY_WITH_HOLE}]}
    path = tmp_path / "aoi.geojson"
    path.write_text(json.dumps(fc))
    expected = region_cells(POLY_WITH_HOLE, 8)
    assert region_cells(path, 8) == expected
    assert region_cells(str(path), 8) == expected
    other = tmp_path / "aoi.json"
    other.write_text(json.dumps(OTHER))
    assert region_cells(str(other), 8) == region_cells(OTHER, 8)


def test_unclosed_ring_and_geo_interface_are_accepted():
    class Shape:
        __geo_interface__ = POLY_WITH_HOLE

    unclosed = {"type": "Polygon", "coordinates": [OUTER[:-1], HOLE[:-1]]}
    assert region_cells(unclosed, 8) == region_cells(POLY_WITH_HOLE, 8)
    assert region_cells(Shape(), 8) == region_cells(POLY_WITH_HOLE, 8)


# ---------------------------------------------------------------- region_cells: cells and points


def test_cell_list_at_coarser_and_finer_resolutions():
    coarse = h3.latlng_to_cell(45.0, 10.0, 5)
    fine = h3.latlng_to_cell(46.0, 11.0, 10)
    same = h3.latlng_to_cell(47.0, 12.0, 7)
    cells = region_cells([coarse, fine, same], 7)
    expected = set(h3.cell_to_children(coarse, 7)) | {h3.cell_to_parent(fine, 7), same}
    assert cells == sorted(expected)
    assert len(cells) == 49 + 2


def test_cell_list_accepts_ints_upper_case_h3cell_and_collapses_duplicates():
    a = h3.latlng_to_cell(45.0, 10.0, 7)
    b = h3.latlng_to_cell(45.5, 10.5, 7)
    cells = region_cells((h3.str_to_int(a), a.upper(), H3Cell(b), b, " " + b), 7)
    assert cells == sorted({a, b})
    assert region_cells(a, 7) == [a]  # a single cell id is a list of one


def test_point_list():
    pts = [(10.0, 45.0), (10.0, 45.0), PointBuffer(11.0, 46.0, 500), [12.5, -33.0]]
    cells = region_cells(pts, 9)
    expected = {h3.latlng_to_cell(45.0, 10.0, 9), h3.latlng_to_cell(46.0, 11.0, 9), h3.latlng_to_cell(-33.0, 12.5, 9)}
    assert cells == sorted(expected)
    # (lon, lat) order: the cell of (10, 45) lies at latitude 45
    lon, lat = center(h3.latlng_to_cell(45.0, 10.0, 9))
    assert abs(lat - 45.0) < 0.01 and abs(lon - 10.0) < 0.01
    assert region_cells(PointBuffer(11.0, 46.0, 500), 9) == [h3.latlng_to_cell(46.0, 11.0, 9)]


# ---------------------------------------------------------------- region_cells: bad input


@pytest.mark.parametrize("res", [-1, 16, "9", 9.0, True, None])
def test_bad_resolution(res):
    with pytest.raises(SpecError, match=r"h3_res=.*\[0, 15\]"):
        region_cells(BBox(10, 45, 11, 46), res)


@pytest.mark.parametrize(
    "region, fragment",
    [
        ([], "empty"),
        ((), "empty"),
        (None, "region is required"),
        ({"type": "FeatureCollection", "features": []}, "no polygon"),
        ({"type": "Point", "coordinates": [10, 45]}, "'Point'"),
        ({"type": "LineString", "coordinates": [[10, 45], [11, 46]]}, "'LineString'"),
        ({"type": "Feature", "geometry": {"type": "MultiPoint", "coordinates": [[10, 45]]}}, "'MultiPoint'"),
        ({"type": "Feature", "geometry": None}, "without a geometry"),
        ({"type": "Polygon", "coordinates": [square(10, 45, 11, 95)]}, r"95.*out of range"),
        ({"type": "Polygon", "coordinates": [[[10, 45], ["x", 45], [11, 46], [10, 45]]]}, r"coordinates\[0\]\[1\]"),
        ({"type": "Polygon", "coordinates": [[[10, 45], [10.5], [11, 46], [10, 45]]]}, r"\[10\.5\] is not a position"),
        ({"type": "Polygon", "coordinates": [[[10, 45], [float("nan"), 45], [11, 46]]]}, "not finite"),
        ({"type": "Polygon", "coordinates": [[[10, 45], [11, 46], [10, 45]]]}, "fewer than 3"),
        ({"type": "Polygon", "coordinates": "nope"}, "not a polygon"),
        ([(10.0, 45.0)] + [(200.0, 45.0)], r"region\[1\]=.*200.*out of range"),
        ([(10.0, 45.0, 3.0)], r"region\[0\].*not a point"),
        (["not-a-cell"], r"region\[0\]='not-a-cell' is not a valid H3 cell"),
        ([12345], r"region\[0\]=12345 is not a valid H3 cell"),
        ([True], r"region\[0\]=True"),
        ((10.5, 45.5), r"single \(lon, lat\) point"),
        (3.5, "float"),
        ("zzz", "'zzz' is not a valid H3 cell"),
    ],
)
def test_bad_regions_are_named(region, fragment):
    with pytest.raises(SpecError, match=fragment):
        region_cells(region, 8)


def test_missing_and_unreadable_files(tmp_path):
    missing = tmp_path / "nope.geojson"
    with pytest.raises(SpecError, match=r"nope\.geojson.*does not exist"):
        region_cells(missing, 8)
    with pytest.raises(SpecError, match="does not exist"):
        region_cells(str(missing), 8)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SpecError, match=r"bad\.json.*not readable GeoJSON"):
        region_cells(bad, 8)
    point = tmp_path / "pt.geojson"
    point.write_text(json.dumps({"type": "Point", "coordinates": [10, 45]}))
    with pytest.raises(SpecError, match=r"pt\.geojson.*'Point'"):
        region_cells(point, 8)


def test_region_smaller_than_a_cell_is_refused():
    tiny = {"type": "Polygon", "coordinates": [square(10.0, 45.0, 10.0001, 45.0001)]}
    with pytest.raises(SpecError, match=r"no H3 cell centre at h3_res=5.*finer resolution"):
        region_cells(tiny, 5)


def test_too_many_cells_is_refused_before_enumerating(monkeypatch):
    def boom(*a, **k):  # pragma: no cover - must not be reached
        raise AssertionError("enumerated cells of a region that is too large")

    monkeypatch.setattr(geo.h3, "h3shape_to_cells", boom)
    monkeypatch.setattr(geo.h3, "cell_to_children", boom)
    with pytest.raises(SpecError, match=r"gives about [\d,]+ cells at h3_res=15.*max_plan_cells=5,000,000.*coarser resolution"):
        region_cells(BBox(-10, 40, 10, 50), 15)
    with pytest.raises(SpecError, match=r"about 2,401 cells.*max_cells=100.*coarser"):
        region_cells([h3.latlng_to_cell(45, 10, 5)], 9, max_cells=100)
    with pytest.raises(SpecError, match="max_cells"):
        region_cells(BBox(10, 45, 11, 46), 9, max_cells=1000)


def test_max_cells_must_be_positive():
    with pytest.raises(SpecError, match="max_cells=0"):
        region_cells(BBox(10, 45, 11, 46), 5, max_cells=0)


# ---------------------------------------------------------------- plan


BOX = BBox(10.0, 45.0, 10.2, 45.15)


def test_cells_times_windows():
    p = plan("toy", BOX, 7, [Y2022, Y2023])
    assert p.cells == region_cells(BOX, 7)
    assert len(p.requests) == 2 * len(p.cells)
    assert p.duplicates_dropped == 0
    assert len(set(p.keys())) == len(p.requests)
    assert p.model == "toy" and p.revision == "toy-v1" and p.h3_res == 7
    assert p.output == OutputSpec.pooled()
    assert p.windows == [Y2022, Y2023]


def test_duplicate_windows_are_dropped():
    same_as_2022 = TemporalSpec.range("2022-01-01", "2023-01-01")
    p = plan("toy", BOX, 7, [Y2022, same_as_2022, Y2023, Y2022])
    n = len(p.cells)
    assert len(p.requests) == 2 * n
    assert p.duplicates_dropped == 2 * n
    assert len(set(p.keys())) == len(p.requests)
    # a "year" model reads a range as the year it starts in
    q = plan("toyyear", BOX, 7, [Y2022, TemporalSpec.range("2022-03-01", "2022-06-01")])
    assert len(q.requests) == n and q.duplicates_dropped == n


def test_order_is_cell_then_window_and_deterministic():
    p = plan("toy", BOX, 7, [Y2023, Y2022])
    cells = [r.spatial.cell for r in p.requests]
    years = [r.temporal.window()[0].year for r in p.requests]
    assert cells == [c for c in p.cells for _ in range(2)]
    assert years == [2023, 2022] * len(p.cells)
    shuffled = list(p.cells)
    random.Random(3).shuffle(shuffled)
    assert plan("toy", shuffled, 7, [Y2023, Y2022]).keys() == p.keys()
    assert plan("toy", BOX, 7, [Y2023, Y2022]).keys() == p.keys()


def test_keys_equal_resolve():
    sensor = SensorSpec("s2-l2a", ("B04", "B08"), cloudy_pct=10)
    p = plan("toy", BOX, 7, [Y2022, "2023-03-01/2023-06-01"], OutputSpec.grid(20), sensor=sensor,
             input_prep=InputPrepSpec.tile())
    i = 0
    for cell in p.cells:
        for w in (Y2022, TemporalSpec.range("2023-03-01", "2023-06-01")):
            want = resolve(Request("toy", H3Cell(cell), w, sensor, OutputSpec.grid(20), InputPrepSpec.tile(), None))
            got = p.requests[i]
            assert got.key == want.key and got.canonical == want.canonical and got == want
            i += 1
    assert i == len(p.requests)


@pytest.mark.parametrize(
    "model, windows, kwargs",
    [
        ("toy", [Y2022], {}),
        ("toy", [TemporalSpec.range("2021-06-01", "2021-09-01"), Y2023], {"output": OutputSpec.pooled("max")}),
        ("toy", [Y2022], {"output": OutputSpec.grid(30), "input_prep": InputPrepSpec.auto(tile_size=64),
                          "sensor": SensorSpec("s2-l2a", ("B08", "B04"), scale_m=20, composite="mosaic")}),
        ("toy", [{"mode": "year", "year": 2020}], {"provider": "local", "sensor": {"collection": "c", "bands": ["B1"]}}),
        ("toyyear", [Y2022, TemporalSpec.range("2019-02-01", "2019-03-01")], {}),
        ("toyframes", [Y2022, TemporalSpec.range("2021-03-01", "2021-09-01")], {}),
        ("toymm", [Y2022], {"modalities": ["s1"]}),
    ],
)
def test_fast_path_equals_resolve_on_random_cells(model, windows, kwargs):
    rng = random.Random(f"{model}-{len(windows)}-{sorted(kwargs)}")
    cells = set()
    for res in (0, 3, 8, 12, 15):
        cells.update(h3.get_pentagons(res)[:2])
    while len(cells) < 300:
        res = rng.randint(0, 15)
        cells.add(h3.latlng_to_cell(rng.uniform(-89.9, 89.9), rng.uniform(-180, 180), res))
    # plan every cell at its own resolution: the fast path must match resolve() exactly
    by_res = {}
    for c in cells:
        by_res.setdefault(h3.get_resolution(c), []).append(c)
    checked = 0
    huge = Limits(max_roi_pixels=10**15, max_array_bytes=10**18)  # keys only: cells of every size
    for res, group in by_res.items():
        p = plan(model, group, res, windows, limits=huge, **kwargs)
        assert p.cells == sorted(group)
        wins = [plan_mod._window("w", w) for w in windows]
        it = iter(p.requests)
        for cell in p.cells:
            for w in wins:
                want = resolve(Request(model, H3Cell(cell), w, kwargs.get("sensor"), kwargs.get("output"),
                                       kwargs.get("input_prep"), kwargs.get("provider"), kwargs.get("modalities")))
                got = next(it)
                assert got.canonical == want.canonical
                assert got.key == want.key == hashlib.sha256(want.canonical.encode()).hexdigest()
                assert got == want
                assert ResolvedRequest.from_canonical(got.canonical) == got
                checked += 1
        assert next(it, None) is None
    assert checked == len(cells) * len(windows)


def test_plan_bad_inputs_are_named():
    with pytest.raises(UnknownModelError, match="'nope'"):
        plan("nope", BOX, 7, Y2022)
    with pytest.raises(SpecError, match=r"windows=\[\] is empty"):
        plan("toy", BOX, 7, [])
    with pytest.raises(SpecError, match=r"windows\[1\]=3\.5 is not a time window"):
        plan("toy", BOX, 7, [Y2022, 3.5])
    with pytest.raises(SpecError, match="needs a time window"):
        plan("toy", BOX, 7, None)
    with pytest.raises(SpecError, match="no layer for year 2030"):
        plan("toyyear", BOX, 7, 2030)
    with pytest.raises(SpecError, match="provider 'gee'"):
        plan("toy", BOX, 7, Y2022, provider="gee")
    with pytest.raises(SpecError, match="h3_res=99"):
        plan("toy", BOX, 99, Y2022)


def test_check_cache_against_a_real_store(tmp_path):
    store = Store.open(tmp_path / "db")
    p = plan("toy", BOX, 7, [Y2022, Y2023])
    with pytest.raises(RuntimeError, match="check_cache"):
        p.missing()
    # a store without the space: nothing cached
    assert p.check_cache(store) is p
    assert p.cached == 0 and p.is_cached == [False] * len(p.requests)
    assert p.missing() == p.requests

    stored = [0, 3, len(p.requests) - 1]
    store.put_many([toy_embedding(p.requests[i], seed=i) for i in stored])
    p.check_cache(store, batch_size=2)
    assert p.cached == 3
    assert [i for i, f in enumerate(p.is_cached) if f] == stored
    missing = p.missing()
    assert len(missing) == len(p.requests) - 3
    assert not {p.requests[i].key for i in stored} & {r.key for r in missing}
    s = p.summary(seconds_per_request=2.0)
    assert s["cached"] == 3 and s["to_compute"] == len(p.requests) - 3
    assert s["estimated_seconds"] == pytest.approx(2.0 * (len(p.requests) - 3))


def test_summary_fields():
    p = plan("toy", BOX, 7, [Y2022, Y2022])
    s = p.summary()
    json.dumps(s)
    assert s["model"] == "toy" and s["revision"] == "toy-v1" and s["h3_res"] == 7
    assert s["n_cells"] == len(p.cells) and s["n_windows"] == 2
    assert s["n_requests"] == len(p.cells) and s["duplicates_dropped"] == len(p.cells)
    assert s["cached"] is None and s["to_compute"] == len(p.cells)
    assert s["output"] == "pooled"
    assert s["estimated_seconds"] == pytest.approx(len(p.cells) * plan_mod.default_seconds_per_request("toy"))
    assert p.summary(seconds_per_request=0.5)["estimated_seconds"] == pytest.approx(0.5 * len(p.cells))
    with pytest.raises(SpecError, match="seconds_per_request=-1"):
        p.summary(seconds_per_request=-1)


@pytest.mark.parametrize("name", ["plan.jsonl", "plan.json"])
def test_save_load_round_trip(tmp_path, name):
    store = Store.open(tmp_path / "db")
    p = plan("toy", BOX, 7, [Y2022, TemporalSpec.range("2022-01-01", "2023-01-01"), Y2023],
             OutputSpec.grid(20))
    store.put_many([toy_embedding(p.requests[1], grid=True)])
    p.check_cache(store)
    path = p.save(tmp_path / "sub" / name)
    q = Plan.load(path)
    assert q.keys() == p.keys()
    assert [r.canonical for r in q.requests] == [r.canonical for r in p.requests]
    assert q.requests == p.requests
    assert q.cells == p.cells and q.windows == p.windows and q.output == p.output
    assert q.is_cached == p.is_cached and q.cached == 1
    assert q.summary() == p.summary()
    assert [r.key for r in q.missing()] == [r.key for r in p.missing()]
    if name.endswith(".jsonl"):
        lines = path.read_text().splitlines()
        assert json.loads(lines[0])["summary"] == p.summary()
        assert [hashlib.sha256(ln.encode()).hexdigest() for ln in lines[1:]] == p.keys()


def test_load_refuses_bad_files(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        Plan.load(tmp_path / "none.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format": "something-else"}\n{"x": 1}\n')
    with pytest.raises(SpecError, match="not a plan"):
        Plan.load(bad)
    p = plan("toy", BOX, 7, Y2022)
    path = p.save(tmp_path / "p.jsonl")
    lines = path.read_text().splitlines()
    assert len(lines) > 3
    path.write_text("\n".join(lines[:-1]) + "\n")  # truncated
    with pytest.raises(SpecError, match="header says"):
        Plan.load(path)


def test_plan_takes_the_model_first_and_keywords_still_work():
    p = plan("toy", BOX, 7, Y2022)
    assert plan(region=BOX, h3_res=7, windows=Y2022, model="toy").keys() == p.keys()
    assert plan("toy", windows=Y2022, h3_res=7, region=BOX).keys() == p.keys()
    with pytest.raises(SpecError, match=r"model=BBox.*takes the model first"):
        plan(BOX, 7, Y2022, "toy")


def test_plan_costs_come_from_each_models_declaration():
    """Plan estimates read the registry: a declared figure wins, else the kind's default."""
    from rsembed_store.model import SECONDS_PER_REQUEST_BY_KIND, ModelInfo
    from rsembed_store.registry import model_info, model_names

    names = [n for n in model_names() if not n.startswith("rsembed:")]
    assert {"spectral", "gse", "tessera", "copernicus"} <= set(names)
    for name in names:
        info = model_info(name)
        expected = info.seconds_per_request if info.seconds_per_request is not None \
            else SECONDS_PER_REQUEST_BY_KIND[info.kind]
        assert plan_mod.default_seconds_per_request(name) == expected > 0
        assert info.to_dict()["seconds_per_request"] == expected
    assert model_info("spectral").seconds_per_request == 0.03  # declared, not the on_the_fly default
    assert plan_mod.default_seconds_per_request("no-such-model") == 2.0
    with pytest.raises(ValueError, match="seconds_per_request=-1"):
        ModelInfo(id="x", revision="r", kind="precomputed", dim=2, seconds_per_request=-1)
