"""``dofa``: DOFA ViT-B/16 (Xiong et al. 2024), the wavelength-conditioned foundation model, through torchgeo.

DOFA ("Dynamic One-For-All") builds its patch embedding from the central
wavelength of each input band, so one network reads any set of bands. This model
is torchgeo's ``dofa_base_patch16_224`` with the ``DOFABase16_Weights.DOFA_MAE``
checkpoint (width 768, 16 px patches, 224 px input).

Input contract: any Sentinel-2 bands with a known central wavelength
(:data:`WAVELENGTH_UM`, the ESA S2A values), in the order the request names them
(default: the 12 L2A reflectance bands B01..B12 with B8A, without B10). The bands
enter the key, so a request for ``("B02", "B03", "B04", "B08")`` is its own answer.
Values are reflectance 0..1 as is: torchgeo's transform for these weights only crops,
and DOFA's own S2 pipelines scale digital numbers to 0..1. Inputs are resized (or
tiles resampled) to 224 px.

Outputs (D = 768):

* pooled: DOFA's own global embedding, as torchgeo's ``forward_features`` returns it
  (mean of the last layer's patch tokens, then ``fc_norm``); only ``pooling="mean"``;
* grid: the 14 x 14 patch tokens of the last layer, each through ``fc_norm``, north-up;
  NaN where a 16 px patch holds no usable pixel.

The published checkpoint has no ``fc_norm`` (torchgeo leaves it at its initial
value, a LayerNorm without scale or shift), and neither does this model. Metric cosine.

Weights: ``dofa_base_patch16_224-a0275954.pth`` on torchgeo's Hugging Face mirror
(pinned commit); ``a0275954`` is the SHA-256 prefix torch.hub checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ...errors import SpecError, require
from ...model import Model, ModelInfo
from ...specs import SensorSpec
from .torch_base import TorchModel
from .weights import PublishedWeights

#: central wavelengths (micrometres) of the Sentinel-2 MSI bands (S2A, ESA)
WAVELENGTH_UM: Dict[str, float] = {
    "B01": 0.443, "B02": 0.492, "B03": 0.560, "B04": 0.665, "B05": 0.704, "B06": 0.740, "B07": 0.783,
    "B08": 0.833, "B8A": 0.865, "B09": 0.945, "B10": 1.374, "B11": 1.614, "B12": 2.202,
}
BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
SIZE = 224
PATCH = 16
TORCHGEO_WEIGHTS = ("DOFABase16_Weights", "DOFA_MAE")
_FILE = "dofa_base_patch16_224-a0275954.pth"
PUBLISHED = PublishedWeights(
    file_name=_FILE,
    url=f"https://hf.co/torchgeo/dofa/resolve/b8db318b64a90b9e085ec04ba8851233c5893666/{_FILE}",
    sha256="a0275954",
    home="https://huggingface.co/torchgeo/dofa",
)
_MAY_MISS = {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}


class DofaModel(TorchModel):
    """DOFA ViT-B/16 embeddings of any Sentinel-2 bands, conditioned on their wavelengths (torchgeo)."""

    published = PUBLISHED
    extra = "torchgeo"
    patch_px = PATCH
    norm_mean = (0.0,)  # one value for every band: reflectance is fed as is
    norm_std = (1.0,)
    pooled_head = True
    batch_cpu = 8
    batch_gpu = 128
    info = ModelInfo(
        id="dofa",
        revision=PUBLISHED.revision,
        kind="on_the_fly",
        dim=768,
        metric="cosine",
        outputs=("pooled", "grid"),
        temporal="composite",
        default_sensor=SensorSpec("s2-l2a", BANDS, scale_m=10, cloudy_pct=30, composite="median"),
        providers=("local", "gee"),
        input_size=SIZE,
        description=(
            "DOFA ViT-B/16 (torchgeo): any S2 bands with their wavelengths, reflectance, 224 px; "
            "pooled = DOFA's global embedding; grid = 14x14 patch tokens (768-d)"
        ),
        citation="Xiong et al. 2024, Neural Plasticity-Inspired Multimodal Foundation Model for Earth "
                 "Observation (DOFA), arXiv:2403.15356",
        params={
            "library": "torchgeo", "weights_entry": ".".join(TORCHGEO_WEIGHTS), "arch": "dofa_base_patch16_224",
            "patch_px": PATCH, "norm": "reflectance as is", "wavelengths_um": dict(WAVELENGTH_UM),
            "weights": PUBLISHED.file_name, "bands": "any of B01-B12 and B8A, in request order",
            "pooled": "forward_features (mean of patch tokens, fc_norm)", "grid": "patch tokens, fc_norm",
        },
    )

    # ------------------------------------------------------------ resolution: the request picks the bands

    @classmethod
    def check_sensor(cls, sensor: SensorSpec) -> None:
        bands = tuple(sensor.bands)
        unknown = [b for b in bands if b not in WAVELENGTH_UM]
        if not bands or unknown or len(set(bands)) != len(bands):
            raise SpecError(
                f"model 'dofa' reads Sentinel-2 bands with a known wavelength, each once; got "
                f"{list(bands)} (unknown: {unknown}); accepted: {list(WAVELENGTH_UM)}"
            )

    @classmethod
    def resolve_sensor(cls, sensor: Optional[SensorSpec]) -> Optional[SensorSpec]:
        """Keep the requested bands and their order: they are DOFA's input, so they belong in the key."""
        return Model.resolve_sensor.__func__(cls, sensor)

    def input_bands(self, request) -> Tuple[str, ...]:
        return tuple(request.sensor.bands)

    # ------------------------------------------------------------ network

    def architecture(self):
        models = require("torchgeo.models", self.extra, "the dofa model")
        return models.dofa_base_patch16_224(None, num_classes=0)

    def build(self, weights_file: Path):
        return self.load_checkpoint(self.architecture(), weights_file, "a DOFA ViT-B/16 state dict",
                                    may_miss=_MAY_MISS)

    def embed_batch(self, items, *, return_exceptions: bool = False) -> list:
        """Batches hold one band set each (the wavelengths are one input per batch)."""
        groups: Dict[Tuple[str, ...], List[int]] = {}
        for i, (_, request) in enumerate(items):
            groups.setdefault(tuple(request.sensor.bands), []).append(i)
        out: list = [None] * len(items)
        for bands, idx in groups.items():
            self._local.bands = bands
            try:
                done = super().embed_batch([items[i] for i in idx], return_exceptions=return_exceptions)
            finally:
                self._local.bands = None
            for i, res in zip(idx, done):
                out[i] = res
        return out

    def forward(self, net, x):
        waves = [WAVELENGTH_UM[b] for b in self._local.bands]
        captured = []
        hook = net.blocks[-1].register_forward_hook(lambda _m, _i, output: captured.append(output))
        try:
            pooled = net.forward_features(x, waves)
        finally:
            hook.remove()
        return net.fc_norm(captured[0][:, 1:]), pooled
