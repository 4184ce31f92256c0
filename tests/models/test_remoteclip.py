"""``remoteclip`` on seeded random weights of the real architecture.

Golden outputs come from a separate reference path: the test builds the open_clip
model itself, applies the documented preprocessing by hand (2x pixel repeat for the
112 -> 224 resize, the 0..0.3 true-colour stretch, open_clip's own OpenAI constants)
and calls ``encode_image``; our pipeline must agree within float tolerance. Then an
end-to-end run: synthetic COGs -> local provider -> remoteclip -> LanceDB -> search.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from rsembed_store import BBox, Store, TemporalSpec  # noqa: E402
from rsembed_store.errors import SpecError  # noqa: E402
from rsembed_store.ingest.engine import ingest  # noqa: E402
from rsembed_store.ingest.models.remoteclip import RemoteClipModel  # noqa: E402
from rsembed_store.ingest.models.weights import WeightsError, use_published, use_weights  # noqa: E402
from rsembed_store.ingest.models.weights import variant as weights_variant  # noqa: E402
from rsembed_store.ingest.plan import plan  # noqa: E402
from rsembed_store.specs import InputPrepSpec, OutputSpec  # noqa: E402
from tests.models.helpers import make_pixels, make_request, reflectance  # noqa: E402

SCENE_BANDS = ("B02", "B03", "B04", "B08")  # blue first: the model must pick R, G, B by name


@pytest.fixture(scope="module")
def variant(remoteclip_checkpoint):
    cls = use_weights("remoteclip", remoteclip_checkpoint)
    yield cls
    use_published("remoteclip")


@pytest.fixture(scope="module")
def model(variant):
    return variant({"device": "cpu"})


@pytest.fixture(scope="module")
def reference(remoteclip_checkpoint):
    net = open_clip.create_model("ViT-B-32", pretrained=None)
    net.load_state_dict(torch.load(remoteclip_checkpoint, weights_only=True))
    return net.eval()


def reference_input(x112):
    """The documented preprocessing, written independently: RGB by index, 2x repeat, stretch, CLIP stats."""
    rgb = x112[[2, 1, 0]]  # B04, B03, B02 of SCENE_BANDS
    big = rgb.repeat(2, axis=1).repeat(2, axis=2)
    unit = np.clip(big / 0.3, 0, 1)
    mean = np.asarray(open_clip.constants.OPENAI_DATASET_MEAN, np.float32)[:, None, None]
    std = np.asarray(open_clip.constants.OPENAI_DATASET_STD, np.float32)[:, None, None]
    return torch.from_numpy(((unit - mean) / std).astype(np.float32))[None]


def test_declared_contract():
    info = RemoteClipModel.info
    assert (info.dim, info.input_size, tuple(info.default_sensor.bands)) == (512, 224, ("B04", "B03", "B02"))
    assert info.revision == "sha256:60014e395d930a3f"


def test_golden_pooled_is_the_clip_image_embedding(model, reference, variant):
    x = reflectance(SCENE_BANDS, 112, seed=5)
    emb = model.embed(make_pixels(x, SCENE_BANDS), make_request(variant, OutputSpec.pooled()))
    with torch.inference_mode():
        want = reference.encode_image(reference_input(x))[0].numpy()
    assert emb.vector.shape == (512,)
    np.testing.assert_allclose(emb.vector, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_golden_grid_is_the_projected_patch_tokens_north_up(model, reference, variant):
    x = reflectance(SCENE_BANDS, 112, seed=6)
    emb = model.embed(make_pixels(x, SCENE_BANDS), make_request(variant, OutputSpec.grid()))
    visual = reference.visual
    visual.output_tokens = True
    try:
        with torch.inference_mode():
            _, tokens = visual(reference_input(x))
            projected = (tokens[0] @ visual.proj).numpy()
    finally:
        visual.output_tokens = False
    want = projected.reshape(7, 7, 512).transpose(2, 0, 1)
    assert emb.grid.shape == (512, 7, 7)
    np.testing.assert_allclose(emb.grid, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_a_changed_preprocessing_would_fail_the_golden_test(model, reference, variant):
    """The tolerance is tight enough to see a small preprocessing change (stretch 0.3 -> 0.31)."""
    x = reflectance(SCENE_BANDS, 112, seed=5)
    emb = model.embed(make_pixels(x, SCENE_BANDS), make_request(variant))
    with torch.inference_mode():
        off = reference.encode_image(reference_input(x * 0.3 / 0.31))[0].numpy()
    assert not np.allclose(emb.vector, off, rtol=1e-4, atol=1e-4 * np.abs(off).max())


def test_batched_tiles_equal_one_by_one(model, variant):
    big = reflectance(SCENE_BANDS, 448, seed=7)
    items = [
        (make_pixels(big, SCENE_BANDS), make_request(variant, OutputSpec.pooled(), InputPrepSpec.tile())),
        (make_pixels(big[:, :224, :224], SCENE_BANDS), make_request(variant, lon=12.0)),
    ]
    together = model.embed_batch(items)
    alone = [model.embed(p, r) for p, r in items]
    np.testing.assert_allclose(together[0].vector, alone[0].vector, rtol=1e-4, atol=1e-5)
    assert together[0].meta["tiles"] == 4
    # the first tile of the tiled request is exactly the second request's input
    tiles = model.infer([(big[[2, 1, 0], :224, :224], np.ones((224, 224), bool))])
    np.testing.assert_allclose(tiles[0][1], together[1].vector, rtol=1e-4, atol=1e-5)


def test_max_pooling_is_refused_because_pooled_is_the_clip_head():
    with pytest.raises(SpecError, match="pooling='max'"):
        make_request(RemoteClipModel, OutputSpec.pooled("max"))


def test_a_checkpoint_of_another_architecture_is_a_clear_error(ssl4eo_checkpoint):
    with pytest.raises(WeightsError, match="not an open_clip ViT-B-32 state dict"):
        weights_variant(RemoteClipModel, ssl4eo_checkpoint)({"device": "cpu"})


def test_the_published_checkpoint_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("RSEMBED_CACHE", str(tmp_path))
    monkeypatch.delenv("RSEMBED_WEIGHTS_DIR", raising=False)
    with pytest.raises(WeightsError) as err:
        RemoteClipModel({"device": "cpu", "download": False})
    assert "huggingface.co/chendelong/RemoteCLIP" in str(err.value) and str(tmp_path / "weights") in str(err.value)


def test_end_to_end_ingest_then_search(variant, remoteclip_checkpoint, small_scene, tmp_path):
    assert use_weights("remoteclip", remoteclip_checkpoint) is variant  # keys must name the test weights
    out, manifest = small_scene
    w, s, e, n = manifest["bounds_lonlat"]
    region = BBox(w + 0.003, s + 0.003, e - 0.003, n - 0.003)
    requests = plan("remoteclip", region, 9, TemporalSpec.year(2023)).requests[:6]
    assert requests and all(r.revision == variant.info.revision for r in requests)
    store = Store.open(tmp_path / "db")
    config = {"sources": {"s2-l2a": str(out / "scenes")}, "models": {"remoteclip": {"device": "cpu"}}}
    summary = ingest(store, requests, config, progress=False)
    assert summary.failed == 0, summary.failures[:2]
    assert summary.computed == len(requests) and store.count(requests[0].space) == len(requests)
    hits = store.search("remoteclip", requests[0].key, k=3)
    assert len(hits.rows) == 3 and requests[0].key not in [r["key"] for r in hits.rows]
    assert [r["distance"] for r in hits.rows] == sorted(r["distance"] for r in hits.rows)
    assert {r["key"] for r in hits.rows} <= {r.key for r in requests}
