"""Grid rows as GeoTIFFs: CRS, transform and the value under a coordinate are the stored ones."""

import json
import os

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from rsembed_store import OutputSpec, PointBuffer, TemporalSpec
from rsembed_store.cli import main


@pytest.fixture
def grids(store, small_scene, scene_config):
    _, manifest = small_scene
    lon, lat = manifest["center_lonlat"]
    got = []
    for dx, buf in ((0.0, 300), (0.002, 200)):
        got.append(store.get("spectral", PointBuffer(lon + dx, lat, buf), TemporalSpec.year(2023),
                             output=OutputSpec.grid(), config=scene_config))
    return store, got


def test_value_under_a_coordinate_is_the_stored_one(grids, tmp_path):
    store, embs = grids
    space = embs[0].space
    out = tmp_path / "tifs"
    res = store.export(space, out, format="geotiff")
    assert (res.rows, res.skipped) == (2, 0)
    for e in embs:
        g = e.grid_f32()
        with rasterio.open(out / f"{e.key}.tif") as src:
            assert src.count == g.shape[0] and (src.height, src.width) == g.shape[1:]
            assert src.crs.to_string() == e.meta["crs"]
            # the raster covers exactly the input pixel grid the answer was computed on
            h, w = e.meta["input_hw"]
            corner = Affine.from_gdal(*e.meta["transform"]) @ (w, h)
            assert src.transform @ (src.width, src.height) == pytest.approx(corner)
            assert src.transform.e < 0  # north-up
            for i, j in ((0, 0), (g.shape[1] - 1, 0), (3, g.shape[2] - 1), (g.shape[1] // 2, 1)):
                x, y = src.transform @ (j + 0.5, i + 0.5)
                value = next(src.sample([(x, y)]))
                np.testing.assert_array_equal(value, g[:, i, j])
            assert json.loads(src.tags()["request"])["spatial"]["type"] == "PointBuffer"


def test_resumes_and_skips_grids_without_georeferencing(grids, tmp_path):
    from rsembed_store import Request, resolve
    from rsembed_store.embedding import Embedding

    store, embs = grids
    space = embs[0].space
    bare = resolve(Request("spectral", PointBuffer(1.0, 1.0, 100), TemporalSpec.year(2023), output=OutputSpec.grid()))
    store.put_many([Embedding.from_grid(bare, np.ones((embs[0].dim, 2, 2), np.float32))])  # no crs/transform
    out = tmp_path / "tifs"
    os.makedirs(out)
    (out / f"{embs[0].key}.tif").write_bytes(b"kept")  # a file from a stopped export is kept
    res = CliRunner().invoke(main, ["--db", store.uri, "export", space, "--format", "geotiff", "--out", str(out),
                                    "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert (doc["rows"], doc["skipped"]) == (2, 1) and (out / f"{embs[0].key}.tif").read_bytes() == b"kept"
    assert sorted(p for p in os.listdir(out)) == sorted(f"{e.key}.tif" for e in embs)  # no temporary files


def _value_checks(src, g):
    for i, j in ((0, 0), (g.shape[1] - 1, 0), (3, g.shape[2] - 1), (g.shape[1] // 2, 1)):
        x, y = src.transform @ (j + 0.5, i + 0.5)
        np.testing.assert_array_equal(next(src.sample([(x, y)])), g[:, i, j])


def _big_grid_row(store, dim, h=300, w=260):
    """A stored grid row large enough for COG overviews, georeferenced in UTM 32N (10 m pixels)."""
    from rsembed_store import Request, resolve
    from rsembed_store.embedding import Embedding

    req = resolve(Request("spectral", PointBuffer(9.0, 45.0, 1500), TemporalSpec.year(2022), output=OutputSpec.grid()))
    grid = np.random.default_rng(3).standard_normal((dim, h, w)).astype(np.float32)
    meta = {"crs": "EPSG:32632", "transform": [500000.0, 10.0, 0.0, 5000000.0, 0.0, -10.0], "grid_cell_px": [1, 1]}
    e = Embedding.from_grid(req, grid, meta=meta)
    store.put_many([e])
    return e, grid


def test_cog_is_tiled_with_overviews_and_holds_the_stored_values(grids, tmp_path):
    from rsembed_store.io.geotiff import cog_blocksize

    store, embs = grids
    big, big_grid = _big_grid_row(store, embs[0].dim)
    out = tmp_path / "cogs"
    res = store.export(embs[0].space, out, format="cog")
    assert (res.rows, res.skipped, res.format) == (3, 0, "cog")
    for key, g, crs in [(e.key, e.grid_f32(), e.meta["crs"]) for e in embs] + [(big.key, big_grid, "EPSG:32632")]:
        with rasterio.open(out / f"{key}.tif") as src:
            assert src.driver == "GTiff" and src.crs.to_string() == crs
            # what rio-cogeo's validator checks first: internal tiles, overviews once the grid is larger
            # than a tile, and the COG layout GDAL records on the file
            assert src.profile["tiled"] and src.block_shapes[0] == (cog_blocksize(*g.shape[1:]),) * 2
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            assert bool(src.overviews(1)) == (min(g.shape[1:]) > cog_blocksize(*g.shape[1:]))
            _value_checks(src, g)
    with rasterio.open(out / f"{big.key}.tif") as src:
        assert src.overviews(1) == [2, 4] and src.transform == Affine(10.0, 0, 500000.0, 0, -10.0, 5000000.0)
        # the pixel under UTM (500015, 4999985): row 1, column 1
        np.testing.assert_array_equal(next(src.sample([(500015.0, 4999985.0)])), big_grid[:, 1, 1])


def test_zarr_store_holds_every_grid_with_its_georeferencing(grids, tmp_path):
    zarr = pytest.importorskip("zarr")
    store, embs = grids
    out = tmp_path / "grids.zarr"
    res = store.export(embs[0].space, out, format="zarr")
    assert (res.rows, res.skipped) == (2, 0)
    root = zarr.open_group(str(out), mode="r")
    assert root.attrs["grids"] == 2 and root.attrs["space"] == embs[0].space
    for e in embs:
        g = root[e.key]
        np.testing.assert_array_equal(g["embedding"][...], e.grid_f32())
        assert g.attrs["crs"] == e.meta["crs"] and json.loads(g.attrs["request"])["spatial"]["type"] == "PointBuffer"
        t = Affine.from_gdal(*g.attrs["transform"])
        assert t.e < 0 and t.b == t.d == 0  # north-up
        # x/y are the cell centres: the value under (x[j], y[i]) (found through the transform) is cell (i, j)
        x, y = g["x"][...], g["y"][...]
        for i, j in ((0, 0), (2, 1), (len(y) - 1, len(x) - 1)):
            col, row = ~t @ (float(x[j]), float(y[i]))
            np.testing.assert_array_equal(g["embedding"][:, int(row), int(col)], e.grid_f32()[:, i, j])
    again = store.export(embs[0].space, out, format="zarr")  # resumes: complete groups are kept
    assert again.rows == 2 and sorted(os.listdir(out)) == sorted([".zattrs", ".zgroup"] + [e.key for e in embs])
    assert zarr.open_group(str(out), mode="r").attrs["grids"] == 2


def test_zarr_without_the_package_names_the_pip_line(grids, tmp_path, monkeypatch):
    import sys

    from rsembed_store.errors import MissingExtraError

    store, embs = grids
    monkeypatch.setitem(sys.modules, "zarr", None)  # as if not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'rsembed-store\[io\]'"):
        store.export(embs[0].space, tmp_path / "g.zarr", format="zarr")
    assert not (tmp_path / "g.zarr").exists()
