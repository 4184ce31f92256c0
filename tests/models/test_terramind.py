"""``terramind`` (TerraMind v1 small through terratorch) with seeded random weights.

The checkpoint is a seeded random terratorch TerraMind v1 small encoder with more
input modalities than the model uses (S2 L1C, S1 RTC, DEM besides S2 L2A and S1 GRD),
as the published file holds every modality's embeddings. Inference runs on a 32 px
variant to keep CPU time small (the patch position embedding is interpolated).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
register = pytest.importorskip("terratorch.models.backbones.terramind.model.terramind_register")

from rsembed_store import Request, Store  # noqa: E402
from rsembed_store.errors import SpecError  # noqa: E402
from rsembed_store.ingest.models import terramind  # noqa: E402
from rsembed_store.ingest.models.weights import WeightsError, use_published, use_weights  # noqa: E402
from rsembed_store.ingest.providers.base import Pixels  # noqa: E402
from rsembed_store.keys import ResolvedRequest, resolve  # noqa: E402
from rsembed_store.registry import model_class, register_model  # noqa: E402
from rsembed_store.specs import OutputSpec, PointBuffer, SensorSpec, TemporalSpec  # noqa: E402

SMALL = 32
ALL_MODALITIES = ["S2L2A", "S2L1C", "S1GRD", "S1RTC", "DEM"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    net = register.terramind_v1_small(modalities=ALL_MODALITIES, pretrained=False)
    path = tmp_path_factory.mktemp("terramind") / terramind.FILE
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def small(checkpoint):
    variant = use_weights("terramind", checkpoint)
    cls = type("SmallTerraMind", (variant,), {"info": replace(variant.info, input_size=SMALL)})
    register_model("terramind", cls)
    yield cls
    use_published("terramind")


def arrays(seed=5, size=SMALL):
    rng = np.random.default_rng(seed)
    s2 = rng.uniform(0.02, 0.45, (len(terramind.S2_BANDS), size, size)).astype(np.float32)
    s1 = rng.uniform(-25.0, -5.0, (2, size, size)).astype(np.float32)
    return s2, s1


def pixels(s2, s1=None):
    h, w = s2.shape[1:]
    grid = dict(roi_mask=np.ones((h, w), bool), crs="EPSG:32632", transform=(0.0, 10.0, 0.0, 0.0, 0.0, -10.0))
    px = Pixels(array=s2, bands=terramind.S2_BANDS, valid=np.ones((h, w), bool), **grid)
    if s1 is not None:
        px.modalities["s1"] = Pixels(array=s1, bands=terramind.S1_BANDS, valid=np.ones((h, w), bool), **grid)
    return px


def request(cls, with_s1=False, output=None):
    sensor = cls.resolve_sensor(None)
    return ResolvedRequest(model=cls.info.id, revision=cls.info.revision, provider="local",
                           spatial=PointBuffer(11.0, 46.0, 160), temporal=cls.resolve_temporal(TemporalSpec.year(2023)),
                           sensor=sensor, output=cls.resolve_output(output), input_prep=cls.resolve_input_prep(None),
                           modalities=cls.resolve_modalities(("s1",) if with_s1 else None, sensor))


def reference(checkpoint, s2, s1=None):
    """terratorch's own loader and forward, normalised by hand: the pooled mean of the tokens."""
    net = register.terramind_v1_small(modalities=["S2L2A", "S1GRD"], ckpt_path=str(checkpoint)).eval()
    z2 = (s2 * 10000.0 - np.array(terramind.S2_MEAN)[:, None, None]) / np.array(terramind.S2_STD)[:, None, None]
    inputs = {"S2L2A": torch.from_numpy(z2.astype(np.float32))[None]}
    if s1 is not None:
        z1 = (s1 - np.array(terramind.S1_MEAN)[:, None, None]) / np.array(terramind.S1_STD)[:, None, None]
        inputs["S1GRD"] = torch.from_numpy(z1.astype(np.float32))[None]
    with torch.inference_mode():
        return net(inputs)[-1][0].mean(0).numpy()


def test_declared_contract():
    info = model_class("terramind").info
    assert (info.dim, info.frames, info.input_size, len(info.default_sensor.bands)) == (384, None, 224, 12)
    assert dict(info.modalities)["s1"].bands == ("VV", "VH")
    plain = resolve(Request("terramind", PointBuffer(11.0, 46.0, 500), TemporalSpec.year(2023)))
    both = resolve(Request("terramind", PointBuffer(11.0, 46.0, 500), TemporalSpec.year(2023), modalities=["s1"]))
    assert plain.modalities is None and both.modalities[0][0] == "s1" and plain.key != both.key
    with pytest.raises(SpecError, match="modality 's1' needs band.*'VH'"):
        resolve(Request("terramind", PointBuffer(11.0, 46.0, 500), TemporalSpec.year(2023),
                        modalities={"s1": SensorSpec("s1-grd", ("VV",))}))
    with pytest.raises(SpecError, match="no modality 'dem'"):
        resolve(Request("terramind", PointBuffer(11.0, 46.0, 500), TemporalSpec.year(2023), modalities=["dem"]))


def test_the_published_class_refuses_unpinned_weights():
    with pytest.raises(WeightsError, match="not pinned.*use_weights"):
        terramind.TerraMindModel({"device": "cpu"})


def test_a_published_shape_checkpoint_loads_and_one_without_s1_is_refused(small, checkpoint, tmp_path):
    net = small({"device": "cpu"}).net
    state = torch.load(checkpoint, weights_only=True)
    assert set(net.state_dict()) < set(state)  # the file holds more modalities than the model reads
    no_s1 = {k: v for k, v in state.items() if "sen1grd" not in k}
    torch.save(no_s1, tmp_path / "no_s1.pt")
    try:
        with pytest.raises(WeightsError, match="missing.*sen1grd"):
            use_weights("terramind", tmp_path / "no_s1.pt")({"device": "cpu"})
    finally:
        register_model("terramind", small)


def test_golden_outputs_match_terratorchs_own_forward(small, checkpoint):
    model = small({"device": "cpu"})
    s2, s1 = arrays()
    optical = model.embed(pixels(s2), request(small)).vector
    both = model.embed(pixels(s2, s1), request(small, with_s1=True)).vector
    assert optical.shape == both.shape == (384,)
    np.testing.assert_allclose(optical, reference(checkpoint, s2), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(both, reference(checkpoint, s2, s1), rtol=1e-4, atol=1e-4)
    assert not np.allclose(optical, both, atol=1e-3)  # radar changes the answer


def test_a_batch_mixing_requests_with_and_without_s1(small):
    model = small({"device": "cpu", "batch_size": 4})
    s2, s1 = arrays()
    items = [(pixels(s2, s1), request(small, with_s1=True)), (pixels(s2), request(small)),
             (pixels(s2 * 0.8, s1 - 2), request(small, with_s1=True, output=OutputSpec.grid()))]
    batched = model.embed_batch(items)
    for (px, req), emb in zip(items, batched):
        alone = model.embed(px, req)
        np.testing.assert_allclose(emb.vector, alone.vector, rtol=1e-5, atol=1e-5)
    assert batched[2].grid.shape == (384, 2, 2)


def test_end_to_end_with_s1_on_the_synthetic_scene(small, tmp_path_factory):
    import rasterio

    from rsembed_store.testing.scenes import SceneSpec, generate_s1, generate_scene

    out = tmp_path_factory.mktemp("terramind-scene")
    spec = SceneSpec(size_px=128, n_dates=2, n_patches=8, seed=4)
    manifest = generate_scene(out, spec)
    generate_s1(out, spec)
    # the model reads 12 L2A bands; the scene has 6: the others are made from their neighbours
    make = {"B01": ("B02",), "B05": ("B04", "B08"), "B06": ("B04", "B08", "B08"), "B07": ("B08",),
            "B8A": ("B08",), "B09": ("B08", "B12")}
    (out / "s2-12").mkdir()
    for entry in manifest["scenes"]:
        with rasterio.open(out / entry["path"]) as src:
            data = dict(zip(src.descriptions, src.read()))
            profile = src.profile | {"count": 12, "driver": "GTiff"}
            tags = src.tags()
        for band, sources in make.items():
            data[band] = np.mean([data[b] for b in sources], axis=0).astype(np.int16)
        with rasterio.open(out / "s2-12" / f"{entry['date']}.tif", "w", **profile) as dst:
            dst.write(np.stack([data[b] for b in terramind.S2_BANDS]))
            dst.descriptions = terramind.S2_BANDS
            dst.update_tags(**tags)
    store = Store.open(out / "db")
    config = {"sources": {"s2-l2a": str(out / "s2-12"), "s1-grd": str(out / "s1")}}
    where = PointBuffer(spec.center_lon, spec.center_lat, 160)
    req = Request("terramind", where, TemporalSpec.year(2023), sensor=SensorSpec("s2-l2a", terramind.S2_BANDS,
                                                                                   cloudy_pct=100),
                  modalities=["s1"])
    emb = store.get(req, config=config)
    assert emb.vector.shape == (384,) and np.isfinite(emb.vector).all() and not emb.cached
    assert store.get(req, config=config).cached
    plain = store.get(replace(req, modalities=None), config=config)
    assert plain.key != emb.key and not np.allclose(plain.vector, emb.vector, atol=1e-4)
