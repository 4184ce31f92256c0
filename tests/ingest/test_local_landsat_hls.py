"""Landsat and HLS collections of the ``local`` provider, and scenes in national / ETRS89 grids.

Every fixture is a small seeded GeoTIFF written here with the real product file names
(``LC08_L2SP_..._SR_B4.TIF``, ``HLS.S30.T32UMB....B8A.tif``), so what is checked is the
provider's reading of real layouts: which file a common band name picks on each sensor,
the documented scaling, the quality-band masks, and warping from any projected CRS.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.warp import transform as warp_transform

from rsembed_store.errors import ProviderError
from rsembed_store.ingest.providers.local import LocalProvider, forget
from rsembed_store.ingest.providers.sensors import BQA_C1, FAMILIES, FMASK, QA_PIXEL, as_common, parse_mtl
from rsembed_store.keys import Request, ResolvedRequest, resolve
from rsembed_store.specs import OutputSpec, PointBuffer, SensorSpec, TemporalSpec

CRS = "EPSG:32632"
X0, Y0 = 480000.0, 5640000.0  # UTM 32N; 40 x 40 px of 30 m -> a 1.2 km square
LON, LAT = 8.7200, 50.9060  # near the scene centre
L8 = "LC08_L2SP_195025_20220610_20220616_02_T1"
L7 = "LE07_L2SP_195025_20220602_20220628_02_T1"


def write_tif(path: Path, data: np.ndarray, *, crs=CRS, transform=None, nodata=None, tags=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    transform = transform or Affine(30.0, 0, X0, 0, -30.0, Y0)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype.name, crs=crs, transform=transform, nodata=nodata) as ds:
        ds.write(data)
        if tags:
            ds.update_tags(**{k: str(v) for k, v in tags.items()})
    return path


def request(collection, bands, *, start="2022-01-01", end="2023-01-01", scale_m=30.0, spatial=None):
    return ResolvedRequest(
        model="x", revision="1", provider="local",
        spatial=spatial or PointBuffer(LON, LAT, 300),
        temporal=TemporalSpec.range(start, end),
        sensor=SensorSpec(collection, tuple(bands), scale_m=scale_m, cloudy_pct=100),
        output=OutputSpec.pooled(), input_prep=None,
    )


@pytest.fixture()
def landsat_l2(tmp_path):
    """One Landsat 8 and one Landsat 7 Level-2 product in one folder; every SR band holds a
    distinct constant DN so a read shows which file a common name picked."""
    forget()
    root = tmp_path / "l2"
    for pid, first in ((L8, 10000), (L7, 20000)):
        for i in range(1, 8):
            write_tif(root / f"{pid}_SR_B{i}.TIF", np.full((40, 40), first + 100 * i, "uint16"), nodata=0)
        qa = np.full((40, 40), 21824, "uint16")  # clear, low confidences (a real clear QA_PIXEL value)
        qa[:20, :] = 0b1000  # cloud in the northern half
        write_tif(root / f"{pid}_QA_PIXEL.TIF", qa)
        (root / f"{pid}_MTL.txt").write_text(f'GROUP = X\n  CLOUD_COVER = 12.5\n  LANDSAT_PRODUCT_ID = "{pid}"\nEND_GROUP = X\n')
    return root


def test_common_names_pick_each_sensors_own_band(landsat_l2):
    p = LocalProvider({"sources": {"landsat-c2-l2": str(landsat_l2)}})
    scenes = {s.id: s for s in p.scenes("landsat-c2-l2")}
    assert scenes[L8].bands["red"].path.endswith("_SR_B4.TIF")
    assert scenes[L7].bands["red"].path.endswith("_SR_B3.TIF")
    assert scenes[L7].bands["nir"].path.endswith("_SR_B4.TIF")
    assert scenes[L8].cloud_pct == 12.5
    for start, end, dn_red, dn_nir in (("2022-06-01", "2022-06-05", 20300, 20400),
                                       ("2022-06-05", "2022-06-15", 10400, 10500)):
        px = p.fetch(request("landsat-c2-l2", ["red", "nir"], start=start, end=end))
        clear = px.valid
        assert clear.any() and not clear.all()
        np.testing.assert_allclose(px.array[0][clear], dn_red * 2.75e-05 - 0.2, rtol=1e-6)
        np.testing.assert_allclose(px.array[1][clear], dn_nir * 2.75e-05 - 0.2, rtol=1e-6)


def test_qa_pixel_cloud_bit_masks_pixels(landsat_l2):
    p = LocalProvider({"sources": {"landsat-c2-l2": str(landsat_l2)}, "resampling": "nearest"})
    px = p.fetch(request("landsat-c2-l2", ["red"], start="2022-06-05", end="2022-06-15"))
    t = Affine.from_gdal(*px.transform)
    ys = t.f + t.e * (np.arange(px.array.shape[1]) + 0.5)
    cloudy_rows = ys > Y0 - 20 * 30  # the northern 20 source rows
    assert not px.valid[cloudy_rows].any()
    assert px.valid[~cloudy_rows].all()
    assert (px.array[0][~px.valid] == 0.0).all()  # fill_value, never data


def test_ambiguous_native_band_names_are_refused(landsat_l2):
    p = LocalProvider({"sources": {"landsat-c2-l2": str(landsat_l2)}})
    with pytest.raises(ProviderError, match=r"'SR_B4' is ambiguous.*nir on Landsat 7 ETM\+.*red on Landsat 8/9"):
        p.fetch(request("landsat-c2-l2", ["SR_B4"]))
    with pytest.raises(ProviderError, match=r"no band 'rededge1'.*accepted"):
        p.fetch(request("landsat-c2-l2", ["rededge1"]))
    # a native name that means one thing on every sensor is fine
    assert FAMILIES["landsat-c2-l2"].resolve(["SR_B7", "swir2", "blue"]) == ["swir22", "swir22", "blue"]


def test_qa_rules_bits():
    assert QA_PIXEL.reject(np.array([21824, 21952, 1, 0b10, 0b100, 0b1000, 0b10000])).tolist() == [
        False, False, True, True, True, True, True]
    # Collection 1 BQA: the Debian scenes' clear values, then fill, cloud, high shadow / cirrus confidence
    assert BQA_C1.reject(np.array([2720, 672, 1, 0b10000, 3 << 7, 3 << 11, 1 << 7])).tolist() == [
        False, False, True, True, True, True, False]
    assert FMASK.reject(np.array([0, 0b100000, 0b10, 0b100, 0b1000, 255, 0b10000])).tolist() == [
        False, False, True, True, True, True, False]


def test_hls_s30_and_l30_read_with_the_same_names(tmp_path):
    forget()
    root = tmp_path / "hls"
    s30 = "HLS.S30.T32UMB.2022161T103031.v2.0"  # day 161 of 2022 = June 10
    l30 = "HLS.L30.T32UMB.2022170T102950.v2.0"
    for pid, bands in ((s30, {"B04": 500, "B08": 9000, "B8A": 3000, "B05": 7000}),
                       (l30, {"B04": 600, "B05": 3100})):
        for name, dn in bands.items():
            write_tif(root / pid / f"{pid}.{name}.tif", np.full((40, 40), dn, "int16"), nodata=-9999,
                      tags={"cloud_coverage": 3})
        fmask = np.zeros((40, 40), "uint8")
        fmask[:20, :] = 0b10  # cloud in the northern half
        write_tif(root / pid / f"{pid}.Fmask.tif", fmask)
    p = LocalProvider({"sources": {"hls": str(root), "hls-s30": str(root)}})
    scenes = p.scenes("hls")
    assert [s.date.isoformat() for s in scenes] == ["2022-06-10", "2022-06-19"]
    assert scenes[0].cloud_pct == 3
    s = p.fetch(request("hls", ["red", "nir"], end="2022-06-15"))
    ok = s.valid
    assert ok.any() and not ok.all()
    np.testing.assert_allclose(s.array[:, ok].mean(axis=1), [0.05, 0.30], atol=1e-5)  # nir = B8A, not B08
    lx = p.fetch(request("hls", ["red", "nir"], start="2022-06-15"))
    np.testing.assert_allclose(lx.array[:, lx.valid].mean(axis=1), [0.06, 0.31], atol=1e-5)  # nir = L30 B05
    # HLS-S30 alone: its own numbering is unambiguous, and B05 is its red edge
    rs = p.fetch(request("hls-s30", ["B05", "B8A"], end="2022-06-15"))
    np.testing.assert_allclose(rs.array[:, rs.valid].mean(axis=1), [0.70, 0.30], atol=1e-5)
    with pytest.raises(ProviderError, match="'B05' is ambiguous"):
        p.fetch(request("hls", ["B05"]))


def test_level1_without_mtl_is_skipped_with_a_reason(tmp_path):
    forget()
    pid = "LC08_L1TP_195025_20220610_20220616_02_T1"
    write_tif(tmp_path / f"{pid}_B4.TIF", np.full((40, 40), 8000, "uint16"))
    from rsembed_store.ingest.providers.local_products import scan_products

    scenes, skipped = scan_products(tmp_path, FAMILIES["landsat-l1"])
    assert scenes == [] and "MTL" in skipped[0][1]


def test_mtl_parse():
    meta = parse_mtl('GROUP = A\n  DATE_ACQUIRED = 2013-07-07\n  SPACECRAFT_ID = "LANDSAT_8"\nEND_GROUP = A\n')
    assert meta == {"DATE_ACQUIRED": "2013-07-07", "SPACECRAFT_ID": "LANDSAT_8"}


# ------------------------------------------------------------------ any projected CRS


def _linear(x, y, x0, y0):
    """A smooth field whose value at any point is known: bilinear warping reproduces it exactly."""
    return 0.2 + 1e-4 * (x - x0) - 5e-5 * (y - y0)


@pytest.mark.parametrize("crs,lon,lat", [
    ("EPSG:3035", 8.72, 50.906),  # ETRS89 / LAEA Europe
    ("EPSG:25832", 8.72, 50.906),  # ETRS89 / UTM 32N
    ("EPSG:27700", -1.5, 52.5),  # OSGB36 / British National Grid
    ("EPSG:31983", -46.6, -23.5),  # SIRGAS 2000 / UTM 23S
])
def test_scenes_in_national_grids_warp_onto_the_request_grid(tmp_path, crs, lon, lat):
    forget()
    (cx,), (cy,) = warp_transform("EPSG:4326", crs, [lon], [lat])
    res = 20.0
    x0, y0 = round(cx / res) * res - 60 * res, round(cy / res) * res + 60 * res
    cols, rows = np.meshgrid(np.arange(120) + 0.5, np.arange(120) + 0.5)
    values = _linear(x0 + cols * res, y0 - rows * res, x0, y0).astype("float32")
    folder = tmp_path / "scene"
    write_tif(folder / "B04.tif", values, crs=crs, transform=Affine(res, 0, x0, 0, -res, y0), nodata=-9999,
              tags={"ACQUISITION_DATE": "2022-06-10"})
    p = LocalProvider({"sources": {"s2": str(tmp_path)}})
    px = p.fetch(request("s2", ["B04"], scale_m=10, spatial=PointBuffer(lon, lat, 300)))
    t = Affine.from_gdal(*px.transform)
    h, w = px.array.shape[1:]
    gx, gy = t @ np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    sx, sy = warp_transform(px.crs, crs, gx.ravel().tolist(), gy.ravel().tolist())
    expected = _linear(np.asarray(sx), np.asarray(sy), x0, y0).reshape(h, w)
    assert px.crs.startswith("EPSG:32")  # the request's UTM grid, not the scene's CRS
    assert px.valid.all()
    np.testing.assert_allclose(px.array[0], expected, atol=2e-5)


def test_models_read_families_by_common_names():
    r = resolve(Request("spectral", PointBuffer(LON, LAT, 300), TemporalSpec.year(2022),
                        sensor=SensorSpec("landsat-l1", ("B02",), scale_m=30)))
    assert r.sensor.bands == ("blue", "green", "red", "nir", "swir16", "swir22")
    s2 = resolve(Request("spectral", PointBuffer(LON, LAT, 300), TemporalSpec.year(2022)))
    assert s2.sensor.bands == ("B02", "B03", "B04", "B08", "B11", "B12") and s2.key != r.key
    with pytest.raises(ProviderError, match=r"no band for \['B05'\]"):
        as_common(("B04", "B05"), FAMILIES["hls-l30"])


def test_prithvi_reads_hls_by_default_and_old_s2_keys_stay_valid():
    from rsembed_store.registry import model_class

    info = model_class("prithvi").info  # a declaration: no torch needed
    assert info.default_sensor.collection == "hls"
    where, when = PointBuffer(11.0, 46.0, 480), TemporalSpec.year(2023)
    r = resolve(Request("prithvi", where, when))
    assert (r.sensor.collection, r.sensor.bands) == ("hls", ("blue", "green", "red", "nir", "swir16", "swir22"))
    s2 = SensorSpec("s2-l2a", ("B02", "B03", "B04", "B8A", "B11", "B12"), scale_m=30, cloudy_pct=30)
    old = resolve(Request("prithvi", where, when, sensor=s2))
    assert old.sensor.bands == ("B02", "B03", "B04", "B8A", "B11", "B12") and old.key != r.key


def test_band_positions_match_s2_and_common_names():
    from rsembed_store.ingest.providers.sensors import band_positions

    assert band_positions(("B02", "B03", "B04", "B8A", "B11", "B12"), ("blue", "nir", "swir22")) == [0, 3, 5]
    assert band_positions(("blue", "red", "nir"), ("B04", "B08")) == [1, 2]
    assert band_positions(("B08", "B8A"), ("nir",)) == [None]  # two candidates: refused, not guessed
    assert band_positions(("B08", "B8A"), ("B8A",)) == [1]
    # two Sentinel-2 names never stand for each other: B08 is not B8A (anysat and prithvi read B8A)
    assert band_positions(("B02", "B08"), ("B8A",)) == [None]
    assert band_positions(("B02", "B8A"), ("B08",)) == [None]


def test_prithvis_default_hls_request_reads_pixels_named_either_way():
    """The torch-free half of prithvi's input path: an HLS request (common names) takes its
    six channels from pixels whose bands carry the Sentinel-2 names, in the model's order."""
    from rsembed_store.ingest.providers.base import Pixels
    from rsembed_store.registry import model_class

    cls = model_class("prithvi")
    r = resolve(Request("prithvi", PointBuffer(11.0, 46.0, 480), TemporalSpec.year(2023)))
    model = cls.__new__(cls)  # no weights, no torch: only the input assembly is exercised
    arr = np.random.default_rng(0).uniform(0, 0.4, (4, 6, 8, 8)).astype(np.float32)
    px = Pixels(array=arr[:, ::-1], bands=("B12", "B11", "B8A", "B04", "B03", "B02"), valid=np.ones((4, 8, 8), bool),
                roi_mask=np.ones((8, 8), bool), crs="EPSG:32632", transform=(0, 30, 0, 0, 0, -30))
    x, ok = model._frames_of(px, model.input_bands(r), "the sensor", r)
    np.testing.assert_array_equal(x.reshape(4, 6, 8, 8), arr)
    assert ok.all()


def test_landsat_l1_collection1_toa_from_the_mtl_and_bqa_cloud_mask(tmp_path):
    forget()
    pid = "LC08_L1TP_195025_20220610_20220616_01_T1"
    red = np.full((40, 40), 10000, "uint16")
    red[:, 10:20] = 0  # Landsat fill DN, in a file that declares no nodata value
    write_tif(tmp_path / f"{pid}_B4.TIF", red)
    write_tif(tmp_path / f"{pid}_B5.TIF", np.full((40, 40), 20000, "uint16"))
    bqa = np.full((40, 40), 2720, "uint16")  # clear, as in the real Debian scene
    bqa[:20, :] = 2720 | 0b10000  # the cloud bit in the north
    write_tif(tmp_path / f"{pid}_BQA.TIF", bqa)
    (tmp_path / f"{pid}_MTL.txt").write_text(
        "GROUP = L1_METADATA_FILE\n  DATE_ACQUIRED = 2022-06-10\n  CLOUD_COVER = 4.5\n  SUN_ELEVATION = 30.0\n"
        "  REFLECTANCE_MULT_BAND_4 = 2.0000E-05\n  REFLECTANCE_ADD_BAND_4 = -0.100000\n"
        "  REFLECTANCE_MULT_BAND_5 = 2.0000E-05\n  REFLECTANCE_ADD_BAND_5 = -0.100000\nEND_GROUP = L1_METADATA_FILE\n")
    p = LocalProvider({"sources": {"landsat-l1": str(tmp_path)}, "resampling": "nearest"})
    px = p.fetch(request("landsat-l1", ["red", "nir"]))
    assert px.valid.any() and not px.valid.all()  # the ROI straddles the cloud edge
    x = px.transform[0] + (np.arange(px.array.shape[2]) + 0.5) * px.transform[1]
    assert not px.valid[:, x > X0 + 10 * 30].any()  # DN 0 is no data, not reflectance -0.2
    assert px.valid[:, x < X0 + 10 * 30].any()
    np.testing.assert_allclose(px.array[:, px.valid].mean(axis=1), [(0.2 - 0.1) / 0.5, (0.4 - 0.1) / 0.5], rtol=1e-5)
    assert p.scenes("landsat-l1")[0].cloud_pct == 4.5


def test_a_landsat_product_in_etrs89_laea_is_warped_onto_the_utm_grid(tmp_path):
    forget()
    crs, res = "EPSG:3035", 30.0
    (cx,), (cy,) = warp_transform("EPSG:4326", crs, [LON], [LAT])
    x0, y0 = round(cx / res) * res - 30 * res, round(cy / res) * res + 30 * res
    cols, rows = np.meshgrid(np.arange(60) + 0.5, np.arange(60) + 0.5)
    dn = 10000.0 + 2.0 * cols * res / 30 + 3.0 * rows * res / 30  # DN linear in the scene's own coordinates
    t = Affine(res, 0, x0, 0, -res, y0)
    write_tif(tmp_path / f"{L8}_SR_B4.TIF", dn.astype("float32"), crs=crs, transform=t, nodata=0)
    write_tif(tmp_path / f"{L8}_QA_PIXEL.TIF", np.full((60, 60), 21824, "uint16"), crs=crs, transform=t)
    p = LocalProvider({"sources": {"landsat-c2-l2": str(tmp_path)}})
    px = p.fetch(request("landsat-c2-l2", ["red"], scale_m=10))
    g = Affine.from_gdal(*px.transform)
    h, w = px.array.shape[1:]
    gx, gy = g @ np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    sx, sy = warp_transform(px.crs, crs, gx.ravel().tolist(), gy.ravel().tolist())
    c, r = ~t @ (np.asarray(sx), np.asarray(sy))  # fractional pixel coordinates in the scene
    expected = (10000.0 + 2.0 * c + 3.0 * r) * 2.75e-5 - 0.2
    assert px.crs == "EPSG:32632" and px.valid.all()
    np.testing.assert_allclose(px.array[0], expected.reshape(h, w), atol=2e-6)


@pytest.mark.parametrize("stem,sensor,suffix", [
    ("LC09_L2SP_195025_20220610_20220616_02_T1_SR_B4", "Landsat 8/9 OLI/TIRS", "SR_B4"),
    ("LT05_L2SP_195025_19990610_20200908_02_T1_SR_B3", "Landsat 4/5 TM", "SR_B3"),
    ("LE07_L2SP_195025_20010730_20200905_02_T2_QA_PIXEL", "Landsat 7 ETM+", "QA_PIXEL"),
    ("LM05_L2SP_195025_19990610_20200908_02_T1_SR_B3", None, None),  # MSS: not declared
    ("LC08_L1TP_195025_20130707_20170503_01_T1_B4", None, None),  # a Level-1 file in a Level-2 collection
])
def test_landsat_file_names(stem, sensor, suffix):
    pf = FAMILIES["landsat-c2-l2"].parse(stem)
    assert (pf.sensor.title, pf.suffix) == (sensor, suffix) if sensor else pf is None


def test_every_family_sensor_band_and_quality_rule_is_documented():
    from rsembed_store.ingest.providers.sensors import COMMON_NAMES

    text = (Path(__file__).parents[2] / "docs" / "providers" / "local.md").read_text()
    for name, fam in FAMILIES.items():
        assert f"`{name}`" in text, name
        for sensor in fam.sensors:
            for common, native in sensor.bands.items():
                assert f"`{common}`" in text or common in ("rededge2", "rededge3"), common
                assert native in text, (name, native)
    for common in COMMON_NAMES:
        assert common in text, common
    for qa in ("QA_PIXEL", "BQA", "Fmask"):
        assert f"`{qa}`" in text, qa
