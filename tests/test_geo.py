"""rsembed_store.geo: GeoJSON parsing, spherical areas, the antimeridian rule, and one cover for plan and search."""

from __future__ import annotations

import json
import math

import h3
import numpy as np
import pytest

from rsembed_store import H3Cell, Store, TemporalSpec, geo
from rsembed_store.errors import SpecError
from rsembed_store.ingest.regions import region_cells
from rsembed_store.query.search import search


def box(w, s, e, n):
    return [[w, s], [e, s], [e, n], [w, n], [w, s]]


# ---------------------------------------------------------------- parsing


def test_every_geojson_form_gives_the_same_polygons():
    ring = box(10, 45, 11, 46)
    poly = {"type": "Polygon", "coordinates": [ring]}
    want = [[[(10.0, 45.0), (11.0, 45.0), (11.0, 46.0), (10.0, 46.0)]]]
    assert geo.geojson_polygons(poly) == want
    assert geo.geojson_polygons({"type": "Feature", "properties": {}, "geometry": poly}) == want
    assert geo.geojson_polygons({"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": poly}]}) == want
    assert geo.geojson_polygons({"type": "GeometryCollection", "geometries": [poly]}) == want
    assert geo.geojson_polygons({"type": "MultiPolygon", "coordinates": [[ring], [ring]]}) == want * 2

    class Shape:
        __geo_interface__ = poly

    assert geo.geojson_polygons(Shape()) == want
    # an unclosed ring reads as the closed one
    assert geo.geojson_polygons({"type": "Polygon", "coordinates": [ring[:-1]]}) == want


@pytest.mark.parametrize("obj, fragment", [
    ({"type": "Polygon", "coordinates": [box(10, 45, 11, 95)]}, r"within\.coordinates\[0\]\[2\]=\(11\.0, 95\.0\) is out of range"),
    ({"type": "Polygon", "coordinates": [[[10, 45], ["x", 45], [11, 46]]]}, r"\[0\]\[1\]=\(.x., 45\) is not a coordinate"),
    ({"type": "Polygon", "coordinates": [[[10, 45], [10.5], [11, 46]]]}, r"\[10\.5\] is not a position"),
    ({"type": "Polygon", "coordinates": [[[10, 45], [math.inf, 45], [11, 46]]]}, "not finite"),
    ({"type": "Polygon", "coordinates": [[[10, 45], [11, 46], [10, 45]]]}, "fewer than 3 distinct"),
    ({"type": "Polygon", "coordinates": "nope"}, "not a polygon"),
    ({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}, "'LineString', which has no area"),
    ({"type": "Feature", "geometry": None}, "without a geometry"),
    ({"type": "FeatureCollection", "features": 3}, r"within\.features=3 is not a list"),
    ([1, 2], "is not a GeoJSON object"),
])
def test_bad_geojson_is_named(obj, fragment):
    with pytest.raises(SpecError, match=fragment):
        geo.geojson_polygons(obj, "within")


def test_read_geojson_names_the_argument_and_the_path(tmp_path):
    good = tmp_path / "a.geojson"
    good.write_text(json.dumps({"type": "Polygon", "coordinates": [box(0, 0, 1, 1)]}))
    assert geo.read_geojson(good)["type"] == "Polygon"
    with pytest.raises(SpecError, match=r"--within-geojson '.*nope\.geojson' does not exist"):
        geo.read_geojson(tmp_path / "nope.geojson", "--within-geojson")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SpecError, match=r"region file '.*bad\.json' is not readable GeoJSON"):
        geo.read_geojson(bad)


# ---------------------------------------------------------------- area


def test_area_is_spherical():
    r = geo.EARTH_RADIUS_M
    # the whole sphere, and a band between two parallels: 2 pi R^2 (sin b - sin a)
    assert geo.area_m2([geo.bbox_polygon(-180, -90, 180, 90)]) == pytest.approx(4 * math.pi * r * r, rel=1e-9)
    band = 2 * math.pi * r * r * (math.sin(math.radians(60)) - math.sin(math.radians(50)))
    assert geo.area_m2([geo.bbox_polygon(-180, 50, 180, 60)]) == pytest.approx(band, rel=1e-9)
    # a hole is subtracted; a one-degree cell at the equator is about 12,364 km2
    outer, hole = geo.bbox_polygon(0, 0, 1, 1)[0], geo.bbox_polygon(0.25, 0.25, 0.75, 0.75)[0]
    assert geo.area_m2([[outer]]) / 1e6 == pytest.approx(12364, rel=1e-3)
    assert geo.area_m2([[outer, hole]]) == pytest.approx(0.75 * geo.area_m2([[outer]]), rel=1e-3)


# ---------------------------------------------------------------- the antimeridian rule


def test_wide_polygons_are_cut_into_strips_that_keep_their_area():
    narrow = geo.bbox_polygon(10, 45, 11, 46)
    assert geo.antimeridian_safe(narrow) == [narrow]
    wide = [geo.bbox_polygon(-179, -10, 179, 10)[0], geo.bbox_polygon(-1, -1, 1, 1)[0]]  # with a hole
    strips = geo.antimeridian_safe(wide)
    assert len(strips) == 3
    assert all(max(x for x, _ in p[0]) - min(x for x, _ in p[0]) <= geo.MAX_STRIP_DEG + 1e-9 for p in strips)
    assert geo.area_m2(strips) == pytest.approx(geo.area_m2([wide]), rel=1e-9)


def test_a_wide_polygon_covers_its_inside_not_the_short_way_round():
    wide = [geo.bbox_polygon(-179, 0, 179, 2)[0]]
    cells = geo.polygon_cells([wide], 3)
    lons = [h3.cell_to_latlng(c)[1] for c in cells]
    assert any(abs(x) < 5 for x in lons)  # lon 0 is inside
    assert not any(abs(x) > 179.5 for x in lons)  # the 2 degrees around 180 are not
    assert len(cells) == pytest.approx(geo.estimated_cells([wide], 3), rel=0.1)


# ---------------------------------------------------------------- plan and search agree


RES = 5
NEAR_180 = [geo.bbox_polygon(178.0, 10.0, 180.0, 11.0), geo.bbox_polygon(-180.0, 10.0, -178.0, 11.0)]
NEAR_0 = [geo.bbox_polygon(-0.4, 10.0, 0.4, 11.0)]
ACROSS_180 = {"type": "MultiPolygon", "coordinates": [[box(179.1, 10.2, 180, 10.8)], [box(-180, 10.2, -179.2, 10.8)]]}
WIDE = {"type": "Polygon", "coordinates": [box(-179.3, 10.1, 179.4, 10.9)]}


@pytest.fixture(scope="module")
def rows_near_the_antimeridian(tmp_path_factory):
    """A store holding one toy row per res-5 cell around lon 180 and lon 0 (the rows lie at the cell centres)."""
    from rsembed_store import Embedding, Request, resolve

    cells = sorted(geo.polygon_cells(NEAR_180 + NEAR_0, RES))
    rng = np.random.default_rng(0)
    store = Store.open(tmp_path_factory.mktemp("geo") / "db")
    store.put_many([Embedding(request=resolve(Request("toy", H3Cell(c), TemporalSpec.year(2021))),
                              vector=rng.standard_normal(8).astype(np.float32)) for c in cells])
    return store, set(cells)


@pytest.mark.parametrize("region", [ACROSS_180, WIDE], ids=["multipolygon-across-180", "polygon-358-degrees-wide"])
def test_a_polygon_across_180_gives_the_same_cells_in_plan_and_in_search(rows_near_the_antimeridian, region):
    store, held = rows_near_the_antimeridian
    planned = set(region_cells(region, RES)) & held
    found = search(store, "toy", [1.0] * 8, k=len(held), within=region, exclude_self=False)
    got = {r["cell"] for r in found}
    assert planned and got == planned
    lons = [h3.cell_to_latlng(c)[1] for c in got]
    if region is WIDE:  # the inside holds lon 0 and stops short of 180 on both sides
        assert any(abs(x) < 1 for x in lons) and not any(abs(x) > 179.4 for x in lons)
    else:  # both sides of the antimeridian, nothing near lon 0
        assert any(x > 179 for x in lons) and any(x < -179 for x in lons) and not any(abs(x) < 1 for x in lons)

