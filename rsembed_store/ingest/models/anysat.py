"""``anysat``: AnySat base on a multi-temporal Sentinel-2 input, written here in plain torch.

AnySat (Astruc et al., CVPR 2025) is one encoder for many sensors, resolutions and
scales, pretrained with a JEPA objective on the GeoPlex datasets. It is published
only as a research repository (github ``gastruc/AnySat``), so the network is written
here from the paper and the published code's structure; its parameter names are
those of the published state dict, so the released checkpoint loads unchanged.
Of its eleven sensor projectors this model uses the Sentinel-2 time-series one:

1. *projector* (per pixel, per date): an MLP lifts the 10 bands to width 768
   (stages Linear -> GroupNorm(4) -> ReLU, widths 96, 384, 768, 1536, 768); the
   pixel's sequence is group-normalised (16 groups) and gets a sinusoidal encoding
   of each date's day of year (period 367, 48 channels repeated over 16 heads); a
   lightweight temporal attention (one learned query per head, 16 heads, keys of
   width 8) pools the dates to one vector per pixel, followed by
   Linear -> GroupNorm(4) -> ReLU and GroupNorm(16). This is the L-TAE of
   Garnot & Landrieu (2020).
2. *patching*: the pixel map is cut into square patches of ``scale`` pixels per side
   (a patch of ``10 * scale`` metres); each patch's pixels are a sub-token sequence.
3. *spatial encoder* (per patch): a class token plus the sub-tokens with a 2-D
   sin/cos position of each sub-pixel in metres go through 6 transformer blocks whose
   attention adds a contextual relative-position term on the keys (iRPE, Euclidean
   distance buckets; as published, computed from the first head's queries and added
   to every head); the class token after the final norm is the patch token.
4. *combiner*: the patch tokens plus a 2-D sin/cos position scaled by ``scale``, and
   a class token, go through 6 ViT blocks and one cross-attention block whose
   queries are a learned vector plus each position's sin/cos embedding (the same
   relative-position term, and no residual around this attention). Its output at
   the class position is AnySat's "tile" embedding, at each patch the "patch" one.

Input contract: rs-embed's (0.3.1, ``rs_embed/embedders/onthefly_anysat.py``), so that
the name ``anysat`` means the same computation in both packages. ``FRAMES`` = 8 frames
(the window split in 8 equal sub-windows, one composite each, as rs-embed splits it) of
the Sentinel-2 L2A bands ``B02 B03 B04 B05 B06 B07 B08 B8A B11 B12`` at 10 m; each
frame's date is the middle day of its sub-window, given to the network as its day of
year counted from 0 (1 January = 0, clamped to 0..364, AnySat's convention). The ROI is
resized (or tiled) to 24 px (240 m) per frame. Normalisation is rs-embed's default
``per_tile_zscore``: reflectance x 10000 clipped to 0..10000, then each band
standardised by its own mean and standard deviation over all frames and pixels of the
piece the network sees (std floored at 1e-6). AnySat publishes no fixed statistics, so
rs-embed's choice is taken as is. Unusable pixels (outside the ROI, no data in any
frame) are left out of those statistics and reach the network as 0 (rs-embed includes
its fill values in them; on a fully covered piece the two agree).

Outputs (D = 768): AnySat ``patch_size`` = the sensor's 10 m (AnySat ``scale`` 1), so
one patch is one pixel. grid = the "patch" tokens, 24 x 24 cells of 10 m north-up, NaN
where a cell holds no usable pixel (rs-embed's ``grid_feature_mode="patch"``; its
default ``"dense"`` concatenates patch and sub-patch tokens to 1536 channels, which
would give a grid of another width than the pooled vector, so it is not offered);
pooled = the mean (or max) of the usable patch tokens, rs-embed's default
``pooled_source="patch"``. Metric cosine. Checked against rs-embed's own vendored
AnySat on the same pixels and weights by ``tests/compat/test_same_computation.py``.

Weights: ``AnySat.pth`` (base) from ``gastruc/anysat`` on Hugging Face (also what
torch.hub ``gastruc/anysat`` loads). It holds every sensor's projector; on load the
other projectors (state-dict keys ``projector_<name>.`` for names other than
``s2``) are dropped explicitly, and the kept subset (``projector_s2.``,
``spatial_encoder.``, ``blocks.``, ``cls_token``) must match the network exactly.
Its SHA-256 is not pinned here (this project's machines cannot reach the hub), so
load the downloaded file with ``use_weights("anysat", path)``, which keys requests
by the file's own digest.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ...model import ModelInfo
from ...specs import SensorSpec
from .torch_series import SeriesTorchModel, frame_midpoints

BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
FRAMES = 8
SIZE = 24
PATCH = 1  # pixels per patch side at 10 m = AnySat's ``scale`` (patch size in metres / 10)
RAW_MAX = 10000.0  # rs-embed clips L2A digital numbers to 0..10000 before the z-score
STD_FLOOR = 1e-6
RES_M = 10
FILE = "AnySat.pth"
HOME = "https://huggingface.co/gastruc/anysat"
KEPT_PROJECTOR = "projector_s2."
WIDTH, DEPTH, HEADS = 768, 6, 12


def keep_s2_and_shared(state: dict) -> dict:
    """The checkpoint's entries this model uses: everything but the other sensors' projectors."""
    return {k: v for k, v in state.items() if not k.startswith("projector_") or k.startswith(KEPT_PROJECTOR)}


def build_network():
    """AnySat base restricted to Sentinel-2, randomly initialised (torch imported here)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    def sincos(width: int, positions):
        """``(len(positions), width)``: sines then cosines of positions over geometric frequencies."""
        freq = 1.0 / 10000 ** (torch.arange(width // 2, dtype=torch.float32) / (width / 2))
        angle = positions.reshape(-1, 1).float() * freq
        return torch.cat([angle.sin(), angle.cos()], dim=1)

    def grid_positions(side: int, step: float, width: int):
        """``(1 + side*side, width)``: a zero row (class token), then row-major cells; each cell's
        first half encodes its column x step, the second half its row x step."""
        rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        cells = torch.cat([sincos(width // 2, cols * step), sincos(width // 2, rows * step)], dim=1)
        return torch.cat([torch.zeros(1, width), cells])

    def distance_buckets(side: int):
        """iRPE bucket of each token pair for a class token + ``side x side`` grid: the rounded
        Euclidean distance, log-compressed past 1.9 and capped at 3, plus 3; 7 for the class token."""
        alpha, beta, gamma = 1.9, 3.8, 15.2
        rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        pos = torch.stack([rows.flatten(), cols.flatten()], dim=1).float()
        dist = torch.cdist(pos, pos).round()
        far = (alpha + torch.log(dist.clamp(min=1e-6) / alpha) / math.log(gamma / alpha) * (beta - alpha)).round()
        near_or_far = torch.where(dist <= alpha, dist, far.clamp(max=int(beta)))
        out = torch.full((1 + side * side, 1 + side * side), 2 * int(beta) + 1, dtype=torch.long)
        out[1:, 1:] = near_or_far.long() + int(beta)
        return out

    class KeyPositionTerm(nn.Module):
        """Contextual relative-position bias on keys: ``q_i . table[:, bucket(i, j)]``, one table for
        all heads. As in the published code (and so as trained), the term is computed from the
        *first* head's queries and added to every head: ``(B, 1, L, L)``, broadcast over heads."""

        def __init__(self, head_dim: int):
            super().__init__()
            self.lookup_table_weight = nn.Parameter(torch.zeros(1, head_dim, 8))

        def forward(self, q, side: int):
            per_bucket = q[:, :1] @ self.lookup_table_weight[0]  # (B, 1, L, 8)
            index = distance_buckets(side).to(q.device).expand(q.shape[0], 1, -1, -1)
            return per_bucket.gather(-1, index)

    class MLP(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

        def forward(self, x):
            return self.fc2(F.gelu(self.fc1(x)))

    class SelfAttention(nn.Module):
        """Multi-head self-attention; with ``relative`` the iRPE key term is added (on scaled queries)."""

        def __init__(self, dim, relative: bool):
            super().__init__()
            self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
            self.rpe_k = KeyPositionTerm(dim // HEADS) if relative else None

        def forward(self, x):
            b, n, d = x.shape
            q, k, v = self.qkv(x).reshape(b, n, 3, HEADS, d // HEADS).permute(2, 0, 3, 1, 4)
            q = q * (d // HEADS) ** -0.5
            logits = q @ k.transpose(-2, -1)
            if self.rpe_k is not None:
                logits = logits + self.rpe_k(q, math.isqrt(n - 1))
            return self.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d))

    class Block(nn.Module):
        def __init__(self, dim, relative: bool, eps: float):
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(dim, eps=eps), nn.LayerNorm(dim, eps=eps)
            self.attn, self.mlp = SelfAttention(dim, relative), MLP(dim)

        def forward(self, x):
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class LearnedQueryAttention(nn.Module):
        """Cross-attention whose queries are a learned vector plus each token's grid position."""

        def __init__(self, dim):
            super().__init__()
            self.wk, self.wv, self.proj = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
            self.q_learned = nn.Parameter(torch.zeros(1, 1, dim))
            self.rpe_k = KeyPositionTerm(dim // HEADS)

        def forward(self, x, scale: int):
            b, n, d = x.shape
            side = math.isqrt(n - 1)
            heads = lambda t: t.reshape(b, n, HEADS, d // HEADS).transpose(1, 2)  # noqa: E731
            q = heads((self.q_learned + grid_positions(side, scale, d).to(x)).expand(b, -1, -1))
            logits = (q @ heads(self.wk(x)).transpose(-2, -1)) * (d // HEADS) ** -0.5 + self.rpe_k(q, side)
            return self.proj((logits.softmax(-1) @ heads(self.wv(x))).transpose(1, 2).reshape(b, n, d))

    class CrossBlock(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
            self.attn, self.mlp = LearnedQueryAttention(dim), MLP(dim)

        def forward(self, x, scale: int):
            x = self.attn(self.norm1(x), scale)  # no residual: the queries replace the tokens
            return x + self.mlp(self.norm2(x))

    class DateAttention(nn.Module):
        """One learned query per head attends over the dates; values are the head's channel slice."""

        def __init__(self, dim, heads=16, key_dim=8):
            super().__init__()
            self.heads, self.key_dim = heads, key_dim
            self.Q = nn.Parameter(torch.zeros(heads, key_dim))
            self.fc1_k = nn.Linear(dim, heads * key_dim)

        def forward(self, seq):  # (N, T, D) -> (N, D)
            n, t, d = seq.shape
            keys = self.fc1_k(seq).reshape(n, t, self.heads, self.key_dim)
            weights = (torch.einsum("nthk,hk->nht", keys, self.Q) / self.key_dim ** 0.5).softmax(-1)
            return torch.einsum("nht,nthc->nhc", weights, seq.reshape(n, t, self.heads, d // self.heads)).reshape(n, d)

    def stage(width_in, width_out, dropout_slot: bool):
        layers = [nn.Linear(width_in, width_out), nn.GroupNorm(4, width_out), nn.ReLU()]
        return layers + [nn.Identity()] if dropout_slot else layers  # the published dropout slot keeps indices

    class PixelSeriesEncoder(nn.Module):
        """The L-TAE: each pixel's dated band vectors -> one vector of width D."""

        def __init__(self, bands=10, dim=WIDTH, heads=16, period=367.0):
            super().__init__()
            widths = [bands, dim // 8, dim // 2, dim, dim * 2, dim]
            self.inconv = nn.Sequential(*[m for a, b in zip(widths, widths[1:]) for m in stage(a, b, True)])
            self.in_norm, self.out_norm = nn.GroupNorm(heads, dim), nn.GroupNorm(heads, dim)
            self.attention_heads = DateAttention(dim, heads)
            self.mlp = nn.Sequential(*stage(dim, dim, False))
            per_head = dim // heads
            self.heads, self.dim = heads, dim
            divisor = period ** (2 * (torch.arange(per_head) // 2) / per_head)
            self.register_buffer("day_divisor", divisor, persistent=False)

        def day_encoding(self, days):  # (N, T) -> (N, T, D)
            angle = days[..., None] / self.day_divisor
            enc = torch.where(torch.arange(angle.shape[-1], device=days.device) % 2 == 0, angle.sin(), angle.cos())
            return enc.repeat(1, 1, self.heads)

        def forward(self, x, days):  # x (B, T, C, H, W), days (B, T) -> (B, H, W, D)
            b, t, c, h, w = x.shape
            seq = self.inconv(x.permute(0, 3, 4, 1, 2).reshape(-1, c)).reshape(b * h * w, t, self.dim)
            seq = self.in_norm(seq.transpose(1, 2)).transpose(1, 2)
            seq = seq + self.day_encoding(days.float().repeat_interleave(h * w, dim=0))
            return self.out_norm(self.mlp(self.attention_heads(seq))).reshape(b, h, w, self.dim)

    class S2Projector(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch_embed = PixelSeriesEncoder()
            self.pad_parameter = nn.Parameter(torch.tensor(0.0), requires_grad=False)  # unused: inputs are gap-filled

    class PatchEncoder(nn.Module):
        """A patch's sub-pixel tokens -> one token (the class token after 6 relative-position blocks)."""

        def __init__(self, dim=WIDTH):
            super().__init__()
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.predictor_blocks = nn.ModuleList(Block(dim, relative=True, eps=1e-5) for _ in range(DEPTH))
            self.predictor_norm = nn.LayerNorm(dim)

        def forward(self, sub):  # (P, s*s, D) -> (P, D)
            side = math.isqrt(sub.shape[1])
            x = torch.cat([self.cls_token.expand(sub.shape[0], -1, -1), sub], dim=1)
            x = x + grid_positions(side, RES_M, sub.shape[2]).to(x)
            for blk in self.predictor_blocks:
                x = blk(x)
            return self.predictor_norm(x)[:, 0]

    class AnySatS2(nn.Module):
        """``forward(frames (B, T, 10, H, W), days (B, T), scale)`` -> ``(patch tokens (B, N, D), tile (B, D))``."""

        def __init__(self, dim=WIDTH):
            super().__init__()
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.projector_s2 = S2Projector()
            self.spatial_encoder = PatchEncoder(dim)
            vit = [Block(dim, relative=False, eps=1e-6) for _ in range(DEPTH)]
            self.blocks = nn.ModuleList(vit + [CrossBlock(dim)])

        def forward(self, frames, days, scale: int):
            b, _, _, h, w = frames.shape
            if h % scale or w % scale or h != w:
                raise ValueError(f"AnySat needs a square input whose side is a multiple of scale={scale}; got {h}x{w}")
            pixels = self.projector_s2.patch_embed(frames, days)
            gh, d = h // scale, pixels.shape[-1]
            sub = pixels.reshape(b, gh, scale, gh, scale, d).permute(0, 1, 3, 2, 4, 5)  # patch-major, row-major
            sub = sub.reshape(b * gh * gh, scale * scale, d)
            patches = self.spatial_encoder(sub).reshape(b, gh * gh, d)
            pos = grid_positions(gh, scale, d).to(patches)
            x = torch.cat([(self.cls_token + pos[:1]).expand(b, -1, -1), patches + pos[1:]], dim=1)
            for blk in self.blocks[:-1]:
                x = blk(x)
            x = self.blocks[-1](x, scale)
            return x[:, 1:], x[:, 0]

    return AnySatS2()


def per_tile_zscore(frames: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """rs-embed's ``per_tile_zscore`` of ``(T, C, H, W)`` digital numbers: each band standardised
    by its mean and std over every frame and usable pixel; unusable pixels become 0."""
    x = np.clip(frames, 0.0, RAW_MAX).astype(np.float32)
    seen = np.where(usable[None, None], x, np.float32(np.nan))
    mu = np.nanmean(seen, axis=(0, 2, 3), keepdims=True)
    sigma = np.nanstd(seen, axis=(0, 2, 3), keepdims=True)
    sigma = np.maximum(np.where(np.isfinite(sigma), sigma, 0.0), STD_FLOOR)
    z = np.where(usable[None, None], (x - mu) / sigma, 0.0)
    return np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


class AnySatModel(SeriesTorchModel):
    """AnySat base tokens of an 8-frame Sentinel-2 time series, rs-embed's input contract."""

    published = None  # the checkpoint's digest is not pinned yet: see the module docstring
    weights_file_name = FILE
    weights_home = HOME
    patch_px = PATCH
    pooled_head = False
    # the z-score is per piece (normalise below); the packed statistics are an identity
    band_mean = {"primary": (0.0,) * len(BANDS)}
    band_std = {"primary": (1.0,) * len(BANDS)}
    side_channels = FRAMES  # the day of year (1-based, so > 0) of each frame
    batch_cpu = 2
    batch_gpu = 32
    info = ModelInfo(
        id="anysat",
        revision=f"unpinned:{FILE}",
        kind="on_the_fly",
        dim=WIDTH,
        metric="cosine",
        outputs=("pooled", "grid"),
        temporal="composite",
        default_sensor=SensorSpec("s2-l2a", BANDS, scale_m=RES_M, cloudy_pct=30, composite="median"),
        providers=("local", "gee"),
        input_size=SIZE,
        frames=FRAMES,
        description=(
            "AnySat base (written here in torch), rs-embed's contract: 8 frames x 10 S2 L2A bands at 10 m, "
            "per-tile z-score, each frame's day of year from 0, 24 px; grid = 24x24 'patch' tokens of 10 m "
            "(768-d), pooled = their mean (or max)"
        ),
        citation="Astruc et al. 2025, AnySat: One Earth Observation Model for Many Resolutions, Scales, and "
                 "Modalities, CVPR 2025, arXiv:2412.14123",
        params={
            "library": "torch (architecture in rsembed_store.ingest.models.anysat)", "variant": "base",
            "patch_px": PATCH, "patch_m": PATCH * RES_M, "frames": FRAMES, "weights": FILE, "home": HOME,
            "norm": "rs-embed per_tile_zscore: DN clipped to 0..10000, per band over frames and usable pixels",
            "temporal_coords": "day of year from 0 (1 January = 0) of the middle day of each frame",
            "grid": "AnySat 'patch' output (rs-embed grid_feature_mode='patch')",
            "pooled": "mean/max of the patch tokens (rs-embed pooled_source='patch')",
            "contract": "rs-embed 0.3.1 anysat",
            "checkpoint_filter": "projector_<other sensor>. keys dropped; the rest loaded strictly",
        },
    )

    # ------------------------------------------------------------ network

    def architecture(self):
        return build_network()

    def build(self, weights_file: Path):
        return self.load_checkpoint(build_network(), weights_file,
                                    "an AnySat base checkpoint with a Sentinel-2 projector",
                                    select=keep_s2_and_shared)

    # ------------------------------------------------------------ inputs

    def normalise(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """One packed piece -> the network's input: the frames z-scored over this piece (rs-embed's
        ``per_tile_zscore``), the day channels kept as they are at usable pixels."""
        n = FRAMES * len(BANDS)
        frames = (x[:n] * np.float32(RAW_MAX)).reshape((FRAMES, len(BANDS)) + x.shape[1:])
        z = per_tile_zscore(frames, np.asarray(mask, bool)).reshape((n,) + x.shape[1:])
        side = np.where(mask, x[n:], np.float32(0.0))
        return np.concatenate([z, side]).astype(np.float32)

    def side_values(self, request) -> np.ndarray:
        return np.asarray([d.timetuple().tm_yday for d in frame_midpoints(request, FRAMES)], np.float32)

    def forward(self, net, x):
        parts = self.unpack(x)
        days = (parts["side"].round() - 1).clamp(0, 364)  # AnySat counts days from 0 (1 January = 0)
        tokens, _ = net(parts["primary"], days, PATCH)
        return tokens, None
