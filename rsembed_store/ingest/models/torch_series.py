"""Deep models that read T frames and several sensors, on the TorchModel pipeline.

:class:`~.torch_base.TorchModel` feeds a network ``(C, S, S)`` pieces: it picks the
bands, resizes or tiles the ROI, normalises and batches across requests. A time
series ``(T, C, H, W)`` with extra modalities fits that path unchanged once it is
*packed* into channels, which is what :class:`SeriesTorchModel` does in
``_prepare``; a subclass gets the parts back in ``forward`` with :meth:`unpack`.

Packed channel layout of one request (:class:`Layout`), in this order:

1. the primary sensor's bands, frame-major (frame 0's C bands, then frame 1's, ...);
2. each modality the model declares in ``ModelInfo.modalities``, in that order and
   frame-major; a modality the request did not ask for is zeros;
3. one presence channel per declared modality: 1 where the request asked for it;
4. ``side_channels`` constants the subclass computes per request with
   :meth:`side_values` (e.g. Prithvi's frame dates and ROI centre), all > 0.

Presence and side channels have mean 0 and std 1 in the normalisation, so they
reach the network as their raw values at usable pixels and 0 elsewhere;
:meth:`unpack` reads them as the maximum over the piece (a constant survives the
base's mask-weighted resampling, up to float rounding).

Usable pixels and gaps: a pixel is usable when it lies in the ROI and has data in
at least one frame of the primary sensor and of every modality asked for. Where a
frame lacks data at a usable pixel, the value of the nearest frame in time that
has it is used (the earlier one on a tie): a per-pixel gap fill, so that the
network never sees fill values inside the ROI.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import ClassVar, Dict, Mapping, Sequence, Tuple

import numpy as np

from ...errors import ComputeError, SpecError
from ...keys import ResolvedRequest
from ...specs import SensorSpec
from ..providers.base import Pixels
from ..providers.sensors import band_positions
from .torch_base import TorchModel
from .weights import WeightsError


@dataclass(frozen=True)
class Layout:
    """How a request's frames, modalities and side inputs sit in the packed channels."""

    frames: int
    primary: int  # channels per frame of the primary sensor
    extras: Tuple[Tuple[str, int], ...]  # (modality, channels per frame), declared order
    side: int

    @property
    def channels(self) -> int:
        return self.frames * (self.primary + sum(c for _, c in self.extras)) + len(self.extras) + self.side

    def spans(self) -> Dict[str, slice]:
        """Channel slices: ``"primary"``, each modality, ``"present"``, ``"side"``."""
        out, at = {}, 0
        for name, per_frame in (("primary", self.primary),) + self.extras:
            out[name] = slice(at, at + self.frames * per_frame)
            at += self.frames * per_frame
        out["present"] = slice(at, at + len(self.extras))
        out["side"] = slice(at + len(self.extras), self.channels)
        return out


def fill_gaps(arr: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``(T, C, H, W)`` with each frame's missing pixels taken from the nearest frame in time
    that has them (the earlier on a tie); pixels no frame has stay as they are."""
    out = arr.copy()
    count = arr.shape[0]
    for t in range(count):
        need = ~valid[t]
        for j in sorted(range(count), key=lambda j: (abs(j - t), j))[1:]:
            if not need.any():
                break
            take = need & valid[j]
            out[t][:, take] = arr[j][:, take]
            need &= ~take
    return out


class SeriesTorchModel(TorchModel):
    """A TorchModel over packed frames and modalities (see the module docstring).

    A subclass declares ``info`` (with ``frames`` and ``modalities`` as it reads them),
    ``band_mean``/``band_std`` per modality (``"primary"`` and each declared name, in
    the units :meth:`to_model_units` returns), and ``side_channels``; it implements
    ``build``, ``forward`` (using :meth:`unpack`) and, when it has side inputs,
    :meth:`side_values`.
    """

    band_mean: ClassVar[Mapping[str, Tuple[float, ...]]] = {}
    band_std: ClassVar[Mapping[str, Tuple[float, ...]]] = {}
    side_channels: ClassVar[int] = 0
    #: where the published checkpoint lives, for a model whose digest is not pinned yet (published = None)
    weights_file_name: ClassVar[str] = ""
    weights_home: ClassVar[str] = ""

    def __init__(self, config=None):
        super().__init__(config)
        mean, std = self.packed_norm()
        self._mean = mean[:, None, None]
        self._std = std[:, None, None]

    # ------------------------------------------------------------ resolution

    @classmethod
    def check_modality(cls, name: str, sensor: SensorSpec) -> None:
        need = tuple(cls.info.modalities[name].bands)
        missing = [b for b in need if b not in sensor.bands]
        if missing:
            raise SpecError(
                f"model {cls.info.id!r}: modality {name!r} needs band(s) {missing} that "
                f"SensorSpec.bands={list(sensor.bands)} lacks; it reads {list(need)}"
            )

    # ------------------------------------------------------------ weights

    def _weights_file(self) -> Path:
        """As TorchModel's, except that a model whose published digest is not pinned
        (``published = None``) loads only custom weights, keyed by the file's own digest."""
        if self.published is not None or type(self).weights_path or self.config.get("weights"):
            return super()._weights_file()
        model_id, name = self.info.id, self.weights_file_name
        raise WeightsError(
            f"model {model_id!r}: the SHA-256 of the published checkpoint {name} is not pinned in this release, "
            f"so it cannot be verified; download it from {self.weights_home} and load it with "
            f"rsembed_store.ingest.models.weights.use_weights({model_id!r}, '/path/{name}') (or "
            f"RSEMBED_WEIGHTS={model_id}=/path/{name}): requests are then keyed by the file's own digest"
        )

    # ------------------------------------------------------------ layout

    @classmethod
    def layout(cls) -> Layout:
        info = cls.info
        extras = tuple((name, len(sensor.bands)) for name, sensor in info.modalities.items())
        return Layout(info.frames or 1, len(cls.required_bands()), extras, cls.side_channels)

    @classmethod
    def packed_norm(cls) -> Tuple[np.ndarray, np.ndarray]:
        """Per packed channel ``(mean, std)``: the band statistics repeated per frame; 0 and 1
        for presence and side channels."""
        lay = cls.layout()
        means, stds = [], []
        for name, _ in (("primary", lay.primary),) + lay.extras:
            means += list(cls.band_mean[name]) * lay.frames
            stds += list(cls.band_std[name]) * lay.frames
        rest = len(lay.extras) + lay.side
        return np.asarray(means + [0.0] * rest, np.float32), np.asarray(stds + [1.0] * rest, np.float32)

    # ------------------------------------------------------------ hooks

    def side_values(self, request: ResolvedRequest) -> np.ndarray:
        """The ``side_channels`` constants of a request, each > 0 (none by default)."""
        return np.zeros(0, np.float32)

    def unpack(self, x) -> dict:
        """A packed batch ``(B, channels, S, S)`` tensor -> ``{"primary": (B, T, C, S, S), name:
        (B, T, Cm, S, S), "present": {name: (B,) bool}, "side": (B, side)}``."""
        lay, spans = self.layout(), self.layout().spans()
        b, _, h, w = x.shape
        out = {"primary": x[:, spans["primary"]].reshape(b, lay.frames, lay.primary, h, w)}
        flags = x[:, spans["present"]].amax(dim=(-2, -1)) > 0.5
        out["present"] = {}
        for k, (name, per_frame) in enumerate(lay.extras):
            out[name] = x[:, spans[name]].reshape(b, lay.frames, per_frame, h, w)
            out["present"][name] = flags[:, k]
        out["side"] = x[:, spans["side"]].amax(dim=(-2, -1))
        return out

    # ------------------------------------------------------------ packing (the OnTheFlyModel step 1)

    def _prepare(self, pixels: Pixels, request: ResolvedRequest) -> Tuple[np.ndarray, np.ndarray]:
        lay = self.layout()
        roi = np.asarray(pixels.roi_mask, bool)
        parts, usable = [], roi.copy()
        arr, ok = self._frames_of(pixels, self.input_bands(request), "the sensor", request)
        parts.append(arr)
        usable &= ok
        present = []
        for name, _ in lay.extras:
            sub = pixels.modalities.get(name)
            bands = tuple(self.info.modalities[name].bands)
            if sub is None:
                parts.append(np.zeros((lay.frames * len(bands),) + roi.shape, np.float32))
                present.append(0.0)
                continue
            arr, ok = self._frames_of(sub, bands, f"modality {name!r}", request)
            parts.append(arr)
            usable &= ok
            present.append(1.0)
        side = np.asarray(self.side_values(request), np.float32)
        if side.shape != (lay.side,) or (side.size and not (side > 0).all()):
            raise ComputeError(f"{self.info.id}: side_values gave {side!r}; expected {lay.side} values > 0")
        consts = np.asarray(present + list(side), np.float32)
        parts.append(np.broadcast_to(consts[:, None, None], (consts.size,) + roi.shape))
        x = np.concatenate(parts).astype(np.float32)
        return np.where(usable, x, np.float32(0.0)), usable

    def _frames_of(self, pixels: Pixels, bands: Sequence[str], what: str, request: ResolvedRequest):
        """``(T * C, H, W)`` gap-filled, frame-major, and where any frame has data."""
        count = self.layout().frames
        arr = np.asarray(pixels.array, np.float32)
        valid = np.asarray(pixels.valid, bool)
        if arr.ndim == 3 and count == 1:
            arr, valid = arr[None], valid[None]
        if arr.ndim != 4 or arr.shape[0] != count:
            raise ComputeError(
                f"request {request.key[:12]} ({self.info.id}): {what} has pixels of shape {arr.shape}; "
                f"the model reads {count} frame(s) as (T={count}, C, H, W)"
            )
        where = band_positions(pixels.bands, bands)
        missing = [b for b, i in zip(bands, where) if i is None]
        if missing:
            raise ComputeError(
                f"request {request.key[:12]} ({self.info.id}): {what} lacks band(s) {missing}; got "
                f"{list(pixels.bands)}"
            )
        arr = arr[:, where]
        valid = valid & np.isfinite(arr).all(axis=1)
        filled = fill_gaps(arr, valid)
        return filled.reshape((-1,) + arr.shape[2:]), valid.any(axis=0)


def frame_midpoints(request: ResolvedRequest, count: int):
    """The middle day of each frame (of the whole window when the request has no plan)."""
    windows = request.frames.windows() if request.frames is not None else [request.temporal.window()]
    if len(windows) != count:
        raise ComputeError(f"request {request.key[:12]} has {len(windows)} frame(s); the model reads {count}")
    return [start + timedelta(days=(end - start).days // 2) for start, end in windows]


__all__ = ["Layout", "SeriesTorchModel", "fill_gaps", "frame_midpoints"]
