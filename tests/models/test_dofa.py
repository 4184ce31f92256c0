"""``dofa`` on seeded random weights of the real DOFA ViT-B/16.

Golden outputs come from a separate reference path: torchgeo's builder and its
``forward_features(x, wavelengths)`` (DOFA's own global embedding) on the documented
input (reflectance as is, 112 -> 224 by a 2x pixel repeat), with the wavelengths
written out here from the ESA band table.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tg_models = pytest.importorskip("torchgeo.models")

from rsembed_store.errors import SpecError  # noqa: E402
from rsembed_store.ingest.models.dofa import BANDS, PUBLISHED, DofaModel  # noqa: E402
from rsembed_store.ingest.models.weights import variant  # noqa: E402
from rsembed_store.specs import OutputSpec, SensorSpec  # noqa: E402
from tests.models.helpers import make_pixels, make_request, reflectance  # noqa: E402

RGBN = ("B02", "B03", "B04", "B08")
RGBN_UM = [0.492, 0.560, 0.665, 0.833]  # S2A central wavelengths (ESA), micrometres


@pytest.fixture(scope="module")
def cls(dofa_checkpoint):
    return variant(DofaModel, dofa_checkpoint)


@pytest.fixture(scope="module")
def model(cls):
    return cls({"device": "cpu"})


@pytest.fixture(scope="module")
def reference(dofa_checkpoint):
    net = tg_models.dofa_base_patch16_224(None, num_classes=0)
    net.load_state_dict(torch.load(dofa_checkpoint, weights_only=True), strict=False)
    return net.eval()


def test_declared_weights_are_torchgeos_registry_entry():
    assert tg_models.DOFABase16_Weights.DOFA_MAE.url == PUBLISHED.url
    assert DofaModel.info.revision == f"sha256:{PUBLISHED.sha256}"


def test_golden_pooled_is_dofas_own_embedding_for_the_requested_bands(model, cls, reference):
    x = reflectance(RGBN, 112, seed=21)
    sensor = SensorSpec("s2-l2a", RGBN)
    emb = model.embed(make_pixels(x, RGBN), make_request(cls, OutputSpec.pooled(), sensor=sensor))
    with torch.inference_mode():
        want = reference.forward_features(torch.from_numpy(x.repeat(2, 1).repeat(2, 2))[None], RGBN_UM)[0].numpy()
    np.testing.assert_allclose(emb.vector, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_grid_tokens_average_to_the_pooled_input_of_fc_norm(model, cls, reference):
    """Grid cells are fc_norm(token); with fc_norm at its initial value (no scale or shift) each
    cell has zero mean and unit variance over its 768 values."""
    x = reflectance(RGBN, 224, seed=22)
    grid = model.embed(make_pixels(x, RGBN), make_request(cls, OutputSpec.grid(), sensor=SensorSpec("s2-l2a", RGBN))).grid
    assert grid.shape == (768, 14, 14)
    np.testing.assert_allclose(grid.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(grid.std(axis=0), 1, atol=1e-2)


def test_band_sets_are_separate_answers_and_batch_separately(model, cls):
    x12 = reflectance(BANDS, 224, seed=23)
    full = make_request(cls)
    four = make_request(cls, sensor=SensorSpec("s2-l2a", RGBN))
    assert full.key != four.key and tuple(four.sensor.bands) == RGBN
    items = [(make_pixels(x12, BANDS), full), (make_pixels(x12, BANDS), four)]
    together = model.embed_batch(items)
    alone = [model.embed(p, r) for p, r in items]
    for a, b in zip(together, alone):
        np.testing.assert_allclose(a.vector, b.vector, rtol=1e-4, atol=1e-5)
    assert not np.allclose(together[0].vector, together[1].vector)


def test_a_band_without_a_known_wavelength_is_refused():
    with pytest.raises(SpecError, match="'NDVI'"):
        DofaModel.resolve_sensor(SensorSpec("s2-l2a", ("B04", "NDVI")))
