"""``terramind``: TerraMind v1 small, a multimodal any-to-any encoder, through terratorch.

TerraMind (Jakubik et al. 2025, IBM/ESA) is a transformer pretrained on co-registered
Sentinel-2, Sentinel-1, land cover, elevation and text. Each image modality has its
own patch embedding (16 x 16 px) and modality embedding; their tokens share one
encoder, and terratorch's backbone merges the per-modality token grids by their mean.
This model is terratorch's ``terramind_v1_small`` (width 384, 12 blocks) with the raw
(untokenised) ``S2L2A`` and ``S1GRD`` inputs.

Input contract: Sentinel-2 L2A, 12 bands ``B01 B02 B03 B04 B05 B06 B07 B08 B8A B09
B11 B12`` at 10 m as surface reflectance, read by the network as reflectance x 10000
and standardised with TerraMind v1's published statistics; when the request asks for
the modality ``s1`` (``Request(..., modalities=["s1"])``), also Sentinel-1 GRD
``VV, VH`` backscatter in dB on the same grid, standardised likewise. One composite
of the window per sensor. The ROI is resized (or tiled) to 224 px.

Outputs (D = 384): the last block's tokens after the final norm, averaged over the
modalities given (S2 alone, or S2 and S1), per 16 px cell: grid = 14 x 14 cells,
north-up, NaN where a cell holds no usable pixel; pooled = their mean or max.
Metric cosine. A request with S1 is another computation than one without: the
modality enters its key.

Weights: ``TerraMind_v1_small.pt`` from ``ibm-esa-geospatial/TerraMind-1.0-small`` on
Hugging Face. It holds every modality's embeddings (and more); only those of S2L2A
and S1GRD and the encoder are loaded, and any of them missing is an error. Its
SHA-256 is not pinned here yet (this project's machines could not reach the hub), so
load the downloaded file with ``use_weights("terramind", path)``, which keys
requests by the file's own digest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import require
from ...model import ModelInfo
from ...specs import SensorSpec
from .torch_series import SeriesTorchModel

S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
S1_BANDS = ("VV", "VH")
SIZE = 224
PATCH = 16
FILE = "TerraMind_v1_small.pt"
HOME = "https://huggingface.co/ibm-esa-geospatial/TerraMind-1.0-small"
# TerraMind v1's published pretraining statistics: S2 L2A in reflectance x 10000, S1 GRD in dB.
S2_MEAN = (1390.458, 1503.317, 1718.197, 1853.91, 2199.1, 2779.975, 2987.011, 3083.234, 3132.22, 3162.988,
           2424.884, 1857.648)
S2_STD = (2106.761, 2141.107, 2038.973, 2134.138, 2085.321, 1889.926, 1820.257, 1871.918, 1753.829, 1797.379,
          1434.261, 1334.311)
S1_MEAN = (-12.599, -20.293)
S1_STD = (5.195, 5.890)
NET_MODALITIES = {"primary": "S2L2A", "s1": "S1GRD"}  # our name -> terratorch's


class TerraMindModel(SeriesTorchModel):
    """TerraMind v1 small tokens of Sentinel-2 L2A, with Sentinel-1 GRD when asked (terratorch)."""

    published = None  # the checkpoint's digest is not pinned yet: see the module docstring
    weights_file_name = FILE
    weights_home = HOME
    extra = "terratorch"
    patch_px = PATCH
    band_mean = {"primary": S2_MEAN, "s1": S1_MEAN}
    band_std = {"primary": S2_STD, "s1": S1_STD}
    batch_cpu = 8
    batch_gpu = 128
    info = ModelInfo(
        id="terramind",
        revision=f"unpinned:{FILE}",
        kind="on_the_fly",
        dim=384,
        metric="cosine",
        outputs=("pooled", "grid"),
        temporal="composite",
        default_sensor=SensorSpec("s2-l2a", S2_BANDS, scale_m=10, cloudy_pct=30, composite="median"),
        providers=("local", "gee"),
        input_size=SIZE,
        modalities={"s1": SensorSpec("s1-grd", S1_BANDS, scale_m=10, composite="median")},
        description=(
            "TerraMind v1 small (terratorch): S2 L2A 12 bands (+ S1 GRD VV/VH with modalities=['s1']), 224 px; "
            "grid = 14x14 tokens averaged over modalities (384-d), pooled = mean/max"
        ),
        citation="Jakubik et al. 2025, TerraMind: Large-Scale Generative Multimodality for Earth Observation, "
                 "arXiv:2504.11171",
        params={
            "library": "terratorch", "variant": "terramind_v1_small", "patch_px": PATCH,
            "norm": "S2: reflectance x 10000, S1: dB; standardised per band", "weights": FILE, "home": HOME,
            "grid": "last-block tokens after the final norm, mean over the modalities given",
        },
    )

    # ------------------------------------------------------------ network

    def build(self, weights_file: Path):
        register = require("terratorch.models.backbones.terramind.model.terramind_register", self.extra,
                           "the terramind model")
        net = register.terramind_v1_small(modalities=list(NET_MODALITIES.values()), pretrained=False)
        own = set(net.state_dict())  # the file may hold other modalities' weights, which are not used
        return self.load_checkpoint(net, weights_file,
                                    "a TerraMind v1 small checkpoint with S2L2A and S1GRD inputs",
                                    select=lambda state: {k: v for k, v in state.items() if k in own})

    # ------------------------------------------------------------ inputs

    def to_model_units(self, x: np.ndarray) -> np.ndarray:
        out = x.copy()
        out[: len(S2_BANDS)] *= np.float32(10000.0)  # reflectance -> L2A digital numbers; S1 stays in dB
        return out

    def forward(self, net, x):
        parts = self.unpack(x)
        s2, s1, with_s1 = parts["primary"][:, 0], parts["s1"][:, 0], parts["present"]["s1"]
        tokens = None
        for flag in (False, True):  # a batch may mix requests with and without Sentinel-1
            rows = (with_s1 == flag).nonzero().flatten()
            if rows.numel() == 0:
                continue
            inputs = {NET_MODALITIES["primary"]: s2[rows]}
            if flag:
                inputs[NET_MODALITIES["s1"]] = s1[rows]
            out = net(inputs)[-1]
            if tokens is None:
                tokens = out.new_empty((x.shape[0],) + tuple(out.shape[1:]))
            tokens[rows] = out
        return tokens, None
