"""What every imagery provider delivers, and the interface it implements.

Time series and several sensors are assembled here, once for every provider
(:meth:`Provider.assemble`): a provider only says how to composite one window of
one sensor on a grid, and this module splits a request into its frames and
modalities, back-fills empty frames (:func:`stack_frames`) and hangs the extra
modalities on the primary sensor's pixels. See ``docs/timeseries.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Callable, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ...errors import NoImageryError, ProviderError
from ...keys import ResolvedRequest
from ...limits import Limits
from ...model import FramePlan
from ...specs import SensorSpec


@dataclass
class Pixels:
    """Imagery for one request on one north-up grid.

    ``array`` is float32 ``(C, H, W)`` in physical units (surface reflectance
    0..1 for optical bands), ``fill_value`` where there is no data. ``valid``
    marks pixels with data in every band; ``roi_mask`` marks pixels inside the
    ROI (the hexagon of an H3Cell; everything for a square ROI). ``transform``
    is the GDAL geotransform of the grid in ``crs``: ``(x0, xres, 0, y0, 0, -yres)``;
    read it back with ``affine.Affine.from_gdal(*transform)``.

    A request with a frame plan gets a time axis: ``array`` is ``(T, C, H, W)``
    and ``valid`` ``(T, H, W)``, one entry per frame in time order;
    ``meta["frame_windows"]`` lists each frame's ``[start, end)`` and
    ``meta["backfilled"]`` every frame filled from another one. ``modalities``
    holds the request's extra sensors (name -> Pixels) on this same grid, with the
    same frames.
    """

    array: np.ndarray
    bands: Tuple[str, ...]
    valid: np.ndarray
    roi_mask: np.ndarray
    crs: str
    transform: Tuple[float, float, float, float, float, float]
    fill_value: float = 0.0
    meta: dict = field(default_factory=dict)
    modalities: Dict[str, "Pixels"] = field(default_factory=dict)

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def frames(self) -> Optional[int]:
        """T for a time series ``(T, C, H, W)``; None for one composite ``(C, H, W)``."""
        return int(self.array.shape[0]) if self.array.ndim == 4 else None

    def same_grid(self, other: "Pixels") -> bool:
        return (self.crs, tuple(self.transform), self.array.shape[-2:]) == (
            other.crs, tuple(other.transform), other.array.shape[-2:])

    def usable(self) -> np.ndarray:
        """Pixels that have data and lie inside the ROI."""
        return self.valid & self.roi_mask


class Provider:
    """Base class of imagery providers (``local``, ``gee``, ...).

    A provider is built once per run from configuration (which never enters a
    key: paths, credentials, endpoints) and then serves many requests, possibly
    from several threads at once.
    """

    name: ClassVar[str] = ""

    def __init__(self, config: Optional[Mapping] = None):
        self.config = dict(config or {})
        self.limits = Limits.from_config(self.config)  # the size limits of this run (rsembed_store.limits)

    def inputs(self, request: ResolvedRequest):
        """``(sensor, temporal, spatial)`` of a request, refusing one without a sensor or window."""
        if request.sensor is None:
            raise ProviderError(f"the {self.name} provider needs a SensorSpec (collection, bands, scale_m, ...)")
        if request.temporal is None:
            raise ProviderError(f"the {self.name} provider needs a temporal window (TemporalSpec.range)")
        return request.sensor, request.temporal, request.spatial

    def assemble(self, request: ResolvedRequest, composite_window: "WindowCompositor") -> Pixels:
        """Pixels for ``request`` from a provider's one-window compositor.

        ``composite_window(sensor, start, end)`` composites ``[start, end)`` of one
        sensor on the request's grid and raises NoImageryError when nothing is
        there. The primary sensor and each extra modality get one composite, or one
        per frame of ``request.frames`` stacked by :func:`stack_frames`.
        """
        sensor, temporal, _ = self.inputs(request)
        pixels = _series(composite_window, sensor, temporal.window(), request.frames, "the sensor")
        for name, extra in request.modalities or ():
            part = _series(composite_window, extra, temporal.window(), request.frames, f"modality {name!r}")
            if not part.same_grid(pixels):
                raise ProviderError(f"modality {name!r} came back on another grid than the primary sensor")
            part.meta["modality"] = name
            pixels.modalities[name] = part
        return pixels

    def fetch(self, request: ResolvedRequest) -> Pixels:  # pragma: no cover - interface
        """Pixels for ``request`` (its sensor, spatial and temporal specs).

        Raises :class:`~rsembed_store.errors.NoImageryError` when no scene passes
        the filters, :class:`~rsembed_store.errors.ProviderError` for other
        failures; never returns an all-fill array as if it were data.
        """
        raise NotImplementedError


#: ``(sensor, start, end) -> Pixels`` of one half-open window, or NoImageryError
WindowCompositor = Callable[[SensorSpec, date, date], Pixels]


def _series(composite_window: WindowCompositor, sensor: SensorSpec, window: Tuple[date, date],
            plan: Optional[FramePlan], what: str) -> Pixels:
    """One composite of the window, or the frames of ``plan`` with empty ones back-filled."""
    if plan is None:
        return composite_window(sensor, *window)
    parts: List[Optional[Pixels]] = []
    reasons: List[str] = []
    for start, end in plan.windows():
        try:
            parts.append(composite_window(sensor, start, end))
        except NoImageryError as exc:
            parts.append(None)
            reasons.append(f"[{start.isoformat()}, {end.isoformat()}): {exc}")
    if all(p is None for p in parts):
        raise NoImageryError(
            f"every one of the {plan.count} frames of {what} ({sensor.collection!r}) is empty, so the whole "
            f"window [{plan.edges[0]}, {plan.edges[-1]}) is: " + "; ".join(reasons)
        )
    return stack_frames(parts, plan)


def nearest_filled(parts: Sequence[Optional[object]], k: int) -> int:
    """Index of the non-empty frame nearest to frame ``k`` in time (the earlier one on a tie)."""
    filled = [j for j, p in enumerate(parts) if p is not None]
    if not filled:
        raise NoImageryError("no frame has imagery")
    return min(filled, key=lambda j: (abs(j - k), j))


def stack_frames(parts: Sequence[Optional[Pixels]], plan: FramePlan) -> Pixels:
    """Stack per-frame composites into ``(T, C, H, W)`` Pixels, back-filling empty frames.

    An empty frame (None) takes a copy of its nearest non-empty frame in time, the
    earlier one on a tie, with that frame's validity; ``meta["backfilled"]`` records
    ``{"frame", "from_frame", "window"}`` for each. (A fallback to the whole window is
    never needed: the frames tile the window, so if any frame has imagery, a
    neighbour exists, and if none has, neither has the window.) ``meta["frames"]``
    keeps each frame's own provider meta (scenes, dates, counts) and where it came from.
    """
    if len(parts) != plan.count:
        raise ProviderError(f"{len(parts)} frame composite(s) for a plan of {plan.count} frames")
    windows = [[s.isoformat(), e.isoformat()] for s, e in plan.windows()]
    source = [k if p is not None else nearest_filled(parts, k) for k, p in enumerate(parts)]
    filled = [parts[j] for j in source]
    first = filled[0]
    if not all(p.same_grid(first) and p.bands == first.bands for p in filled):
        raise ProviderError("frame composites came back on different grids or bands")
    array = np.ascontiguousarray(np.stack([p.array for p in filled]), dtype=np.float32)
    valid = np.stack([np.asarray(p.valid, bool) for p in filled])
    backfilled = [{"frame": k, "from_frame": j, "window": windows[k]} for k, j in enumerate(source) if j != k]
    per_frame = []
    for k, j in enumerate(source):
        own = {key: v for key, v in filled[k].meta.items() if key not in ("crs", "transform", "grid", "provider")}
        per_frame.append({"window": windows[k], "backfilled_from": j if j != k else None, **own})
    meta = {
        "provider": first.meta.get("provider"),
        "crs": first.crs,
        "transform": list(first.transform),
        "composite": first.meta.get("composite"),
        "frame_windows": windows,
        "backfilled": backfilled,
        "frames": per_frame,
        "nodata_fraction": float(1.0 - valid.mean()),
    }
    return Pixels(array=array, bands=first.bands, valid=valid, roi_mask=first.roi_mask.copy(), crs=first.crs,
                  transform=first.transform, fill_value=first.fill_value, meta=meta)
