"""On-the-fly models: the shared compute path (masks, resize/tile, grids) and the
``spectral`` and ``mosaiks`` featurisers, on hand-made Pixels."""

from __future__ import annotations

import numpy as np
import pytest

from rsembed_store.errors import ComputeError, SpecError
from rsembed_store.ingest.models.base import OnTheFlyModel, overlap_matrix, resample, tile_starts
from rsembed_store.ingest.models.mosaiks import MosaiksModel, filter_bank
from rsembed_store.ingest.models.spectral import SpectralModel, feature_names
from rsembed_store.ingest.providers.base import Pixels
from rsembed_store.keys import Request, ResolvedRequest, resolve
from rsembed_store.specs import InputPrepSpec, OutputSpec, PointBuffer, SensorSpec, TemporalSpec
from tests.models.helpers import make_pixels

BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")
SPECTRA = {  # L2A-like reflectance in BANDS order
    "water": (0.040, 0.050, 0.035, 0.020, 0.012, 0.008),
    "forest": (0.022, 0.045, 0.020, 0.320, 0.140, 0.060),
    "cropland": (0.030, 0.065, 0.030, 0.420, 0.200, 0.095),
    "urban": (0.090, 0.100, 0.110, 0.160, 0.210, 0.190),
    "bare_soil": (0.090, 0.120, 0.160, 0.210, 0.300, 0.260),
}
MODELS = [SpectralModel, MosaiksModel]


def cover(name, size=64, seed=0, texture=0.08):
    rng = np.random.default_rng(seed)
    spec = np.asarray(SPECTRA[name], np.float32)[:, None, None]
    return (spec * (1 + texture * rng.standard_normal((6, size, size)))).astype(np.float32)


def pixels(arr, valid=None, roi=None, bands=BANDS):
    return make_pixels(arr, bands, valid, roi)


def req(cls, output=None, prep=None, sensor=None) -> ResolvedRequest:
    """Resolve with the model's own classmethods (variants need no registry entry)."""
    return ResolvedRequest(
        model=cls.info.id,
        revision=cls.info.revision,
        provider=cls.resolve_provider(None),
        spatial=PointBuffer(11.0, 46.0, 320),
        temporal=cls.resolve_temporal(TemporalSpec.year(2022)),
        sensor=cls.resolve_sensor(sensor),
        output=cls.resolve_output(output),
        input_prep=cls.resolve_input_prep(prep),
    )


def vec(model, arr_or_px, **kw):
    px = arr_or_px if isinstance(arr_or_px, Pixels) else pixels(arr_or_px)
    return model.embed(px, req(type(model), **kw)).vector


@pytest.fixture(scope="module", params=MODELS, ids=lambda c: c.info.id)
def model(request):
    return request.param()


# ---------------------------------------------------------------- shapes and declared contract


@pytest.mark.parametrize("prep", [None, InputPrepSpec.tile(), InputPrepSpec.auto()], ids=["resize", "tile", "auto"])
@pytest.mark.parametrize("output", [OutputSpec.pooled(), OutputSpec.pooled("max"), OutputSpec.grid()],
                         ids=["mean", "max", "grid"])
def test_dims_match_info(model, output, prep):
    info = model.info
    emb = model.embed(pixels(cover("forest", 100)), req(type(model), output=output, prep=prep))
    emb.validate(info.dim)  # shape, dimension, finite values
    assert emb.vector.shape == (info.dim,) and emb.vector.dtype == np.float32
    if output.mode == "grid":
        assert emb.grid.shape[0] == info.dim and np.isfinite(emb.grid).all()
    assert emb.meta["input_prep"] == ("resize" if prep is None else "tile")
    assert emb.meta["usable_fraction"] == 1.0 and emb.compute_s > 0


def test_declared_infos():
    assert SpectralModel.info.dim == len(feature_names()) == 44
    assert SpectralModel.feature_names()[:5] == ["B02_median", "B02_p10", "B02_p90", "B02_iqr", "B03_median"]
    assert "NDVI_median" in feature_names() and "NDWI_iqr" in feature_names()
    assert MosaiksModel.info.dim == 2 * MosaiksModel.n_filters == 512
    assert MosaiksModel.info.revision == "mosaiks-k256-s3-seed0-b0.5-v1"
    for cls in MODELS:
        assert isinstance(cls(), OnTheFlyModel) and cls.info.kind == "on_the_fly"


def test_registry_resolution_drops_extra_bands():
    base = dict(model="spectral", spatial=PointBuffer(11, 46, 320), temporal=TemporalSpec.year(2022))
    plain = resolve(Request(**base))
    extra = resolve(Request(**base, sensor=SensorSpec("s2-l2a", ("B12", "B05", "B02", "B03", "B04", "B08", "B11"))))
    assert plain.key == extra.key and plain.sensor.bands == BANDS
    assert resolve(Request(**{**base, "model": "mosaiks"})).revision == MosaiksModel.info.revision


# ---------------------------------------------------------------- determinism and identity


def test_deterministic(model):
    img = cover("cropland", 64, seed=3)
    a = vec(model, img)
    assert np.array_equal(a, vec(type(model)(), img.copy()))
    g1 = model.embed(pixels(img), req(type(model), output=OutputSpec.grid())).grid
    assert np.array_equal(g1, model.embed(pixels(img), req(type(model), output=OutputSpec.grid())).grid)


def test_mosaiks_seed_changes_revision_and_vector():
    other = MosaiksModel.variant(seed=1)
    assert other.info.revision == "mosaiks-k256-s3-seed1-b0.5-v1" != MosaiksModel.info.revision
    assert other.info.id != MosaiksModel.info.id and other.info.dim == 512
    img = cover("forest", 64)
    a, b = vec(MosaiksModel(), img), vec(other(), img)
    assert a.shape == b.shape and not np.allclose(a, b)
    small = MosaiksModel.variant(n_filters=32, kernel=5)
    assert vec(small(), img).shape == (64,) and small.info.revision == "mosaiks-k32-s5-seed0-b0.5-v1"


def test_mosaiks_filter_bank_fixed_and_config_guarded():
    w = filter_bank(8, 6, 3, 0)
    assert w.shape == (54, 8) and np.allclose(np.linalg.norm(w, axis=0), 1, atol=1e-6)
    assert np.array_equal(w, filter_bank(8, 6, 3, 0)) and not np.allclose(w, filter_bank(8, 6, 3, 1))
    assert abs(float(filter_bank(256, 6, 3, 0).mean())) < 0.01
    with pytest.raises(SpecError, match="variant"):
        MosaiksModel({"seed": 7})
    MosaiksModel({"seed": 0, "threads": 2})  # machine settings and matching values are fine


def test_wrong_revision_refused():
    other = MosaiksModel.variant(seed=2)
    with pytest.raises(ComputeError, match="revision"):
        MosaiksModel().embed(pixels(cover("forest")), req(other))


# ---------------------------------------------------------------- masks


@pytest.mark.parametrize("size", [64, 100])
@pytest.mark.parametrize("output", [OutputSpec.pooled(), OutputSpec.pooled("max"), OutputSpec.grid()],
                         ids=["mean", "max", "grid"])
def test_unusable_pixels_do_not_matter(model, size, output):
    rng = np.random.default_rng(5)
    img = np.concatenate([cover("forest", size, 1)[:, : size // 2], cover("urban", size, 2)[:, size // 2:]], axis=1)
    yy, xx = np.mgrid[:size, :size]
    roi = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.45 * size) ** 2  # a disk, like a hexagon ROI
    valid = rng.random((size, size)) > 0.05
    valid[5:12, 20:40] = False  # a cloud
    garbage = img.copy()
    bad = ~(roi & valid)
    garbage[:, bad] = rng.choice([1e6, -50.0, np.nan, np.inf], size=(6, int(bad.sum())))
    py, px_ = size // 2, size // 2 - 5  # a pixel marked valid whose band B04 is NaN: unusable
    garbage[2, py, px_], img[2, py, px_] = np.nan, 0.7
    clean_valid = valid.copy()
    clean_valid[py, px_] = False
    r = req(type(model), output=output)
    a = model.embed(pixels(img, clean_valid, roi), r)
    b = model.embed(pixels(garbage, valid, roi), r)
    assert np.array_equal(a.vector, b.vector) and np.isfinite(b.vector).all()
    if output.mode == "grid":
        assert np.array_equal(a.grid, b.grid, equal_nan=True)
    assert b.meta["usable_fraction"] < 1.0


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_masked_half_equals_cropped_half(model, pooling):
    img = np.concatenate([cover("water", 64, 1)[:, :, :32], cover("urban", 64, 2)[:, :, 32:]], axis=2)
    valid = np.ones((64, 64), bool)
    valid[:, :32] = False
    prep = InputPrepSpec.tile(tile_size=64)  # native resolution: no resampling on either side
    masked = vec(model, pixels(img, valid=valid), prep=prep, output=OutputSpec.pooled(pooling))
    cropped = vec(model, pixels(np.ascontiguousarray(img[:, :, 32:])), prep=prep, output=OutputSpec.pooled(pooling))
    np.testing.assert_allclose(masked, cropped, rtol=1e-5, atol=1e-6)


def test_all_invalid_raises_compute_error(model):
    r = req(type(model))
    valid = np.zeros((64, 64), bool)
    with pytest.raises(ComputeError, match=r.key):
        model.embed(pixels(cover("water"), valid=valid), r)
    roi = np.zeros((64, 64), bool)
    with pytest.raises(ComputeError, match="no usable pixel"):
        model.embed(pixels(cover("water"), roi=roi), req(type(model), output=OutputSpec.grid()))


def test_band_order_of_pixels_does_not_matter(model):
    img = cover("bare_soil", 64)
    order = [5, 0, 3, 1, 4, 2]
    shuffled = pixels(img[order], bands=[BANDS[i] for i in order])
    assert np.array_equal(vec(model, img), vec(model, shuffled))
    with pytest.raises(ComputeError, match="B12"):
        model.embed(pixels(img[:5], bands=BANDS[:5]), req(type(model)))


# ---------------------------------------------------------------- what the features mean


def test_ndvi_vegetation_above_water():
    m = SpectralModel()
    i_ndvi, i_ndwi = feature_names().index("NDVI_median"), feature_names().index("NDWI_median")
    veg, water = vec(m, cover("forest")), vec(m, cover("water"))
    assert veg[i_ndvi] > water[i_ndvi] and water[i_ndwi] > veg[i_ndwi]


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.info.id)
def test_same_cover_closer_than_other_cover(cls):
    m = cls()
    for a, b in [("forest", "urban"), ("cropland", "bare_soil"), ("water", "forest"), ("forest", "cropland")]:
        a1, a2 = vec(m, cover(a, seed=1)), vec(m, cover(a, seed=2))
        b1 = vec(m, cover(b, seed=3))
        assert np.linalg.norm(a1 - a2) < np.linalg.norm(a1 - b1), (a, b)


def test_grid_is_north_up(model):
    water, veg = cover("water", 64, 1), cover("forest", 64, 2)
    split = np.concatenate([water[:, :32], veg[:, 32:]], axis=1)  # top (north) half water
    r = req(type(model), output=OutputSpec.grid())
    grid = model.embed(pixels(split), r).grid
    gw = model.embed(pixels(water), r).grid
    gv = model.embed(pixels(veg), r).grid
    top, bottom = grid[:, 0], grid[:, -1]
    assert np.linalg.norm(top - gw[:, 0]) < np.linalg.norm(top - gv[:, 0])
    assert np.linalg.norm(bottom - gv[:, -1]) < np.linalg.norm(bottom - gw[:, -1])
    if isinstance(model, SpectralModel):
        ndwi = grid[feature_names().index("NDWI_median")]
        assert ndwi[:4].min() > ndwi[4:].max()


# ---------------------------------------------------------------- input prep


def test_tile_and_resize_same_dims_and_max_tiles(model):
    img = cover("cropland", 200)
    cls = type(model)
    res = model.embed(pixels(img), req(cls))
    with pytest.raises(SpecError, match=r"4x4=16 tiles, more than max_tiles=9"):
        model.embed(pixels(img), req(cls, prep=InputPrepSpec.tile()))
    tiled = model.embed(pixels(img), req(cls, prep=InputPrepSpec.tile(max_tiles=16)))
    assert tiled.vector.shape == res.vector.shape == (cls.info.dim,)
    assert tiled.meta["tiles"] == 16 and tiled.meta["tile_grid"] == [4, 4] and res.meta["tiles"] == 1
    nopad = model.embed(pixels(img), req(cls, prep=InputPrepSpec.tile(pad_edges=False)))
    assert nopad.meta["tiles"] == 9
    assert model.embed(pixels(img[:, :90, :90]), req(cls, prep=InputPrepSpec.auto())).meta["input_prep"] == "resize"
    assert model.embed(pixels(img[:, :100, :90]), req(cls, prep=InputPrepSpec.auto())).meta["input_prep"] == "tile"


def test_tiled_grid_is_stitched_in_place():
    m = SpectralModel()
    img = np.concatenate([cover("water", 128, 1)[:, :48], cover("forest", 128, 2)[:, 48:]], axis=1)
    tiled = m.embed(pixels(img), req(SpectralModel, output=OutputSpec.grid(), prep=InputPrepSpec.tile(tile_size=64)))
    whole = m.features(img, np.ones((128, 128), bool))  # block statistics are local: tiling changes nothing
    assert tiled.grid.shape == whole.shape == (44, 16, 16) and tiled.meta["grid_cell_px"] == [8.0, 8.0]
    np.testing.assert_allclose(tiled.grid, whole, rtol=0, atol=1e-6)
    # overlapping tiles and a padded edge: the grid still covers exactly the input
    ov = m.embed(pixels(img[:, :100, :100]), req(SpectralModel, output=OutputSpec.grid(),
                                                 prep=InputPrepSpec.tile(tile_size=64, tile_stride=32)))
    assert ov.grid.shape == (44, 13, 13) and ov.meta["tiles"] == 9 and np.isfinite(ov.grid).all()


def test_tile_pooling_weighted_by_usable_pixels():
    m = SpectralModel()
    img = np.concatenate([cover("water", 128, 1)[:, :, :64], cover("forest", 128, 2)[:, :, 64:]], axis=2)
    roi = np.ones((128, 128), bool)
    roi[:, 64 + 16:] = False  # the forest tiles keep a quarter of their pixels
    r = req(SpectralModel, prep=InputPrepSpec.tile(tile_size=64))
    v = m.embed(pixels(img, roi=roi), r).vector
    left = m.pool(img[:, :64, :64], np.ones((64, 64), bool), "mean")
    right = m.pool(img[:, :64, 64:], roi[:64, 64:], "mean")
    left2 = m.pool(img[:, 64:, :64], np.ones((64, 64), bool), "mean")
    right2 = m.pool(img[:, 64:, 64:], roi[64:, 64:], "mean")
    expected = (4096 * (left + left2) + 1024 * (right + right2)) / (2 * 4096 + 2 * 1024)
    np.testing.assert_allclose(v, expected, atol=1e-5)


def test_resampler():
    assert np.allclose(overlap_matrix(4, 2), [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    assert np.allclose(overlap_matrix(2, 4), [[1, 0], [1, 0], [0, 1], [0, 1]])  # nearest when growing x2
    assert np.allclose(overlap_matrix(7, 3).sum(axis=1), 1)
    x = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    mask = np.ones((4, 4), bool)
    mask[0, 0] = False
    out, m = resample(np.where(mask, x, 1e9), mask, 2)
    assert m.all() and out[0, 0, 0] == pytest.approx((1 + 4 + 5) / 3) and out[1, 1, 1] == x[1, 2:, 2:].mean()
    mask[:2, :2] = False
    assert not resample(x, mask, 2)[1][0, 0] and resample(x, mask, 2)[0][0, 0, 0] == 0
    assert tile_starts(100, 64, 64, True) == [0, 64] and tile_starts(100, 64, 64, False) == [0]
    assert tile_starts(100, 64, 32, True) == [0, 32, 64] and tile_starts(50, 64, 64, False) == [0]


def test_embed_batch(model):
    cls = type(model)
    items = [(pixels(cover("water")), req(cls)), (pixels(cover("forest")), req(cls, output=OutputSpec.grid()))]
    out = model.embed_batch(items)
    assert [e.output_mode for e in out] == ["pooled", "grid"]
    assert np.array_equal(out[0].vector, model.embed(*items[0]).vector)
    bad = (pixels(cover("water"), valid=np.zeros((64, 64), bool)), req(cls))
    with pytest.raises(ComputeError):
        model.embed_batch([items[0], bad])
    got = model.embed_batch([items[0], bad], return_exceptions=True)
    assert np.array_equal(got[0].vector, out[0].vector) and isinstance(got[1], ComputeError)


# ---------------------------------------------------------------- sensor checks


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.info.id)
def test_check_sensor_refuses_missing_band(cls):
    sensor = SensorSpec("s2-l2a", ("B02", "B03", "B04", "B08", "B12"))
    with pytest.raises(SpecError, match=r"\['B11'\].*B02.*B12"):
        cls.resolve_sensor(sensor)
    with pytest.raises(SpecError, match="MNDWI uses B03,B11"):
        resolve(Request(model="spectral", spatial=PointBuffer(11, 46, 320), temporal=TemporalSpec.year(2022),
                        sensor=sensor))


# ---------------------------------------------------------------- golden outputs


def golden_input():
    """6 x 20 x 20 deterministic pattern: per-band level, waves of per-band frequency, a step at row 10."""
    c, i, j = np.meshgrid(np.arange(6), np.arange(20), np.arange(20), indexing="ij")
    level = np.array(SPECTRA["cropland"])[c]
    pattern = level * (1 + 0.3 * np.sin(0.45 * i * (c + 1) / 3 + 0.7 * j)) + 0.02 * (i >= 10)
    return pattern.astype(np.float32)


GOLDEN = {  # first 8 values of the pooled mean vector; a change here is a new revision
    "spectral": [-0.399937, -0.7359479, -0.0544706, 0.3915728, -0.3037004, -0.7951531, 0.1887465, 0.3726672],
    "mosaiks": [0.2389421, 0.7552657, 0.008022966, 0.6080591, 0.6149066, 0.1256517, 0.0958354, 0.0],
}


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.info.id)
def test_golden_output(cls):
    v = vec(cls(), golden_input())  # default prep: resize 20x20 -> 64x64 (blends at edges)
    np.testing.assert_allclose(v[:8], GOLDEN[cls.info.id], rtol=0, atol=1e-5)
