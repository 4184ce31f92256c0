"""ingest/grid.py: UTM zones at their edges and the pixel grid of each ROI kind."""

from __future__ import annotations

import math

import h3
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import transform as warp_transform

from rsembed_store.errors import LimitError, ProviderError
from rsembed_store.ingest import grid as grid_mod
from rsembed_store.ingest.grid import (
    overview_level,
    points_in_polygon,
    target_grid,
    utm_crs,
    utm_crs_of_zone,
    utm_epsg,
    utm_epsg_of_zone,
    utm_zone,
    utm_zones,
)
from rsembed_store.ingest.models import gse_catalog
from rsembed_store.specs import BBox, H3Cell, PointBuffer


# ------------------------------------------------------------------ zones


@pytest.mark.parametrize(
    "lon, zone",
    [
        (-180.0, 1),
        (-174.000001, 1),
        (-174.0, 2),  # a boundary belongs to the zone east of it
        (-0.000001, 30),
        (0.0, 31),
        (5.999999, 31),
        (6.0, 32),
        (177.0, 60),
        (179.999999, 60),
        (180.0, 60),  # the antimeridian seen from the east is still the last zone, never 61
    ],
)
def test_zone_edges(lon, zone):
    assert utm_zone(lon) == zone
    assert int(utm_zones([lon])[0]) == zone


def test_vectorised_zones_agree_with_the_scalar_function():
    lons = np.random.default_rng(7).uniform(-180.0, 180.0, 2000)
    lons = np.concatenate([lons, np.arange(-180.0, 180.1, 6.0)])  # every boundary too
    assert utm_zones(lons).tolist() == [utm_zone(v) for v in lons]


@pytest.mark.parametrize(
    "lon, lat, crs",
    [
        (11.0, 46.0, "EPSG:32632"),
        (-70.6, -33.4, "EPSG:32719"),  # Santiago: southern hemisphere, 327zz
        (151.2, -33.9, "EPSG:32756"),
        (-179.9, -16.5, "EPSG:32701"),
        (179.9, -16.5, "EPSG:32760"),
        (0.0, 0.0, "EPSG:32631"),  # the equator counts as north
        (0.0, -1e-9, "EPSG:32731"),
    ],
)
def test_crs_by_hemisphere(lon, lat, crs):
    assert utm_crs(lon, lat) == crs
    assert utm_epsg(lon, lat) == int(crs.split(":")[1])


def test_no_norway_or_svalbard_exceptions():
    """Zones are a pure function of longitude, as the GSE and TESSERA tiles are laid out:
    the official grid's wider 32V (Bergen) and 33X (Svalbard) are not used."""
    assert utm_crs(5.3, 60.4) == "EPSG:32631"  # Bergen: 32V on the official grid
    assert utm_crs(10.0, 78.0) == "EPSG:32632"  # Svalbard: 33X on the official grid
    assert utm_crs(20.0, 78.0) == "EPSG:32634"  # 33X there too


def test_poles_keep_their_zone_and_still_grid():
    """Beyond UTM's nominal -80..84 the zone rule is unchanged and the grid still projects."""
    assert utm_crs(0.0, 90.0) == "EPSG:32631" and utm_crs(0.0, -90.0) == "EPSG:32731"
    assert utm_crs(-100.0, 84.5) == "EPSG:32614" and utm_crs(-100.0, -80.5) == "EPSG:32714"
    for lat in (89.9, 90.0, -89.9, -90.0):
        g = target_grid(PointBuffer(0.0, lat, 500), 10)
        assert (g.width, g.height) == (100, 100)
        assert np.isfinite(g.transform.c) and np.isfinite(g.transform.f)
        assert g.crs == ("EPSG:32631" if lat > 0 else "EPSG:32731")


@pytest.mark.parametrize("zone", [0, 61, -1, True, 3.5, "32"])
def test_bad_zone_numbers_are_refused_by_name(zone):
    with pytest.raises(ProviderError, match=r"UTM zone .* not accepted; use an integer in \[1, 60\]"):
        utm_epsg_of_zone(zone, True)


def test_zone_numbers_to_crs():
    assert utm_crs_of_zone(1, True) == "EPSG:32601" and utm_crs_of_zone(60, False) == "EPSG:32760"
    assert utm_epsg_of_zone(np.int64(32), False) == 32732


def test_product_readers_use_the_same_zones():
    """The GSE catalogue names zone folders with this module's rule (one rule everywhere)."""
    for lon, lat in [(5.999, 45.0), (6.0, 45.0), (-70.6, -33.4), (180.0, 1.0), (-180.0, -1.0)]:
        name = gse_catalog.zone_name(lon, lat)
        assert gse_catalog.zone_crs(name) == utm_crs(lon, lat)


# ------------------------------------------------------------------ grids


@pytest.mark.parametrize("lat", [-60.0, -5.0, 0.0, 46.0, 70.0])
def test_point_buffer_is_square_snapped_and_centred(lat):
    spatial = PointBuffer(11.3, lat, 1000)
    g = target_grid(spatial, 10)
    assert (g.width, g.height) == (200, 200)
    assert g.transform.a == 10 and g.transform.e == -10
    assert g.transform.c % 10 == 0 and g.transform.f % 10 == 0
    assert g.roi_mask.shape == (200, 200) and g.roi_mask.all()
    xs, ys = warp_transform("EPSG:4326", g.crs, [spatial.lon], [spatial.lat])
    left, bottom, right, top = g.bounds
    assert abs((left + right) / 2 - xs[0]) <= 5.0 + 1e-6  # at most half a pixel off
    assert abs((bottom + top) / 2 - ys[0]) <= 5.0 + 1e-6


def test_odd_sizes_round_up():
    assert target_grid(PointBuffer(11, 46, 1001), 10).width == 201
    assert target_grid(PointBuffer(11, 46, 5), 30).width == 1


def test_zone_boundary_follows_the_roi_centre():
    west = target_grid(PointBuffer(5.9999, 45.0, 200), 10)
    east = target_grid(PointBuffer(6.0001, 45.0, 200), 10)
    assert (west.crs, east.crs) == ("EPSG:32631", "EPSG:32632")
    box = target_grid(BBox(5.95, 45.0, 6.15, 45.05), 10)  # centre at 6.05: zone 32
    assert box.crs == "EPSG:32632"


def test_bbox_grid_covers_the_box():
    box = BBox(11.0, -46.1, 11.1, -46.0)
    g = target_grid(box, 20)
    assert g.crs == "EPSG:32732"
    west, south, east, north = g.bounds_lonlat()
    assert west <= 11.0 and south <= -46.1 and east >= 11.1 and north >= -46.0
    # and not much more than the box: one pixel of slack on each side at most
    lons = [11.0, 11.1, 11.0, 11.1]
    lats = [-46.1, -46.1, -46.0, -46.0]
    xs, ys = warp_transform("EPSG:4326", g.crs, lons, lats)
    left, bottom, right, top = g.bounds
    assert left > min(xs) - 20 and right < max(xs) + 20 and bottom > min(ys) - 20 and top < max(ys) + 20


def test_h3_cell_grid_is_the_covering_square_with_a_hexagon_mask():
    cell = h3.latlng_to_cell(46.0, 11.0, 8)
    g = target_grid(H3Cell(cell), 10)
    assert g.width == g.height
    assert 0.5 < g.roi_mask.mean() < 0.9  # a hexagon fills about 0.65 of its covering square
    # every pixel centre inside the mask maps back into the cell
    rows, cols = np.nonzero(g.roi_mask)
    pick = np.random.default_rng(3).choice(len(rows), 50, replace=False)
    xs = g.transform.c + (cols[pick] + 0.5) * g.transform.a
    ys = g.transform.f + (rows[pick] + 0.5) * g.transform.e
    lons, lats = warp_transform(g.crs, "EPSG:4326", list(xs), list(ys))
    inside = [h3.latlng_to_cell(la, lo, 8) == cell for lo, la in zip(lons, lats)]
    assert sum(inside) >= 48  # straight UTM edges vs great-circle edges: a sliver may differ


def test_points_in_polygon_even_odd():
    vx, vy = np.array([0.0, 4.0, 4.0, 0.0]), np.array([0.0, 0.0, 4.0, 4.0])
    px, py = np.array([1.0, 5.0, 3.9, -0.1]), np.array([1.0, 1.0, 3.9, 2.0])
    assert points_in_polygon(px, py, vx, vy).tolist() == [True, False, True, False]


@pytest.mark.parametrize("scale", [0, -10, float("nan"), float("inf")])
def test_bad_scale_is_refused(scale):
    with pytest.raises(ProviderError, match="scale_m="):
        target_grid(PointBuffer(11, 46, 500), scale)


def test_pixel_limit_is_checked_before_allocating():
    with pytest.raises(LimitError):
        target_grid(PointBuffer(11, 46, 5000), 10, max_pixels=999_999)
    assert target_grid(PointBuffer(11, 46, 5000), 10, max_pixels=1_000_000).width == 1000


def test_unknown_roi_kind_is_refused_with_the_accepted_kinds():
    class Odd:
        def center(self):
            return 11.0, 46.0

    with pytest.raises(ProviderError, match="accepted: PointBuffer, BBox, H3Cell"):
        target_grid(Odd(), 10)


# ------------------------------------------------------------------ overviews


def test_overview_level_picks_the_coarsest_level_still_fine_enough(tmp_path):
    path = tmp_path / "ov.tif"
    profile = dict(driver="GTiff", width=256, height=256, count=1, dtype="uint16", crs="EPSG:32632",
                   transform=Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5100000.0), tiled=True,
                   blockxsize=128, blockysize=128)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(np.ones((1, 256, 256), np.uint16))
        ds.build_overviews([2, 4, 8], Resampling.average)
    with rasterio.open(path) as ds:
        assert overview_level(ds, 10, 46.0) is None  # native resolution needed
        assert overview_level(ds, 19.9, 46.0) is None
        assert overview_level(ds, 20, 46.0) == 0
        assert overview_level(ds, 45, 46.0) == 1
        assert overview_level(ds, 500, 46.0) == 2


def test_overview_level_of_a_lonlat_raster_uses_the_latitude(tmp_path):
    path = tmp_path / "geo.tif"
    deg = 0.0001  # about 11 m of latitude; 7.7 m of longitude at 46 degrees
    profile = dict(driver="GTiff", width=256, height=256, count=1, dtype="float32", crs="EPSG:4326",
                   transform=Affine(deg, 0.0, 11.0, 0.0, -deg, 46.0), tiled=True, blockxsize=128, blockysize=128)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(np.ones((1, 256, 256), np.float32))
        ds.build_overviews([2, 4], Resampling.average)
    res_m = deg * 111_320.0 * math.cos(math.radians(46.0))
    with rasterio.open(path) as ds:
        assert overview_level(ds, res_m * 2 * 1.001, 46.0) == 0
        assert overview_level(ds, res_m * 2 * 0.99, 46.0) is None
        assert overview_level(ds, res_m * 2 * 1.001, 0.0) is None  # wider pixels at the equator


def test_the_module_is_the_only_grid_home():
    """The providers and readers import the grid from here, not from each other."""
    from rsembed_store.ingest.models import gse, tessera
    from rsembed_store.ingest.providers import gee, local

    for mod in (local, gee, gse, tessera):
        assert mod.target_grid is grid_mod.target_grid
        assert mod.TargetGrid is grid_mod.TargetGrid
