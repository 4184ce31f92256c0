"""``ssl4eo-s2`` on seeded random weights of the real 13-band ViT-S/16.

Golden outputs come from a separate reference path: torchgeo's own builder and timm's
``forward_features`` on the documented input (reflectance as is, 112 -> 224 by a 2x
pixel repeat); the test drops the class token and pools by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tg_models = pytest.importorskip("torchgeo.models")

from rsembed_store.errors import SpecError  # noqa: E402
from rsembed_store.ingest.models.ssl4eo import BANDS, PUBLISHED, Ssl4eoS2Model  # noqa: E402
from rsembed_store.ingest.models.weights import variant  # noqa: E402
from rsembed_store.specs import OutputSpec, SensorSpec  # noqa: E402
from tests.models.helpers import make_pixels, make_request, reflectance  # noqa: E402


@pytest.fixture(scope="module")
def cls(ssl4eo_checkpoint):
    return variant(Ssl4eoS2Model, ssl4eo_checkpoint)


@pytest.fixture(scope="module")
def model(cls):
    return cls({"device": "cpu"})


@pytest.fixture(scope="module")
def reference_tokens(ssl4eo_checkpoint):
    net = tg_models.vit_small_patch16_224(None, in_chans=13, num_classes=0)
    net.load_state_dict(torch.load(ssl4eo_checkpoint, weights_only=True), strict=False)
    net.eval()

    def run(x112):
        big = x112.repeat(2, axis=1).repeat(2, axis=2)
        with torch.inference_mode():
            return net.forward_features(torch.from_numpy(big)[None])[0, 1:].numpy()  # (196, 384)

    return run


def test_declared_weights_are_torchgeos_registry_entry():
    entry = tg_models.ViTSmall16_Weights.SENTINEL2_ALL_MOCO
    assert entry.url == PUBLISHED.url and entry.meta["in_chans"] == len(BANDS) == 13
    assert PUBLISHED.url.endswith(f"-{PUBLISHED.sha256}.pth")  # torch.hub's pinned hash prefix
    assert Ssl4eoS2Model.info.revision == f"sha256:{PUBLISHED.sha256}"


def test_golden_grid_and_pooled_match_the_library(model, cls, reference_tokens):
    x = reflectance(BANDS, 112, seed=11)
    px = make_pixels(x, BANDS)
    grid = model.embed(px, make_request(cls, OutputSpec.grid())).grid
    mean = model.embed(px, make_request(cls, OutputSpec.pooled())).vector
    top = model.embed(px, make_request(cls, OutputSpec.pooled("max"))).vector
    tokens = reference_tokens(x)
    tol = dict(rtol=1e-4, atol=1e-4 * np.abs(tokens).max())
    np.testing.assert_allclose(grid, tokens.T.reshape(384, 14, 14), **tol)
    np.testing.assert_allclose(mean, tokens.mean(axis=0), **tol)
    np.testing.assert_allclose(top, tokens.max(axis=0), **tol)


def test_unusable_patches_are_nan_and_left_out_of_the_pooled_vector(model, cls):
    x = reflectance(BANDS, 224, seed=12)
    roi = np.ones((224, 224), bool)
    roi[:, :112] = False  # the western half lies outside the ROI
    px = make_pixels(x, BANDS, roi=roi)
    grid = model.embed(px, make_request(cls, OutputSpec.grid())).grid
    assert np.isnan(grid[:, :, :7]).all() and np.isfinite(grid[:, :, 7:]).all()
    pooled = model.embed(px, make_request(cls, OutputSpec.pooled())).vector
    np.testing.assert_allclose(pooled, grid[:, :, 7:].reshape(384, -1).mean(axis=1), rtol=1e-5, atol=1e-6)


def test_the_thirteen_bands_are_required():
    l2a = SensorSpec("s2-l2a", tuple(b for b in BANDS if b != "B10"))
    with pytest.raises(SpecError, match="B10"):
        Ssl4eoS2Model.resolve_sensor(l2a)
