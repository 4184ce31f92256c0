"""The ``local`` imagery provider on small, seeded GeoTIFF/COG fixtures written here.

Site A: EPSG:32631 (UTM 31N) scenes, 128 x 128 px of 10 m centred on lon 3, lat 0
(x = 500000, y = 0), so a 10 m request grid there coincides with the scene grid and
composites can be compared with numpy exactly. Site B: one EPSG:4326 scene around
lon 10, lat 60 (UTM 32N for requests).
"""

from __future__ import annotations

import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h3
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.io import MemoryFile
from rasterio.shutil import copy as rio_copy
from rasterio.warp import transform as warp_transform

from rsembed_store.errors import NoImageryError, ProviderError
from rsembed_store.ingest.providers.base import Pixels
from rsembed_store.ingest.providers.local import (
    LocalProvider,
    canonical_band,
    composite,
    forget,
    target_grid,
)
from rsembed_store.keys import ResolvedRequest
from rsembed_store.specs import BBox, H3Cell, OutputSpec, PointBuffer, SensorSpec, TemporalSpec

BANDS = ("B02", "B03", "B04", "B08")
SCALE = 1e-4
A_ORIGIN = (499360.0, 640.0)  # UTM 31N; the scene spans x 499360..500640, y -640..640
B_ORIGIN = (9.9744, 60.0256)  # lon/lat; 128 px of 0.0004 deg
B_RES = 0.0004


# ------------------------------------------------------------------ fixture writers


def write_cog(path: Path, data: np.ndarray, *, crs: str, transform, bands=BANDS, tags=None, nodata=0,
              blocksize=64, overviews="AUTO", compress="DEFLATE") -> Path:
    """A real COG: build a GTiff in memory, let GDAL's COG driver lay it out."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width = data.shape
    profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=data.dtype.name,
                   crs=crs, transform=transform, nodata=nodata)
    with MemoryFile() as mem:
        with mem.open(**profile) as ds:
            ds.write(data)
            if bands:
                ds.descriptions = tuple(bands)
            if tags:
                ds.update_tags(**{k: str(v) for k, v in tags.items()})
        with mem.open() as src:
            rio_copy(src, str(path), driver="COG", blocksize=blocksize, overviews=overviews, compress=compress)
    return path


def s2_tags(day: str, cloud: float, offset: float = 0.0) -> dict:
    return {"ACQUISITION_DATE": day, "CLOUDY_PIXEL_PERCENTAGE": cloud, "BOA_SCALE": SCALE, "BOA_OFFSET": offset}


def reflectance(dn: np.ndarray, offset: float = 0.0) -> np.ndarray:
    out = dn.astype(np.float64) * SCALE + offset
    out[dn == 0] = np.nan
    return out


A_SCENES = {  # name -> (date, cloud %, BOA offset)
    "A_20220601": ("2022-06-01", 5.0, 0.0),
    "A_20220611": ("2022-06-11", 20.0, -0.01),  # nodata in its western half
    "A_20220621": ("2022-06-21", 50.0, 0.0),
}
BRIGHT_A = (37, 81)  # (row, col) of a 9999 DN pixel in A_20220601
BRIGHT_B = (50, 70)  # (row, col) of a 9999 DN pixel in the EPSG:4326 scene


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Collection 's2': three UTM scenes at site A, one EPSG:4326 scene at site B, one
    all-nodata scene, and an undated label raster that must be skipped."""
    root = tmp_path_factory.mktemp("s2")
    rng = np.random.default_rng(20240601)
    dn = {}
    a_transform = from_origin(*A_ORIGIN, 10, 10)
    for name, (day, cloud, offset) in A_SCENES.items():
        data = rng.integers(100, 3000, size=(4, 128, 128)).astype("int16")
        if name == "A_20220601":
            data[:, BRIGHT_A[0], BRIGHT_A[1]] = 9999
        if name == "A_20220611":
            data[:, :, :64] = 0
        dn[name] = data
        write_cog(root / "scenes" / f"{name}.tif", data, crs="EPSG:32631", transform=a_transform,
                  tags=s2_tags(day, cloud, offset))
    b = rng.integers(100, 3000, size=(4, 128, 128)).astype("int16")
    b[:, BRIGHT_B[0], BRIGHT_B[1]] = 9999
    dn["B_20220615"] = b
    write_cog(root / "scenes" / "geo" / "B_20220615.tif", b, crs="EPSG:4326",
              transform=from_origin(*B_ORIGIN, B_RES, B_RES), tags=s2_tags("2022-06-15", 0.0))
    empty = np.zeros((4, 128, 128), dtype="int16")
    write_cog(root / "scenes" / "A_20220801_empty.tif", empty, crs="EPSG:32631", transform=a_transform,
              tags=s2_tags("2022-08-01", 0.0))
    labels = rng.integers(1, 6, size=(1, 128, 128)).astype("uint8")
    write_cog(root / "truth" / "labels.tif", labels, crs="EPSG:32631", transform=a_transform, bands=None,
              tags={"CLASS_1": "water"})
    return root, dn


def request(spatial, start, end, *, collection="s2", bands=BANDS, cloudy_pct=100, composite="median",
            scale_m=10, fill_value=0.0):
    return ResolvedRequest(
        model="x",
        revision="1",
        provider="local",
        spatial=spatial,
        temporal=TemporalSpec.range(start, end),
        sensor=SensorSpec(collection, bands, scale_m=scale_m, cloudy_pct=cloudy_pct, fill_value=fill_value,
                          composite=composite),
        output=OutputSpec.pooled(),
        input_prep=None,
    )


def provider_for(root, **extra) -> LocalProvider:
    return LocalProvider({"sources": {"s2": str(root)}, **extra})


POINT_A = PointBuffer(lon=3.0, lat=0.0, buffer_m=640)  # exactly the 128 x 128 scene grid
POINT_B = PointBuffer(lon=10.0, lat=60.0, buffer_m=1000)


def from_origin(west, north, xsize, ysize) -> Affine:
    """North-up transform (rasterio's helper, without its affine-3 deprecation warning)."""
    return Affine(xsize, 0.0, west, 0.0, -ysize, north)


def lonlat_of_pixel(transform, row, col):
    return transform @ (col + 0.5, row + 0.5)


# ------------------------------------------------------------------ discovery and selection


def test_scene_discovery_skips_undated_rasters(site):
    root, _ = site
    scenes = provider_for(root).scenes("s2")
    ids = [s.id for s in scenes]
    assert ids == ["scenes/A_20220601", "scenes/A_20220611", "scenes/geo/B_20220615", "scenes/A_20220621",
                   "scenes/A_20220801_empty"]
    assert not any("labels" in i for i in ids)
    a2 = scenes[1]
    assert a2.cloud_pct == 20.0 and a2.crs == "EPSG:32631"
    assert a2.bands["B04"].index == 3 and a2.bands["B04"].scale == pytest.approx(SCALE)
    assert a2.bands["B04"].offset == pytest.approx(-0.01)


def test_window_is_half_open(site):
    root, _ = site
    p = provider_for(root)
    px = p.fetch(request(POINT_A, "2022-06-01", "2022-06-21"))
    assert px.meta["dates"] == ["2022-06-01", "2022-06-11"]  # 06-21 == end: excluded
    px = p.fetch(request(POINT_A, "2022-06-11", "2022-06-22"))
    assert px.meta["dates"] == ["2022-06-11", "2022-06-21"]  # 06-11 == start: included
    assert px.meta["scenes"] == ["scenes/A_20220611", "scenes/A_20220621"]


def test_cloud_filter(site):
    root, _ = site
    p = provider_for(root)
    assert p.fetch(request(POINT_A, "2022-06-01", "2022-07-01", cloudy_pct=30)).meta["dates"] == [
        "2022-06-01", "2022-06-11"]
    assert p.fetch(request(POINT_A, "2022-06-01", "2022-07-01", cloudy_pct=50)).meta["n_scenes"] == 3
    assert p.fetch(request(POINT_A, "2022-06-01", "2022-07-01", cloudy_pct=10)).meta["dates"] == ["2022-06-01"]
    with pytest.raises(NoImageryError) as err:
        p.fetch(request(POINT_A, "2022-06-01", "2022-07-01", cloudy_pct=1))
    assert "3 with cloud % > 1" in str(err.value)


def test_footprint_filter(site):
    root, _ = site
    p = provider_for(root)
    # the 4326 scene (2022-06-15) is in the window but far from site A, and vice versa
    assert "scenes/geo/B_20220615" not in p.fetch(request(POINT_A, "2022-06-01", "2022-07-01")).meta["scenes"]
    assert p.fetch(request(POINT_B, "2022-06-01", "2022-07-01")).meta["scenes"] == ["scenes/geo/B_20220615"]
    with pytest.raises(NoImageryError) as err:
        p.fetch(request(PointBuffer(lon=50.0, lat=20.0, buffer_m=500), "2022-06-01", "2022-07-01"))
    assert "4 not over the ROI" in str(err.value) and "1 outside the window" in str(err.value)


def test_missing_band_is_a_filter(site):
    root, _ = site
    with pytest.raises(NoImageryError) as err:
        provider_for(root).fetch(request(POINT_A, "2022-06-01", "2022-07-01", bands=("B04", "B8A")))
    assert "3 missing a band of ['B04', 'B8A']" in str(err.value)


def test_empty_window_error_names_everything(site):
    root, _ = site
    with pytest.raises(NoImageryError) as err:
        provider_for(root).fetch(request(POINT_A, "2021-01-01", "2021-02-01"))
    msg = str(err.value)
    for part in ("'s2'", "2021-01-01", "2021-02-01", "PointBuffer(lon=3.0, lat=0.0", "5 outside the window",
                 "5 scene(s) catalogued"):
        assert part in msg, (part, msg)


def test_all_nodata_is_an_error_not_zeros(site):
    root, _ = site
    with pytest.raises(NoImageryError, match="none has data inside the ROI"):
        provider_for(root).fetch(request(POINT_A, "2022-07-20", "2022-08-20"))


def test_unknown_collection_names_collection_and_configured(site, monkeypatch):
    root, _ = site
    monkeypatch.delenv("RSEMBED_SOURCES", raising=False)
    p = LocalProvider({"sources": {"s2": str(root), "landsat": str(root)}})
    with pytest.raises(ProviderError) as err:
        p.fetch(request(POINT_A, "2022-06-01", "2022-07-01", collection="sentinel-9"))
    assert "'sentinel-9'" in str(err.value) and "['landsat', 's2']" in str(err.value)
    assert not isinstance(err.value, NoImageryError)


def test_sources_from_environment(site, monkeypatch, tmp_path):
    root, _ = site
    monkeypatch.setenv("RSEMBED_SOURCES", f"envs2={root}, other={tmp_path}")
    p = LocalProvider({"sources": {"other": str(root)}})
    assert p.sources() == {"envs2": str(root), "other": str(root)}  # the config wins over the env
    assert p.fetch(request(POINT_A, "2022-06-01", "2022-06-02", collection="envs2")).meta["n_scenes"] == 1
    monkeypatch.setenv("RSEMBED_SOURCES", "no-equals-sign")
    with pytest.raises(ProviderError, match="no-equals-sign"):
        LocalProvider({}).sources()


# ------------------------------------------------------------------ values


def test_median_matches_numpy(site):
    root, dn = site
    px = provider_for(root).fetch(request(POINT_A, "2022-06-01", "2022-07-01"))
    assert isinstance(px, Pixels)
    assert px.shape == (4, 128, 128) and px.array.dtype == np.float32
    assert px.bands == BANDS and px.crs == "EPSG:32631"
    assert px.transform == (499360.0, 10.0, 0.0, 640.0, 0.0, -10.0)
    stack = np.stack([reflectance(dn[n], A_SCENES[n][2]) for n in A_SCENES])
    expected = np.nanmedian(stack, axis=0)
    np.testing.assert_allclose(px.array, expected, rtol=0, atol=1e-6)
    assert px.valid.all() and px.roi_mask.all()
    assert px.meta["composite"] == "median" and px.meta["nodata_fraction"] == 0.0


def test_mosaic_latest_valid_pixel_wins(site):
    root, dn = site
    px = provider_for(root).fetch(request(POINT_A, "2022-06-01", "2022-06-21", composite="mosaic"))
    first = reflectance(dn["A_20220601"])
    second = reflectance(dn["A_20220611"], -0.01)  # later, but nodata in the western half
    expected = np.where(np.isnan(second), first, second)
    np.testing.assert_allclose(px.array, expected, rtol=0, atol=1e-6)
    assert px.valid.all()
    # median of the same two scenes: their mean where both have data, the first elsewhere
    med = provider_for(root).fetch(request(POINT_A, "2022-06-01", "2022-06-21"))
    np.testing.assert_allclose(med.array[:, :, 64:], (first[:, :, 64:] + second[:, :, 64:]) / 2, atol=1e-6)
    np.testing.assert_allclose(med.array[:, :, :64], first[:, :, :64], atol=1e-6)


def test_nodata_half_and_fill_value(site):
    root, dn = site
    px = provider_for(root).fetch(request(POINT_A, "2022-06-11", "2022-06-12", fill_value=-1.0))
    assert px.meta["scenes"] == ["scenes/A_20220611"]
    assert not px.valid[:, :64].any() and px.valid[:, 64:].all()
    assert (px.array[:, :, :64] == -1.0).all() and px.fill_value == -1.0
    np.testing.assert_allclose(px.array[:, :, 64:], reflectance(dn["A_20220611"], -0.01)[:, :, 64:], atol=1e-6)
    assert px.meta["nodata_fraction"] == pytest.approx(0.5)


def test_roi_larger_than_scene_is_filled_outside(site):
    root, _ = site
    px = provider_for(root).fetch(request(PointBuffer(lon=3.0, lat=0.0, buffer_m=1000), "2022-06-01", "2022-06-02"))
    assert px.shape == (4, 200, 200)
    inside = np.zeros((200, 200), dtype=bool)
    inside[36:164, 36:164] = True  # grid origin 499000 / 1000; the scene starts at 499360 / 640
    assert np.array_equal(px.valid, inside)
    assert (px.array[:, ~inside] == 0.0).all()


def test_bright_pixel_lands_at_its_coordinate_utm(site):
    root, _ = site
    lon, lat = warp_transform("EPSG:32631", "EPSG:4326", *[[v] for v in lonlat_of_pixel(
        from_origin(*A_ORIGIN, 10, 10), *BRIGHT_A)])
    lon, lat = lon[0], lat[0]
    # an ROI centred 300 m east / 200 m north of the bright pixel (lon/lat of the offset via UTM)
    (clon,), (clat,) = warp_transform("EPSG:32631", "EPSG:4326",
                                      [A_ORIGIN[0] + (BRIGHT_A[1] + 0.5) * 10 + 300],
                                      [A_ORIGIN[1] - (BRIGHT_A[0] + 0.5) * 10 + 200])
    px = provider_for(root).fetch(request(PointBuffer(lon=clon, lat=clat, buffer_m=500), "2022-06-01", "2022-06-02"))
    (x,), (y,) = warp_transform("EPSG:4326", px.crs, [lon], [lat])
    x0, dx, _, y0, _, dy = px.transform
    row, col = int(math.floor((y - y0) / dy)), int(math.floor((x - x0) / dx))
    assert (row, col) == np.unravel_index(np.argmax(px.array[2]), px.array[2].shape)
    assert px.array[2, row, col] == pytest.approx(0.9999)
    assert abs(row - (50 + 20)) <= 1 and abs(col - (50 - 30)) <= 1  # 200 m south, 300 m west of the centre


def test_bright_pixel_lands_at_its_coordinate_geographic(site):
    root, _ = site
    lon, lat = lonlat_of_pixel(from_origin(*B_ORIGIN, B_RES, B_RES), *BRIGHT_B)
    spatial = PointBuffer(lon=lon + 0.003, lat=lat - 0.001, buffer_m=400)
    for resampling in ("nearest", "bilinear"):
        px = provider_for(root, resampling=resampling).fetch(request(spatial, "2022-06-01", "2022-07-01"))
        assert px.crs == "EPSG:32632"
        (x,), (y,) = warp_transform("EPSG:4326", px.crs, [lon], [lat])
        x0, dx, _, y0, _, dy = px.transform
        row, col = int(math.floor((y - y0) / dy)), int(math.floor((x - x0) / dx))
        bright = px.array[0] > 0.5 * px.array[0].max()
        centroid = np.argwhere(bright).mean(axis=0)  # (row, col) of the bright spot's centre
        assert abs(centroid[0] - (row + 0.5)) <= 1 and abs(centroid[1] - (col + 0.5)) <= 1, (resampling, centroid, (row, col))
        if resampling == "nearest":
            assert px.array[0, row, col] == pytest.approx(0.9999)
            # one 0.0004 deg pixel at lat 60 is ~22 m x 44 m, about ten 10 m pixels
            assert 5 <= int((px.array[0] > 0.9).sum()) <= 16


# ------------------------------------------------------------------ the grid


@pytest.mark.parametrize("lat", [0.0, 30.0, 60.0, -45.0, 75.0])
def test_pointbuffer_grid_is_square_in_ground_metres(lat):
    grid = target_grid(PointBuffer(lon=7.3, lat=lat, buffer_m=1000), 10)
    assert (grid.height, grid.width) == (200, 200)
    x0, dx, _, y0, _, dy = grid.gdal()
    assert (dx, dy) == (10.0, -10.0) and x0 % 10 == 0 and y0 % 10 == 0
    assert grid.crs == ("EPSG:32632" if lat >= 0 else "EPSG:32732")
    (x,), (y,) = warp_transform("EPSG:4326", grid.crs, [7.3], [lat])
    assert abs(x0 + 1000 - x) <= 5 + 1e-6 and abs(y0 - 1000 - y) <= 5 + 1e-6  # centred within half a pixel
    assert grid.roi_mask.all()
    assert target_grid(PointBuffer(lon=7.3, lat=lat, buffer_m=1000), 30).width == 67


@pytest.mark.parametrize("spatial", [POINT_B, PointBuffer(lon=3.0, lat=0.0, buffer_m=1000)])
def test_pointbuffer_1000m_fetch_is_200px_at_lat_0_and_60(site, spatial):
    root, _ = site
    px = provider_for(root).fetch(request(spatial, "2022-06-01", "2022-07-01"))
    assert px.shape == (4, 200, 200) and px.valid.shape == (200, 200) and px.roi_mask.shape == (200, 200)
    if spatial.lat == 60.0:
        assert px.valid.all()  # the 4326 scene covers the whole 2 km square


def test_bbox_grid_covers_the_box():
    box = BBox(minlon=2.99, minlat=-0.005, maxlon=3.01, maxlat=0.005)
    grid = target_grid(box, 10)
    left, bottom, right, top = grid.bounds
    xs, ys = warp_transform("EPSG:4326", grid.crs, [2.99, 3.01, 2.99, 3.01], [-0.005, -0.005, 0.005, 0.005])
    assert left <= min(xs) and right >= max(xs) and bottom <= min(ys) and top >= max(ys)
    assert right - left - (max(xs) - min(xs)) < 20 and top - bottom - (max(ys) - min(ys)) < 20
    assert grid.roi_mask.all()


def test_h3_roi_mask_is_the_hexagon(site):
    root, _ = site
    cell = h3.latlng_to_cell(60.0, 10.0, 8)
    px = provider_for(root).fetch(request(H3Cell(cell), "2022-06-01", "2022-07-01"))
    h, w = px.roi_mask.shape
    assert h == w and px.valid.all()
    side_m = w * 10.0
    expected = h3.cell_area(cell, unit="m^2") / side_m**2  # ~0.65 for a regular hexagon in its square
    assert px.roi_mask.mean() == pytest.approx(expected, abs=0.03)
    assert 0.55 < px.roi_mask.mean() < 0.75
    assert px.roi_mask[h // 2, w // 2]
    assert not px.roi_mask[0, 0] and not px.roi_mask[0, -1] and not px.roi_mask[-1, 0] and not px.roi_mask[-1, -1]
    # against h3's own membership of every pixel centre
    x0, dx, _, y0, _, dy = px.transform
    cols, rows = np.meshgrid(np.arange(w), np.arange(h))
    lons, lats = warp_transform(px.crs, "EPSG:4326", (x0 + (cols.ravel() + 0.5) * dx).tolist(),
                                (y0 + (rows.ravel() + 0.5) * dy).tolist())
    member = np.array([h3.latlng_to_cell(la, lo, 8) == cell for lo, la in zip(lons, lats)]).reshape(h, w)
    assert (member == px.roi_mask).mean() > 0.985
    assert px.usable().sum() == px.roi_mask.sum()


# ------------------------------------------------------------------ reading only what is needed


def _corrupt_blocks(path: Path, keep) -> int:
    """Overwrite every full-resolution block (row, col) not in ``keep`` with garbage."""
    with rasterio.open(path) as ds:
        rows = math.ceil(ds.height / ds.block_shapes[0][0])
        cols = math.ceil(ds.width / ds.block_shapes[0][1])
        blocks = [(r, c, int(ds.get_tag_item(f"BLOCK_OFFSET_{c}_{r}", "TIFF", bidx=1)),
                   int(ds.get_tag_item(f"BLOCK_SIZE_{c}_{r}", "TIFF", bidx=1)))
                  for r in range(rows) for c in range(cols)]
    n = 0
    with open(path, "r+b") as f:
        for r, c, offset, size in blocks:
            if not keep(r, c):
                f.seek(offset)
                f.write(b"\xff" * size)
                n += 1
    return n


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """Two 4096 x 4096 COGs (256 px blocks) whose blocks away from the centre are garbage."""
    root = tmp_path_factory.mktemp("big")
    data = np.full((1, 4096, 4096), 1000, dtype="int16")
    transform = from_origin(400000, 5000000, 10, 10)
    tags = s2_tags("2022-06-15", 0.0)
    windowed = write_cog(root / "windowed" / "BIG_20220615.tif", data, crs="EPSG:32632", transform=transform,
                         bands=("B04",), tags=tags, blocksize=256, overviews="NONE")
    assert _corrupt_blocks(windowed, lambda r, c: 6 <= r <= 9 and 6 <= c <= 9) == 256 - 16
    ovr = write_cog(root / "overviews" / "BIG_20220615.tif", data, crs="EPSG:32632", transform=transform,
                    bands=("B04",), tags=tags, blocksize=256, overviews="AUTO")
    assert _corrupt_blocks(ovr, lambda r, c: False) == 256
    centre = warp_transform("EPSG:32632", "EPSG:4326", [400000 + 20480], [5000000 - 20480])
    return root, (centre[0][0], centre[1][0])


def test_reads_only_the_blocks_it_needs(big):
    root, (lon, lat) = big
    with rasterio.open(root / "windowed" / "BIG_20220615.tif") as ds:
        with pytest.raises(rasterio.errors.RasterioIOError):
            ds.read(1)  # a whole-file read would hit the garbage
    p = LocalProvider({"sources": {"big": str(root / "windowed")}})
    t0 = time.perf_counter()
    px = p.fetch(request(PointBuffer(lon=lon, lat=lat, buffer_m=500), "2022-06-01", "2022-07-01",
                         collection="big", bands=("B04",)))
    assert time.perf_counter() - t0 < 5.0  # generous: the garbage blocks are the real check
    assert px.shape == (1, 100, 100) and px.valid.all()
    np.testing.assert_allclose(px.array, 0.1, atol=1e-6)
    # the same request far from the centre must touch garbage and say which file failed
    far = warp_transform("EPSG:32632", "EPSG:4326", [400000 + 1000], [5000000 - 1000])
    with pytest.raises(ProviderError, match="BIG_20220615.tif"):
        p.fetch(request(PointBuffer(lon=far[0][0], lat=far[1][0], buffer_m=500), "2022-06-01", "2022-07-01",
                        collection="big", bands=("B04",)))


def test_coarse_requests_read_overviews(big):
    root, (lon, lat) = big
    p = LocalProvider({"sources": {"big": str(root / "overviews")}})
    spatial = PointBuffer(lon=lon, lat=lat, buffer_m=4000)
    px = p.fetch(request(spatial, "2022-06-01", "2022-07-01", collection="big", bands=("B04",), scale_m=80))
    assert px.shape == (1, 100, 100) and px.valid.all()
    np.testing.assert_allclose(px.array, 0.1, atol=1e-6)
    with pytest.raises(ProviderError):  # full resolution is garbage: the coarse read above never touched it
        p.fetch(request(spatial, "2022-06-01", "2022-07-01", collection="big", bands=("B04",), scale_m=10))


# ------------------------------------------------------------------ folder-per-scene layout


def _write_folder_scene(folder: Path, rng, *, tags=None, stac=None):
    a_transform = from_origin(*A_ORIGIN, 10, 10)
    values = {}
    for name in ("B02", "green", "red", "nir"):  # earth-search style: aliases for B03, B04, B08
        data = rng.integers(1000, 3000, size=(1, 128, 128)).astype("uint16")
        values[canonical_band(name)] = data[0]
        write_cog(folder / f"{name}.tif", data, crs="EPSG:32631", transform=a_transform, bands=None, tags=tags)
    b11 = np.full((1, 64, 64), 2500, dtype="uint16")  # a 20 m band
    values["B11"] = b11[0]
    write_cog(folder / "B11.tif", b11, crs="EPSG:32631", transform=from_origin(*A_ORIGIN, 20, 20), bands=None,
              tags=tags)
    write_cog(folder / "visual.tif", np.zeros((3, 128, 128), dtype="uint8"), crs="EPSG:32631",
              transform=a_transform, bands=None)  # a true-colour preview: not a band, ignored
    if stac is not None:
        (folder / f"{folder.name}.json").write_text(json.dumps(stac))
    return values


def test_folder_per_band_layout(tmp_path):
    rng = np.random.default_rng(7)
    stac = {
        "type": "Feature",
        "properties": {"datetime": "2022-06-05T10:30:00Z", "eo:cloud_cover": 12.5},
        "assets": {k: {"raster:bands": [{"scale": 0.0001, "offset": -0.1}]}
                   for k in ("blue", "green", "red", "nir", "swir16")},
    }
    first = _write_folder_scene(tmp_path / "31/N/EA/S2A_31NEA_20220605_0_L2A", rng, stac=stac)
    second = _write_folder_scene(tmp_path / "31/N/EA/S2B_31NEA_20220610_0_L2A", rng,
                                 tags={"ACQUISITION_DATE": "2022-06-10", "CLOUDY_PIXEL_PERCENTAGE": 3,
                                       "BOA_SCALE": SCALE, "BOA_OFFSET": 0})
    p = LocalProvider({"sources": {"s2": str(tmp_path)}})
    scenes = p.scenes("s2")
    assert [s.id for s in scenes] == ["31/N/EA/S2A_31NEA_20220605_0_L2A", "31/N/EA/S2B_31NEA_20220610_0_L2A"]
    assert scenes[0].cloud_pct == 12.5 and set(scenes[0].bands) == {"B02", "B03", "B04", "B08", "B11"}
    assert scenes[0].bands["B04"].path.endswith("red.tif") and scenes[0].bands["B04"].offset == -0.1

    px = p.fetch(request(POINT_A, "2022-06-01", "2022-06-08", bands=("B04", "nir", "B11")))
    assert px.bands == ("B04", "nir", "B11") and px.meta["scenes"] == ["31/N/EA/S2A_31NEA_20220605_0_L2A"]
    np.testing.assert_allclose(px.array[0], first["B04"] * 1e-4 - 0.1, atol=1e-6)
    np.testing.assert_allclose(px.array[1], first["B08"] * 1e-4 - 0.1, atol=1e-6)
    np.testing.assert_allclose(px.array[2], 0.25 - 0.1, atol=1e-6)  # 20 m band resampled to 10 m

    mosaic = p.fetch(request(POINT_A, "2022-06-01", "2022-07-01", bands=("B03",), composite="mosaic"))
    np.testing.assert_allclose(mosaic.array[0], second["B03"] * 1e-4, atol=1e-6)
    with pytest.raises(NoImageryError, match="missing a band"):
        p.fetch(request(POINT_A, "2022-06-01", "2022-07-01", bands=("B05",)))


# ------------------------------------------------------------------ index.json


def test_build_index_and_use_it(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.integers(100, 3000, size=(4, 64, 64)).astype("int16")
    write_cog(tmp_path / "tagged.tif", data, crs="EPSG:32631", transform=from_origin(*A_ORIGIN, 10, 10),
              tags=s2_tags("2022-06-03", 7.5, -0.1))
    untagged = rng.integers(100, 3000, size=(4, 64, 64)).astype("int16")
    write_cog(tmp_path / "sub" / "untagged.tif", untagged, crs="EPSG:32631",
              transform=from_origin(A_ORIGIN[0] + 640, A_ORIGIN[1], 10, 10), tags={"BOA_SCALE": SCALE})
    p = LocalProvider({"sources": {"s2": str(tmp_path)}})
    assert [s.id for s in p.scenes("s2")] == ["tagged"]  # no date: skipped

    # a hand-written index gives the untagged file its date and cloud (and becomes the catalogue)
    (tmp_path / "index.json").write_text(json.dumps([
        {"path": "tagged.tif", "date": "2022-06-03", "cloud_pct": 7.5},
        {"path": "sub/untagged.tif", "date": "2022-06-04", "cloud_pct": 40},
    ]))
    scenes = p.scenes("s2")
    assert [(s.id, s.date.isoformat(), s.cloud_pct) for s in scenes] == [
        ("tagged", "2022-06-03", 7.5), ("sub/untagged", "2022-06-04", 40.0)]

    # build_index keeps those dates and records everything needed to skip opening files
    path = LocalProvider.build_index(tmp_path)
    assert path == tmp_path / "index.json"
    entries = {e["path"]: e for e in json.loads(path.read_text())}
    assert set(entries) == {"tagged.tif", "sub/untagged.tif"}
    tagged = entries["tagged.tif"]
    assert tagged["date"] == "2022-06-03" and tagged["cloud_pct"] == 7.5 and tagged["crs"] == "EPSG:32631"
    assert tagged["bands"] == list(BANDS) and tagged["boa_scale"] == SCALE and tagged["boa_offset"] == -0.1
    west, south, east, north = tagged["bounds_lonlat"]
    assert west == pytest.approx(2.99425, abs=1e-4) and north == pytest.approx(0.005789, abs=1e-4)
    assert east > west and north > south
    assert entries["sub/untagged.tif"]["date"] == "2022-06-04"

    px = p.fetch(request(POINT_A, "2022-06-01", "2022-07-01", cloudy_pct=50, composite="mosaic"))
    assert px.meta["scenes"] == ["tagged", "sub/untagged"]
    np.testing.assert_allclose(px.array[:, :64, :64], data * SCALE - 0.1, atol=1e-6)
    np.testing.assert_allclose(px.array[:, :64, 64:], untagged * SCALE, atol=1e-6)
    assert not px.valid[64:].any()

    # the index is the catalogue: edit a date there, the provider follows
    edited = json.loads(path.read_text())
    for e in edited:
        if e["path"] == "tagged.tif":
            e["date"] = "2030-01-01"
    path.write_text(json.dumps(edited))
    assert [s.id for s in p.scenes("s2")] == ["sub/untagged", "tagged"]


def test_bad_index_is_a_clear_error(tmp_path):
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(ProviderError, match="index.json"):
        LocalProvider({"sources": {"s2": str(tmp_path)}}).scenes("s2")


# ------------------------------------------------------------------ concurrency and helpers


def test_concurrent_fetches_agree(site):
    root, _ = site
    forget(root)
    p = provider_for(root)
    reqs = [request(POINT_A, "2022-06-01", "2022-07-01", composite=c) for c in ("median", "mosaic")] * 4
    reqs += [request(POINT_B, "2022-06-01", "2022-07-01")] * 4
    barrier = threading.Barrier(4)

    def run(r):
        try:
            barrier.wait(timeout=5)
        except threading.BrokenBarrierError:
            pass
        return p.fetch(r)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, reqs))
    serial = [p.fetch(r) for r in reqs]
    for got, want in zip(results, serial):
        np.testing.assert_array_equal(got.array, want.array)
        assert got.meta["scenes"] == want.meta["scenes"]


def test_composite_matches_numpy_on_random_gaps():
    rng = np.random.default_rng(11)
    for n in range(1, 7):
        stacks = []
        for _ in range(n):
            d = rng.random((3, 17, 19)).astype(np.float32)
            d[:, rng.random((17, 19)) < 0.35] = np.nan
            stacks.append(d)
        cube = np.stack(stacks)
        out, valid = composite(stacks, "median")
        assert np.array_equal(valid, ~np.isnan(cube[:, 0]).all(axis=0))
        ref = np.nanmedian(cube[:, :, valid], axis=0)
        np.testing.assert_allclose(out[:, valid], ref, atol=1e-7)
        assert np.isnan(out[:, ~valid]).all()
        mosaic, _ = composite(stacks, "mosaic")
        last = np.full(cube.shape[1:], np.nan, dtype=np.float32)
        for d in stacks:
            last = np.where(np.isnan(d), last, d)
        np.testing.assert_array_equal(mosaic, last)


def test_band_aliases():
    assert [canonical_band(b) for b in ("red", "nir", "blue", "green", "swir16", "swir22", "b4", "B8A", "nir08")] == [
        "B04", "B08", "B02", "B03", "B11", "B12", "B04", "B8A", "B8A"]
