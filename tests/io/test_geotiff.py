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
