"""Fixtures of the deep-model tests: seeded random-initialised checkpoints of the real
architectures (no download is possible or allowed). Helpers are in ``helpers.py``.

torch and the model libraries are imported inside the fixtures only, so test files in
this folder that need neither still run where they are not installed.
"""

from __future__ import annotations

import pytest

SEED = 0


def _save(state, path):
    import torch

    torch.save(state, path)
    return path


@pytest.fixture(scope="session")
def remoteclip_checkpoint(tmp_path_factory):
    """A seeded random open_clip ViT-B-32 state dict: the format of RemoteCLIP-ViT-B-32.pt."""
    torch = pytest.importorskip("torch")
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(SEED)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    return _save(model.state_dict(), tmp_path_factory.mktemp("w") / "remoteclip-random.pt")


@pytest.fixture(scope="session")
def ssl4eo_checkpoint(tmp_path_factory):
    """A seeded random 13-band timm ViT-S/16 state dict, as torchgeo publishes SSL4EO weights."""
    torch = pytest.importorskip("torch")
    models = pytest.importorskip("torchgeo.models")
    torch.manual_seed(SEED)
    net = models.vit_small_patch16_224(None, in_chans=13, num_classes=0)
    return _save(net.state_dict(), tmp_path_factory.mktemp("w") / "ssl4eo-random.pth")


@pytest.fixture(scope="session")
def dofa_checkpoint(tmp_path_factory):
    """A seeded random DOFA ViT-B/16 state dict without fc_norm, like the published one."""
    torch = pytest.importorskip("torch")
    models = pytest.importorskip("torchgeo.models")
    torch.manual_seed(SEED)
    net = models.dofa_base_patch16_224(None, num_classes=0)
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("fc_norm.")}
    return _save(state, tmp_path_factory.mktemp("w") / "dofa-random.pth")


def registered_variant(model_id, path):
    """``use_weights`` for a whole test module; returns (variant class, undo)."""
    from rsembed_store.ingest.models.weights import use_published, use_weights

    return use_weights(model_id, path), lambda: use_published(model_id)
