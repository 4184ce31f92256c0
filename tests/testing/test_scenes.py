"""Tests of the synthetic Sentinel-2-like scene generator (rsembed_store.testing.scenes)."""

from __future__ import annotations

import json
import math
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.warp import transform as warp_transform

from rsembed_store.testing.labels import class_fractions, label_at, read_labels
from rsembed_store.testing.scenes import BANDS, CLASSES, SceneSpec, ensure_scene, generate_scene

# 256 px x 10 m with 12 patches: patches ~740 m across (the default spec: ~1.3 km)
SMALL = SceneSpec(size_px=256, n_dates=3, seed=0, n_patches=12)
REQUIRED_TAGS = ("ACQUISITION_DATE", "CLOUDY_PIXEL_PERCENTAGE", "SPACECRAFT_NAME", "PROCESSING_LEVEL",
                 "BOA_SCALE", "BOA_OFFSET")
CLOUD_DN = 1800  # clear pixels keep B02 <= 1700, cloud pixels have B02 >= 2000 (module contract)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    out = tmp_path_factory.mktemp("scene_seed0")
    return out, generate_scene(out, SMALL)


@pytest.fixture(scope="module")
def scene_arrays(scene):
    out, manifest = scene
    arrays = {}
    for entry in manifest["scenes"]:
        with rasterio.open(out / entry["path"]) as src:
            arrays[entry["date"]] = src.read()
    return arrays


def _read_all(out, manifest):
    arrays = []
    for rel in [manifest["files"]["labels"], *manifest["files"]["scenes"]]:
        with rasterio.open(out / rel) as src:
            arrays.append(src.read())
    return arrays


def _doy_distance(d: str, target: float) -> float:
    diff = abs(date.fromisoformat(d).timetuple().tm_yday - target) % 365.25
    return min(diff, 365.25 - diff)


def _summer_winter(manifest, south=False):
    target = 196.0 + (182.6 if south else 0.0)
    dates = manifest["dates"]
    summer = min(dates, key=lambda d: _doy_distance(d, target))
    winter = max(dates, key=lambda d: _doy_distance(d, target))
    return summer, winter


def _xy(transform, col, row):
    t = transform
    return t.a * col + t.b * row + t.c, t.d * col + t.e * row + t.f


def _pixel_lonlat(transform, crs, row, col, dx=0.5, dy=0.5):
    x, y = _xy(transform, col + dx, row + dy)
    lons, lats = warp_transform(crs, "EPSG:4326", [x], [y])
    return lons[0], lats[0]


def _ndvi(arr, sel):
    red = arr[2][sel].astype(np.float64)
    nir = arr[3][sel].astype(np.float64)
    return float(np.median((nir - red) / (nir + red)))


# ------------------------------------------------------------------ layout and format


def test_layout_and_manifest(scene):
    out, manifest = scene
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["spec"] == {
        "center_lon": 11.0, "center_lat": 46.0, "size_px": 256, "scale_m": 10.0,
        "year": 2023, "n_dates": 3, "seed": 0, "n_patches": 12,
    }
    assert manifest["crs"] == "EPSG:32632"  # lon 11 -> UTM zone 32, north
    assert manifest["bands"] == list(BANDS) and manifest["classes"] == list(CLASSES)
    assert manifest["width"] == manifest["height"] == 256
    assert len(manifest["dates"]) == 3 and manifest["dates"] == sorted(manifest["dates"])
    assert all(d.startswith("2023-") for d in manifest["dates"])
    # one scene file per date, named after the date and the seed, nothing else in scenes/
    expected = [f"scenes/S2SYN_{d.replace('-', '')}_0.tif" for d in manifest["dates"]]
    assert manifest["files"]["scenes"] == expected
    assert sorted(p.name for p in (out / "scenes").iterdir()) == sorted(Path(p).name for p in expected)
    assert (out / "truth" / "labels.tif").is_file()
    # grid: north-up, 10 m, origin snapped to the pixel size, centre inside the lon/lat bounds
    x0, xres, rx, y0, ry, yres = manifest["transform"]
    assert (xres, rx, ry, yres) == (10.0, 0.0, 0.0, -10.0)
    assert x0 % 10.0 == 0.0 and y0 % 10.0 == 0.0
    left, bottom, right, top = manifest["bounds"]
    assert (left, top) == (x0, y0) and right - left == top - bottom == 2560.0
    west, south, east, north = manifest["bounds_lonlat"]
    assert west < 11.0 < east and south < 46.0 < north
    assert [s["date"] for s in manifest["scenes"]] == manifest["dates"]


def test_scene_files_are_cogs_with_the_contracted_metadata(scene):
    out, manifest = scene
    gdal_transform = Affine.from_gdal(*manifest["transform"])
    for entry in manifest["scenes"]:
        with rasterio.open(out / entry["path"]) as src:
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            assert src.count == 6
            assert src.dtypes == ("int16",) * 6
            assert src.nodata == 0
            assert src.descriptions == BANDS
            assert src.profile["tiled"] and src.block_shapes[0] == (128, 128)  # 256 px scene: 2x2 tiles
            assert src.compression == rasterio.enums.Compression.deflate
            for band in range(1, 7):
                assert src.overviews(band) == [2, 4, 8]
            assert src.read(4, out_shape=(32, 32)).shape == (32, 32)  # overview level 8 reads
            assert src.crs.to_string() == manifest["crs"] and src.transform == gdal_transform
            tags = src.tags()
            for key in REQUIRED_TAGS:
                assert key in tags, key
            assert tags["ACQUISITION_DATE"] == entry["date"]
            assert entry["path"].endswith(f"_{entry['date'].replace('-', '')}_0.tif")
            assert tags["SPACECRAFT_NAME"] == "SYNTHETIC" and tags["PROCESSING_LEVEL"] == "L2A"
            assert float(tags["BOA_SCALE"]) == 1e-4 and float(tags["BOA_OFFSET"]) == 0.0
            cloudy = float(tags["CLOUDY_PIXEL_PERCENTAGE"])
            assert 0.0 <= cloudy <= 100.0 and cloudy == entry["cloudy_pixel_percentage"]
            assert float(tags["NODATA_PIXEL_PERCENTAGE"]) == entry["nodata_pixel_percentage"]
            assert src.tags(4)["BAND_NAME"] == "B08"


def test_labels_file(scene):
    out, manifest = scene
    with rasterio.open(out / "truth" / "labels.tif") as src:
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert src.count == 1 and src.dtypes == ("uint8",) and src.nodata == 0
        assert src.overviews(1) == [2, 4, 8] and src.profile["tiled"]
        assert src.transform == Affine.from_gdal(*manifest["transform"])
        assert src.tags()["CLASS_1"] == "water" and src.tags()["CLASS_6"] == "grassland"
        assert len(src.colormap(1)) >= 7
        labels = src.read(1)
    values = set(np.unique(labels).tolist())
    assert values == set(range(1, 7))  # all classes present, no unlabelled pixel
    # patches are large: a 25x25-pixel (250 m) cell is usually dominated by one class
    shares = []
    for r in range(0, 250, 25):
        for c in range(0, 250, 25):
            counts = np.bincount(labels[r:r + 25, c:c + 25].ravel(), minlength=7)
            shares.append(counts.max() / counts.sum())
    assert np.median(shares) >= 0.85
    assert np.mean(np.array(shares) >= 0.8) >= 0.5


def test_read_labels_matches_file(scene):
    out, manifest = scene
    labels, transform, crs = read_labels(out)
    assert labels.dtype == np.uint8 and labels.shape == (256, 256)
    assert transform == Affine.from_gdal(*manifest["transform"])
    assert crs == manifest["crs"]


# ------------------------------------------------------------------ determinism


def test_same_seed_is_identical_and_another_seed_differs(scene, tmp_path):
    out, manifest = scene
    again = generate_scene(tmp_path / "again", SMALL)
    assert again == manifest
    for a, b in zip(_read_all(out, manifest), _read_all(tmp_path / "again", again)):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    other_spec = SceneSpec(size_px=256, n_dates=3, seed=1, n_patches=12)
    other_manifest = generate_scene(tmp_path / "other", other_spec)
    other = _read_all(tmp_path / "other", other_manifest)
    mine = _read_all(out, manifest)
    assert other_manifest["files"]["scenes"][0].endswith("_1.tif")
    assert (mine[0] != other[0]).mean() > 0.3  # labels
    for a, b in zip(mine[1:], other[1:]):
        assert (a != b).mean() > 0.5


# ------------------------------------------------------------------ clouds and no data


def test_cloud_percentages_are_honest(scene, scene_arrays):
    _, manifest = scene
    reported = {}
    for entry in manifest["scenes"]:
        arr = scene_arrays[entry["date"]]
        valid = arr[0] != 0
        bright = (arr[0] > CLOUD_DN) & valid
        observed = 100.0 * bright.sum() / valid.sum()
        assert observed == pytest.approx(entry["cloudy_pixel_percentage"], abs=0.5), entry
        # cloud pixels are bright in every visible band
        if bright.any():
            assert arr[1][bright].min() >= 2000 and arr[2][bright].min() >= 2000
        reported[entry["date"]] = entry["cloudy_pixel_percentage"]
    assert min(reported.values()) == 0.0
    assert max(reported.values()) >= 40.0
    summer, _ = _summer_winter(manifest)
    assert reported[summer] == 0.0


def test_one_date_has_a_nodata_wedge(scene, scene_arrays):
    _, manifest = scene
    with_nodata = []
    for entry in manifest["scenes"]:
        arr = scene_arrays[entry["date"]]
        zero = arr == 0
        # no data is all-or-nothing per pixel; valid DN stay in 1..10000
        assert np.array_equal(zero.any(axis=0), zero.all(axis=0))
        valid = ~zero[0]
        assert arr[:, valid].min() >= 1 and arr[:, valid].max() <= 10000
        pct = 100.0 * zero[0].mean()
        assert pct == pytest.approx(entry["nodata_pixel_percentage"], abs=0.01)
        if zero[0].any():
            with_nodata.append(entry["date"])
            corners = [zero[0][0, 0], zero[0][0, -1], zero[0][-1, 0], zero[0][-1, -1]]
            assert sum(corners) == 1  # a wedge in one corner
            assert 1.0 < pct < 40.0
    assert len(with_nodata) == 1
    assert with_nodata[0] != _summer_winter(manifest)[0]


# ------------------------------------------------------------------ spectra


def test_spectral_sanity_per_class(scene, scene_arrays):
    out, manifest = scene
    labels, _, _ = read_labels(out)
    summer, winter = _summer_winter(manifest)
    arr = scene_arrays[summer]
    assert (arr[0] > CLOUD_DN).sum() == 0 and (arr[0] == 0).sum() == 0  # the summer date is clean
    cls = {name: labels == i for i, name in enumerate(CLASSES, start=1)}
    nir = {name: float(np.median(arr[3][sel])) for name, sel in cls.items()}
    ndvi = {name: _ndvi(arr, sel) for name, sel in cls.items()}
    assert nir["water"] < 500 < 2000 < nir["forest"] < 4500  # DN: water NIR ~0.02, forest ~0.3
    assert nir["water"] < nir["forest"]
    assert ndvi["forest"] > ndvi["urban"] + 0.3
    assert ndvi["forest"] > 0.6 and ndvi["water"] < 0.0
    assert ndvi["cropland"] > 0.5
    for name in ("urban", "bare_soil"):  # SWIR above blue for built-up and bare land
        sel = cls[name]
        assert np.median(arr[4][sel]) > np.median(arr[0][sel])
    # cropland greens up: summer NDVI well above winter NDVI (clear valid pixels only)
    warr = scene_arrays[winter]
    clear = (warr[0] != 0) & (warr[0] <= CLOUD_DN)
    assert (cls["cropland"] & clear).sum() > 200
    assert ndvi["cropland"] > _ndvi(warr, cls["cropland"] & clear) + 0.3


def test_southern_hemisphere_scene(tmp_path):
    manifest = generate_scene(tmp_path, SceneSpec(center_lon=-70.6, center_lat=-33.4, size_px=128,
                                                  n_dates=6, year=2024, seed=3))
    assert manifest["crs"] == "EPSG:32719"
    x0, _, _, y0, _, yres = manifest["transform"]
    assert yres == -10.0 and x0 % 10 == 0 and y0 % 10 == 0
    assert label_at(tmp_path, -70.6, -33.4) in CLASSES
    labels, _, _ = read_labels(tmp_path)
    crop = labels == CLASSES.index("cropland") + 1
    assert crop.sum() > 100
    summer, winter = _summer_winter(manifest, south=True)
    assert date.fromisoformat(summer).month in (12, 1, 2)
    arrays = {}
    for entry in manifest["scenes"]:
        with rasterio.open(tmp_path / entry["path"]) as src:
            arrays[entry["date"]] = src.read()
        if entry["date"] == summer:
            assert entry["cloudy_pixel_percentage"] == 0.0 and entry["nodata_pixel_percentage"] == 0.0
    warr = arrays[winter]
    clear = (warr[0] != 0) & (warr[0] <= CLOUD_DN)
    assert _ndvi(arrays[summer], crop) > _ndvi(warr, crop & clear) + 0.3


# ------------------------------------------------------------------ truth queries


def test_label_at_pixel_centres(scene):
    out, _ = scene
    cache = read_labels(out)
    labels, transform, crs = cache
    for value in range(1, 7):
        rows, cols = np.nonzero(labels == value)
        for i in (0, len(rows) // 2, len(rows) - 1):
            lon, lat = _pixel_lonlat(transform, crs, rows[i], cols[i])
            assert label_at(out, lon, lat) == CLASSES[value - 1]
            assert label_at(str(out), lon, lat) == CLASSES[value - 1]
            assert label_at(cache, lon, lat) == CLASSES[value - 1]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(row=st.integers(0, 255), col=st.integers(0, 255), dx=st.floats(0.05, 0.95), dy=st.floats(0.05, 0.95))
def test_label_at_any_pixel(scene, row, col, dx, dy):
    out, _ = scene
    cache = _cache_for(out)
    labels, transform, crs = cache
    lon, lat = _pixel_lonlat(transform, crs, row, col, dx, dy)
    assert label_at(cache, lon, lat) == CLASSES[labels[row, col] - 1]


_CACHES: dict = {}


def _cache_for(out):
    if out not in _CACHES:
        _CACHES[out] = read_labels(out)
    return _CACHES[out]


@pytest.mark.parametrize("lon, lat", [(11.2, 46.0), (11.0, 45.9), (-169.0, -46.0), (11.0, 46.1234)])
def test_label_at_outside_raises_naming_the_point(scene, lon, lat):
    out, _ = scene
    with pytest.raises(ValueError, match=str(lon)) as info:
        label_at(out, lon, lat)
    assert str(lat) in str(info.value)
    with pytest.raises(ValueError, match=str(lat)):
        label_at(read_labels(out), lon, lat)


def test_label_at_rejects_invalid_coordinates(scene):
    out, _ = scene
    for lon, lat in [(float("nan"), 46.0), (11.0, 95.0), (200.0, 46.0)]:
        with pytest.raises(ValueError):
            label_at(out, lon, lat)


def _box_lonlat(transform, crs, r0, r1, c0, c1):
    xs = [c0, c1, c1, c0]
    ys = [r0, r0, r1, r1]
    corners = [_xy(transform, c, r) for c, r in zip(xs, ys)]
    lons, lats = warp_transform(crs, "EPSG:4326", [p[0] for p in corners], [p[1] for p in corners])
    return list(zip(lons, lats))


def test_class_fractions_matches_label_counts(scene):
    out, _ = scene
    cache = read_labels(out)
    labels, transform, crs = cache
    checked_majority = 0
    for r0, c0, size in [(10, 20, 40), (100, 100, 30), (200, 5, 50), (0, 0, 256), (60, 170, 25)]:
        r1, c1 = r0 + size, c0 + size
        ring = _box_lonlat(transform, crs, r0, r1, c0, c1)
        fractions = class_fractions(out, ring)
        assert list(fractions) == list(CLASSES)
        assert sum(fractions.values()) == pytest.approx(1.0, abs=1e-9)
        assert all(0.0 <= v <= 1.0 for v in fractions.values())
        counts = np.bincount(labels[r0:r1, c0:c1].ravel(), minlength=7)[1:]
        expected = counts / counts.sum()
        got = np.array([fractions[c] for c in CLASSES])
        assert np.abs(got - expected).max() < 0.03, (r0, c0, got, expected)
        ordered = np.sort(expected)
        if ordered[-1] - ordered[-2] > 0.1:
            assert max(fractions, key=fractions.get) == CLASSES[int(np.argmax(expected))]
            checked_majority += 1
        # closed ring and the cache give the same answer
        assert class_fractions(cache, ring + [ring[0]]) == pytest.approx(fractions)
    assert checked_majority >= 3


def test_class_fractions_small_and_outside(scene):
    out, _ = scene
    labels, transform, crs = read_labels(out)
    # a polygon smaller than a pixel still answers (all touched), with the pixel's class
    x, y = _xy(transform, 50.5, 60.5)
    pts = [(x - 1, y - 1), (x + 1, y - 1), (x + 1, y + 1), (x - 1, y + 1)]
    lons, lats = warp_transform(crs, "EPSG:4326", [p[0] for p in pts], [p[1] for p in pts])
    tiny = class_fractions(out, list(zip(lons, lats)))
    assert tiny[CLASSES[labels[60, 50] - 1]] == 1.0
    with pytest.raises(ValueError, match="overlap"):
        class_fractions(out, [(12.0, 47.0), (12.01, 47.0), (12.01, 47.01)])
    with pytest.raises(ValueError):
        class_fractions(out, [(11.0, 46.0), (11.001, 46.0)])  # not a polygon


# ------------------------------------------------------------------ ensure / overwrite / spec


def _stats(out: Path):
    return {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in out.rglob("*") if p.is_file()}


def test_ensure_scene_reuses_and_regenerates(tmp_path):
    spec = SceneSpec(size_px=64, n_dates=2, seed=5)
    first = ensure_scene(tmp_path, spec)
    before = _stats(tmp_path)
    assert len(before) == 4  # manifest, labels, two scenes
    assert ensure_scene(tmp_path, spec) == first
    assert _stats(tmp_path) == before  # nothing rewritten

    other = SceneSpec(size_px=64, n_dates=2, seed=6)
    second = ensure_scene(tmp_path, other)
    assert second["spec"]["seed"] == 6
    names = sorted(p.name for p in (tmp_path / "scenes").iterdir())
    assert names == sorted(Path(p).name for p in second["files"]["scenes"])
    assert all(n.endswith("_6.tif") for n in names)

    # a damaged directory (missing scene file, corrupt manifest) is regenerated
    (tmp_path / second["files"]["scenes"][0]).unlink()
    assert ensure_scene(tmp_path, other) == second
    assert (tmp_path / second["files"]["scenes"][0]).is_file()
    (tmp_path / "manifest.json").write_text("{not json")
    assert ensure_scene(tmp_path, other) == second


def test_generate_refuses_to_clobber_without_overwrite(tmp_path):
    spec = SceneSpec(size_px=64, n_dates=1)
    generate_scene(tmp_path, spec)
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        generate_scene(tmp_path, spec)
    manifest = generate_scene(tmp_path, SceneSpec(size_px=64, n_dates=2), overwrite=True)
    assert len(manifest["scenes"]) == 2
    assert (tmp_path / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    "kwargs",
    [dict(size_px=0), dict(size_px=16), dict(n_dates=0), dict(seed=-1), dict(scale_m=0.0),
     dict(center_lat=91.0), dict(center_lon=float("nan")), dict(n_patches=0), dict(size_px=True),
     dict(center_lon="east")],
)
def test_invalid_spec_raises(kwargs):
    with pytest.raises(ValueError):
        SceneSpec(**kwargs)


def test_spec_roundtrip_and_hashable():
    spec = SceneSpec(size_px=128, seed=7)
    assert SceneSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert hash(spec) == hash(SceneSpec(size_px=128, seed=7))
    assert SceneSpec(size_px=128.0).size_px == 128 and isinstance(SceneSpec(center_lon=11).center_lon, float)


@pytest.mark.parametrize("lon, lat, epsg", [(179.99, 0.5, 32660), (-180.0, -0.5, 32701), (3.0, 80.0, 32631)])
def test_any_lonlat_gets_its_utm_zone(tmp_path, lon, lat, epsg):
    manifest = generate_scene(tmp_path, SceneSpec(center_lon=lon, center_lat=lat, size_px=64, n_dates=1))
    assert manifest["crs"] == f"EPSG:{epsg}"
    assert label_at(tmp_path, lon, lat) in CLASSES
    assert math.isfinite(sum(manifest["bounds_lonlat"]))
