"""The shared compute path of on-the-fly models.

A subclass declares ``info`` (a :class:`~rsembed_store.model.ModelInfo`) and
implements ``features(x, mask) -> (D, gh, gw)``: ``x`` is float32 ``(C, h, w)``
reflectance in the order of ``info.default_sensor.bands``, ``mask`` marks the
usable pixels, and cells without usable data are NaN in every dimension. It may
also override ``pool(x, mask, pooling) -> (D,) | None`` when its pooled vector is
not the masked mean/max of its grid cells (the default).

:meth:`OnTheFlyModel.embed` does the rest, in this order:

1. pick the model's bands by name; usable = ``valid & roi_mask`` & finite in
   every band; unusable pixels are set to 0 so no garbage reaches a model;
   pixels are north-up by the provider contract (row 0 = north), kept as is;
2. input prep (``request.input_prep``): ``resize`` resamples to
   ``info.input_size`` square with :func:`resample` (mask-weighted area
   resampling); ``tile`` cuts tiles of ``tile_size`` every ``tile_stride`` px
   (edge tiles padded with the fill value and an unusable mask when
   ``pad_edges``, otherwise the leftover edge is dropped), each fed at native
   resolution; ``auto`` tiles when either side exceeds 1.5 x ``input_size``;
3. output: ``pooled`` -> ``pool`` per piece, combined across tiles by the mean
   weighted by usable pixels (or the max); ``grid`` -> ``features`` per piece,
   tiles stitched in place (overlaps averaged, offsets rounded to whole cells,
   cropped to the input extent), rows north first. Cells are NaN where no
   usable data; the grid's pooled vector is its nan-mean (``Embedding.from_grid``).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import ClassVar, List, Mapping, Optional, Tuple

import numpy as np

from ...embedding import Embedding
from ...errors import ComputeError, ProviderError, SpecError
from ...keys import ResolvedRequest
from ...model import Model
from ...specs import InputPrepSpec, SensorSpec
from ..providers.base import Pixels
from ..providers.sensors import as_common, band_positions, family
from .outcomes import outcomes

AUTO_TILE_FACTOR = 1.5


def overlap_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` weights of 1-D area resampling (rows sum to 1).

    Output pixel ``i`` covers ``[i, i+1) * n_in / n_out`` in input pixels and
    weights each input pixel by the length it overlaps. Shrinking gives the exact
    area average; enlarging gives nearest neighbour, blended linearly only where
    an output pixel straddles an input pixel edge.
    """
    edges = np.arange(n_out + 1, dtype=np.float64) * (n_in / n_out)
    j = np.arange(n_in, dtype=np.float64)[None, :]
    w = np.clip(np.minimum(edges[1:, None], j + 1) - np.maximum(edges[:-1, None], j), 0.0, None)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def resample(x: np.ndarray, mask: np.ndarray, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Resample ``(C, H, W)`` to ``(C, size, size)`` using only usable pixels.

    Each output pixel is the overlap-weighted mean of the usable input pixels
    under it (:func:`overlap_matrix` per axis); it is usable when at least one
    usable input pixel overlaps it, else it is 0 and unusable.
    """
    if x.shape[1:] == (size, size):
        return x, mask
    wy, wx = overlap_matrix(x.shape[1], size), overlap_matrix(x.shape[2], size)
    m = mask.astype(np.float32)
    num = wy @ np.where(mask, x, 0.0).astype(np.float32) @ wx.T
    den = wy @ m @ wx.T
    ok = den > 0
    return np.where(ok, num / np.where(ok, den, 1.0), 0.0).astype(np.float32), ok


def tile_starts(n: int, size: int, stride: int, pad: bool) -> List[int]:
    """Start offsets of tiles along one axis of ``n`` pixels."""
    if n <= size:
        return [0]
    starts = list(range(0, n - size + 1, stride))
    if pad and starts[-1] + size < n and starts[-1] + stride < n:
        starts.append(starts[-1] + stride)
    return starts


def masked_pool(grid: np.ndarray, pooling: str) -> Optional[np.ndarray]:
    """Mean or max over the cells of ``(D, gh, gw)`` that are finite; None if none are."""
    flat = grid.reshape(grid.shape[0], -1)
    ok = np.isfinite(flat).all(axis=0)
    if not ok.any():
        return None
    cells = flat[:, ok]
    return (cells.max(axis=1) if pooling == "max" else cells.mean(axis=1, dtype=np.float64)).astype(np.float32)


class OnTheFlyModel(Model):
    """Base of the on-the-fly embedders; see the module docstring for the pipeline."""

    #: True for models that accept only ``input_size`` squares: tiles are then resampled too
    fixed_input: ClassVar[bool] = False
    #: appended to the check_sensor error, e.g. which index uses which band
    band_note: ClassVar[str] = ""

    def __init__(self, config: Optional[Mapping] = None):
        self.config = dict(config or {})

    # ------------------------------------------------------------ resolution

    @classmethod
    def required_bands(cls) -> Tuple[str, ...]:
        return tuple(cls.info.default_sensor.bands)

    def input_bands(self, request: ResolvedRequest) -> Tuple[str, ...]:
        """The bands fed to the model for ``request``, in order (a model that takes the bands a
        request names, such as DOFA, overrides this)."""
        common = self.family_bands(request.sensor)
        return common if common is not None else self.required_bands()

    @classmethod
    def family_bands(cls, sensor: Optional[SensorSpec]) -> Optional[Tuple[str, ...]]:
        """For a Landsat/HLS collection, the model's bands in common names (``B04`` -> ``red``,
        ``B08``/``B8A`` -> ``nir``); None for a Sentinel-2 style collection."""
        fam = family(sensor.collection) if sensor is not None else None
        if fam is None:
            return None
        try:
            return as_common(cls.required_bands(), fam)
        except ProviderError as exc:
            raise SpecError(f"model {cls.info.id!r} cannot read {sensor.collection!r}: {exc}") from None

    @classmethod
    def check_sensor(cls, sensor: SensorSpec) -> None:
        if cls.family_bands(sensor) is not None:
            return  # a product family: the model's bands are read by their common names
        need = cls.required_bands()
        missing = [b for b in need if b not in sensor.bands]
        if missing:
            raise SpecError(
                f"model {cls.info.id!r} needs band(s) {missing} that SensorSpec.bands={list(sensor.bands)} "
                f"lacks; it reads the bands {list(need)}{cls.band_note}"
            )

    @classmethod
    def resolve_sensor(cls, sensor: Optional[SensorSpec]) -> Optional[SensorSpec]:
        """As :meth:`Model.resolve_sensor`, then keep only the bands the model reads, in its order,
        so that extra or reordered bands (which change nothing computed) share one key."""
        resolved = super().resolve_sensor(sensor)
        common = cls.family_bands(resolved)
        return replace(resolved, bands=common if common is not None else cls.required_bands())

    # ------------------------------------------------------------ model hooks

    def features(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        """``(D, gh, gw)`` float32 feature field, north-up, NaN where no usable data."""
        raise NotImplementedError

    def pool(self, x: np.ndarray, mask: np.ndarray, pooling: str) -> Optional[np.ndarray]:
        """``(D,)`` pooled vector of one piece, or None when it has no usable data."""
        return masked_pool(self.features(x, mask), pooling)

    # ------------------------------------------------------------ compute

    def embed(self, pixels: Pixels, request: ResolvedRequest, meta: Optional[dict] = None) -> Embedding:
        """Compute the answer to ``request`` from ``pixels``; ``meta`` is merged into its metadata."""
        t0 = time.perf_counter()
        pieces, hw, info_meta = self._plan(pixels, request)
        return self._assemble(pieces, hw, info_meta, request, meta, t0)

    def _plan(self, pixels: Pixels, request: ResolvedRequest):
        """Steps 1-2: ``(pieces, (h, w), meta)``, the model inputs of one request. Split from
        :meth:`_assemble` so that a batching model can run every piece of many requests at once."""
        info = self.info
        if (request.model, request.revision) != (info.id, info.revision):
            raise ComputeError(
                f"request {request.key[:12]} is for {request.model!r} revision {request.revision!r}; "
                f"this model is {info.id!r} revision {info.revision!r}"
            )
        x, usable = self._prepare(pixels, request)
        roi_px = int(np.count_nonzero(pixels.roi_mask))
        n_usable = int(np.count_nonzero(usable))
        if n_usable == 0:
            raise ComputeError(
                f"request {request.key} ({info.id}): no usable pixel (valid and inside the ROI) in the "
                f"{x.shape[1]}x{x.shape[2]} px input"
            )
        prep = request.input_prep or InputPrepSpec.resize()
        pieces, info_meta = self._pieces(x, usable, prep, pixels.fill_value)
        info_meta.update(usable_px=n_usable, usable_fraction=round(n_usable / max(roi_px, 1), 6))
        return pieces, x.shape[1:], info_meta

    def _assemble(self, pieces, hw, info_meta: dict, request: ResolvedRequest, meta: Optional[dict],
                  t0: float) -> Embedding:
        """Step 3: the Embedding of one request from its pieces (calls ``pool``/``features``)."""
        if request.output.mode == "pooled":
            vector = self._pool_pieces(pieces, request.output.pooling, request)
            emb = Embedding(request=request, vector=vector, meta=info_meta)
        else:
            grid, cell = self._stitch(pieces, hw, request)
            info_meta.update(grid_shape=list(grid.shape[1:]), grid_cell_px=[round(c, 6) for c in cell])
            emb = Embedding.from_grid(request, grid, meta=info_meta)
        info_meta.update(meta or {})
        emb.compute_s = time.perf_counter() - t0
        return emb

    def embed_batch(self, items: List[Tuple[Pixels, ResolvedRequest]], *, return_exceptions: bool = False) -> list:
        """Embed many items (a loop; models may vectorise). With ``return_exceptions`` a failed
        item yields its exception in place, so one bad request does not sink the batch."""
        return outcomes(items, lambda item: self.embed(*item), return_exceptions=return_exceptions)

    # ------------------------------------------------------------ steps

    def _prepare(self, pixels: Pixels, request: ResolvedRequest) -> Tuple[np.ndarray, np.ndarray]:
        arr = np.asarray(pixels.array)
        if arr.ndim != 3 or arr.shape[0] != len(pixels.bands):
            raise ComputeError(
                f"request {request.key} ({self.info.id}): pixels.array has shape {arr.shape}, expected "
                f"(C={len(pixels.bands)}, H, W) for bands {list(pixels.bands)}"
            )
        need = self.input_bands(request)
        where = band_positions(pixels.bands, need)
        missing = [b for b, i in zip(need, where) if i is None]
        if missing:
            raise ComputeError(
                f"request {request.key} ({self.info.id}): the pixels lack band(s) {missing}; got "
                f"{list(pixels.bands)}, the model reads {list(need)}"
            )
        x = arr[where].astype(np.float32)
        usable = np.asarray(pixels.valid, bool) & np.asarray(pixels.roi_mask, bool) & np.isfinite(x).all(axis=0)
        return np.where(usable, x, np.float32(0.0)), usable

    def _pieces(self, x, usable, prep: InputPrepSpec, fill: float):
        """The model inputs: a list of ``(x, mask, y0, x0, h, w)`` (offset and extent in input px)."""
        size = self.info.input_size
        h, w = x.shape[1:]
        mode = prep.mode
        if mode == "auto":
            mode = "tile" if max(h, w) > AUTO_TILE_FACTOR * size else "resize"
        if mode == "resize":
            xr, mr = resample(x, usable, size)
            return [(xr, mr, 0, 0, h, w)], {"input_prep": "resize", "input_hw": [h, w], "model_hw": [size, size], "tiles": 1}
        t = prep.tile_size or size
        s = prep.tile_stride or t
        ys, xs = tile_starts(h, t, s, prep.pad_edges), tile_starts(w, t, s, prep.pad_edges)
        if len(ys) * len(xs) > prep.max_tiles:
            raise SpecError(
                f"a {h}x{w} px input with tile_size={t} and tile_stride={s} needs {len(ys)}x{len(xs)}="
                f"{len(ys) * len(xs)} tiles, more than max_tiles={prep.max_tiles}; raise max_tiles, "
                "enlarge tile_size/tile_stride, or use InputPrepSpec.resize()"
            )
        pieces = []
        for y0 in ys:
            for x0 in xs:
                xt, mt = x[:, y0:y0 + t, x0:x0 + t], usable[y0:y0 + t, x0:x0 + t]
                th, tw = mt.shape
                if prep.pad_edges and (th, tw) != (t, t):
                    xp = np.full((x.shape[0], t, t), fill, np.float32)
                    mp = np.zeros((t, t), bool)
                    xp[:, :th, :tw], mp[:th, :tw] = xt, mt
                    xt, mt, th, tw = xp, mp, t, t
                if self.fixed_input:
                    xt, mt = resample(xt, mt, size)
                pieces.append((xt, mt, y0, x0, th, tw))
        meta = {"input_prep": "tile", "input_hw": [h, w], "model_hw": [t, t], "tiles": len(pieces),
                "tile_grid": [len(ys), len(xs)], "tile_stride": s, "pad_edges": prep.pad_edges}
        return pieces, meta

    def _pool_pieces(self, pieces, pooling: str, request) -> np.ndarray:
        vecs, weights = [], []
        for xt, mt, *_ in pieces:
            n = int(np.count_nonzero(mt))
            v = self.pool(xt, mt, pooling) if n else None
            if v is not None:
                vecs.append(np.asarray(v, np.float64))
                weights.append(n)
        if not vecs:
            raise ComputeError(f"request {request.key} ({self.info.id}): no usable data reached the model")
        stack = np.stack(vecs)
        out = stack.max(axis=0) if pooling == "max" else np.average(stack, axis=0, weights=weights)
        return self._finite(out.astype(np.float32), request)

    def _stitch(self, pieces, hw, request):
        """Place each piece's grid at its offset; returns ``(grid, (cell_h_px, cell_w_px))``."""
        grids = [self.features(xt, mt) for xt, mt, *_ in pieces]
        _, _, _, _, h0, w0 = pieces[0]
        cy, cx = h0 / grids[0].shape[1], w0 / grids[0].shape[2]
        if len(pieces) == 1:
            grid = grids[0]
        else:
            gh, gw = math.ceil(hw[0] / cy - 1e-9), math.ceil(hw[1] / cx - 1e-9)
            total = np.zeros((grids[0].shape[0], gh, gw), np.float64)
            count = np.zeros((gh, gw), np.int32)
            for g, (_, _, y0, x0, _, _) in zip(grids, pieces):
                oy, ox = int(round(y0 / cy)), int(round(x0 / cx))
                g = g[:, : max(gh - oy, 0), : max(gw - ox, 0)]
                ok = np.isfinite(g).all(axis=0)
                sl = (slice(oy, oy + g.shape[1]), slice(ox, ox + g.shape[2]))
                total[(slice(None),) + sl] += np.where(ok, g, 0.0)
                count[sl] += ok
            grid = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        grid = np.asarray(grid, np.float32)
        if np.isinf(grid).any():
            raise ComputeError(f"request {request.key} ({self.info.id}): the model produced infinite values")
        if not np.isfinite(grid).all(axis=0).any():
            raise ComputeError(f"request {request.key} ({self.info.id}): no grid cell has usable data")
        return grid, (cy, cx)

    def _finite(self, vector: np.ndarray, request) -> np.ndarray:
        if not np.all(np.isfinite(vector)):
            raise ComputeError(f"request {request.key} ({self.info.id}): the model produced non-finite values")
        return vector
