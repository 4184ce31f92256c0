"""``prithvi``: Prithvi-EO-2.0-100M-TL, a multi-temporal ViT, through terratorch.

Prithvi-EO-2.0 (Szwarcman et al. 2024, IBM/NASA/Jülich) is a masked-autoencoder ViT
pretrained on time series of NASA's Harmonized Landsat Sentinel-2 (HLS) at 30 m: a
3-D patch embedding cuts each frame into 16 x 16 px patches, a 3-D sin/cos position
embedding says where and when each patch is, and the ``-TL`` variants add learned
encodings of each frame's date (year, day of year) and of the sample's centre
(latitude, longitude). The architecture is terratorch's ``prithvi_eo_v2_100_tl``
(the 100M variant: width 768, 12 blocks); the 300M and 600M variants differ only in
width and depth.

Input contract: 4 frames (``ModelInfo.frames``) of the six HLS bands Blue, Green,
Red, narrow NIR, SWIR 1, SWIR 2 = Sentinel-2 ``B02, B03, B04, B8A, B11, B12``, at
30 m, as surface reflectance. The default sensor is the ``hls`` collection (HLS v2.0
S30 and L30, read by the common names ``blue green red nir swir16 swir22``), what the
model was trained on; a request that names ``SensorSpec("s2-l2a", BANDS, scale_m=30)``
still reads Sentinel-2 L2A and keeps the key it had when that was the default; the network reads them as reflectance x 10000,
standardised with the published per-band mean and standard deviation. Each frame's
date is the middle day of its sub-window; the location is the ROI centre. The ROI
is resized (or tiled) to 224 px per frame.

Outputs (D = 768): the last block's patch tokens after the final norm, class token
dropped, averaged over the 4 frames per 16 px cell: grid = 14 x 14 cells, north-up,
NaN where a cell holds no usable pixel; pooled = their mean or max. Metric cosine.

Weights: ``Prithvi_EO_V2_100M_TL.pt`` from ``ibm-nasa-geospatial/Prithvi-EO-2.0-100M-TL``
on Hugging Face (an MAE checkpoint; the decoder is dropped on load). Its SHA-256 is
not pinned here yet (this project's machines could not reach the hub to read it), so
the published class refuses to load until it is; meanwhile load the downloaded file
with ``use_weights("prithvi", path)``, which keys requests by the file's own digest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import require
from ...model import ModelInfo
from ...specs import SensorSpec
from .torch_series import SeriesTorchModel, frame_midpoints

VARIANT = "prithvi_eo_v2_100_tl"
BANDS = ("B02", "B03", "B04", "B8A", "B11", "B12")
FRAMES = 4
SIZE = 224
PATCH = 16
FILE = "Prithvi_EO_V2_100M_TL.pt"
HOME = "https://huggingface.co/ibm-nasa-geospatial/Prithvi-EO-2.0-100M-TL"
# The published per-band statistics of Prithvi-EO-2.0 (HLS reflectance x 10000).
MEAN = (1087.0, 1342.0, 1433.0, 2734.0, 1958.0, 1363.0)
STD = (2248.0, 2179.0, 2178.0, 1850.0, 1242.0, 1049.0)
LAT_OFFSET, LON_OFFSET = 91.0, 181.0  # side channels must be > 0 (see torch_series)


class PrithviModel(SeriesTorchModel):
    """Prithvi-EO-2.0-100M-TL tokens of a 4-frame, 6-band time series (terratorch)."""

    published = None  # the checkpoint's digest is not pinned yet: see the module docstring
    weights_file_name = FILE
    weights_home = HOME
    extra = "terratorch"
    patch_px = PATCH
    band_mean = {"primary": MEAN}
    band_std = {"primary": STD}
    side_channels = 2 * FRAMES + 2  # (year, day of year) per frame, then (lat, lon) of the centre
    batch_cpu = 2
    batch_gpu = 32
    info = ModelInfo(
        id="prithvi",
        revision=f"unpinned:{FILE}",
        kind="on_the_fly",
        dim=768,
        metric="cosine",
        outputs=("pooled", "grid"),
        temporal="composite",
        default_sensor=SensorSpec("hls", BANDS, scale_m=30, cloudy_pct=30, composite="median"),
        providers=("local", "gee"),
        input_size=SIZE,
        frames=FRAMES,
        description=(
            "Prithvi-EO-2.0-100M-TL (terratorch): 4 frames x 6 HLS bands at 30 m, 224 px, with frame dates "
            "and ROI centre; grid = 14x14 cells of patch tokens averaged over frames (768-d), pooled = mean/max"
        ),
        citation="Szwarcman et al. 2024, Prithvi-EO-2.0, arXiv:2412.02732",
        params={
            "library": "terratorch", "variant": VARIANT, "patch_px": PATCH, "frames": FRAMES,
            "norm": "reflectance x 10000, standardised per band", "weights": FILE, "home": HOME,
            "temporal_coords": "middle day of each frame", "location_coords": "ROI centre",
            "grid": "last-block tokens after the final norm, mean over frames",
        },
    )

    # ------------------------------------------------------------ network

    def build(self, weights_file: Path):
        backbones = require("terratorch.models.backbones.prithvi_vit", self.extra, "the prithvi model")
        net = backbones.prithvi_eo_v2_100_tl(pretrained=False, num_frames=FRAMES)
        bands = backbones.PRETRAINED_BANDS
        # the library's filter: MAE -> encoder keys, decoder dropped, position embedding recomputed
        return self.load_checkpoint(net, weights_file, "a Prithvi-EO-2.0-100M-TL checkpoint",
                                    select=lambda state: backbones.checkpoint_filter_fn_vit(state, net, bands, bands))

    # ------------------------------------------------------------ inputs

    def to_model_units(self, x: np.ndarray) -> np.ndarray:
        out = x.copy()
        out[: FRAMES * len(BANDS)] *= np.float32(10000.0)  # reflectance -> HLS digital numbers
        return out

    def side_values(self, request) -> np.ndarray:
        lon, lat = request.spatial.center()
        dates = frame_midpoints(request, FRAMES)
        coords = [v for d in dates for v in (d.year, d.timetuple().tm_yday)]
        return np.asarray(coords + [lat + LAT_OFFSET, lon + LON_OFFSET], np.float32)

    def forward(self, net, x):
        parts = self.unpack(x)
        frames = parts["primary"].permute(0, 2, 1, 3, 4)  # (B, C, T, S, S), as the 3-D patch embedding reads it
        side = parts["side"]
        temporal = side[:, : 2 * FRAMES].reshape(-1, FRAMES, 2).round()
        location = side[:, 2 * FRAMES:] - side.new_tensor([LAT_OFFSET, LON_OFFSET])
        tokens = net.forward_features(frames, temporal_coords=temporal, location_coords=location)[-1][:, 1:]
        b, n, d = tokens.shape
        return tokens.reshape(b, FRAMES, n // FRAMES, d).mean(dim=1), None
