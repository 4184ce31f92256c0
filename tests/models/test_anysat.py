"""``anysat`` (AnySat base, Sentinel-2 time series, network written in this project).

The independent reference is ``data/anysat_s2_keys.json``: the published state-dict
keys and shapes of the Sentinel-2 branch and the shared parts, and golden outputs,
both produced once by the *original* AnySat module code (its ``about`` field says
which files, commits and function). The checkpoints here are built from that key
list, never from our module, with the seeded values the fixture describes, plus a
few keys of other sensors' projectors (as the published ``AnySat.pth`` holds them).
Inference runs on an 8 px variant (2 x 2 patches of 4 px) to keep CPU time small;
the network and its weights are the full base ones.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rsembed_store import Request, Store  # noqa: E402
from rsembed_store.errors import SpecError  # noqa: E402
from rsembed_store.ingest.models import anysat  # noqa: E402
from rsembed_store.ingest.models.weights import WeightsError, use_published, use_weights  # noqa: E402
from rsembed_store.ingest.providers.base import Pixels  # noqa: E402
from rsembed_store.keys import ResolvedRequest, resolve  # noqa: E402
from rsembed_store.model import FramePlan  # noqa: E402
from rsembed_store.registry import model_class, register_model  # noqa: E402
from rsembed_store.specs import OutputSpec, PointBuffer, SensorSpec, TemporalSpec  # noqa: E402

torch.set_num_threads(1)

FIXTURE = json.loads((Path(__file__).parent / "data" / "anysat_s2_keys.json").read_text())
SMALL = 8
WINDOW = TemporalSpec.range("2023-01-01", "2024-01-01")
# The year in 6 frames: edges Jan 1, Mar 2, May 2, Jul 2, Sep 1, Nov 1, Jan 1 (60 then 61 days each);
# middle days (start + days // 2) Jan 31, Apr 1, Jun 1, Aug 1, Oct 1, Dec 1 = days of year:
DAYS_2023 = [31, 91, 152, 213, 274, 335]
# Keys of two other sensors' projectors, as the published file holds them next to the S2 one.
FOREIGN = {"projector_s1-asc.patch_embed.inconv.0.weight": [96, 2],
           "projector_aerial.patch_embed.proj.weight": [768, 4, 10, 10]}


def seeded_state(shapes):
    """The fixture's golden weights: one generator (seed 0), keys in sorted order, 1-D weights + 1."""
    gen = torch.Generator().manual_seed(0)
    out = {}
    for key in sorted(shapes):
        t = 0.05 * torch.randn(shapes[key], generator=gen)
        out[key] = t + 1.0 if key.endswith(".weight") and len(shapes[key]) == 1 else t
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    state = seeded_state(FIXTURE["keys"])
    state.update({k: torch.zeros(shape) for k, shape in FOREIGN.items()})
    path = tmp_path_factory.mktemp("anysat") / anysat.FILE
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def small(checkpoint):
    """The use_weights variant, shrunk to 8 px input; registered as 'anysat' for the module."""
    variant = use_weights("anysat", checkpoint)
    cls = type("SmallAnySat", (variant,), {"info": replace(variant.info, input_size=SMALL)})
    register_model("anysat", cls)
    yield cls
    use_published("anysat")


@pytest.fixture(scope="module")
def model(small):
    return small({"device": "cpu"})


def series(seed=3, size=SMALL, bands=anysat.BANDS):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.02, 0.4, (1, len(bands), size, size))
    season = np.array([0.7, 0.9, 1.2, 1.3, 1.0, 0.8])[:, None, None, None]
    return (base * season).astype(np.float32)


def pixels(arr, bands=anysat.BANDS):
    t, _, h, w = arr.shape
    return Pixels(array=arr, bands=bands, valid=np.ones((t, h, w), bool), roi_mask=np.ones((h, w), bool),
                  crs="EPSG:32632", transform=(0.0, 10.0, 0.0, 0.0, 0.0, -10.0))


def request(cls, output=None):
    temporal = cls.resolve_temporal(WINDOW)
    return ResolvedRequest(model=cls.info.id, revision=cls.info.revision, provider="local",
                           spatial=PointBuffer(11.0, 46.0, 40), temporal=temporal, sensor=cls.resolve_sensor(None),
                           output=cls.resolve_output(output), input_prep=cls.resolve_input_prep(None),
                           frames=cls.resolve_frames(temporal))


def test_declared_contract():
    cls = model_class("anysat")
    info = cls.info
    assert (info.dim, info.frames, info.input_size, cls.patch_px) == (768, 6, 48, 4)
    assert info.default_sensor.bands == ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
    assert info.default_sensor.scale_m == 10 and cls.pooled_head
    r = resolve(Request("anysat", PointBuffer(11.0, 46.0, 240), TemporalSpec.year(2023)))
    assert r.frames == FramePlan.split(WINDOW, 6)


def test_the_published_class_refuses_unpinned_weights():
    with pytest.raises(WeightsError, match="not pinned.*use_weights"):
        anysat.AnySatModel({"device": "cpu"})


def test_the_network_has_exactly_the_published_s2_and_shared_keys():
    own = {k: list(v.shape) for k, v in anysat.build_network().state_dict().items()}
    assert own == FIXTURE["keys"]
    assert len(own) == 202 and any(k.startswith("projector_s2.") for k in own)


def test_a_published_format_checkpoint_loads_strictly_and_other_projectors_are_dropped(model, checkpoint):
    state = torch.load(checkpoint, weights_only=True)
    assert set(anysat.keep_s2_and_shared(state)) == set(FIXTURE["keys"])  # exactly the foreign keys dropped
    loaded = model.net.state_dict()
    assert set(loaded) == set(FIXTURE["keys"])
    for key in FIXTURE["keys"]:
        assert torch.equal(loaded[key], state[key]), key


@pytest.mark.parametrize("damage", ["missing", "shape", "extra"])
def test_a_checkpoint_that_does_not_fit_is_refused(damage, checkpoint, small, tmp_path):
    state = torch.load(checkpoint, weights_only=True)
    if damage == "missing":
        del state["spatial_encoder.predictor_blocks.5.attn.rpe_k.lookup_table_weight"]
    elif damage == "shape":
        state["projector_s2.patch_embed.inconv.0.weight"] = torch.zeros(96, 12)  # 12 bands, not 10
    else:
        state["blocks.7.norm1.weight"] = torch.ones(768)  # a shared part the base network has not
    bad = tmp_path / f"{damage}.pth"
    torch.save(state, bad)
    cls = use_weights("anysat", bad)
    try:
        with pytest.raises(WeightsError, match="not an AnySat base checkpoint"):
            cls({"device": "cpu"})
    finally:
        register_model("anysat", small)


def test_golden_outputs_match_the_original_module(model):
    gold = FIXTURE["golden"]
    x = torch.randn(2, 3, 10, 8, 8, generator=torch.Generator().manual_seed(1))
    days = torch.tensor([[40.0, 150.0, 290.0], [10.0, 200.0, 360.0]])
    with torch.inference_mode():
        patch, tile = model.net(x, days, 4)
    assert tile.shape == (2, 768) and patch.shape == (2, 4, 768)
    np.testing.assert_allclose(tile.numpy(), np.array(gold["tile"]), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(patch[..., :8].numpy(), np.array(gold["patch_first8"]), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(patch.sum(-1).numpy(), np.array(gold["patch_sums"]), rtol=1e-4, atol=1e-3)


def test_embed_is_the_network_on_hand_normalised_frames_and_their_days(model, small):
    x = series()
    emb = model.embed(pixels(x), request(small))
    grid = model.embed(pixels(x), request(small, OutputSpec.grid(10))).grid
    # by hand: reflectance x 10000, standardised with TerraMind v1's L2A statistics of the 10 bands
    stats = {"B02": (1503.317, 2141.107), "B03": (1718.197, 2038.973), "B04": (1853.91, 2134.138),
             "B05": (2199.1, 2085.321), "B06": (2779.975, 1889.926), "B07": (2987.011, 1820.257),
             "B08": (3083.234, 1871.918), "B8A": (3132.22, 1753.829), "B11": (2424.884, 1434.261),
             "B12": (1857.648, 1334.311)}
    mean = np.array([stats[b][0] for b in anysat.BANDS])[None, :, None, None]
    std = np.array([stats[b][1] for b in anysat.BANDS])[None, :, None, None]
    z = torch.from_numpy(((x * 10000.0 - mean) / std).astype(np.float32))[None]
    with torch.inference_mode():
        patch, tile = model.net(z, torch.tensor([DAYS_2023], dtype=torch.float32), 4)
    assert emb.vector.shape == (768,)
    np.testing.assert_allclose(emb.vector, tile[0].numpy(), rtol=1e-4, atol=1e-4)
    assert grid.shape == (768, 2, 2)  # row-major patches, north row first
    np.testing.assert_allclose(grid.reshape(768, 4).T, patch[0].numpy(), rtol=1e-4, atol=1e-4)
    # and the dates matter: the same pixels in the second half of the year give another vector
    later = replace(request(small), frames=FramePlan.split(TemporalSpec.range("2023-07-01", "2024-01-01"), 6))
    assert not np.allclose(model.embed(pixels(x), later).vector, emb.vector, atol=1e-4)


def test_pooled_is_the_tile_embedding_so_only_mean_pooling_is_accepted():
    with pytest.raises(SpecError, match="pooling='max' does not apply"):
        model_class("anysat").resolve_output(OutputSpec.pooled("max"))


def test_too_few_frames_are_refused(model, small):
    with pytest.raises(Exception, match=r"reads 6 frame\(s\)"):
        model.embed(pixels(series()[:4]), request(small))


def test_missing_bands_are_refused(model, small):
    bands = tuple(b for b in anysat.BANDS if b != "B8A")
    with pytest.raises(Exception, match=r"lacks band\(s\) \['B8A'\]"):
        model.embed(pixels(series(bands=bands), bands), request(small))
    with pytest.raises(SpecError, match="B05"):
        resolve(Request("anysat", PointBuffer(11.0, 46.0, 240), TemporalSpec.year(2023),
                        sensor=SensorSpec("s2-l2a", ("B02", "B03", "B04", "B08"))))


def test_a_window_shorter_than_six_days_is_refused():
    with pytest.raises(SpecError, match="6 frames"):
        resolve(Request("anysat", PointBuffer(11.0, 46.0, 240), TemporalSpec.range("2023-01-01", "2023-01-04")))


def test_end_to_end_on_the_synthetic_scene(small, tmp_path_factory):
    import rasterio

    from rsembed_store.testing.scenes import SceneSpec, generate_scene

    out = tmp_path_factory.mktemp("anysat-scene")
    spec = SceneSpec(size_px=64, n_dates=6, n_patches=6, seed=5)
    manifest = generate_scene(out, spec)
    # the model reads 10 L2A bands; the scene has 6: the red-edge ones are made from their neighbours
    make = {"B05": ("B04", "B08"), "B06": ("B04", "B08", "B08"), "B07": ("B08",), "B8A": ("B08",)}
    (out / "s2-10").mkdir()
    for entry in manifest["scenes"]:
        with rasterio.open(out / entry["path"]) as src:
            data = dict(zip(src.descriptions, src.read()))
            profile = src.profile | {"count": len(anysat.BANDS), "driver": "GTiff"}
            tags = src.tags()
        for band, sources in make.items():
            data[band] = np.mean([data[b] for b in sources], axis=0).astype(np.int16)
        with rasterio.open(out / "s2-10" / f"{entry['date']}.tif", "w", **profile) as dst:
            dst.write(np.stack([data[b] for b in anysat.BANDS]))
            dst.descriptions = anysat.BANDS
            dst.update_tags(**tags)
    store = Store.open(out / "db")
    config = {"sources": {"s2-l2a": str(out / "s2-10")}}
    req = Request("anysat", PointBuffer(spec.center_lon, spec.center_lat, 160), TemporalSpec.year(2023),
                  sensor=SensorSpec("s2-l2a", anysat.BANDS, cloudy_pct=100))
    emb = store.get(req, config=config)
    assert emb.vector.shape == (768,) and np.isfinite(emb.vector).all() and not emb.cached
    again = store.get(req, config=config)
    assert again.cached and again.key == emb.key == resolve(req).key
    np.testing.assert_allclose(again.vector, emb.vector)
