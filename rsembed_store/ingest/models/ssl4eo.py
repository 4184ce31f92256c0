"""``ssl4eo-s2``: the SSL4EO-S12 ViT-S/16 MoCo backbone for all 13 Sentinel-2 bands, through torchgeo.

SSL4EO-S12 (Wang et al. 2023) pretrained backbones with self-supervision on a
global Sentinel-2 L1C archive; torchgeo's weight registry publishes them. This model
is the entry ``ViTSmall16_Weights.SENTINEL2_ALL_MOCO``: timm's
``vit_small_patch16_224`` with 13 input channels (width 384, 16 px patches), built by
``torchgeo.models.vit_small_patch16_224`` and loaded the way torchgeo loads it.

Input contract: the 13 L1C top-of-atmosphere bands B01..B12 with B8A and B10, in
that order, as reflectance (torchgeo's transform divides the 0-10000 digital numbers
by 10000, which is the 0..1 reflectance providers deliver, so no further
normalisation). torchgeo's evaluation transform resizes to 256 and centre-crops 224;
here the whole ROI is resized (or tiles resampled) to 224 px, so no border is lost.

Outputs (D = 384): grid = the 14 x 14 patch tokens of the last layer after the final
norm (class token dropped), north-up, NaN where a 16 px patch holds no usable pixel;
pooled = their mean or max over the usable patches (tiles combined by the base).
Metric cosine.

Weights: ``vit_small_patch16_224_sentinel2_all_moco-67c9032d.pth`` (torchgeo's
Hugging Face mirror, pinned to a commit; the ``67c9032d`` in the name is the
SHA-256 prefix torch.hub checks, so it is the digest pinned here).
"""

from __future__ import annotations

from pathlib import Path

from ...errors import require
from ...model import ModelInfo
from ...specs import SensorSpec
from .torch_base import TorchModel
from .weights import PublishedWeights

BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
SIZE = 224
PATCH = 16
TORCHGEO_WEIGHTS = ("ViTSmall16_Weights", "SENTINEL2_ALL_MOCO")
_FILE = "vit_small_patch16_224_sentinel2_all_moco-67c9032d.pth"
PUBLISHED = PublishedWeights(
    file_name=_FILE,
    url=("https://hf.co/torchgeo/vit_small_patch16_224_sentinel2_all_moco/resolve/"
         f"1cb683f6c14739634cdfaaceb076529adf898c74/{_FILE}"),
    sha256="67c9032d",
    home="https://huggingface.co/torchgeo/vit_small_patch16_224_sentinel2_all_moco",
)
_HEAD_KEYS = {"head.weight", "head.bias"}


class Ssl4eoS2Model(TorchModel):
    """SSL4EO-S12 MoCo ViT-S/16 features of 13-band Sentinel-2 L1C imagery (torchgeo)."""

    published = PUBLISHED
    extra = "torchgeo"
    patch_px = PATCH
    norm_mean = (0.0,) * len(BANDS)
    norm_std = (1.0,) * len(BANDS)
    batch_cpu = 16
    batch_gpu = 256
    info = ModelInfo(
        id="ssl4eo-s2",
        revision=PUBLISHED.revision,
        kind="on_the_fly",
        dim=384,
        metric="cosine",
        outputs=("pooled", "grid"),
        temporal="composite",
        default_sensor=SensorSpec("s2-l1c", BANDS, scale_m=10, cloudy_pct=30, composite="median"),
        providers=("local", "gee"),
        input_size=SIZE,
        description=(
            "SSL4EO-S12 MoCo ViT-S/16 (torchgeo), 13 S2 L1C bands as reflectance, 224 px; "
            "grid = 14x14 patch tokens (384-d), pooled = their mean or max"
        ),
        citation="Wang et al. 2023, SSL4EO-S12, IEEE GRSM 11(3):98-106, doi:10.1109/MGRS.2023.3281651",
        params={
            "library": "torchgeo", "weights_entry": ".".join(TORCHGEO_WEIGHTS), "arch": "vit_small_patch16_224",
            "patch_px": PATCH, "norm": "reflectance (DN / 10000)", "weights": PUBLISHED.file_name,
            "pooled": "mean/max of usable patch tokens", "grid": "patch tokens after the final norm",
        },
    )

    def architecture(self):
        models = require("torchgeo.models", self.extra, "the ssl4eo-s2 model")
        entry = getattr(getattr(models, TORCHGEO_WEIGHTS[0]), TORCHGEO_WEIGHTS[1])
        return models.vit_small_patch16_224(None, in_chans=entry.meta["in_chans"], num_classes=0)

    def build(self, weights_file: Path):
        return self.load_checkpoint(self.architecture(), weights_file,
                                    "a 13-band timm vit_small_patch16_224 state dict", may_miss=_HEAD_KEYS)

    def forward(self, net, x):
        tokens = net.forward_features(x)
        return tokens[:, net.num_prefix_tokens:], None
