"""``remoteclip``: RemoteCLIP ViT-B/32 (Liu et al. 2024), through open_clip.

RemoteCLIP is CLIP fine-tuned on remote-sensing image-text pairs; its image tower
is open_clip's ``ViT-B-32`` (224 px input, 32 px patches, width 768, a 512-d joint
image-text space). Its authors load the checkpoint with
``open_clip.create_model_and_transforms("ViT-B-32")`` and ``load_state_dict``, and so
does this module (only the image tower is kept on the device).

Input contract: Sentinel-2 red, green, blue (B04, B03, B02) reflectance. CLIP was
trained on 8-bit photographs, so reflectance goes through the usual S2 true-colour
stretch, ``clip(reflectance / 0.3, 0, 1)`` (0.3 reflectance = full white), then the
OpenAI CLIP per-channel mean/std. Inputs are resized (or tiles resampled) to 224 px.

Outputs (D = 512):

* pooled: the CLIP image embedding (class token -> ``ln_post`` -> projection), the
  embedding RemoteCLIP publishes and compares with text embeddings; only
  ``pooling="mean"`` (tiles are averaged, weighted by usable pixels);
* grid: the 7 x 7 patch tokens after ``ln_post``, projected with the same projection
  into the 512-d space (so grid rows and pooled rows share one space), north-up; a
  cell with no usable pixel under its 32 px patch is NaN.

Weights: ``RemoteCLIP-ViT-B-32.pt`` from huggingface.co/chendelong/RemoteCLIP,
605,208,421 bytes. The authors publish no checksum; the SHA-256 pinned below
(``60014e39...85c4``) is the one several independent public projects record for the
file they downloaded from that repository (it could not be re-checked here, where
nothing can be downloaded). Metric cosine, as CLIP.

Text: the checkpoint's text tower (open_clip's tokenizer, 77 tokens) puts phrases
in the same 512-d space, so ``embed_text(["a forest"])`` gives vectors to search
the image embeddings with (``ModelInfo.text``; ``store.search(model, text=...)``).
The text tower is built on first use, from the same checkpoint as the image tower.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import require
from ...model import ModelInfo
from ...specs import SensorSpec
from .torch_base import TorchModel
from .weights import PublishedWeights

BANDS = ("B04", "B03", "B02")  # red, green, blue
SIZE = 224
PATCH = 32
ARCH = "ViT-B-32"
WHITE_REFLECTANCE = 0.3  # the true-colour stretch: this reflectance maps to 1.0
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

PUBLISHED = PublishedWeights(
    file_name="RemoteCLIP-ViT-B-32.pt",
    url="https://huggingface.co/chendelong/RemoteCLIP/resolve/main/RemoteCLIP-ViT-B-32.pt",
    sha256="60014e395d930a3f2963d1d89c8522bf4ad56775571e4356e866864789af85c4",
    home="https://huggingface.co/chendelong/RemoteCLIP",
    size=605_208_421,
)


class RemoteClipModel(TorchModel):
    """RemoteCLIP ViT-B/32 image embeddings of S2 true-colour imagery (open_clip)."""

    published = PUBLISHED
    extra = "remoteclip"
    patch_px = PATCH
    norm_mean = CLIP_MEAN
    norm_std = CLIP_STD
    pooled_head = True
    batch_cpu = 16
    batch_gpu = 256
    info = ModelInfo(
        id="remoteclip",
        revision=PUBLISHED.revision,
        kind="on_the_fly",
        dim=512,
        metric="cosine",
        outputs=("pooled", "grid"),
        temporal="composite",
        default_sensor=SensorSpec("s2-l2a", BANDS, scale_m=10, cloudy_pct=30, composite="median"),
        providers=("local", "gee"),
        input_size=SIZE,
        text=True,
        description=(
            "RemoteCLIP ViT-B/32 (open_clip): pooled = the 512-d CLIP image embedding; grid = the 7x7 "
            "patch tokens projected into the same space. S2 RGB, true-colour stretch 0-0.3, 224 px"
        ),
        citation="Liu et al. 2024, RemoteCLIP, IEEE TGRS 62:5622216, doi:10.1109/TGRS.2024.3390838",
        params={
            "library": "open_clip", "arch": ARCH, "patch_px": PATCH, "white_reflectance": WHITE_REFLECTANCE,
            "norm_mean": list(CLIP_MEAN), "norm_std": list(CLIP_STD), "weights": PUBLISHED.file_name,
            "pooled": "image embedding (CLS, ln_post, proj)", "grid": "patch tokens, ln_post, proj",
        },
    )

    def to_model_units(self, x: np.ndarray) -> np.ndarray:
        return np.clip(x / WHITE_REFLECTANCE, 0.0, 1.0)

    def _clip(self):
        open_clip = require("open_clip", self.extra, "the remoteclip model")
        return open_clip.create_model(ARCH, pretrained=None)

    @staticmethod
    def _image_tower(model):
        """Only the image tower is kept (on the device); it also returns its patch tokens."""
        visual = model.visual
        visual.output_tokens = True
        return visual

    def architecture(self):
        return self._image_tower(self._clip())

    def build(self, weights_file: Path):
        what = f"an open_clip {ARCH} state dict (as RemoteCLIP publishes)"
        return self._image_tower(self.load_checkpoint(self._clip(), weights_file, what))

    def embed_text(self, phrases: Sequence[str]) -> np.ndarray:
        """``(n, 512)`` float32 CLIP text embeddings of ``phrases`` (the image embeddings' space)."""
        lock = self.__dict__.setdefault("_text_lock", threading.Lock())
        with lock:
            if getattr(self, "_text_net", None) is None:
                open_clip = require("open_clip", self.extra, "the remoteclip text tower")
                clip = self._clip()
                if not self.random_init:
                    clip = self.load_checkpoint(clip, self.weights_file, f"an open_clip {ARCH} state dict")
                clip.visual = self.torch.nn.Identity()  # the image tower is self.net already
                self._text_net = clip.to(self.device).eval()
                self._tokenizer = open_clip.get_tokenizer(ARCH)
            tokens = self._tokenizer(list(phrases)).to(self.device)
            with self.torch.inference_mode():
                out = self._text_net.encode_text(tokens)
        return out.float().cpu().numpy()

    def forward(self, net, x):
        pooled, tokens = net(x)
        return tokens @ net.proj, pooled
