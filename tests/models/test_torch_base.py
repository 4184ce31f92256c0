"""The TorchModel base on a tiny real network whose outputs can be worked out by hand:
normalisation, unusable pixels, token grids (north-up, NaN cells), pooling, batching
across requests, the OOM fallback, eval/inference mode, devices and config weights."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rsembed_store.errors import SpecError  # noqa: E402
from rsembed_store.ingest.models import weights as wts  # noqa: E402
from rsembed_store.ingest.models.torch_base import TorchModel, pick_device  # noqa: E402
from rsembed_store.model import ModelInfo  # noqa: E402
from rsembed_store.specs import InputPrepSpec, OutputSpec, SensorSpec  # noqa: E402
from tests.models.helpers import make_pixels, make_request  # noqa: E402

BANDS = ("B04", "B08")
MEAN = np.array([0.1, 0.3], np.float32)
STD = np.array([0.05, 0.1], np.float32)
PATCH, SIZE = 4, 16


class PatchMean(torch.nn.Module):
    """Tokens = the mean of each channel over each 4x4 patch, then a fixed 2x3 matrix."""

    mix = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, -1.0]])

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(3))
        self.seen = []  # (batch, grad enabled, training) of every call

    def forward(self, x):
        self.seen.append((x.shape[0], torch.is_grad_enabled(), self.training))
        cells = torch.nn.functional.avg_pool2d(x, PATCH)  # (B, C, 4, 4)
        return cells.flatten(2).transpose(1, 2) @ self.mix * self.scale


def expected_grid(x, mask):
    """By hand: neutral fill, standardise, 4x4 patch means, the 2x3 mix; NaN where a patch has no usable pixel."""
    z = (np.where(mask, x, MEAN[:, None, None]) - MEAN[:, None, None]) / STD[:, None, None]
    g = SIZE // PATCH
    cells = z.reshape(2, g, PATCH, g, PATCH).mean(axis=(2, 4))
    grid = np.einsum("chw,cd->dhw", cells, PatchMean.mix.numpy())
    grid[:, ~mask.reshape(g, PATCH, g, PATCH).any(axis=(1, 3))] = np.nan
    return grid


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A TorchModel subclass whose published checkpoint is a file written here."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.pt"
    torch.save(PatchMean().state_dict(), path)
    published = wts.PublishedWeights("tiny.pt", "file:///nowhere/tiny.pt", wts.file_sha256(path))

    class Tiny(TorchModel):
        patch_px = PATCH
        norm_mean = tuple(MEAN.tolist())
        norm_std = tuple(STD.tolist())
        batch_cpu = 3
        info = ModelInfo(id="tiny-torch", revision=published.revision, kind="on_the_fly", dim=3,
                         default_sensor=SensorSpec("s2-l2a", BANDS), input_size=SIZE)

        def build(self, weights_file):
            return self.load_checkpoint(PatchMean(), weights_file, "a PatchMean state dict")

        def forward(self, net, x):
            return net(x), None

    Tiny.published = published
    return Tiny, path


@pytest.fixture
def model(tiny):
    cls, path = tiny
    return cls({"weights": str(path), "device": "cpu"})


def scene(seed=0, size=SIZE):
    rng = np.random.default_rng(seed)
    return (rng.random((2, size, size)) * 0.4).astype(np.float32)


def test_grid_is_the_token_grid_north_up_with_nan_where_no_usable_pixel(model):
    x = scene()
    x[:, :8] += 0.3  # the northern half is brighter
    valid = np.ones((SIZE, SIZE), bool)
    valid[:4, :4] = False  # the whole north-west patch
    valid[8, 9] = False  # one pixel of another patch: that cell stays
    emb = model.embed(make_pixels(x, BANDS, valid=valid), make_request(type(model), OutputSpec.grid()))
    assert emb.grid.shape == (3, 4, 4)
    np.testing.assert_allclose(emb.grid, expected_grid(x, valid), rtol=1e-5, atol=1e-5)
    assert np.isnan(emb.grid[:, 0, 0]).all() and np.isfinite(emb.grid[:, 2, 2]).all()
    assert emb.grid[0, 0, 1:].mean() > emb.grid[0, 3].mean()  # row 0 is north


def test_pooled_is_the_mean_or_max_of_the_usable_tokens(model):
    x = scene(1)
    valid = np.ones((SIZE, SIZE), bool)
    valid[:, 8:] = False
    cls = type(model)
    g = expected_grid(x, valid)[:, :, :2].reshape(3, -1)
    mean = model.embed(make_pixels(x, BANDS, valid=valid), make_request(cls, OutputSpec.pooled()))
    top = model.embed(make_pixels(x, BANDS, valid=valid), make_request(cls, OutputSpec.pooled("max")))
    np.testing.assert_allclose(mean.vector, g.mean(axis=1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(top.vector, g.max(axis=1), rtol=1e-5, atol=1e-5)


def test_bands_are_picked_by_name_in_the_model_order(model):
    x = scene(2)
    swapped = make_pixels(np.stack([x[1], np.full_like(x[0], 0.7), x[0]]), ("B08", "B02", "B04"))
    a = model.embed(make_pixels(x, BANDS), make_request(type(model), OutputSpec.grid()))
    b = model.embed(swapped, make_request(type(model), OutputSpec.grid()))
    np.testing.assert_allclose(a.grid, b.grid, rtol=1e-6)


def test_the_network_runs_in_eval_and_inference_mode(model):
    model.embed(make_pixels(scene(), BANDS), make_request(type(model)))
    assert model.net.seen and all(not grad and not training for _, grad, training in model.net.seen)


def test_embed_batch_runs_the_pieces_of_all_requests_in_shared_batches(model):
    cls = type(model)
    tiled = make_request(cls, OutputSpec.grid(), InputPrepSpec.tile())
    items = [(make_pixels(scene(s), BANDS), make_request(cls, OutputSpec.pooled(), lon=11 + s)) for s in range(3)]
    items.append((make_pixels(scene(9, size=32), BANDS), tiled))  # 4 tiles of 16 px
    alone = [model.embed(p, r) for p, r in items]
    model.net.seen.clear()
    together = model.embed_batch(items)
    assert [b for b, _, _ in model.net.seen] == [3, 3, 1]  # 7 pieces, batch 3
    for a, b in zip(alone, together):
        np.testing.assert_allclose(b.vector, a.vector, rtol=1e-6)
    assert together[-1].grid.shape == (3, 8, 8) and together[-1].meta["tiles"] == 4


def test_a_failing_item_is_reported_in_place_and_the_rest_are_computed(model):
    cls = type(model)
    bad = make_pixels(scene()[:1], ("B04",))  # lacks B08
    items = [(make_pixels(scene(), BANDS), make_request(cls)), (bad, make_request(cls, lon=12))]
    out = model.embed_batch(items, return_exceptions=True)
    assert out[0].vector.shape == (3,) and "B08" in str(out[1])


def test_out_of_memory_halves_the_batch_and_keeps_the_smaller_size(tiny):
    cls, path = tiny
    model = cls({"weights": str(path), "device": "cpu", "batch_size": 8})
    real = model.net.forward

    def fussy(x):
        if x.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(x)

    model.net.forward = fussy
    items = [(make_pixels(scene(s), BANDS), make_request(cls, lon=11 + s)) for s in range(5)]
    out = model.embed_batch(items)
    assert model.batch_size == 2 and len(out) == 5
    ref = cls({"weights": str(path), "device": "cpu"}).embed_batch(items)
    for a, b in zip(out, ref):
        np.testing.assert_allclose(a.vector, b.vector, rtol=1e-6)


def test_device_choice(monkeypatch):
    assert pick_device("cpu") == "cpu"
    monkeypatch.setenv("RSEMBED_DEVICE", "cpu")
    assert pick_device() == "cpu"
    monkeypatch.delenv("RSEMBED_DEVICE")
    assert pick_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(SpecError, match="'tpu9'"):
        pick_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(SpecError, match="no CUDA GPU"):
            pick_device("cuda")


def test_a_bad_batch_size_is_refused(tiny):
    cls, path = tiny
    with pytest.raises(SpecError, match="batch_size=-1"):
        cls({"weights": str(path), "batch_size": -1})


def test_config_weights_must_match_the_revision_the_requests_were_keyed_for(tiny, tmp_path):
    cls, _ = tiny
    other = tmp_path / "finetune.pt"
    net = PatchMean()
    with torch.no_grad():
        net.scale.mul_(2)
    torch.save(net.state_dict(), other)
    with pytest.raises(SpecError, match=r"use_weights\('tiny-torch'"):
        cls({"weights": str(other)})
    variant = wts.variant(cls, other)
    assert variant.info.revision == "sha256:" + wts.file_sha256(other)[:16] != cls.info.revision
    assert variant.weights_base is cls and issubclass(variant, cls)
    doubled = variant({"device": "cpu"})
    base = cls({"weights": str(tiny[1]), "device": "cpu"})
    p = make_pixels(scene(), BANDS)
    np.testing.assert_allclose(doubled.embed(p, make_request(variant)).vector,
                               2 * base.embed(p, make_request(cls)).vector, rtol=1e-5)


def test_a_head_model_refuses_max_pooling(tiny):
    head = type("TinyHead", (tiny[0],), {"pooled_head": True})
    with pytest.raises(SpecError, match="pooling='max' does not apply"):
        head.resolve_output(OutputSpec.pooled("max"))
    assert head.resolve_output(None).pooling == "mean"


def test_tiles_without_usable_pixels_are_not_run_and_stay_nan(model):
    cls = type(model)
    roi = np.zeros((32, 32), bool)
    roi[:16, :16] = True  # only the north-west tile lies in the ROI
    model.net.seen.clear()
    emb = model.embed(make_pixels(scene(3, size=32), BANDS, roi=roi), make_request(cls, OutputSpec.grid(), InputPrepSpec.tile()))
    assert sum(b for b, _, _ in model.net.seen) == 1
    assert np.isfinite(emb.grid[:, :4, :4]).all() and np.isnan(emb.grid[:, 4:]).all() and np.isnan(emb.grid[:, :, 4:]).all()


@pytest.mark.parametrize(
    "content, words",
    [
        ([1, 2, 3], ["a PatchMean state dict", "holds a list, not a state dict"]),
        ({}, ["missing ['scale']"]),
        ({"scale": torch.ones(3), "bias": torch.ones(3)}, ["unexpected ['bias']"]),
        ({"scale": torch.ones(4)}, ["size mismatch", "scale"]),
    ],
)
def test_a_checkpoint_that_does_not_fit_is_a_weights_error_naming_the_file(tiny, tmp_path, content, words):
    cls, path = tiny
    model = cls({"weights": str(path), "device": "cpu"})
    bad = tmp_path / "bad.pt"
    torch.save(content, bad)
    with pytest.raises(wts.WeightsError) as err:
        model.load_checkpoint(PatchMean(), bad, "a PatchMean state dict")
    for w in [repr(str(bad))] + words:
        assert w in str(err.value)


def test_load_checkpoint_selects_entries_and_tolerates_the_named_misses(tiny, tmp_path):
    cls, path = tiny
    f = tmp_path / "more.pt"
    torch.save({"scale": torch.full((3,), 2.0), "other_sensor.weight": torch.ones(2)}, f)
    model = cls({"weights": str(path), "device": "cpu"})
    net = model.load_checkpoint(PatchMean(), f, "x", select=lambda st: {k: v for k, v in st.items() if k == "scale"})
    assert torch.equal(net.scale.data, torch.full((3,), 2.0))
    net = model.load_checkpoint(PatchMean(), f, "x", select=lambda st: {}, may_miss={"scale"})
    assert torch.equal(net.scale.data, torch.ones(3))  # left at its initial value
